"""The training loop every supervised stage shares (SFT, pretraining, the reward model, and any stage whose
update is "minimize a loss over batches of examples").

One loop, through accelerate, for one CPU, several processes, or GPUs:

* ``batch_size`` is the number of training units per optimizer step across all processes (the paper's batch
  size); each process takes its share of every batch and accumulates micro-batches of ``micro_batch_size``.
* A stage supplies only its loss: :meth:`Trainer.loss` returns the SUM of the loss over one micro-batch and
  :meth:`Trainer.normalizer` the number it is divided by for the whole global batch (tokens for a
  next-token loss, units for a mean over units), so the update is the same whatever the split into
  processes and micro-batches. Everything else is here: the seeded epoch order (a resumed run sees exactly
  the batches the killed run would have seen), the LR schedule, gradient accumulation, clipping, the guard
  that stops before a non-finite update, atomic checkpoints and ``--resume``, ``metrics.jsonl``, validation
  points with model selection, and the final save.
* Validation at ``eval_every`` steps (or each epoch) can pick the final model: :meth:`Trainer.evaluate`
  returns the metrics and :meth:`Trainer.selection_value` the number to minimize (``select_by``).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm.auto import tqdm

from instructrl.errors import ConfigError, InstructRLError
from instructrl.modeling.loading import save_pretrained_atomic
from instructrl.training import engines
from instructrl.training.checkpoints import Checkpoints
from instructrl.training.config import TrainLoopConfig
from instructrl.training.optim import adamw, clip_and_step, lr_at, set_lr
from instructrl.training.tracking import MetricsLogger, Throughput, truncate_jsonl
from instructrl.training.validation import mark_complete, mark_unfinished

log = logging.getLogger("instructrl.train")

# an epoch plan: the pool indices of one epoch, in order
EpochPlan = Callable[[int], np.ndarray]


def shuffled_plan(n: int, seed: int) -> EpochPlan:
    def plan(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(n)

    return plan


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_train_loss: float
    best_step: int | None
    best_metric: float | None
    eval_history: list[dict]


class Trainer:
    """Runs one training job; a stage subclasses it and supplies :meth:`loss` (see the module docstring)."""

    # write the completion marker after the final save; a stage that adds files to the output dir after
    # training sets it False and calls training.validation.mark_complete itself once they are written
    completes_run: bool = True

    def __init__(
        self,
        cfg: TrainLoopConfig,
        accelerator,
        model,
        tokenizer,
        pool: list,
        plan: EpochPlan,
        epoch_size: int,
        out_dir: Path,
        stage: str,
    ):
        self.cfg, self.acc, self.tokenizer = cfg, accelerator, tokenizer
        self.pool, self.plan, self.epoch_size = pool, plan, epoch_size
        self.out, self.stage = out_dir, stage
        world = accelerator.num_processes
        if cfg.batch_size % world:
            raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
        self.micro = cfg.micro_batch_size or cfg.batch_size // world
        per_rank = cfg.batch_size // world
        if per_rank % self.micro:
            raise ConfigError(f"batch_size/processes={per_rank} must be a multiple of micro_batch_size={self.micro}")
        # the last partial batch is kept when every process gets at least one example and, with sharded weights
        # (whose forwards are collectives), the same number of micro-batches
        full, rest = divmod(epoch_size, cfg.batch_size)
        shares = {math.ceil(len(range(r, rest, world)) / self.micro) for r in range(world)}
        keep = rest >= world and (len(shares) == 1 or not engines.is_sharded(accelerator))
        self.steps_per_epoch = full + (1 if keep else 0)
        if self.steps_per_epoch == 0:
            raise InstructRLError(f"{stage}: {epoch_size} training examples are fewer than the {world} processes")
        # max_steps overrides epochs (either way): later epochs continue the seeded permutations
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.ckpt_every = cfg.checkpoint_every or self.steps_per_epoch
        self.model, self.optimizer = engines.prepare(
            accelerator,
            model,
            adamw(model, cfg, device=accelerator.device),
            max_grad_norm=cfg.max_grad_norm,
            micro_batch=self.micro,
        )
        self.ckpts = Checkpoints(out_dir, accelerator, keep=cfg.keep_checkpoints)
        self.metrics = MetricsLogger(out_dir, accelerator, run_name=stage, config=cfg.to_dict())
        self.state: dict[str, Any] = {"step": 0, "best_metric": None, "best_step": None, "tokens": 0}

    # ------------------------------------------------------------------ what a stage supplies
    def loss(self, items: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of the loss over the micro-batch ``items``, sums to report): the loss is divided by
        :meth:`normalizer` before its backward; the sums are added over micro-batches and processes and
        handed to :meth:`step_metrics`."""
        raise NotImplementedError

    def normalizer(self, items: list) -> float:
        """What the summed loss of the global batch ``items`` is divided by (default: the number of units)."""
        return len(items)

    def step_metrics(self, sums: dict[str, float], items: list, normalizer: float) -> dict[str, float]:
        """Metrics of one optimizer step from the reduced sums; must hold ``loss`` and ``tokens`` (tokens
        processed, for the throughput)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation metrics at an evaluation point (namespaced ``{stage}/...``); none by default."""
        return {}

    def selection_value(self, ev: dict[str, float]) -> float | None:
        """The number the final model is chosen by, oriented so that lower is better (None: no choice)."""
        if self.cfg.select_by == "last" or not ev:
            return None
        return ev[f"{self.stage}/eval_loss"]

    # ------------------------------------------------------------------ one optimizer step
    def batch_indices(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.plan(epoch)
        return order[k * self.cfg.batch_size : (k + 1) * self.cfg.batch_size]

    def local_micro_batches(self, items: list) -> list[list]:
        """This process's share of a global batch, cut into micro-batches of ``micro_batch_size``."""
        mine = items[self.acc.process_index :: self.acc.num_processes]
        return [mine[i : i + self.micro] for i in range(0, len(mine), self.micro)]

    def schedule_lr(self, step: int) -> None:
        set_lr(
            self.optimizer,
            lr_at(
                step,
                self.total_steps,
                self.cfg.learning_rate,
                warmup_steps=self.cfg.warmup_steps,
                final_fraction=self.cfg.lr_final_fraction,
                schedule=self.cfg.lr_schedule,
            ),
        )

    def fail(self, what: str) -> NoReturn:
        raise self.ckpts.diverged(
            self.stage, what, f"step {self.state['step'] + 1}", "Lower the learning rate, then continue with --resume."
        )

    def train_step(self, step: int) -> dict[str, float]:
        items = [self.pool[i] for i in self.batch_indices(step)]
        normalizer = self.normalizer(items)
        micro_batches = self.local_micro_batches(items)
        self.schedule_lr(step)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        for j, mb in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            with engines.no_sync(self.acc, self.model, not last):
                loss_sum, stats = self.loss(mb)
                # DDP averages gradients over processes, hence * num_processes
                engines.backward(self.acc, self.model, loss_sum / normalizer * self.acc.num_processes, last)
            for name, value in stats.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()
        (grad_norm,) = clip_and_step(
            self.acc, [("model", self.model, self.optimizer)], self.cfg.max_grad_norm, self.fail
        )
        names = list(sums)
        reduced = self.acc.reduce(torch.stack([sums[n].double() for n in names]), reduction="sum").tolist()
        metrics = self.step_metrics(dict(zip(names, reduced)), items, normalizer)
        if not math.isfinite(metrics["loss"]):  # a loss that overflowed while its gradient did not
            self.fail(f"the training loss became {metrics['loss']}")
        return {**metrics, "grad_norm": grad_norm}

    # ------------------------------------------------------------------ outputs
    def save_model(self, directory: Path) -> None:
        state = engines.full_state_dict(self.acc, self.model)  # sharded: gathered onto the main process
        if self.acc.is_main_process:
            dtype = getattr(torch, self.cfg.save_dtype) if self.cfg.save_dtype else None
            save_pretrained_atomic(
                self.acc.unwrap_model(self.model), self.tokenizer, directory, dtype=dtype, state_dict=state
            )
        self.acc.wait_for_everyone()

    def finish(self) -> None:
        """Final model into the output dir (the selected one), selection record, and a sync check."""
        best = self.out / "best"
        if self.cfg.select_by != "last" and self.state["best_step"] is not None and best.exists():
            if self.acc.is_main_process:
                for f in best.iterdir():
                    shutil.copy2(f, self.out / f.name)
        else:
            self.save_model(self.out)
        checks, shares = engines.sync_record(self.acc, self.acc.unwrap_model(self.model))
        if self.acc.is_main_process:
            (self.out / "selection.json").write_text(
                json.dumps(
                    {
                        "select_by": self.cfg.select_by,
                        "best_step": self.state["best_step"],
                        "best_metric": self.state["best_metric"],
                        "steps": self.state["step"],
                    },
                    indent=1,
                )
            )
            (self.out / "dist_sync.json").write_text(
                json.dumps(
                    {
                        "num_processes": self.acc.num_processes,
                        "param_checksums": [c[0] for c in checks],
                        "parameters_held": [s[0] for s in shares],
                        "distributed_type": str(self.acc.distributed_type),
                    },
                    indent=1,
                )
            )
        self.metrics.close()
        self.acc.wait_for_everyone()
        if self.completes_run and self.acc.is_main_process:
            mark_complete(self.out, stage=self.stage, steps=self.state["step"])  # last: the run is finished
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        found = self.ckpts.start(self.cfg.resume)
        if found is not None:
            latest, self.state = found
            log.info("resumed from %s (step %d of %d)", latest, self.state["step"], self.total_steps)
        if self.acc.is_main_process:  # rows written after the checkpoint are written again from here
            mark_unfinished(self.out)
            truncate_jsonl(self.metrics.path, self.state["step"])
        start, s = self.state["step"], self.stage
        bar = tqdm(
            total=self.total_steps,
            initial=start,
            desc=s,
            dynamic_ncols=True,
            disable=not (self.cfg.progress and self.acc.is_main_process),
        )
        tput, history, loss = Throughput(), [], float("nan")
        for step in range(start, self.total_steps):
            m = self.train_step(step)
            loss = m["loss"]
            tput.add(m["tokens"])
            self.state["tokens"] += m["tokens"]
            self.state["step"] = done = step + 1
            row = {}
            if done % self.cfg.logging_steps == 0 or done == self.total_steps:
                extra = {f"{s}/{k}": v for k, v in m.items() if k not in ("loss", "tokens")}
                row = {
                    f"{s}/loss": loss,
                    f"{s}/lr": self.optimizer.param_groups[0]["lr"],
                    f"{s}/tokens_per_s": tput.rate(),
                    f"{s}/epoch": done / self.steps_per_epoch,
                    f"{s}/tokens": self.state["tokens"],
                    **extra,
                }
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{row[f'{s}/tokens_per_s']:.0f}")
            if done % self.eval_every == 0 or done == self.total_steps:
                with engines.gathered(self.acc, self.model):  # sharded: evaluations may run on one process
                    ev = self.evaluate()
                row.update(ev)
                value = self.selection_value(ev)
                history.append({"step": done, **ev})
                if value is not None and (self.state["best_metric"] is None or value < self.state["best_metric"]):
                    self.state.update(best_metric=value, best_step=done)
                    self.save_model(self.out / "best")
                    row[f"{s}/best_step"] = done
            if row:
                self.metrics.log(row, step=done)
            if done % self.ckpt_every == 0 and done < self.total_steps:
                self.ckpts.save(done, self.state)
            bar.update(1)
        bar.close()
        self.finish()
        return TrainResult(
            self.out, self.state["step"], loss, self.state["best_step"], self.state["best_metric"], history
        )
