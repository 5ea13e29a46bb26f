"""Metrics of a run: ``metrics.jsonl`` (main process) plus accelerate's trackers, and a throughput meter."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from instructrl.errors import ConfigError, InstructRLError, first_line_of


class MetricsLogger:
    """Appends one JSON object per log event to ``metrics.jsonl`` (main process) and forwards to trackers."""

    def __init__(self, out_dir: str | os.PathLike, accelerator, run_name: str, config: dict[str, Any] | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.acc = accelerator
        if cfg_trackers(accelerator):
            try:
                self._start_trackers(out_dir, run_name, config)
            except Exception as e:  # a tracker's own errors (no API key, no network, a bad project name)
                names = ", ".join(sorted(str(t) for t in accelerator.log_with))
                raise InstructRLError(
                    f"--report-to {names}: the tracker could not start ({type(e).__name__}: {first_line_of(e)[:200]}); "
                    "log in (for W&B: wandb login, or WANDB_API_KEY), run it offline (WANDB_MODE=offline), or "
                    "leave out --report-to"
                ) from None

    def _start_trackers(self, out_dir, run_name: str, config: dict[str, Any] | None) -> None:
        if "wandb" in {str(t) for t in self.acc.log_with}:
            # one W&B project for every stage ($WANDB_PROJECT overrides), each run named after its stage and
            # output folder, with the resolved config; its files beside the run's outputs
            init = {"name": f"{run_name}:{Path(out_dir).resolve().name}", "job_type": run_name, "dir": str(out_dir)}
            self.acc.init_trackers(
                os.environ.get("WANDB_PROJECT", "instructrl"), init_kwargs={"wandb": {**init, "config": config}}
            )
        else:
            self.acc.init_trackers(run_name)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.acc.is_main_process:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if cfg_trackers(self.acc):
            self.acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if cfg_trackers(self.acc):
            self.acc.end_training()


def log_summary(
    report_to: str, out_dir: str | os.PathLike, run_name: str, config: dict[str, Any], metrics: dict[str, float]
) -> None:
    """One-off results (an evaluation) to the tracker ``--report-to`` names: a W&B run whose summary holds
    ``metrics``, or TensorBoard scalars at step 0 under ``OUT/<run_name>``. 'none' does nothing."""
    if report_to in ("none", "", None):
        return
    if report_to == "wandb":
        import wandb  # an optional extra (instructrl[wandb]); BaseConfig.validate checked it is installed

        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "instructrl"),
            name=f"{run_name}:{Path(out_dir).resolve().name}",
            job_type=run_name,
            dir=str(out_dir),
            config=config,
        )
        run.summary.update(metrics)
        run.finish()
    elif report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

        with SummaryWriter(str(Path(out_dir) / run_name)) as writer:
            for key, value in metrics.items():
                writer.add_scalar(key, value, 0)
    else:
        raise ConfigError(f"--report-to {report_to}: {run_name} results go to wandb or tensorboard only")


def cfg_trackers(acc) -> bool:
    return bool(getattr(acc, "log_with", None))


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return v


def truncate_jsonl(path: str | os.PathLike, last: int, key: str = "step") -> None:
    """Drop the rows of ``path`` written after ``last`` (their ``key`` above it): a resumed run writes them again.
    Written to a temporary file and renamed, so a kill leaves the old file or the new one."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.strip() or _row_key(line, key) <= last]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def _row_key(line: str, key: str) -> float:
    try:
        value = json.loads(line).get(key, 0)
    except (json.JSONDecodeError, AttributeError):
        return math.inf  # a line cut by the kill: dropped
    return value if isinstance(value, (int, float)) else 0


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Throughput:
    """Tokens (or episodes) per second over the last few steps."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        r = self.count / dt if dt > 0 else 0.0
        self.t0, self.count = time.perf_counter(), 0
        return r
