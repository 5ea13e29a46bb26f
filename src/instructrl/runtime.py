"""What every training stage shares: the accelerator, metrics, progress, checkpoints, LR schedule.

One code path for one CPU, several CPU processes (torchrun, gloo) and GPUs (DDP/FSDP/DeepSpeed through
``accelerate launch``): stages only talk to :class:`accelerate.Accelerator`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from instructrl.config import BaseConfig
from instructrl.errors import ConfigError, InstructRLError

log = logging.getLogger("instructrl")


def _not_tied_weight_notice(record: logging.LogRecord) -> bool:
    # accelerate's save_state drops the second name of tied weights (GPT-2's lm_head = wte) and warns on
    # every checkpoint; loading re-ties them, so the notice only adds noise to every run of a tied model.
    return "Removed shared tensor" not in str(record.msg)


logging.getLogger("accelerate.utils.other").addFilter(_not_tied_weight_notice)


# ----------------------------------------------------------------------------- accelerator
def resolve_mixed_precision(cfg: BaseConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if torch.cuda.is_available() and not cfg.cpu and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: BaseConfig, project_dir: str | os.PathLike):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    kwargs: dict[str, Any] = {}
    if cfg.report_to not in ("none", "", None):
        kwargs["log_with"] = cfg.report_to
    from accelerate.state import AcceleratorState, PartialState

    cpu = cfg.cpu or not torch.cuda.is_available()
    precision = resolve_mixed_precision(cfg)
    # accelerate keeps one state per process: a second run in the same process (a notebook; a script
    # running SFT in fp32, then PPO in bf16, or one stage with --cpu on a GPU machine) with another
    # precision or device would be refused or, for the device, silently keep the first one. Start a
    # fresh state instead; with several processes the process group stays and only the precision can change.
    device = PartialState._shared_state.get("device")
    single = PartialState._shared_state.get("num_processes", 1) == 1
    if device is not None and single and (device.type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
    elif AcceleratorState._shared_state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()
    acc = Accelerator(cpu=cpu, mixed_precision=precision, project_dir=str(project_dir), **kwargs)
    set_seed(cfg.seed)
    if not acc.is_main_process:  # one copy of the log, from the main process
        logging.getLogger("instructrl").setLevel(logging.WARNING)
    return acc


# ----------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, peak: float, *, warmup_steps: int = 0, warmup_start: float = 0.0,
          final_fraction: float = 0.1, schedule: str = "cosine") -> float:
    """LR for optimizer step ``step`` (0-based).

    Linear warmup from ``warmup_start * peak`` over ``warmup_steps``; then cosine decay to
    ``final_fraction * peak`` at the last step (InstructGPT App. C: cosine to 10% of peak), or constant."""
    if warmup_steps and step < warmup_steps:
        return peak * (warmup_start + (1.0 - warmup_start) * step / warmup_steps)
    if schedule == "constant":
        return peak
    span = max(1, total - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------- metrics
class MetricsLogger:
    """Appends one JSON object per log event to ``metrics.jsonl`` (main process) and forwards to trackers."""

    def __init__(self, out_dir: str | os.PathLike, accelerator, run_name: str):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.acc = accelerator
        if cfg_trackers(accelerator):
            accelerator.init_trackers(run_name)

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


def cfg_trackers(acc) -> bool:
    return bool(getattr(acc, "log_with", None))


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return v


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """Atomic, resumable checkpoints under ``out/checkpoints/step-N``.

    Everything is written into ``.tmp-step-N`` (accelerate state: model, optimizer, RNG of every
    rank; plus ``trainer_state.json`` last), then renamed in one step. A kill at any moment leaves
    either the previous checkpoints or a complete new one; leftover temp dirs are removed on start."""

    STATE = "trainer_state.json"

    def __init__(self, out_dir: str | os.PathLike, accelerator, keep: int = 2):
        self.root = Path(out_dir) / "checkpoints"
        self.acc = accelerator
        self.keep = keep

    def complete(self) -> list[Path]:
        if not self.root.exists():
            return []
        found = [p for p in self.root.glob("step-*") if (p / self.STATE).exists()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def clean_partial(self) -> None:
        if self.acc.is_main_process and self.root.exists():
            for p in self.root.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
        self.acc.wait_for_everyone()

    def save(self, step: int, state: dict[str, Any], extra_save=None) -> Path:
        """Save accelerate state + trainer state for ``step``. ``extra_save(dir)`` writes more files
        (main process) before the checkpoint becomes visible."""
        final = self.root / f"step-{step}"
        tmp = self.root / f".tmp-step-{step}"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            if extra_save is not None:
                extra_save(tmp)
            (tmp / self.STATE).write_text(json.dumps(state, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.complete()[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> dict[str, Any]:
        self.acc.load_state(str(path))
        return json.loads((path / self.STATE).read_text())

    def resume_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """Drop half-written checkpoints, then load the newest complete one (None when there is none)."""
        self.clean_partial()
        latest = self.latest()
        if latest is None:
            log.info("--resume: no complete checkpoint in %s, starting from scratch", self.root.parent)
            return None
        return latest, self.load(latest)


def prepare_output_dir(out: str | None, resume: bool, stage: str) -> Path:
    """Create the output dir; refuse to overwrite a finished or running stage's outputs unless resuming."""
    if not out:
        raise ConfigError(f"{stage}: an output directory is required (--out DIR)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory")
    if path.exists() and not resume and (path / "checkpoints").exists() and any((path / "checkpoints").iterdir()):
        raise InstructRLError(f"'{out}' already holds checkpoints of an earlier run: pass --resume to continue it, "
                              f"or choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def param_checksum(model: torch.nn.Module) -> float:
    """A cheap fingerprint of all parameters (to check that ranks stay in sync)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(model.parameters()):
        total += (p.detach().double().cpu().flatten() * (1.0 + (i % 7) * 1e-3)).sum()
    return float(total)


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
