"""Inter-labeler agreement on pairwise comparisons (InstructGPT §3.4: 72.6 +- 1.5% among training labelers).

Two labelers who ranked the same task agree on a pair of outputs when both order that pair the same
way. Pairs that either labeler tied are excluded (they carry no order to agree on).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations


def pair_agreement(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> tuple[int, int]:
    """(pairs ordered the same way, pairs ordered by both) for two rankings of the same outputs."""
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"rankings of different lengths: {len(ranks_a)} vs {len(ranks_b)}")
    agree = total = 0
    for i, j in combinations(range(len(ranks_a)), 2):
        da, db = ranks_a[i] - ranks_a[j], ranks_b[i] - ranks_b[j]
        if da == 0 or db == 0:  # a tie on either side: excluded
            continue
        total += 1
        agree += (da > 0) == (db > 0)
    return agree, total


@dataclass
class AgreementReport:
    agree: int = 0
    total: int = 0
    tasks: int = 0  # tasks ranked by two or more labelers
    by_pair: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (a, b) -> [agree, total]

    @property
    def rate(self) -> float | None:
        return self.agree / self.total if self.total else None

    @property
    def stderr(self) -> float | None:
        """Binomial standard error of the rate (comparisons treated as independent)."""
        if not self.total:
            return None
        p = self.agree / self.total
        return math.sqrt(p * (1 - p) / self.total)

    def to_dict(self) -> dict:
        return {
            "agreement": self.rate,
            "stderr": self.stderr,
            "agreeing_pairs": self.agree,
            "compared_pairs": self.total,
            "tasks": self.tasks,
            "by_pair": [
                {
                    "labelers": list(k),
                    "agreement": v[0] / v[1] if v[1] else None,
                    "agreeing_pairs": v[0],
                    "compared_pairs": v[1],
                }
                for k, v in sorted(self.by_pair.items())
            ],
        }


def agreement(rankings: Mapping[int, Mapping[str, Sequence[int]]]) -> AgreementReport:
    """Agreement over ``{task_id: {labeler: ranks in output order}}``, overall and per labeler pair."""
    report = AgreementReport()
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for by_labeler in rankings.values():
        if len(by_labeler) < 2:
            continue
        report.tasks += 1
        for a, b in combinations(sorted(by_labeler), 2):
            agree, total = pair_agreement(by_labeler[a], by_labeler[b])
            report.agree += agree
            report.total += total
            pairs[(a, b)][0] += agree
            pairs[(a, b)][1] += total
    report.by_pair = dict(pairs)
    return report
