"""Comparison data, the record formats every preference stage reads (the reward model, DPO): K-way rankings and
the pairwise forms users already have.

Every record becomes one :class:`Ranking` (a prompt, K >= 2 completions and their ranks, 1 = best):

* K-way ranking: ``{"prompt", "completions": [...], "ranks": [...]}`` (InstructGPT §3.2: K = 4..9 outputs
  ranked by a labeler). Equal ranks are ties: allowed, and they give no comparison pair (App. A).
* explicit pair: ``{"prompt", "chosen", "rejected"}`` -> K = 2, ranks [1, 2].
* implicit-prompt pair: ``{"chosen", "rejected"}`` holding full texts or conversations that share their
  prompt; the prompt is their longest common prefix of messages, or of text cut back to a word boundary.
  A text prefix found this way already carries its own format, so it is scored verbatim (no template).
* an optional ``margin`` (a number; Llama 2 §3.2.2) on pairs; ``reference_ranks`` (a noiseless judge's
  ranks of the same completions, for the judge-ceiling report); completions may be strings or one
  assistant message. Every other field (``labeler``, ``labeler_group``, ...) is kept in ``meta``.

Policy for bad input: a malformed record raises :class:`DataError` naming its file:line and field. A
ranking whose completions all share one rank has no comparison: it is skipped and counted (ties are
allowed, so this is not an error), and the count is logged and written to ``data_report.json``; a file
where every ranking is tied is an error (nothing to learn from).

How a stage tokenizes and batches rankings is its own (``reward/data.py``, ``dpo/data.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructrl.data.formats import Prompt, check_messages, check_text, missing_columns_error, parse_prompt_value
from instructrl.data.io import Record, read_records
from instructrl.data.template import as_messages
from instructrl.errors import DataError
from instructrl.losses import pairs_from_ranks

log = logging.getLogger("instructrl.data")


@dataclass
class Ranking:
    """One prompt with K ranked completions (rank 1 = best; equal ranks are ties)."""

    prompt: Prompt
    completions: list[str]
    ranks: list[int]
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    reference_ranks: list[int] | None = None
    raw_prompt: bool = False  # the prompt text is scored verbatim, without the template

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return pairs_from_ranks(self.ranks)

    def prompt_key(self) -> str:
        """Identity of the prompt, for splits by prompt."""
        return json.dumps(self.prompt, sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------- parsing
def _completion(value: Any, rec: Record, column: str) -> str:
    """A completion: a string, or one assistant message. It may be empty: a policy that ends its
    response at once produced an output that labelers rank like any other (it is scored on EOS)."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        msgs = check_messages(value, rec, column)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise DataError(f"{rec.where}: '{column}' as messages must be one assistant message")
        return check_text(msgs[0]["content"], rec, f"{column}.content", allow_empty=True)
    return check_text(value, rec, column, allow_empty=True)


def _ranks(value: Any, rec: Record, column: str, k: int) -> list[int]:
    if not isinstance(value, list):
        raise DataError(f"{rec.where}: '{column}' must be a list of integers (1 = best), got {type(value).__name__}")
    if len(value) != k:
        raise DataError(f"{rec.where}: '{column}' has {len(value)} entries but there are {k} completions")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{rec.where}: {column}[{i}] = {v!r} is not an integer rank (1 = best)")
        if v < 1:
            raise DataError(f"{rec.where}: {column}[{i}] = {v} is not a rank (ranks start at 1 = best)")
    # ranks run 1, 2, 3... without gaps; tied completions share a rank, and the next rank either follows it
    # (1, 2, 2, 3) or skips the tied places (1, 2, 2, 4); one rank shared by all is a tie (skipped and counted)
    levels = sorted(set(value))
    dense = levels == list(range(1, len(levels) + 1))
    if len(levels) > 1 and not dense and any(r != 1 + sum(x < r for x in value) for r in levels):
        raise DataError(
            f"{rec.where}: '{column}' = {value} are not the ranks of {k} completions: they must run from 1 (best) "
            f"up without gaps, tied completions sharing a rank"
        )
    return list(value)


