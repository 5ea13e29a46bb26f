"""Tiny random models of the architecture families users bring (GPT-2, Llama, Qwen2, GPT-NeoX), built from
transformers' config classes inside the tests: nothing is downloaded. Each directory holds the tiny test
tokenizer and a config without weights, which ``load_causal_lm`` initializes randomly (seeded here)."""

from __future__ import annotations

import shutil
from pathlib import Path

FAMILIES = ["gpt2", "llama", "qwen2", "gpt_neox"]


def family_config(family: str, vocab_size: int, pad_id: int, eos_id: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, resid_pdrop=0.0, **common)
    if family in ("llama", "qwen2"):  # the same shape: grouped-query attention, gated MLP
        config_cls = LlamaConfig if family == "llama" else Qwen2Config
        return config_cls(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=256,
            **common,
        )
    raise ValueError(family)


def make_family_dir(tokenizer_dir: Path, out: Path, family: str) -> Path:
    """``out``: the tokenizer of ``tokenizer_dir`` and a tiny ``family`` config (no weights)."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name.startswith("special_tokens"):
            shutil.copy2(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(out)
    family_config(family, len(tok), tok.pad_token_id, tok.eos_token_id).save_pretrained(out)
    return out


def load_family(tokenizer_dir: Path, out: Path, family: str, seed: int = 0, **kwargs):
    """(model, tokenizer) of a tiny random ``family`` model, through instructrl's loader."""
    import torch

    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    path = make_family_dir(tokenizer_dir, out, family)
    tok = load_tokenizer(str(path))
    torch.manual_seed(seed)
    return load_causal_lm(str(path), tok, **kwargs), tok
