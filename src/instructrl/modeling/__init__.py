"""Loading and saving models: policies, reference models, LoRA, checkpoints plain transformers loads."""

from instructrl.modeling.loading import (  # noqa: F401
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    save_pretrained_atomic,
)
