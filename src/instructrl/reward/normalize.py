"""Reward normalization after training, stored with the checkpoint and applied whenever the RM scores.

* ``demonstrations`` (default when demonstrations are given): a bias so that labeler demonstrations score mean 0
  (InstructGPT §3.5), gain 1.
* ``reference``: gain and bias so that samples of the reference policy score mean 0, std 1 (lm-human-preferences;
  Ziegler et al. 2019; Huang et al. 2023 RM detail 3). Samples are drawn at temperature 1, seeded.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from instructrl.data.formats import load_demonstrations, load_prompts
from instructrl.errors import DataError
from instructrl.losses import normalization_bias, normalization_gain_bias
from instructrl.modeling.generation import generate
from instructrl.modeling.loading import load_causal_lm, load_tokenizer
from instructrl.modeling.reward import RewardModel

log = logging.getLogger("instructrl.reward")


def _stats(raw: torch.Tensor) -> dict[str, float]:
    return {"count": int(raw.numel()), "raw_mean": float(raw.mean()), "raw_std": float(raw.std(unbiased=False))}


def demonstration_normalization(
    rm: RewardModel, source: str, limit: int = 1024, batch_size: int = 32
) -> dict[str, Any]:
    """Bias b with mean(raw(demonstrations)) + b = 0 (InstructGPT §3.5); gain 1."""
    demos = load_demonstrations(source)[:limit]
    raw = rm.score_raw([d.prompt for d in demos], [d.completion for d in demos], batch_size)  # (N,)
    bias = normalization_bias(raw)  # InstructGPT §3.5: demonstrations get mean reward 0
    log.info("normalization: bias %.4f so that %d demonstrations score mean 0", float(bias), raw.numel())
    return {"gain": 1.0, "bias": float(bias), "method": "demonstrations", "source": source, **_stats(raw)}


def reference_normalization(
    rm: RewardModel,
    policy: str,
    prompts_source: str,
    *,
    limit: int = 1024,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Gain g and bias b with g * raw + b of mean 0, std 1 on reference-policy samples (lm-human-preferences)."""
    prompts = [p.prompt for p in load_prompts(prompts_source)][:limit]
    if len(prompts) < 2:
        raise DataError(f"{prompts_source}: --normalize reference needs at least 2 prompts, found {len(prompts)}")
    tokenizer = load_tokenizer(policy, padding_side="left")
    model = load_causal_lm(policy, tokenizer, init_from_config=False).to(rm.device)
    with torch.random.fork_rng(devices=[rm.device] if rm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        gens = generate(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0, batch_size=batch_size
        )
    del model
    raw = rm.score_raw(prompts, [g.text for g in gens], batch_size)  # (N,)
    try:
        gain, bias = normalization_gain_bias(raw)  # Huang et al. 2023 RM detail 3: g = 1/std, b = -g * mean
    except ValueError as e:
        raise DataError(f"--normalize reference: {e} (policy {policy}, {len(prompts)} samples)") from None
    log.info("normalization: gain %.4f, bias %.4f from %d samples of %s", float(gain), float(bias), raw.numel(), policy)
    return {
        "gain": float(gain),
        "bias": float(bias),
        "method": "reference",
        "policy": policy,
        "source": prompts_source,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "finished_share": sum(g.finished for g in gens) / len(gens),
        **_stats(raw),
    }
