"""Evaluation metrics as pure functions: win rates, means with standard errors, F1, BLEU.

Win rates count ties as 0.5 (as AlpacaFarm does) and come with the standard error of the mean, or,
when one prompt is judged several times (several models, several labelers), with a standard error
clustered by prompt.
F1 follows the SQuAD convention (lower-case, drop punctuation and articles, token overlap); an
unanswerable question (empty reference) scores 1 only for an empty or declining answer.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

DECLINE_PATTERNS = ("unanswerable", "i don't know", "i do not know", "no answer", "i have no comment")


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and sample size."""

    mean: float
    se: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "n": self.n}

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.se:.3f} (n={self.n})"


def mean_se(values: Iterable[float]) -> Estimate:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    m = sum(xs) / n
    if n == 1:
        return Estimate(m, float("nan"), 1)
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return Estimate(m, math.sqrt(var / n), n)


def clustered_mean_se(values: Iterable[float], clusters: Iterable[Hashable]) -> Estimate:
    """Mean with a cluster-robust standard error: judgments of one prompt are not independent.

    SE = sqrt(G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2) / n over G clusters (the CR1 sandwich
    estimator of a mean); with one judgment per cluster it equals :func:`mean_se`'s SE. NaN below two
    clusters.
    """
    xs, gs = [float(v) for v in values], list(clusters)
    if len(xs) != len(gs):
        raise ValueError(f"{len(xs)} values vs {len(gs)} cluster labels")
    n = len(xs)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    m = sum(xs) / n
    sums: dict[Hashable, float] = {}
    for x, g in zip(xs, gs):
        sums[g] = sums.get(g, 0.0) + (x - m)
    G = len(sums)
    if G < 2:
        return Estimate(m, float("nan"), n)
    return Estimate(m, math.sqrt(G / (G - 1) * sum(s * s for s in sums.values())) / n, n)


def choice_agreement(choices: Mapping[Hashable, Mapping[str, str]]) -> dict:
    """Inter-labeler agreement on pairwise choices, ``{item: {labeler: "left" | "right" | "tie"}}``.

    ``agreement``: share of labeler pairs on a shared item who made the same choice (a tie matches only a
    tie); ``agreement_excluding_ties``: the same over pairs where neither tied (as the paper's ranking
    agreement, InstructGPT §3.4). Rates are None when no item has two labelers.
    """
    same = pairs = same_strict = pairs_strict = items = 0
    for by_labeler in choices.values():
        if len(by_labeler) < 2:
            continue
        items += 1
        for a, b in combinations(sorted(by_labeler), 2):
            ca, cb = by_labeler[a], by_labeler[b]
            pairs += 1
            same += ca == cb
            if "tie" not in (ca, cb):
                pairs_strict += 1
                same_strict += ca == cb
    return {
        "agreement": same / pairs if pairs else None,
        "agreement_excluding_ties": same_strict / pairs_strict if pairs_strict else None,
        "labeler_pairs": pairs,
        "items": items,
    }


def outcome(score_a: float, score_b: float, tie_margin: float = 0.0) -> float:
    """1 if a beats b, 0.5 for a tie (|a - b| <= tie_margin), 0 otherwise."""
    if abs(score_a - score_b) <= tie_margin:
        return 0.5
    return 1.0 if score_a > score_b else 0.0


def win_rate(outcomes: Iterable[float]) -> Estimate:
    """Share of comparisons won against the baseline, ties counted 0.5."""
    outs = list(outcomes)
    bad = [o for o in outs if o not in (0, 0.5, 1)]
    if bad:
        raise ValueError(f"outcomes must be 0, 0.5 or 1; got {bad[:3]}")
    return mean_se(outs)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def is_decline(text: str) -> bool:
    t = text.strip().lower()
    return not t or any(p in t for p in DECLINE_PATTERNS)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of one prediction against one reference ("" = unanswerable)."""
    if not normalize_answer(reference):
        return 1.0 if is_decline(prediction) else 0.0
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, references: Sequence[str]) -> float:
    """Best F1 over the acceptable references (SQuAD/DROP take the max)."""
    return max(token_f1(prediction, r) for r in references) if references else token_f1(prediction, "")


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(r) for r in references))


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default 13a tokenization), 0-100."""
    import sacrebleu  # an optional extra (instructrl[eval])

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses vs {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def first_line(text: str) -> str:
    """Automatic evals cut generations at the first newline (InstructGPT App. D)."""
    return text.split("\n", 1)[0].strip()