def _margin(rec: Record) -> float | None:
    m = rec.data.get("margin")
    if m is None:
        return None
    if isinstance(m, bool) or not isinstance(m, (int, float)):
        raise DataError(f"{rec.where}: 'margin' must be a number, got {m!r}")
    return float(m)


def _response_after(prompt: Prompt, value: Any, rec: Record, column: str) -> str:
    """The response in ``chosen``/``rejected`` given an explicit prompt: a string, one assistant message, or the
    whole conversation (prompt messages followed by one assistant message)."""
    if not isinstance(value, list) or len(value) <= 1:
        return _completion(value, rec, column)
    msgs = check_messages(value, rec, column)
    head = as_messages(prompt)
    if msgs[: len(head)] != head or len(msgs) != len(head) + 1:
        raise DataError(f"{rec.where}: '{column}' must be the prompt's messages followed by one assistant message")
    return _completion(msgs[-1:], rec, column)


def split_text_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen_response, rejected_response) of two texts sharing a prompt.

    The split is at their longest common prefix, moved back to the last whitespace in it so that no word is
    cut (the whitespace starts the responses, as BPE tokenizers attach it to the next word)."""
    n, limit = 0, min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = max((i for i in range(n) if chosen[i].isspace()), default=n)
    while 0 < cut < n and chosen[cut - 1].isspace():  # the whole whitespace run goes to the responses
        cut -= 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _implicit_pair(rec: Record) -> tuple[Prompt, str, str, bool]:
    chosen, rejected = rec.data["chosen"], rec.data["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        check_text(chosen, rec, "chosen")
        check_text(rejected, rec, "rejected")
        prompt, c, r = split_text_prompt(chosen, rejected)
        if not prompt.strip():
            raise DataError(f"{rec.where}: 'chosen' and 'rejected' share no prompt text; add a 'prompt' column")
        for text, column in ((c, "chosen"), (r, "rejected")):
            if not text.strip():
                raise DataError(f"{rec.where}: '{column}' has an empty response after the shared prompt")
        return prompt, c, r, True
    if isinstance(chosen, list) and isinstance(rejected, list):
        c_msgs, r_msgs = check_messages(chosen, rec, "chosen"), check_messages(rejected, rec, "rejected")
        n = 0
        while n < min(len(c_msgs), len(r_msgs)) and c_msgs[n] == r_msgs[n]:
            n += 1
        prompt = c_msgs[:n]
        if not prompt or prompt[-1]["role"] == "assistant":
            raise DataError(
                f"{rec.where}: 'chosen' and 'rejected' must share their messages up to a final "
                f"assistant message (the shared part is the prompt)"
            )
        c_rest, r_rest = c_msgs[n:], r_msgs[n:]
        if len(c_rest) != 1 or len(r_rest) != 1:
            raise DataError(
                f"{rec.where}: 'chosen' and 'rejected' must differ only in their last (assistant) "
                f"message; they differ earlier or have extra turns"
            )
        return prompt, _completion(c_rest, rec, "chosen"), _completion(r_rest, rec, "rejected"), False
    raise DataError(f"{rec.where}: 'chosen' and 'rejected' must both be strings or both be message lists")


def to_ranking(rec: Record) -> Ranking:
    """Parse one record in any supported form (see the module docstring)."""
    d = rec.data
    if "completions" in d or "ranks" in d:
        if "completions" not in d or "ranks" not in d or "prompt" not in d:
            raise missing_columns_error(rec, "columns 'prompt', 'completions' and 'ranks' for a K-way ranking")
        comps = d["completions"]
        if not isinstance(comps, list) or len(comps) < 2:
            raise DataError(f"{rec.where}: 'completions' must be a list of at least 2 responses")
        completions = [_completion(c, rec, f"completions[{i}]") for i, c in enumerate(comps)]
        ranks = _ranks(d["ranks"], rec, "ranks", len(completions))
        used = {"prompt", "completions", "ranks", "reference_ranks", "margin"}
        prompt, raw = parse_prompt_value(d["prompt"], rec), False
    elif "chosen" in d and "rejected" in d:
        if "prompt" in d:
            prompt, raw = parse_prompt_value(d["prompt"], rec), False
            completions = [
                _response_after(prompt, d["chosen"], rec, "chosen"),
                _response_after(prompt, d["rejected"], rec, "rejected"),
            ]
        else:
            prompt, c, r, raw = _implicit_pair(rec)
            completions = [c, r]
        ranks = [1, 2]
        used = {"prompt", "chosen", "rejected", "reference_ranks", "margin"}
    elif "chosen" in d or "rejected" in d:
        missing = "rejected" if "chosen" in d else "chosen"
        raise DataError(f"{rec.where}: missing column '{missing}'; columns found: {', '.join(sorted(d))}")
    else:
        raise missing_columns_error(
            rec,
            "'prompt', 'completions' and 'ranks' (K-way ranking), or 'chosen' and "
            "'rejected' with an optional 'prompt' (pairwise comparison)",
        )
    reference = d.get("reference_ranks")
    reference = None if reference is None else _ranks(reference, rec, "reference_ranks", len(completions))
    margin = _margin(rec)
    if margin is not None and len(completions) != 2:
        raise DataError(f"{rec.where}: 'margin' is only defined for pairwise comparisons (2 completions)")
    return Ranking(
        prompt, completions, ranks, rec.where, {k: v for k, v in d.items() if k not in used}, margin, reference, raw
    )


@dataclass
class LoadReport:
    records: int = 0
    kept: int = 0
    skipped_all_tied: int = 0
    skipped_where: list[str] = field(default_factory=list)

    def log(self, what: str) -> None:
        log.info(
            "%s: %d of %d rankings kept; %d skipped because all their completions share one rank",
            what,
            self.kept,
            self.records,
            self.skipped_all_tied,
        )
        if self.skipped_where:
            more = len(self.skipped_where) - 5
            log.info("  skipped: %s%s", ", ".join(self.skipped_where[:5]), f" and {more} more" if more > 0 else "")


def load_rankings(source: str, split: str = "train", what: str = "comparison data") -> tuple[list[Ranking], LoadReport]:
    """Read and parse every record; rankings without any comparison pair are skipped and counted."""
    report, out = LoadReport(), []
    for rec in read_records(source, split=split, what=what):
        report.records += 1
        ranking = to_ranking(rec)
        if not ranking.pairs:  # all tied: ties are allowed and give no pair (InstructGPT App. A)
            report.skipped_all_tied += 1
            report.skipped_where.append(rec.where)
            continue
        out.append(ranking)
    report.kept = len(out)
    report.log(f"{what} {source}")
    if not out:
        raise DataError(
            f"{source}: none of its {report.records} rankings has two different ranks, so there is "
            f"no comparison to learn from"
        )
    return out, report


# ----------------------------------------------------------------------------- splits
def comparison_counts(train: list[Ranking], held_out: list[Ranking]) -> dict[str, int]:
    """What a stage trained on comparisons (the reward model, DPO) reports of its data in data_report.json."""
    return {
        "train_rankings": len(train),
        "eval_rankings": len(held_out),
        "train_pairs": sum(len(r.pairs) for r in train),
        "eval_pairs": sum(len(r.pairs) for r in held_out),
        "train_completions": sum(len(r.completions) for r in train),
    }


def split_by_prompt(rankings: list[Ranking], fraction: float, seed: int) -> tuple[list[Ranking], list[Ranking]]:
    """Hold out ``fraction`` of the distinct prompts (all their rankings together), deterministically."""
    keys = sorted({r.prompt_key() for r in rankings})
    if fraction <= 0 or len(keys) < 2:
        return rankings, []
    order = np.random.default_rng(seed).permutation(len(keys))
    n_eval = min(len(keys) - 1, max(1, round(fraction * len(keys))))
    held = {keys[i] for i in order[:n_eval]}
    return [r for r in rankings if r.prompt_key() not in held], [r for r in rankings if r.prompt_key() in held]
