"""Best-of-n sampling: n responses per prompt from a policy, scored by a frozen reward model, the best one kept.

The cheapest way to spend a reward model at inference time (Stiennon et al. 2020; Nakano et al. 2021, WebGPT;
Gao et al. 2022, "Scaling laws for reward model overoptimization", for the over-optimization curve of best-of-n
against the KL bound below). Also the data step of expert iteration
(:mod:`instructrl.expert`).

    from instructrl.modeling.best_of_n import sample_n, score, pick_best, best_of_n_kl

    result = best_of_n(policy, tokenizer, rm, prompts, 4, max_new_tokens=48)     # the three steps below in one
    result.texts, result.scores, result.best                                      # P best texts, (P, 4), (P,)

    gens = sample_n(policy, tokenizer, prompts, 16, max_new_tokens=48)            # P lists of 16 Generations
    scores = score(rm, None, [p for p in prompts for _ in range(16)],
                   [g.text for row in gens for g in row]).view(len(prompts), 16)  # (P, 16)
    for k in (1, 2, 4, 8, 16):                                                    # one set of samples, 5 arms
        best = pick_best(scores, k)                                               # (P,) index of the best of the first k
        kl = best_of_n_kl(k)                                                      # nats, an upper bound
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from instructrl.data.formats import Prompt
from instructrl.modeling.generation import Generation, generate


def sample_n(
    model,
    tokenizer,
    prompts: list[Prompt],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    max_prompt_tokens: int | None = None,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> list[list[Generation]]:
    """``n`` independent samples per prompt: a list of ``len(prompts)`` lists of ``n`` :class:`Generation`.

    Each prompt is repeated ``n`` times in a row and the whole list sampled by
    :func:`~instructrl.modeling.generation.generate` (so a batch holds copies of the same prompt: same length,
    little padding). Sample ``j`` of every prompt is the ``j``-th draw, so the first ``k`` samples of an ``n``
    are a sample of ``k`` (what :func:`pick_best` relies on)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 samples per prompt, got {n}")
    repeated = [p for p in prompts for _ in range(n)]
    flat = generate(
        model,
        tokenizer,
        repeated,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        max_prompt_tokens=max_prompt_tokens,
        progress=progress,
        autocast_dtype=autocast_dtype,
    )
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


def score(
    reward_model, rm_tokenizer, prompts: list[Prompt], responses: list[str], batch_size: int = 32
) -> torch.Tensor:
    """Normalized reward-model scores (N,) of each (prompt, response), on the CPU.

    ``reward_model`` is a :class:`~instructrl.modeling.reward.RewardModel` (e.g. from ``load_frozen_reward``),
    scored by its own :meth:`~instructrl.modeling.reward.RewardModel.score`: rendered prompt + response + EOS in
    the RM's tokenizer, position ids from the mask, the score read at the last real token (EOS), as in RM
    evaluation and in PPO (whose right-aligned rows give the same scores:
    tests/reward/test_rm_model.py::test_left_and_right_padding_give_the_same_rewards).
    ``rm_tokenizer`` must be None or the reward model's own tokenizer (the one it was trained with): responses
    are scored as text, so a policy with another tokenizer can be scored too."""
    if rm_tokenizer is not None and rm_tokenizer is not getattr(reward_model, "tokenizer", rm_tokenizer):
        raise ValueError(
            "score: rm_tokenizer must be None or the reward model's own tokenizer (reward_model.tokenizer)"
        )
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    return reward_model.score(prompts, responses, batch_size=batch_size)  # (N,)


def pick_best(scores: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Index (P,) of the highest-scoring sample among the first ``k`` of each prompt's row of ``scores`` (P, n).

    ``k=None`` means all ``n``. Ties go to the earlier sample. One (P, 16) matrix thus gives best-of-1, 2, 4,
    8 and 16 from the same draws (nested arms: Gao et al. 2022 estimate each n from one large sample)."""
    if scores.dim() != 2:
        raise ValueError(f"pick_best: scores must be (prompts, samples), got shape {tuple(scores.shape)}")
    n = scores.shape[1]
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"pick_best: k must be in [1, {n}] (the samples per prompt), got {k}")
    return scores[:, :k].argmax(dim=1)  # (P,) argmax returns the first maximal index


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base policy) in nats, by the analytic formula log(n) - (n-1)/n.

    Stiennon et al. 2020 (used by Gao et al. 2022 and Hilton & Gao 2022, "Measuring Goodhart's law", to put
    best-of-n and RL on one KL axis). Close when no single response is likely; in general an upper bound
    (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy", Thm. 3.1). 0 for n = 1."""
    if n < 1:
        raise ValueError(f"best_of_n_kl: n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


@dataclass
class BestOfN:
    """Every sample of a best-of-n draw with its score, and the chosen one per prompt."""

    samples: list[list[Generation]]  # P lists of n
    scores: torch.Tensor  # (P, n) normalized RM scores
    best: torch.Tensor  # (P,) index of the chosen sample

    @property
    def texts(self) -> list[str]:
        """The chosen response of each prompt."""
        return [row[b].text for row, b in zip(self.samples, self.best.tolist())]


def best_of_n(
    model,
    tokenizer,
    reward_model,
    prompts: list[Prompt],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> BestOfN:
    """:func:`sample_n`, :func:`score` (the reward model reads each prompt as the policy saw it) and
    :func:`pick_best` over all ``n`` samples. ``autocast_dtype`` applies to the sampling only: the scores
    that choose the best sample are computed as the reward model is loaded (fp32), outside the sampling's autocast."""
    samples = sample_n(
        model,
        tokenizer,
        prompts,
        n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        progress=progress,
        autocast_dtype=autocast_dtype,
    )
    flat_prompts = [p for p in prompts for _ in range(n)]
    texts = [g.text for row in samples for g in row]
    scores = score(reward_model, None, flat_prompts, texts, batch_size).view(len(prompts), n)  # (P, n)
    return BestOfN(samples, scores, pick_best(scores))
