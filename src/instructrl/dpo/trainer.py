"""The DPO trainer: the shared loop (:mod:`instructrl.training.loop`) with the DPO loss (Rafailov et al. 2023).

* A training unit is one prompt with its ranking (a pair is a ranking with K = 2). Its K completions are
  forwarded once each through the policy and the frozen reference (InstructGPT §3.5 batching), giving the
  per-sequence log-ratios h_k = log pi(y_k|x) - log pi_ref(y_k|x) over completion tokens only; the loss is
  the DPO / cDPO / IPO loss over all its pairs, or the Plackett-Luce loss of the whole ranking (``losses.py``).
  ``batch_size`` counts prompts; the loss of a batch is the mean over its prompts.
* DPO-ptx: each unit also brings ``ptx_per_unit`` pretraining windows, forwarded in the same policy pass; the
  unit's loss gains ``ptx_coef`` times their mean token NLL (InstructGPT Eq. 2's pretraining term).
* At each evaluation point: the same metrics on held-out comparisons, and KL(pi || pi_ref) on held-out
  prompts: the mean per-sequence log-ratio of responses sampled from the policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from torch.nn.utils.rnn import pad_sequence
from transformers import GenerationConfig

from instructrl.data.tokenize import IGNORE_INDEX, collate, left_pad
from instructrl.dpo.config import DPOConfig
from instructrl.dpo.data import EpochUnits, prompt_ids
from instructrl.losses import dpo_ranking_loss, logprobs_from_logits, masked_mean, masked_sum, plackett_luce_dpo_loss
from instructrl.training.loop import Trainer

Unit = tuple[int, tuple[int, ...]]  # (ranking index, pretraining window indices)
# the sums one micro-batch reports; pair-weighted ones are weighted by their pairs, per-unit ones by units
PAIR_STATS = ("accuracy", "log_loss", "margin", "chosen_reward", "rejected_reward")


def token_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each labelled token, which tokens are labelled), both (B, T-1): position t of the
    logits predicts token t+1."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]  # (B, T-1)
    return logprobs_from_logits(logits, labels), labels != IGNORE_INDEX  # -100 scores 0 and is masked


def preference_metrics(sums: dict[str, float], units: float) -> dict[str, float]:
    """Loss (mean over units) and the pair-weighted statistics from summed micro-batch statistics."""
    pairs = max(sums["pairs"], 1.0)
    out = {"loss": sums["loss"] / units, **{k: sums[k] / pairs for k in PAIR_STATS}, "pairs": int(sums["pairs"])}
    if "ptx_loss" in sums:
        out["ptx_loss"] = sums["ptx_loss"] / units
    return out


class DPOTrainer(Trainer):
    """Trains a policy on comparisons with a DPO loss; see the module docstring."""

    def __init__(
        self,
        cfg: DPOConfig,
        accelerator,
        model,
        ref_model,
        tokenizer,
        encoded: list[list[dict]],
        ranks: list[list[int]],
        eval_encoded: list[list[dict]],
        eval_ranks: list[list[int]],
        out_dir: Path,
        ptx_windows: list[dict] | None = None,
    ):
        self.ptx = ptx_windows or None  # the pretraining windows of DPO-ptx
        units = EpochUnits(len(encoded), len(self.ptx or ()), cfg.ptx_per_unit if self.ptx else 0, cfg.seed)
        super().__init__(cfg, accelerator, model, tokenizer, units, units.plan, len(encoded), out_dir, "dpo")
        # the reference: a frozen copy of the initial policy, or None for the policy with its LoRA adapters disabled
        self.ref = ref_model.to(accelerator.device) if ref_model is not None else None
        self.encoded, self.ranks = encoded, ranks
        self.eval_encoded, self.eval_ranks = eval_encoded, eval_ranks
        # held-out prompts for the KL measurement: each distinct rendered prompt once, with room for the response
        room = cfg.max_length - cfg.eval_max_new_tokens
        distinct = {tuple(prompt_ids(rows[0])): None for rows in eval_encoded}
        self.kl_prompts = [list(p) for p in distinct if len(p) <= room][: cfg.eval_kl_prompts]
        # samples of the policy's own distribution: temperature 1, no top-k / top-p, none of the checkpoint's
        # generation settings (a KL estimate from samples of another distribution would be biased)
        self.sampling = GenerationConfig(
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=cfg.eval_max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    # ------------------------------------------------------------------ log-ratios
    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference model, in eval mode and without gradients."""
        if self.ref is not None:
            with torch.no_grad():
                yield self.ref
            return
        policy = self.acc.unwrap_model(self.model)  # LoRA: the policy itself with its adapters disabled
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad(), policy.disable_adapter():
                yield policy
        finally:
            policy.train(was_training)

    def preference_loss(
        self, model, encoded: list[list[dict]], ranks: list[list[int]], windows: list[dict] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss summed over the prompts, summed stats) of the policy ``model`` on the prompts whose completions
        are ``encoded`` ([prompt][k] -> example) with ``ranks``, plus the pretraining term on ``windows``."""
        completions, windows = [row for rows in encoded for row in rows], windows or []
        n, pad = len(completions), self.tokenizer.pad_token_id
        # one policy pass over the completions and the pretraining windows (a single forward, as DDP wants)
        batch = {k: v.to(self.acc.device) for k, v in collate(completions + windows, pad).items()}
        with self.acc.autocast():
            logp, labelled = token_logprobs(model, batch)  # (B, T-1) each
        policy_lp = masked_sum(logp[:n], labelled[:n], dim=1)  # (N,) log pi(y|x) over completion tokens
        with self.reference() as ref, self.acc.autocast():
            ref_logp, _ = token_logprobs(ref, {k: v[:n] for k, v in batch.items()})  # same rows, same padding
        ref_lp = masked_sum(ref_logp, labelled[:n], dim=1)  # (N,) log pi_ref(y|x)
        sizes = [len(rows) for rows in encoded]
        logratios = pad_sequence(torch.split(policy_lp - ref_lp, sizes), batch_first=True)  # (P, K)
        rank_t = pad_sequence([torch.tensor(r) for r in ranks], batch_first=True).to(self.acc.device)  # (P, K) 0: pad
        cfg = self.cfg
        if cfg.ranking_loss == "plackett-luce":  # the whole ranking: Rafailov et al. 2023 App. A.3
            loss, stats = plackett_luce_dpo_loss(logratios, rank_t, rank_t > 0, cfg.beta)
        else:  # all pairs of a prompt in one batch element (InstructGPT §3.5); Rafailov et al. 2023 Eq. 7
            loss, stats = dpo_ranking_loss(logratios, rank_t, rank_t > 0, cfg.beta, cfg.loss_type, cfg.label_smoothing)
        pairs = stats["total_pairs"].double()
        sums = {
            "loss": stats["per_prompt_loss"].sum().double(),
            **{k: stats[k].double() * pairs for k in PAIR_STATS},
            "pairs": pairs,
            "tokens": pairs.new_tensor(float(sum(len(r["input_ids"]) for r in completions + windows))),
        }
        total = loss * stats["num_prompts"]  # the mean over prompts with a pair, as a sum
        if windows:
            # InstructGPT Eq. 2's pretraining term: each window's mean token NLL, averaged over a unit's windows
            ptx = masked_mean(-logp[n:], labelled[n:], dim=1).sum() / cfg.ptx_per_unit  # summed over units
            total = total + cfg.ptx_coef * ptx
            sums["ptx_loss"] = ptx.detach().double()
        return total, sums

    # ------------------------------------------------------------------ what the shared loop asks for
    def loss(self, units: list[Unit]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        windows = [self.ptx[w] for _, ws in units for w in ws] if self.ptx else []
        return self.preference_loss(
            self.model, [self.encoded[i] for i, _ in units], [self.ranks[i] for i, _ in units], windows
        )

    def step_metrics(self, sums: dict[str, float], items: list[Unit], normalizer: float) -> dict[str, float]:
        return {**preference_metrics(sums, normalizer), "tokens": int(sums["tokens"])}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_encoded:
            return {}
        box = [None]
        if self.acc.is_main_process:
            box[0] = self.held_out_metrics(self.acc.unwrap_model(self.model))
        broadcast_object_list(box)
        return box[0]

    def held_out_metrics(self, model) -> dict[str, float]:
        """``dpo/eval_*``: the training metrics on the held-out comparisons, and the KL to the reference."""
        was_training = model.training
        model.eval()
        try:
            sums: dict[str, float] = {}
            step = self.cfg.eval_batch_size
            for start in range(0, len(self.eval_encoded), step):
                end = start + step
                _, part = self.preference_loss(model, self.eval_encoded[start:end], self.eval_ranks[start:end])
                for k, v in part.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            metrics = preference_metrics(sums, len(self.eval_encoded))
            if self.kl_prompts:
                metrics.update(self.sampled_kl(model))
        finally:
            model.train(was_training)
        return {f"dpo/eval_{k}": v for k, v in metrics.items()}

    def sampled_kl(self, model) -> dict[str, float]:
        """KL(pi || pi_ref) on held-out prompts: the mean over responses sampled from the policy of
        sum_t log pi(y_t) - log pi_ref(y_t) (the k1 estimator, summed over the response and its EOS)."""
        eos, pad, step = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, self.cfg.eval_batch_size
        rows = []
        # the same samples at every evaluation point (a fixed seed), and the training RNG left untouched
        with torch.random.fork_rng(devices=[self.acc.device] if self.acc.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            for start in range(0, len(self.kl_prompts), step):
                prompts = self.kl_prompts[start : start + step]
                ids, mask = left_pad(prompts, pad)
                out = model.generate(
                    input_ids=ids.to(self.acc.device),
                    attention_mask=mask.to(self.acc.device),
                    generation_config=self.sampling,
                )
                for p, resp in zip(prompts, out[:, ids.shape[1] :].tolist()):
                    resp = resp[: resp.index(eos) + 1] if eos in resp else [t for t in resp if t != pad]
                    rows.append({"input_ids": p + resp, "labels": [IGNORE_INDEX] * len(p) + resp})
        kl, length = [], []
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            batch = {k: v.to(self.acc.device) for k, v in collate(part, pad).items()}
            with self.acc.autocast():
                logp, labelled = token_logprobs(model, batch)
            with self.reference() as ref, self.acc.autocast():
                ref_logp, _ = token_logprobs(ref, batch)
            kl.append(masked_sum(logp - ref_logp, labelled, dim=1))  # (B,) per-sequence log-ratio
            length.append(labelled.sum(dim=1))
        return {"kl": float(torch.cat(kl).mean()), "response_length": float(torch.cat(length).float().mean())}
