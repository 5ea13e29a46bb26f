"""Atomic, resumable checkpoints and the output directory of a run."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from instructrl.errors import ConfigError, InstructRLError, first_line_of
from instructrl.training.validation import COMPLETE

log = logging.getLogger("instructrl")


def _not_tied_weight_notice(record: logging.LogRecord) -> bool:
    # accelerate's save_state drops the second name of tied weights (GPT-2's lm_head = wte) and warns on
    # every checkpoint; loading re-ties them, so the notice only adds noise to every run of a tied model.
    return "Removed shared tensor" not in str(record.msg)


logging.getLogger("accelerate.utils.other").addFilter(_not_tied_weight_notice)


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

    def save(self, step: int, state: dict[str, Any], extra_save=None, extra_save_every_process=None) -> Path:
        """Save accelerate state + trainer state for ``step``. ``extra_save(dir)`` writes more files (main
        process), ``extra_save_every_process(dir)`` each process's own files, before the checkpoint becomes
        visible."""
        final = self.root / f"step-{step}"
        tmp = self.root / f".tmp-step-{step}"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        if extra_save_every_process is not None:
            extra_save_every_process(tmp)
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
        """Load a checkpoint; one that cannot be read (a file cut short or overwritten after it was written) is
        one line naming it and the one before it."""
        try:
            self.acc.load_state(str(path))
            state = json.loads((path / self.STATE).read_text())
            if not isinstance(state, dict):
                raise ValueError(f"{self.STATE} holds a {type(state).__name__}, not the trainer's state")
        except Exception as e:  # safetensors, torch.load and json each raise their own kinds; its type is named
            done = self.complete()
            at = done.index(path) if path in done else 0
            before = done[at - 1] if at > 0 else None
            raise InstructRLError(
                f"--resume: checkpoint {path} cannot be read ({type(e).__name__}: {first_line_of(e)[:200]}); it is "
                "damaged. "
                + (f"Remove it to resume from {before}" if before else "Remove it to start afresh")
                + ", or choose another --out"
            ) from None
        return state

    def resume_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """Drop half-written checkpoints, then load the newest complete one (None when there is none)."""
        self.clean_partial()
        latest = self.latest()
        if latest is None:
            if (self.root.parent / COMPLETE).is_file():  # starting afresh would train over the finished run
                raise InstructRLError(
                    f"--resume: '{self.root.parent}' holds a finished run with no checkpoint left to continue from; "
                    "choose another --out, or remove the folder to train it again"
                )
            log.info("--resume: no complete checkpoint in %s, starting from scratch", self.root.parent)
            return None
        return latest, self.load(latest)

    def start(self, resume: bool) -> tuple[Path, dict[str, Any]] | None:
        """Where a run begins: with ``resume``, the newest complete checkpoint (None when there is none); in
        every case, no half-written checkpoint is left behind."""
        if resume:
            return self.resume_latest()
        self.clean_partial()
        return None

    def diverged(self, stage: str, what: str, where: str, advice: str) -> InstructRLError:
        """The error a run stops with when a number stops being finite (or leaves its bounds), before the
        weights change, naming the checkpoint to continue from."""
        latest = self.latest()
        return InstructRLError(
            f"{stage}: {what} at {where}; the run stopped before updating the weights. Last good "
            f"checkpoint: {latest or 'none (no checkpoint written yet)'}. {advice}"
        )


CREATED_OUTPUTS: list[Path] = []  # output folders this process created, for remove_empty_outputs


def remove_empty_outputs() -> None:
    """After a run stopped by an error: remove each output folder this process created that is still empty, so a
    refused run leaves nothing behind. A folder holding anything is kept."""
    while CREATED_OUTPUTS:
        path = CREATED_OUTPUTS.pop()
        try:
            path.rmdir()  # only an empty folder; another rank may have removed it already
        except OSError:
            pass


def prepare_output_dir(out: str | None, resume: bool, stage: str) -> Path:
    """Create the output dir; refuse to overwrite a finished or running stage's outputs unless resuming."""
    if not out:
        raise ConfigError(f"{stage}: an output directory is required (--out DIR)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory: choose a directory for --out")
    if not resume and (path / COMPLETE).is_file():  # a finished run: training into it afresh would replace it
        raise InstructRLError(
            f"'{out}' holds a finished run: choose another --out, pass --resume to continue it from its last "
            "checkpoint, or remove the folder to train it again"
        )
    if path.exists() and not resume and (path / "checkpoints").exists() and any((path / "checkpoints").iterdir()):
        raise InstructRLError(
            f"'{out}' already holds checkpoints of an earlier run: pass --resume to continue it, "
            f"or choose another --out"
        )
    created, above = [], path  # the folders mkdir is about to create, deepest first
    while not above.exists() and above != above.parent:
        created.append(above)
        above = above.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"output path '{out}': a part of it is a file, not a directory; choose another --out"
        ) from None
    except PermissionError:
        raise ConfigError(f"output path '{out}' cannot be created (permission denied); choose another --out") from None
    CREATED_OUTPUTS.extend(reversed(created))  # popped deepest first
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory '{out}' is not writable; choose another --out or fix its permissions")
    return path
