"""How far a trained policy has moved from its starting point: KL(pi || pi_ref) on held-out prompts.

The estimate is the mean, over responses sampled from pi itself (temperature 1, no top-k or top-p: samples of
any other distribution would bias it), of sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) over the
response and its EOS: the k1 estimator of Schulman 2020, unbiased, the per-sequence KL of InstructGPT Eq. 2.
Used to put every alignment method on one axis (the win rate or reward model score against the KL spent).
"""

from __future__ import annotations

import math

import torch
from transformers import GenerationConfig

from instructrl.data.formats import Prompt
from instructrl.data.template import encode_prompt
from instructrl.data.tokenize import IGNORE_INDEX, collate, left_pad
from instructrl.losses import logprobs_from_logits, masked_sum


def response_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) summed log-probability of each row's labelled tokens under ``model`` (right-padded ``collate`` rows)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]  # (B, T-1)
    return masked_sum(logprobs_from_logits(logits.float(), labels), labels != IGNORE_INDEX, dim=1)  # (B,)


@torch.no_grad()
def sampled_kl(
    model,
    reference,
    tokenizer,
    prompts: list[Prompt],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """KL(model || reference) in nats per response on ``prompts``: ``{"kl", "kl_se", "response_length", "n"}``.

    The two models must share the tokenizer. Sampling uses a fixed seed and leaves the caller's random state
    untouched, so the same policy always gets the same estimate."""
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    sampling = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    was = (model.training, reference.training)
    model.eval()
    reference.eval()
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    per_sequence, lengths = [], []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(encoded), batch_size):
                part = encoded[start : start + batch_size]
                ids, mask = left_pad(part, pad)  # (b, P)
                out = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=sampling
                )
                rows = []
                for p, resp in zip(part, out[:, ids.shape[1] :].tolist()):
                    resp = resp[: resp.index(eos) + 1] if eos in resp else [t for t in resp if t != pad]
                    rows.append({"input_ids": p + resp, "labels": [IGNORE_INDEX] * len(p) + resp})
                    lengths.append(len(resp))
                batch = {k: v.to(device) for k, v in collate(rows, pad).items()}
                per_sequence.append(response_logprobs(model, batch) - response_logprobs(reference, batch))  # (b,)
    finally:
        model.train(was[0])
        reference.train(was[1])
    kl = torch.cat(per_sequence).double()  # (N,)
    n = kl.numel()
    se = float(kl.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return {"kl": float(kl.mean()), "kl_se": se, "response_length": sum(lengths) / max(n, 1), "n": n}
