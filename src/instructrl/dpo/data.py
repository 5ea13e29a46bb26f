"""DPO's side of comparison data: the token ids of each completion after its prompt, and the training units.

Records are read by :mod:`instructrl.data.rankings` (the reward model's formats: pairs in every form, K-way
rankings with ties). DPO scores log pi(y | x) on the completion's tokens only, so each completion becomes a
training example as in SFT: ``{"input_ids": prompt + completion + EOS, "labels": -100 on the prompt}``. A
prompt that leaves fewer than ``min_response_tokens`` tokens skips its ranking; a longer completion is cut
(and then has no EOS, as in SFT; both counted).
"""

from __future__ import annotations

import numpy as np

from instructrl.data.rankings import Ranking
from instructrl.data.template import encode_pair_text
from instructrl.data.tokenize import IGNORE_INDEX, TokenizeReport
from instructrl.training.loop import shuffled_plan


def encode_for_dpo(
    rankings: list[Ranking], tokenizer, max_length: int, min_response_tokens: int = 1
) -> tuple[list[Ranking], list[list[dict]], TokenizeReport]:
    """(kept rankings, [ranking][k] -> example of completion k, report of kept / skipped / truncated)."""
    report, kept, encoded = TokenizeReport(), [], []
    for r in rankings:
        rows = []
        for c in r.completions:
            p_ids, c_ids = encode_pair_text(tokenizer, r.prompt, c, r.raw_prompt)
            if len(p_ids) + min_response_tokens > max_length:
                break
            if len(p_ids) + len(c_ids) > max_length:
                c_ids = c_ids[: max_length - len(p_ids)]
                report.truncated_completion += 1
            rows.append({"input_ids": p_ids + c_ids, "labels": [IGNORE_INDEX] * len(p_ids) + c_ids})
        if len(rows) < len(r.completions):
            report.skipped_long_prompt += 1
            report.skipped_where.append(r.where)
            continue
        kept.append(r)
        encoded.append(rows)
    report.kept = len(kept)
    return kept, encoded, report


def prompt_ids(example: dict) -> list[int]:
    """The rendered prompt of an encoded completion (the tokens without a label)."""
    return [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]


class EpochUnits:
    """The training units of the shared loop: unit ``epoch * n + i`` is ranking ``i`` in that epoch, as
    ``(i, windows)`` with the indices of the pretraining windows it brings (DPO-ptx; none without).

    The windows are drawn for each (epoch, ranking) from a generator seeded by both, so every epoch mixes in
    fresh pretraining text and a resumed run draws exactly the windows the killed run would have."""

    def __init__(self, n_rankings: int, n_windows: int = 0, per_unit: int = 0, seed: int = 0):
        self.n, self.n_windows, self.per_unit, self.seed = n_rankings, n_windows, per_unit, seed
        self.order = shuffled_plan(n_rankings, seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, tuple[int, ...]]:
        epoch, i = divmod(int(index), self.n)
        if not (self.n_windows and self.per_unit):
            return i, ()
        rng = np.random.default_rng([self.seed, 1, epoch, i])
        return i, tuple(rng.choice(self.n_windows, size=self.per_unit, replace=self.per_unit > self.n_windows).tolist())

    def plan(self, epoch: int) -> np.ndarray:
        """The shared loop's epoch plan: every ranking once, in a seeded order per epoch."""
        return epoch * self.n + self.order(epoch)
