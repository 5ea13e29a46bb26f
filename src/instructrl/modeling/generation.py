"""Batched generation from a causal LM: one sampled (or greedy) response per prompt.

Prompts are rendered with the same template as training (chat template or the plain one), left-padded,
and sampled with ``model.generate``; responses are cut at EOS. With ``autocast_dtype`` (bf16 where the run's
``mixed_precision`` resolves so: :mod:`instructrl.training.precision`) the forward passes run under autocast;
the weights stay as loaded and transformers upcasts each step's logits to fp32 before temperature, top-p and
the softmax, so only the matmuls are in bf16.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from instructrl.data.formats import Prompt
from instructrl.data.template import encode_prompt
from instructrl.data.tokenize import left_pad


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finished: bool  # ended with EOS within max_new_tokens


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[Prompt],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 50,
    batch_size: int = 32,
    max_prompt_tokens: int | None = None,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> list[Generation]:
    """Sample one response per prompt (temperature 0 = greedy); under autocast in ``autocast_dtype`` if given.

    ``top_k``: sample among the ``top_k`` likeliest tokens (0: all of them). 50 is what transformers' ``generate``
    applies when neither the call nor the model's generation config sets it; it is passed explicitly, as
    ``temperature`` and ``top_p`` are, so that the evaluation's sampling depends neither on that default nor on a
    model's own generation config."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_tokens:
        encoded = [e[-max_prompt_tokens:] for e in encoded]
    out: list[Generation] = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for start in tqdm(range(0, len(encoded), batch_size), disable=not progress, desc="generate"):
        ids, mask = left_pad(encoded[start : start + batch_size], pad)
        kwargs = (
            dict(do_sample=False)
            if temperature == 0
            else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
        )
        with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
            seqs = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
                **kwargs,
            )
        for row in seqs[:, ids.shape[1] :].tolist():
            finished = eos in row
            resp = row[: row.index(eos)] if finished else [t for t in row if t != pad]
            out.append(Generation(tokenizer.decode(resp, skip_special_tokens=True), resp, finished))
    model.train(was_training)
    return out
