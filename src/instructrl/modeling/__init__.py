"""Models: loading policies and tokenizers (``loading``), the frozen reference, LoRA, checkpoints plain transformers
loads; batched generation (``generation``); the reward model (``reward``) and the value model of RL (``value``)."""

from instructrl.modeling.loading import (  # noqa: F401
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    make_reference,
    save_pretrained_atomic,
)
