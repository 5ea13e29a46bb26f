"""The reward model's side of comparison data: labeler groups (held-out labelers), the token ids it scores (read
at EOS), and its batching units (a whole ranking, or one pair).

The record formats (K-way rankings, the pairwise forms) and their parsing, validation and splits by prompt are
shared with DPO and live in :mod:`instructrl.data.rankings`; they are re-exported here.
"""

from __future__ import annotations

from typing import Any

from instructrl.data.rankings import (
    LoadReport,
    Ranking,
    load_rankings,
    split_by_prompt,
    split_text_prompt,
    to_ranking,
)
from instructrl.data.template import encode_pair_text
from instructrl.data.tokenize import TokenizeReport

__all__ = [
    "HELDOUT",
    "TRAIN",
    "LoadReport",
    "Ranking",
    "encode_rankings",
    "fit_length",
    "labeler_group",
    "load_rankings",
    "pair_units",
    "prompt_units",
    "split_by_prompt",
    "split_text_prompt",
    "to_ranking",
]

HELDOUT = "heldout"
TRAIN = "train"


# ----------------------------------------------------------------------------- groups
def _canonical(name: Any) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


def labeler_group(r: Ranking, heldout: set[str] | frozenset[str] = frozenset()) -> str | None:
    """'heldout' or 'train' for the labeler who ranked ``r``; None when the record says nothing about it.

    With a held-out list, a record is held out when its ``labeler`` or its ``labeler_group`` is listed.
    Otherwise the ``labeler_group`` field decides ('heldout', 'held-out', 'held_out' -> 'heldout'; any other
    value is kept as its own group name), and a bare ``labeler`` field means a training labeler."""
    labeler, group = r.meta.get("labeler"), r.meta.get("labeler_group")
    if heldout:
        if labeler is None and group is None:
            return None
        return HELDOUT if str(labeler) in heldout or str(group) in heldout else TRAIN
    if group is not None:
        return HELDOUT if _canonical(group) == HELDOUT else str(group)
    return TRAIN if labeler is not None else None


# ----------------------------------------------------------------------------- tokens
def fit_length(
    p_ids: list[int], c_ids: list[int], max_length: int, eos_id: int, min_response_tokens: int = 1
) -> tuple[list[int] | None, bool]:
    """Prompt + response within ``max_length``: a long response is cut and ends with EOS again (the score is
    read at EOS). Returns (ids or None when the prompt leaves too little room, truncated?)."""
    if len(p_ids) + len(c_ids) <= max_length:
        return p_ids + c_ids, False
    room = max_length - len(p_ids)
    if room < max(1, min_response_tokens):
        return None, False
    return p_ids + c_ids[: room - 1] + [eos_id], True


def encode_rankings(
    rankings: list[Ranking], tokenizer, max_length: int, min_response_tokens: int = 1
) -> tuple[list[Ranking], list[list[list[int]]], TokenizeReport]:
    """Token ids of every completion of every ranking: (kept rankings, [ranking][k] -> ids, report); the report
    counts rankings kept and skipped (prompt too long) and responses truncated."""
    report, kept, encoded = TokenizeReport(), [], []
    for r in rankings:
        seqs, truncated = [], 0
        for c in r.completions:
            p_ids, c_ids = encode_pair_text(tokenizer, r.prompt, c, r.raw_prompt)
            ids, cut = fit_length(p_ids, c_ids, max_length, tokenizer.eos_token_id, min_response_tokens)
            if ids is None:
                break
            seqs.append(ids)
            truncated += cut
        if len(seqs) < len(r.completions):
            report.skipped_long_prompt += 1
            report.skipped_where.append(r.where)
            continue
        report.truncated_completion += truncated
        kept.append(r)
        encoded.append(seqs)
    report.kept = len(kept)
    return kept, encoded, report


def prompt_units(n_rankings: int) -> list[tuple[int, tuple[int, ...]]]:
    """batching=prompts: one unit per ranking holding all its completions (InstructGPT §3.5)."""
    return [(i, ()) for i in range(n_rankings)]


def pair_units(rankings: list[Ranking]) -> list[tuple[int, tuple[int, ...]]]:
    """batching=pairs: one unit per comparison (winner, loser) of each ranking (the §3.5 ablation)."""
    return [(i, pair) for i, r in enumerate(rankings) for pair in r.pairs]
