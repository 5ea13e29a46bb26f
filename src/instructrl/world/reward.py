"""A programmatic reward for the miniature world: a simulated labeler's own utility of each response.

:class:`JudgeReward` is a module with a reward model's interface (``forward(input_ids, attention_mask)
-> (B,)`` on right-padded prompt + response rows), so ``run_ppo(cfg, reward_model=JudgeReward(...))``
optimizes the ground truth that a learned reward model only approximates. PPO against it measures how
far the policy and the PPO settings can go when the reward is exact, which separates what a reward
model costs from what the policy or the optimizer cannot do.

The reward of a response is ``scale * (utility - shift)``, where ``utility`` is the labeler's noiseless
preference (:meth:`Labeler.utility`, about 0..1); :func:`calibrate` picks ``scale`` and ``shift`` so the
rewards of given responses have the mean and spread of a reward model's scores on them.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from instructrl.data.template import encode_prompt
from instructrl.errors import DataError
from instructrl.world.labelers import Labeler, reference_judge


class JudgeReward(nn.Module):
    """``scale * (labeler.utility(record, response) - shift)`` of each row, from its token ids.

    ``records`` are the world's prompt records (``{"prompt": ..., "task": ...}``) that PPO samples
    prompts from; a row is matched to its record by the token ids of the rendered prompt it starts
    with, and the rest, decoded without special tokens, is the response.
    """

    def __init__(
        self, tokenizer, records: list[dict], labeler: Labeler | None = None, scale: float = 1.0, shift: float = 0.0
    ):
        super().__init__()
        if not records:
            raise DataError("JudgeReward: no prompt records given")
        self.tokenizer, self.scale, self.shift = tokenizer, float(scale), float(shift)
        self.records: dict[tuple[int, ...], dict] = {}
        for i, rec in enumerate(records):
            if "task" not in rec or "prompt" not in rec:
                raise DataError(
                    f"JudgeReward: prompt record {i + 1} ({str(rec)[:80]}) has no 'prompt' or no "
                    "'task': only the miniature world's prompt files can be judged"
                )
            self.records[tuple(encode_prompt(tokenizer, rec["prompt"]))] = rec
        self.labeler = labeler or reference_judge(records[0]["task"].get("world", 0))
        self.lengths = sorted({len(k) for k in self.records}, reverse=True)
        self.calls = 0

    def split(self, ids: list[int]) -> tuple[dict, list[int]]:
        """(prompt record, response ids) of one row's real tokens."""
        for n in self.lengths:  # longest first: a prompt that extends another is matched as itself
            rec = self.records.get(tuple(ids[:n]))
            if rec is not None:
                return rec, ids[n:]
        raise DataError(f"JudgeReward: a row starts with no known prompt: {self.tokenizer.decode(ids[:40])!r}")

    def utilities(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[float]:
        out = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            rec, resp = self.split([t for t, m in zip(ids, mask) if m])
            out.append(self.labeler.utility(rec, self.tokenizer.decode(resp, skip_special_tokens=True).strip()))
        return out

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        u = torch.tensor(self.utilities(input_ids, attention_mask), dtype=torch.float32, device=input_ids.device)
        return self.scale * (u - self.shift)


def calibrate(utilities: list[float], scores: list[float]) -> tuple[float, float]:
    """(scale, shift) that give ``utilities`` the mean and standard deviation of ``scores`` (a reward
    model's scores of the same responses), so a KL coefficient tuned for that RM means the same."""
    if len(utilities) < 2 or len(utilities) != len(scores):
        raise ValueError("calibrate: need two or more (utility, score) pairs of equal count")
    su, ss = statistics.pstdev(utilities), statistics.pstdev(scores)
    if su == 0:
        raise ValueError("calibrate: every utility is the same; nothing to scale")
    scale = ss / su
    return scale, statistics.fmean(utilities) - statistics.fmean(scores) / scale
