"""The world's tokenizer: byte-level BPE trained on the corpus, with a chat template.

PAD and EOS are distinct tokens: with PAD == EOS the EOS token is masked out of the loss and a
policy never learns to stop (Huang et al. 2023, "The N implementation details of RLHF with PPO").

The chat template renders a conversation as::

    <|user|>What is the capital of Varno?\\n<|assistant|>The capital of Varno is Kelt.<|endoftext|>

and ``add_generation_prompt=True`` ends the text with ``<|assistant|>``. The turn markers never occur
in the corpus, so a pretrained model has no instruction-following habit to fall back on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS, PAD, USER, ASSISTANT = "<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [EOS, PAD, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n' }}"
    "{% else %}"
    "{{ '<|user|>' + message['content'] + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``."""
    # here, not at the top: the world package stays pure Python (see its __init__) until a tokenizer is made
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=EOS,
        padding_side="left",
        unk_token=None,
        additional_special_tokens=[USER, ASSISTANT],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 256
    return fast


def save_tokenizer(tokenizer, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


def format_prompt(tokenizer, prompt: str) -> str:
    """A user prompt as the text a policy continues (chat template with the generation prompt)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def load_world_policy(name: str, what: str = "--model"):
    """Tokenizer and causal LM of a policy the world's commands sample from: a checkpoint directory or a base-model
    size. Refused in one line: a path that is not a directory, a folder transformers cannot load as a causal LM, a
    tokenizer without the chat template the world's prompts are written in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # only where a model runs (__init__.py)

    from instructrl.errors import InstructRLError, first_line_of
    from instructrl.world.base_models import resolve_model

    path = resolve_model(name)
    if not Path(path).is_dir():
        raise InstructRLError(f"{what} {name}: no such directory (or a base-model size: tiny, small, medium)")
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise InstructRLError(
            f"{what} {name}: not a causal LM checkpoint transformers can load ({first_line_of(e)})"
        ) from None
    if not getattr(tok, "chat_template", None):
        raise InstructRLError(
            f"{what} {name}: its tokenizer has no chat template; the world's prompts need one (a model trained "
            "on the world by instructrl, or a base-model size)"
        )
    return tok, model.float().eval()
