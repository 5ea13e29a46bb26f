"""The next-token trainer of SFT and pretraining: the shared loop (:mod:`instructrl.training.loop`) with the
token-level loss.

* The loss of a batch is the mean over all its loss tokens (response tokens in SFT; every token of a packed
  pretraining window), whatever the split into processes and micro-batches.
* Validation at ``eval_every`` steps (or each epoch) picks the final model: lowest validation loss, or the
  highest reward-model score of validation generations (InstructGPT §3.5), via a :class:`Selector`.
* ``packing``: each micro-batch is packed into rows of at most ``max_length`` tokens
  (:func:`~instructrl.data.tokenize.collate_packed`) instead of padded, with attention kept inside each
  example through restarted position ids. The batches, the loss tokens and so the loss are those of the
  padded run (up to float rounding); only the padding goes. :func:`packing_problem` checks, before
  training, that the model really keeps packed examples apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch
from accelerate.utils import broadcast_object_list

from instructrl.data.tokenize import IGNORE_INDEX, collate, collate_packed, count_loss_tokens
from instructrl.losses import next_token_nll
from instructrl.training.config import TrainLoopConfig
from instructrl.training.loop import EpochPlan, Trainer


class Selector(Protocol):
    """Scores a model at a validation point; the best-scoring model becomes the output."""

    name: str
    higher_is_better: bool

    def __call__(self, model, tokenizer) -> float: ...


def token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token negative log-likelihood over the batch's labelled tokens, and their count. A packed
    batch (``position_ids``, no attention mask) goes in without a cache, so that transformers derives the
    block-diagonal mask of its examples from the position ids."""
    if "position_ids" in batch:
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return next_token_nll(logits, batch["labels"], IGNORE_INDEX)


@torch.no_grad()
def packing_problem(model) -> str | None:
    """None when ``model`` keeps packed examples apart: the logits of two random sequences packed into one
    row (position ids restarting at the second) equal their logits computed one at a time. Otherwise the
    reason, in words (the model ignores restarted position ids, or attends across examples). Runs in eval
    mode on two short sequences; the model's train/eval mode is restored."""
    name = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__  # peft or not
    param = next(model.parameters())
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    pad = getattr(model.config, "pad_token_id", None)
    first, second = (torch.randint(0, vocab, (1, n), generator=gen) for n in (5, 7))
    if pad is not None:  # no PAD in the probe (transformers would warn about a missing attention mask)
        first, second = (torch.where(x == pad, (pad + 1) % vocab, x) for x in (first, second))
    first, second = first.to(param.device), second.to(param.device)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(param.device)  # (1, 12)
    was_training = model.training
    model.eval()
    try:
        alone = torch.cat([model(input_ids=x, use_cache=False).logits.float() for x in (first, second)], dim=1)
        packed = model(input_ids=torch.cat([first, second], 1), position_ids=positions, use_cache=False).logits
    except (TypeError, ValueError, RuntimeError) as e:
        return f"{name} cannot take packed rows ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    finally:
        model.train(was_training)
    error = float((packed.float() - alone).abs().max())
    scale = float(alone.abs().max())
    tolerance = (1e-3 if param.dtype == torch.float32 else 3e-2) * max(scale, 1e-3)
    if error > tolerance:
        return (
            f"{name} attends across packed examples (its logits change by up to {error:.3g}, against "
            f"{scale:.3g} at most, when a second example shares the row)"
        )
    return None


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
        packing: bool = False,
    ):
        super().__init__(cfg, accelerator, model, tokenizer, pool, plan, epoch_size, out_dir, stage)
        self.eval_examples, self.selector, self.packing = eval_examples, selector, packing

    def _on_device(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.packing:  # the rest of a row: EOS, not PAD (PAD at a row's end has transformers warn of padding)
            batch = collate_packed(examples, self.tokenizer.eos_token_id, self.cfg.max_length)
        else:
            batch = collate(examples, self.tokenizer.pad_token_id)
        return {k: v.to(self.acc.device) for k, v in batch.items()}

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
