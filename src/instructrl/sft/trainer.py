"""The next-token trainer shared by SFT and pretraining.

One loop, through accelerate, for one CPU, several processes, or GPUs:

* ``batch_size`` is the number of examples per optimizer step across all processes (the paper's batch
  size); each process takes its share of every batch and accumulates micro-batches of
  ``micro_batch_size``. The loss is the mean over all loss tokens of the whole batch, whatever the split.
* The data order of each epoch is a seeded permutation, so a resumed run sees exactly the batches the
  killed run would have seen.
* Validation at ``eval_every`` steps (or each epoch) picks the final model: lowest validation loss, or the
  highest reward-model score of validation generations (InstructGPT §3.5), via a :class:`Selector`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from instructrl.data.tokenize import IGNORE_INDEX, collate, count_loss_tokens
from instructrl.errors import ConfigError, InstructRLError
from instructrl.modeling.loading import save_pretrained_atomic
from instructrl.runtime import Checkpoints, MetricsLogger, Throughput, lr_at, param_checksum, set_lr
from instructrl.sft.config import TrainLoopConfig

log = logging.getLogger("instructrl.train")


class Selector(Protocol):
    """Scores a model at a validation point; the best-scoring model becomes the output."""

    name: str
    higher_is_better: bool

    def __call__(self, model, tokenizer) -> float: ...


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_train_loss: float
    best_step: int | None
    best_metric: float | None
    eval_history: list[dict]


# an epoch plan: the pool indices of one epoch, in order
EpochPlan = Callable[[int], np.ndarray]


def shuffled_plan(n: int, seed: int) -> EpochPlan:
    def plan(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(n)

    return plan


def token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token negative log-likelihood over labelled tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                          reduction="sum")
    return nll, int((labels != IGNORE_INDEX).sum())


class LMTrainer:
    """Runs one next-token training job; see the module docstring."""

    def __init__(self, cfg: TrainLoopConfig, accelerator, model, tokenizer, pool: list[dict], plan: EpochPlan,
                 epoch_size: int, eval_examples: list[dict], out_dir: Path, stage: str,
                 selector: Selector | None = None):
        self.cfg, self.acc, self.tokenizer = cfg, accelerator, tokenizer
        self.pool, self.plan, self.epoch_size = pool, plan, epoch_size
        self.eval_examples, self.out, self.stage, self.selector = eval_examples, out_dir, stage, selector
        world = accelerator.num_processes
        if cfg.batch_size % world:
            raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
        self.micro = cfg.micro_batch_size or cfg.batch_size // world
        per_rank = cfg.batch_size // world
        if per_rank % self.micro:
            raise ConfigError(f"batch_size/processes={per_rank} must be a multiple of micro_batch_size={self.micro}")
        # the last partial batch is kept when every process gets at least one example
        full, rest = divmod(epoch_size, cfg.batch_size)
        self.steps_per_epoch = full + (1 if rest >= world else 0)
        if self.steps_per_epoch == 0:
            raise InstructRLError(f"{stage}: {epoch_size} training examples are fewer than the {world} processes")
        # max_steps overrides epochs (either way): later epochs continue the seeded permutations
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.ckpt_every = cfg.checkpoint_every or self.steps_per_epoch

        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.ckpts = Checkpoints(out_dir, accelerator, keep=cfg.keep_checkpoints)
        self.metrics = MetricsLogger(out_dir, accelerator, run_name=stage)
        self.state = {"step": 0, "best_metric": None, "best_step": None, "tokens": 0}

    # ------------------------------------------------------------------ pieces
    def batch_indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.plan(epoch)
        return order[k * self.cfg.batch_size : (k + 1) * self.cfg.batch_size]

    def local_micro_batches(self, items: list) -> list[list]:
        """This process's share of a global batch, cut into micro-batches of ``micro_batch_size``."""
        mine = items[self.acc.process_index :: self.acc.num_processes]
        return [mine[i : i + self.micro] for i in range(0, len(mine), self.micro)]

    def schedule_lr(self, step: int) -> None:
        set_lr(self.optimizer, lr_at(step, self.total_steps, self.cfg.learning_rate,
                                     warmup_steps=self.cfg.warmup_steps, final_fraction=self.cfg.lr_final_fraction,
                                     schedule=self.cfg.lr_schedule))

    def train_step(self, step: int) -> tuple[float, int]:
        idx = self.batch_indices(step)
        examples = [self.pool[i] for i in idx]
        global_tokens = max(1, sum(count_loss_tokens(e) for e in examples))
        micro_batches = self.local_micro_batches(examples)
        self.schedule_lr(step)
        self.model.train()
        total_nll = torch.zeros((), device=self.acc.device)
        for j, mb in enumerate(micro_batches):
            batch = {k: v.to(self.acc.device) for k, v in collate(mb, self.tokenizer.pad_token_id).items()}
            sync = j == len(micro_batches) - 1
            ctx = self.acc.no_sync(self.model) if not sync else nullcontext()
            with ctx:
                nll, _ = token_nll(self.model, batch)
                # DDP averages gradients over processes, hence * num_processes
                self.acc.backward(nll / global_tokens * self.acc.num_processes)
            total_nll += nll.detach()
        if self.cfg.max_grad_norm:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = float(self.acc.reduce(total_nll, reduction="sum")) / global_tokens
        if not math.isfinite(loss):
            latest = self.ckpts.latest()
            raise InstructRLError(f"{self.stage}: training loss became {loss} at step {step + 1}; lower the learning "
                                  f"rate. Last good checkpoint: {latest or 'none'}")
        return loss, sum(len(e["input_ids"]) for e in examples)

    def step_metrics(self) -> dict[str, float]:
        """Extra metrics of the last optimizer step, logged with the loss (stages extend)."""
        return {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_examples:
            return {}
        self.model.eval()
        mine = self.eval_examples[self.acc.process_index :: self.acc.num_processes]
        nll_sum = torch.zeros((), device=self.acc.device, dtype=torch.float64)
        tokens = torch.zeros((), device=self.acc.device, dtype=torch.float64)
        for i in range(0, len(mine), self.micro):
            batch = {k: v.to(self.acc.device) for k, v in collate(mine[i : i + self.micro], self.tokenizer.pad_token_id).items()}
            nll, n = token_nll(self.model, batch)
            nll_sum += nll.double()
            tokens += n
        nll_sum = self.acc.reduce(nll_sum, reduction="sum")
        tokens = self.acc.reduce(tokens, reduction="sum")
        loss = float(nll_sum / tokens.clamp(min=1))
        out = {f"{self.stage}/eval_loss": loss, f"{self.stage}/eval_ppl": math.exp(min(loss, 50))}
        if self.selector is not None:
            from accelerate.utils import broadcast_object_list

            value = [None]
            if self.acc.is_main_process:
                value[0] = float(self.selector(self.acc.unwrap_model(self.model), self.tokenizer))
            broadcast_object_list(value)
            out[f"{self.stage}/eval_{self.selector.name}"] = value[0]
        return out

    def selection_value(self, ev: dict[str, float]) -> float | None:
        """The number the final model is chosen by, oriented so that lower is better."""
        if self.cfg.select_by == "last" or not ev:
            return None
        if self.cfg.select_by == "reward":
            v = ev[f"{self.stage}/eval_{self.selector.name}"]
            return -v if self.selector.higher_is_better else v
        return ev[f"{self.stage}/eval_loss"]

    def save_model(self, directory: Path) -> None:
        if self.acc.is_main_process:
            dtype = getattr(torch, self.cfg.save_dtype) if self.cfg.save_dtype else None
            save_pretrained_atomic(self.acc.unwrap_model(self.model), self.tokenizer, directory, dtype=dtype)
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------ loop
    def resume(self) -> None:
        found = self.ckpts.resume_latest()
        if found is None:
            return
        latest, self.state = found
        log.info("resumed from %s (step %d of %d)", latest, self.state["step"], self.total_steps)

    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        if self.cfg.resume:
            self.resume()
        else:
            self.ckpts.clean_partial()
        start = self.state["step"]
        bar = tqdm(total=self.total_steps, initial=start, desc=self.stage, dynamic_ncols=True,
                   disable=not (self.cfg.progress and self.acc.is_main_process))
        tput, history, loss = Throughput(), [], float("nan")
        for step in range(start, self.total_steps):
            loss, ntok = self.train_step(step)
            tput.add(ntok)
            self.state["tokens"] += ntok
            self.state["step"] = done = step + 1
            row = {}
            if done % self.cfg.logging_steps == 0 or done == self.total_steps:
                row = {f"{self.stage}/loss": loss, f"{self.stage}/lr": self.optimizer.param_groups[0]["lr"],
                       f"{self.stage}/tokens_per_s": tput.rate(), f"{self.stage}/epoch": done / self.steps_per_epoch,
                       f"{self.stage}/tokens": self.state["tokens"], **self.step_metrics()}
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{row[f'{self.stage}/tokens_per_s']:.0f}")
            if done % self.eval_every == 0 or done == self.total_steps:
                ev = self.evaluate()
                row.update(ev)
                value = self.selection_value(ev)
                history.append({"step": done, **ev})
                if value is not None and (self.state["best_metric"] is None or value < self.state["best_metric"]):
                    self.state.update(best_metric=value, best_step=done)
                    self.save_model(self.out / "best")
                    row[f"{self.stage}/best_step"] = done
            if row:
                self.metrics.log(row, step=done)
            if done % self.ckpt_every == 0 and done < self.total_steps:
                self.ckpts.save(done, self.state)
            bar.update(1)
        bar.close()
        self.finish()
        return TrainResult(self.out, self.state["step"], loss, self.state["best_step"], self.state["best_metric"], history)

    def finish(self) -> None:
        """Final model into the output dir (the selected one), selection record, and a sync check."""
        best = self.out / "best"
        if self.cfg.select_by != "last" and self.state["best_step"] is not None and best.exists():
            if self.acc.is_main_process:
                for f in best.iterdir():
                    shutil.copy2(f, self.out / f.name)
        else:
            self.save_model(self.out)
        checks = self.acc.gather(torch.tensor([param_checksum(self.acc.unwrap_model(self.model))],
                                              dtype=torch.float64, device=self.acc.device)).tolist()
        if self.acc.is_main_process:
            (self.out / "selection.json").write_text(json.dumps({
                "select_by": self.cfg.select_by, "best_step": self.state["best_step"],
                "best_metric": self.state["best_metric"], "steps": self.state["step"]}, indent=1))
            (self.out / "dist_sync.json").write_text(json.dumps({
                "num_processes": self.acc.num_processes, "param_checksums": checks,
                "distributed_type": str(self.acc.distributed_type)}, indent=1))
        self.metrics.close()
        self.acc.wait_for_everyone()
