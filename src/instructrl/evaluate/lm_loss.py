"""Held-out language-modeling loss: how much of its pretraining a policy keeps (the PPO-ptx check)."""

from __future__ import annotations

import math

import torch

from instructrl.data.tokenize import IGNORE_INDEX, collate, pack_texts
from instructrl.losses import next_token_nll
from instructrl.modeling.loading import load_causal_lm, load_tokenizer
from instructrl.world.corpus import generate_corpus
from instructrl.world.kb import get_kb


@torch.no_grad()
def heldout_lm_loss(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32) -> dict:
    """Mean next-token NLL (nats/token) and perplexity on ``texts`` packed into windows."""
    model.eval()
    windows = pack_texts(texts, tokenizer, max_length)
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    for i in range(0, len(windows), batch_size):
        batch = {k: v.to(device) for k, v in collate(windows[i : i + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        s, c = next_token_nll(logits, batch["labels"], IGNORE_INDEX)
        nll += float(s)
        n += c
    loss = nll / max(1, n)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": n}


def world_heldout_texts(seed: int = 0, n_docs: int = 400) -> list[str]:
    """Pretraining-style documents of world ``seed`` that no training corpus holds (another sampling seed)."""
    return [d["text"] for d in generate_corpus(get_kb(seed), n_docs, seed=seed + 1000)]


def checkpoint_heldout_loss(path: str, texts: list[str]) -> float:
    """:func:`heldout_lm_loss` (nats/token) of the causal LM saved at ``path``."""
    tok = load_tokenizer(str(path))
    return heldout_lm_loss(load_causal_lm(str(path), tok), tok, texts)["loss"]
