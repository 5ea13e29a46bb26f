"""The next-token trainer of SFT and pretraining: the shared loop (:mod:`instructrl.training.loop`) with the
token-level loss.

* The loss of a batch is the mean over all its loss tokens (response tokens in SFT; every token of a packed
  pretraining window), whatever the split into processes and micro-batches.
* Validation at ``eval_every`` steps (or each epoch) picks the final model: lowest validation loss, or the
  highest reward-model score of validation generations (InstructGPT §3.5), via a :class:`Selector`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch
from accelerate.utils import broadcast_object_list

from instructrl.data.tokenize import IGNORE_INDEX, collate, count_loss_tokens
from instructrl.losses import next_token_nll
from instructrl.training.config import TrainLoopConfig
from instructrl.training.loop import EpochPlan, Trainer


class Selector(Protocol):
    """Scores a model at a validation point; the best-scoring model becomes the output."""

    name: str
    higher_is_better: bool

    def __call__(self, model, tokenizer) -> float: ...


def token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token negative log-likelihood over the batch's labelled tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    return next_token_nll(logits, batch["labels"], IGNORE_INDEX)


class LMTrainer(Trainer):
    """Next-token training on tokenized examples ({input_ids, labels}); see the module docstring."""

    def __init__(
        self,
        cfg: TrainLoopConfig,
        accelerator,
        model,
        tokenizer,
        pool: list[dict],
        plan: EpochPlan,
        epoch_size: int,
        eval_examples: list[dict],
        out_dir: Path,
        stage: str,
        selector: Selector | None = None,
    ):
        super().__init__(cfg, accelerator, model, tokenizer, pool, plan, epoch_size, out_dir, stage)
        self.eval_examples, self.selector = eval_examples, selector

    def _on_device(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.acc.device) for k, v in collate(examples, self.tokenizer.pad_token_id).items()}

    def loss(self, items: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nll, _ = token_nll(self.model, self._on_device(items))
        return nll, {"nll": nll}

    def normalizer(self, items: list[dict]) -> float:
        return max(1, sum(count_loss_tokens(e) for e in items))  # loss tokens of the whole global batch

    def step_metrics(self, sums: dict[str, float], items: list[dict], normalizer: float) -> dict[str, float]:
        return {"loss": sums["nll"] / normalizer, "tokens": sum(len(e["input_ids"]) for e in items)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_examples:
            return {}
        self.model.eval()
        mine = self.eval_examples[self.acc.process_index :: self.acc.num_processes]
        nll_sum = torch.zeros((), device=self.acc.device, dtype=torch.float64)
        tokens = torch.zeros((), device=self.acc.device, dtype=torch.float64)
        for i in range(0, len(mine), self.micro):
            nll, n = token_nll(self.model, self._on_device(mine[i : i + self.micro]))
            nll_sum += nll.double()
            tokens += n
        nll_sum = self.acc.reduce(nll_sum, reduction="sum")
        tokens = self.acc.reduce(tokens, reduction="sum")
        loss = float(nll_sum / tokens.clamp(min=1))
        out = {f"{self.stage}/eval_loss": loss, f"{self.stage}/eval_ppl": math.exp(min(loss, 50))}
        if self.selector is not None:
            value = [None]
            if self.acc.is_main_process:
                value[0] = float(self.selector(self.acc.unwrap_model(self.model), self.tokenizer))
            broadcast_object_list(value)
            out[f"{self.stage}/eval_{self.selector.name}"] = value[0]
        return out

    def selection_value(self, ev: dict[str, float]) -> float | None:
        if self.cfg.select_by == "reward" and ev:
            v = ev[f"{self.stage}/eval_{self.selector.name}"]
            return -v if self.selector.higher_is_better else v
        return super().selection_value(ev)
