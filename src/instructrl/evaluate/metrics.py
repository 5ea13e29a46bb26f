"""Evaluation metrics as pure functions: win rates, means with standard errors, F1, BLEU.

Win rates count ties as 0.5 (as AlpacaFarm does) and come with the standard error of the mean.
F1 follows the SQuAD convention (lower-case, drop punctuation and articles, token overlap); an
unanswerable question (empty reference) scores 1 only for an empty or declining answer.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
