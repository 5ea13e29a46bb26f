"""What a label is: the Likert scale, the metadata flags and rank normalization (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from instructrl.errors import InstructRLError

# InstructGPT §3.4 / App. B.2: each output gets an overall quality score on a 1-7 Likert scale.
LIKERT_MIN, LIKERT_MAX = 1, 7

# InstructGPT Table 3: the metadata labelers record for each output (key -> label shown).
FLAGS: dict[str, str] = {
    "fails_to_follow_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for a customer assistant",
    "hallucination": "Hallucination (closed-domain task)",
    "satisfies_constraints": "Satisfies the constraint given in the instruction",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_violence": "Encourages or fails to discourage violence/abuse/terrorism/self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "expresses_opinion": "Expresses opinion",
    "expresses_moral_judgment": "Expresses moral judgment",
}

# InstructGPT §3.2: K = 4..9 outputs per ranking task; 2 is the least that makes one comparison.
K_MIN, K_MAX = 2, 9


class LabelError(InstructRLError):
    """A submitted label is invalid (the message says which field and why)."""


def check_likert(value: object, where: str) -> int:
    """An integer in 1..7, or LabelError naming ``where``."""
    if value is None or value == "":
        raise LabelError(f"{where}: choose a Likert score ({LIKERT_MIN}-{LIKERT_MAX})")
    try:
        score = int(str(value))
    except (TypeError, ValueError):
        raise LabelError(f"{where}: Likert score must be a whole number 1-7, got {value!r}") from None
    if not LIKERT_MIN <= score <= LIKERT_MAX:
        raise LabelError(f"{where}: Likert score must be between {LIKERT_MIN} and {LIKERT_MAX}, got {score}")
    return score


def check_flags(values: Iterable[str], where: str) -> list[str]:
    """Known flag keys, deduplicated, in the canonical (Table 3) order."""
    chosen = set(values)
    unknown = sorted(chosen - FLAGS.keys())
    if unknown:
        raise LabelError(f"{where}: unknown flag(s) {', '.join(unknown)}; known: {', '.join(FLAGS)}")
    return [key for key in FLAGS if key in chosen]


def dense_ranks(raw: Sequence[object], where: str = "ranks") -> list[int]:
    """Normalize raw rank values to dense ranks 1..m (1 = best; equal values are ties).

    ``[1, 3, 3, 4]`` becomes ``[1, 2, 2, 3]``: only the order matters, gaps are closed, ties share
    a rank (InstructGPT §3.4: ties allowed in the interface).
    """
    values: list[int] = []
    for i, value in enumerate(raw):
        try:
            values.append(int(str(value)))
        except (TypeError, ValueError):
            raise LabelError(f"{where}[{i}]: rank must be a whole number, got {value!r}") from None
    if any(v < 1 or v > len(values) for v in values):
        raise LabelError(f"{where}: every rank must be between 1 and {len(values)}, got {values}")
    order = {v: i + 1 for i, v in enumerate(sorted(set(values)))}
    return [order[v] for v in values]


def ranking_from_mapping(ranks: Mapping[int, object], completion_ids: Sequence[int]) -> list[int]:
    """Dense ranks in ``completion_ids`` order from a {completion_id: rank} mapping; all must be present."""
    missing = [cid for cid in completion_ids if cid not in ranks]
    if missing:
        raise LabelError(f"ranks: missing a rank for output(s) {missing}; rank every output")
    extra = sorted(set(ranks) - set(completion_ids))
    if extra:
        raise LabelError(f"ranks: output(s) {extra} do not belong to this task")
    return dense_ranks([ranks[cid] for cid in completion_ids])
