"""Synthetic preferences for the DPO tests: flag colours, the earlier in ORDER the better."""

from __future__ import annotations

import random

ORDER = ["red", "green", "blue", "black", "white"]  # best first


def flag_pairs(n: int, seed: int = 0) -> list[dict]:
    """{"prompt", "chosen", "rejected"}: one of the two best colours is chosen over one of the two worst."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        answer = f"The flag of Zor{i} is {{}}."
        rows.append(
            {
                "prompt": f"What color is the flag of Zor{i}?",
                "chosen": answer.format(rng.choice(ORDER[:2])),
                "rejected": answer.format(rng.choice(ORDER[-2:])),
            }
        )
    return rows


def flag_rankings(n: int, k: int = 4, seed: int = 0, tie_every: int = 0) -> list[dict]:
    """K-way rankings {"prompt", "completions", "ranks"} by ORDER; every ``tie_every``-th has its last two tied."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        picks = rng.sample(range(len(ORDER)), k)
        ranks = [sorted(picks).index(p) + 1 for p in picks]
        if tie_every and i % tie_every == 0:
            ranks = [min(r, k - 1) for r in ranks]  # the two worst share a rank
        rows.append(
            {
                "prompt": f"What color is the flag of Zor{i}?",
                "completions": [f"The flag of Zor{i} is {ORDER[p]}." for p in picks],
                "ranks": ranks,
            }
        )
    return rows
