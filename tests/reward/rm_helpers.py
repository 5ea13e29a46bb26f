"""Synthetic comparison data for the reward-model tests: labelers prefer some flag colours to others."""

from __future__ import annotations

import random
from pathlib import Path

from testkit import COLORS, write_jsonl

PREFERENCE = COLORS + ["gold", "silver"]  # red best, silver worst (K up to 10)


def color_rankings(n: int, k: int = 4, seed: int = 0, labelers: int = 4) -> list[dict]:
    """K-way rankings of "The flag of ZorN is C." in the order of C in PREFERENCE (ranks 1..K, no ties)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cols = rng.sample(PREFERENCE, k)
        order = sorted(cols, key=PREFERENCE.index)
        rows.append(
            {
                "prompt": f"What color is the flag of Zor{i}?",
                "completions": [f"The flag of Zor{i} is {c}." for c in cols],
                "ranks": [order.index(c) + 1 for c in cols],
                "labeler": f"L{i % labelers}",
            }
        )
    return rows


def write_rankings(path: Path, n: int, k: int = 4, seed: int = 0) -> Path:
    return write_jsonl(path, color_rankings(n, k, seed))
