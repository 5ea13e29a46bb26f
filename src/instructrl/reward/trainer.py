"""The reward-model trainer: the shared accelerate loop of :class:`LMTrainer` with the ranking loss.

* batching=prompts (default): a training unit is one ranking; its K completions are forwarded once each and all
  its C(K, 2) comparisons enter the loss together (InstructGPT §3.5, Eq. 1). ``batch_size`` counts prompts.
* batching=pairs: a unit is one comparison (w, l), its two completions forwarded for that pair alone, pairs
  shuffled across prompts (the §3.5 ablation: 2 * C(K, 2) forward passes per ranking). ``batch_size`` counts pairs.

The loss of a batch is the mean over its units of each unit's loss (per-prompt mean over its pairs), whatever the
split into processes and micro-batches. Pairs with a ``margin`` use -log sigmoid(r_c - r_r - margin) (Llama 2).
Everything else (seeded epoch order, LR schedule, gradient accumulation, atomic checkpoints and ``--resume``,
metrics.jsonl, model selection, final save) is the shared loop's.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from pathlib import Path

import torch

from instructrl.data.tokenize import left_pad
from instructrl.errors import DataError, InstructRLError
from instructrl.losses import pairwise_loss, ranking_loss
from instructrl.modeling.reward import score_sequences, sequence_rewards
from instructrl.reward.config import RMConfig
from instructrl.reward.data import Ranking, pair_units, prompt_units
from instructrl.reward.evaluation import comparison_report, flat_metrics
from instructrl.sft.trainer import LMTrainer, shuffled_plan

log = logging.getLogger("instructrl.reward")
Unit = tuple[int, tuple[int, ...]]  # (ranking index, () for all completions or (winner, loser))


def evaluate_rankings(model: torch.nn.Module, pad_id: int, rankings: list[Ranking], encoded: list[list[list[int]]],
                      heldout: set[str] | frozenset[str] = frozenset(), batch_size: int = 32) -> dict:
    """Score every completion once and report accuracy / log loss per labeler group (see evaluation.py)."""
    flat = [ids for seqs in encoded for ids in seqs]
    raw = score_sequences(model, flat, pad_id, batch_size)  # (sum K,)
    rewards = list(torch.split(raw, [len(seqs) for seqs in encoded]))
    return comparison_report(rankings, rewards, heldout)


class RMTrainer(LMTrainer):
    """Trains a reward model on rankings; see the module docstring."""

    def __init__(self, cfg: RMConfig, accelerator, model, tokenizer, rankings: list[Ranking],
                 encoded: list[list[list[int]]], eval_rankings: list[Ranking], eval_encoded: list[list[list[int]]],
                 out_dir: Path, heldout: set[str] | frozenset[str] = frozenset()):
        units: list[Unit] = prompt_units(len(rankings)) if cfg.batching == "prompts" else pair_units(rankings)
        super().__init__(cfg, accelerator, model, tokenizer, units, shuffled_plan(len(units), cfg.seed), len(units),
                         [], out_dir, "rm")
        self.rankings, self.encoded = rankings, encoded
        self.eval_rankings, self.eval_encoded, self.heldout = eval_rankings, eval_encoded, heldout
        self.use_margin = any(r.margin is not None for r in rankings)
        if self.use_margin and cfg.batching == "prompts" and any(len(r.completions) != 2 for r in rankings):
            raise DataError("some comparisons carry a 'margin', which is defined for pairs only, but the data also "
                            "holds K-way rankings: drop the margins or use --batching pairs")
        self.state.update(forward_passes=0, pairs=0)
        self.last: dict[str, float] = {}
        self.eval_reports: dict[int, dict] = {}

    # ------------------------------------------------------------------ one batch
    def unit_rows(self, unit: Unit) -> tuple[list[list[int]], list[int], float]:
        """(token ids of the completions this unit forwards, their ranks, margin)."""
        i, pair = unit
        r, seqs = self.rankings[i], self.encoded[i]
        if not pair:  # InstructGPT §3.5: all K completions of the prompt, each forwarded once
            return seqs, r.ranks, r.margin or 0.0
        w, l = pair  # the ablation: this comparison on its own, both completions forwarded for it
        return [seqs[w], seqs[l]], [1, 2], r.margin or 0.0

    def unit_loss(self, units: list[Unit]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """Loss (mean over the units) of one micro-batch, its stats and the number of sequences forwarded."""
        rows = [self.unit_rows(u) for u in units]
        flat = [ids for seqs, _, _ in rows for ids in seqs]
        ids, mask = left_pad(flat, self.tokenizer.pad_token_id)  # (N, T)
        rewards_flat = sequence_rewards(self.model, ids.to(self.acc.device), mask.to(self.acc.device))  # (N,)
        k_max = max(len(seqs) for seqs, _, _ in rows)
        prompt_idx = torch.tensor([p for p, (seqs, _, _) in enumerate(rows) for _ in seqs], device=self.acc.device)
        slot_idx = torch.tensor([k for seqs, _, _ in rows for k in range(len(seqs))], device=self.acc.device)
        rewards = rewards_flat.new_zeros(len(rows), k_max).index_put((prompt_idx, slot_idx), rewards_flat)  # (P, K)
        valid = torch.zeros(len(rows), k_max, dtype=torch.bool, device=self.acc.device)  # (P, K)
        valid[prompt_idx, slot_idx] = True
        ranks = torch.zeros(len(rows), k_max, dtype=torch.long, device=self.acc.device)  # (P, K)
        for p, (_, rk, _) in enumerate(rows):
            ranks[p, : len(rk)] = torch.tensor(rk)
        if self.use_margin:  # every unit is a pair here: (chosen, rejected) = slots (0, 1)
            margin = torch.tensor([m for _, _, m in rows], device=self.acc.device)  # (P,)
            loss, stats = pairwise_loss(rewards[:, 0], rewards[:, 1], margin)  # Llama 2 §3.2.2 margin
        else:
            loss, stats = ranking_loss(rewards, ranks, valid)  # InstructGPT Eq. 1, one batch element per prompt
        return loss, stats, len(flat)

    def train_step(self, step: int) -> tuple[float, int]:
        units = [self.pool[i] for i in self.batch_indices(step)]
        micro_batches = self.local_micro_batches(units)
        self.schedule_lr(step)
        self.model.train()
        # sums over this process: loss * units, accuracy * pairs, log loss * pairs, pairs, sequences, tokens
        totals = torch.zeros(6, device=self.acc.device, dtype=torch.float64)
        for j, mb in enumerate(micro_batches):
            ctx = self.acc.no_sync(self.model) if j < len(micro_batches) - 1 else nullcontext()
            with ctx:
                loss, stats, n_seq = self.unit_loss(mb)
                # mean over all units of the global batch; DDP averages gradients over processes
                self.acc.backward(loss * len(mb) / len(units) * self.acc.num_processes)
            pairs = stats["total_pairs"].double()
            n_tok = sum(len(ids) for u in mb for ids in self.unit_rows(u)[0])
            totals += torch.stack([loss.detach().double() * len(mb), stats["accuracy"].double() * pairs,
                                   stats["log_loss"].double() * pairs, pairs,
                                   torch.tensor(float(n_seq), device=pairs.device, dtype=torch.float64),
                                   torch.tensor(float(n_tok), device=pairs.device, dtype=torch.float64)])
        if self.cfg.max_grad_norm:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = self.acc.reduce(totals, reduction="sum")
        loss_sum, acc_sum, ll_sum, pairs, n_seq, n_tok = totals.tolist()
        loss_value = loss_sum / len(units)
        if not math.isfinite(loss_value):
            raise InstructRLError(f"rm: training loss became {loss_value} at step {step + 1}; lower the learning "
                                  f"rate. Last good checkpoint: {self.ckpts.latest() or 'none'}")
        self.state["forward_passes"] += int(n_seq)
        self.state["pairs"] += int(pairs)
        self.last = {"rm/accuracy": acc_sum / max(pairs, 1), "rm/log_loss": ll_sum / max(pairs, 1),
                     "rm/pairs": int(pairs), "rm/forward_passes": self.state["forward_passes"]}
        return loss_value, int(n_tok)

    def step_metrics(self) -> dict[str, float]:
        return dict(self.last)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_rankings:
            return {}
        from accelerate.utils import broadcast_object_list

        box = [None]
        if self.acc.is_main_process:
            box[0] = evaluate_rankings(self.acc.unwrap_model(self.model), self.tokenizer.pad_token_id,
                                       self.eval_rankings, self.eval_encoded, self.heldout, self.cfg.eval_batch_size)
        broadcast_object_list(box)
        report = box[0]
        step = self.state["step"]
        self.eval_reports[step] = report
        if self.acc.is_main_process:
            (self.out / "eval_results.json").write_text(json.dumps({"step": step, **report}, indent=1))
        return flat_metrics(report)

    def selected_report(self) -> dict | None:
        """The evaluation of the model that became the output (best step, or the last)."""
        if not self.eval_reports:
            return None
        step = self.state["best_step"] if self.cfg.select_by != "last" and self.state["best_step"] else max(self.eval_reports)
        return {"step": step, **self.eval_reports.get(step, self.eval_reports[max(self.eval_reports)])}
