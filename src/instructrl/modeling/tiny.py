"""Tiny GPT-2 models built from scratch: for tests, quick experiments and the miniature world.

``make_tiny_model_dir`` trains a byte-level BPE tokenizer on the given texts (with distinct
``<|endoftext|>`` EOS and ``<|pad|>`` PAD) and writes a GPT-2 config without weights: a directory that
``instructrl pretrain`` (or ``load_causal_lm``) initializes randomly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedTokenizerFast

EOS, PAD = "<|endoftext|>", "<|pad|>"


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 512, chat_template: str | None = None):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=EOS)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def make_tiny_model_dir(
    out_dir: str | Path,
    texts: list[str],
    *,
    vocab_size: int = 512,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    chat_template: str | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer(texts, vocab_size, chat_template)
    tok.save_pretrained(out)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    cfg.save_pretrained(out)
    return out


def make_tiny_model(out_dir: str | Path, texts: list[str], seed: int = 0, **kwargs) -> Path:
    """Like make_tiny_model_dir, with randomly initialized weights saved (a loadable checkpoint)."""
    out = make_tiny_model_dir(out_dir, texts, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(GPT2Config.from_pretrained(out))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(out).save_pretrained(out)
    return out
