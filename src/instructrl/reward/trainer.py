"""The reward-model trainer: the shared loop (:mod:`instructrl.training.loop`) with the ranking loss.

* batching=prompts (default): a training unit is one ranking; its K completions are forwarded once each and all
  its C(K, 2) comparisons enter the loss together (InstructGPT §3.5, Eq. 1). ``batch_size`` counts prompts.
  With ``share_prompt`` the prompt's tokens are forwarded once per ranking, not once per completion
  (:func:`~instructrl.modeling.reward.prompt_shared_rewards`); the first micro-batch checks that this gives the
  plain forward's rewards, else (and under gradient checkpointing, FSDP, ZeRO-3, or batching=pairs) the plain
  forward is used.
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
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from instructrl.data.tokenize import left_pad
from instructrl.errors import DataError
from instructrl.losses import pairwise_loss, ranking_loss
from instructrl.modeling.reward import prompt_shared_rewards, score_sequences, sequence_rewards
from instructrl.reward.config import RMConfig
from instructrl.reward.data import Ranking, pair_units, prompt_units
from instructrl.reward.evaluation import comparison_report, flat_metrics
from instructrl.training.engines import describe, is_fsdp, zero_stage
from instructrl.training.loop import Trainer, shuffled_plan

log = logging.getLogger("instructrl.reward")
Unit = tuple[int, tuple[int, ...]]  # (ranking index, () for all completions or (winner, loser))


def evaluate_rankings(
    model: torch.nn.Module,
    pad_id: int,
    rankings: list[Ranking],
    encoded: list[list[list[int]]],
    heldout: set[str] | frozenset[str] = frozenset(),
    batch_size: int = 32,
) -> dict:
    """Score every completion once and report accuracy / log loss per labeler group (see evaluation.py)."""
    flat = [ids for seqs in encoded for ids in seqs]
    raw = score_sequences(model, flat, pad_id, batch_size)  # (sum K,)
    rewards = list(torch.split(raw, [len(seqs) for seqs in encoded]))
    return comparison_report(rankings, rewards, heldout)


class RMTrainer(Trainer):
    """Trains a reward model on rankings; see the module docstring."""

    def __init__(
        self,
        cfg: RMConfig,
        accelerator,
        model,
        tokenizer,
        rankings: list[Ranking],
        encoded: list[list[list[int]]],
        eval_rankings: list[Ranking],
        eval_encoded: list[list[list[int]]],
        out_dir: Path,
        heldout: set[str] | frozenset[str] = frozenset(),
    ):
        units: list[Unit] = prompt_units(len(rankings)) if cfg.batching == "prompts" else pair_units(rankings)
        super().__init__(
            cfg, accelerator, model, tokenizer, units, shuffled_plan(len(units), cfg.seed), len(units), out_dir, "rm"
        )
        self.rankings, self.encoded = rankings, encoded
        self.eval_rankings, self.eval_encoded, self.heldout = eval_rankings, eval_encoded, heldout
        self.use_margin = any(r.margin is not None for r in rankings)
        if self.use_margin and cfg.batching == "prompts" and any(len(r.completions) != 2 for r in rankings):
            raise DataError(
                "some comparisons carry a 'margin', which is defined for pairs only, but the data also "
                "holds K-way rankings: drop the margins or use --batching pairs"
            )
        self.state.update(forward_passes=0, pairs=0)
        self.eval_reports: dict[int, dict] = {}
        # None: decided on the first micro-batch (prompt_sharing_checked); False: the plain forward
        self.share_prompt: bool | None = None
        if not cfg.share_prompt or cfg.batching != "prompts":
            self.share_prompt = False
        elif cfg.gradient_checkpointing:
            log.info("share_prompt off: gradient checkpointing keeps no key-value cache while training")
            self.share_prompt = False
        elif is_fsdp(accelerator) or zero_stage(accelerator) == 3:
            # two forwards (prompts, then completions) into one backward: the engine frees each layer's gathered
            # weights after the first of its backward passes, and the prompt's graph still needs them
            log.info("share_prompt off: %s re-shards each layer's weights after its backward", describe(accelerator))
            self.share_prompt = False

    # ------------------------------------------------------------------ one batch
    def unit_rows(self, unit: Unit) -> tuple[list[list[int]], list[int], float]:
        """(token ids of the completions this unit forwards, their ranks, margin)."""
        i, pair = unit
        r, seqs = self.rankings[i], self.encoded[i]
        if not pair:  # InstructGPT §3.5: all K completions of the prompt, each forwarded once
            return seqs, r.ranks, r.margin or 0.0
        w, l = pair  # the ablation: this comparison on its own, both completions forwarded for it
        return [seqs[w], seqs[l]], [1, 2], r.margin or 0.0

    def loss(self, units: list[Unit]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch summed over its units (each unit's loss: the mean over its pairs), and sums
        of the stats: accuracy and log loss weighted by pairs, pairs, sequences forwarded, tokens."""
        rows = [self.unit_rows(u) for u in units]
        flat = [ids for seqs, _, _ in rows for ids in seqs]
        groups = [seqs for seqs, _, _ in rows]
        if self.share_prompt is None:
            self.share_prompt = self.prompt_sharing_checked(groups)
        rewards_flat = None
        if self.share_prompt:
            rewards_flat = prompt_shared_rewards(
                self.model, groups, self.tokenizer.pad_token_id, self.acc.device, self.cfg.length_buckets
            )
        if rewards_flat is None:  # the plain forward: every completion with its prompt
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
        pairs = stats["total_pairs"].double()
        n_tok = sum(len(ids) for ids in flat)
        sums = {
            "loss": loss.detach().double() * len(rows),
            "accuracy": stats["accuracy"].double() * pairs,
            "log_loss": stats["log_loss"].double() * pairs,
            "pairs": pairs,
            "sequences": pairs.new_tensor(float(len(flat))),
            "tokens": pairs.new_tensor(float(n_tok)),
        }
        return loss * len(rows), sums

    @torch.no_grad()
    def prompt_sharing_checked(self, groups: list[list[list[int]]]) -> bool:
        """Whether sharing each prompt's forward gives this model's plain rewards on ``groups`` (one micro-batch,
        in eval mode), agreed by every process: a causal decoder does, up to rounding; a bidirectional model or
        one without a key-value cache does not, and keeps the plain forward."""
        pad, device = self.tokenizer.pad_token_id, self.acc.device
        was_training = self.model.training
        self.model.eval()
        try:
            with self.acc.autocast():
                shared = prompt_shared_rewards(self.model, groups, pad, device, self.cfg.length_buckets)
                ids, mask = left_pad([s for seqs in groups for s in seqs], pad)
                plain = sequence_rewards(self.model, ids.to(device), mask.to(device))
            gap = float((shared - plain).abs().max()) if shared is not None else float("inf")
            scale = float(plain.abs().max())
        except (TypeError, ValueError, RuntimeError, AttributeError) as e:  # a forward without cache arguments
            gap, scale = float("inf"), 0.0
            log.debug("shared-prompt forward failed: %s: %s", type(e).__name__, e)
        finally:
            self.model.train(was_training)
        tolerance = 1e-4 + 1e-2 * scale if self.acc.mixed_precision in ("bf16", "fp16") else 1e-4 + 1e-4 * scale
        ok = torch.tensor(float(gap <= tolerance), device=device)
        ok = bool(self.acc.reduce(ok, reduction="sum").item() == self.acc.num_processes)
        if self.acc.is_main_process:
            if ok:
                log.info("share_prompt: each prompt forwarded once per ranking (max reward gap %.2g)", gap)
            else:
                log.info("share_prompt off: this model's shared-prompt rewards differ from its plain ones (%.3g)", gap)
        return ok

    def step_metrics(self, sums: dict[str, float], items: list[Unit], normalizer: float) -> dict[str, float]:
        self.state["forward_passes"] += int(sums["sequences"])
        self.state["pairs"] += int(sums["pairs"])
        pairs = max(sums["pairs"], 1)
        return {
            "loss": sums["loss"] / normalizer,
            "tokens": int(sums["tokens"]),
            "accuracy": sums["accuracy"] / pairs,
            "log_loss": sums["log_loss"] / pairs,
            "pairs": int(sums["pairs"]),
            "forward_passes": self.state["forward_passes"],
        }

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_rankings:
            return {}
        box = [None]
        if self.acc.is_main_process:
            box[0] = evaluate_rankings(
                self.acc.unwrap_model(self.model),
                self.tokenizer.pad_token_id,
                self.eval_rankings,
                self.eval_encoded,
                self.heldout,
                self.cfg.eval_batch_size,
            )
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
        step = (
            self.state["best_step"]
            if self.cfg.select_by != "last" and self.state["best_step"]
            else max(self.eval_reports)
        )
        return {"step": step, **self.eval_reports.get(step, self.eval_reports[max(self.eval_reports)])}
