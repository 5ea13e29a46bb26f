"""Checks every stage runs before any work starts: the configured lengths against the model's context, and
that a checkpoint folder it reads is a finished run (the completion marker each run writes last)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from instructrl.errors import ConfigError, ModelLoadError

COMPLETE = ".complete"  # written last, atomically, after a run's final save
# where Hugging Face configs keep the longest sequence a model's position embeddings cover
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


def context_length(model: Any) -> int | None:
    """The longest sequence ``model`` accepts (None when its config does not say: rotary models without a bound)."""
    for holder in (model, getattr(model, "model", None), getattr(model, "backbone", None)):
        config = getattr(holder, "config", None)
        for key in CONTEXT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def required_lengths(cfg: Any, longest_prompt: int | None = None) -> list[tuple[str, int]]:
    """(the setting, in its flags' words; tokens it needs in one sequence) for each length ``cfg`` sets.
    ``longest_prompt``: the longest prompt kept (PPO), when shorter than ``max_prompt_length`` allows."""
    need = []
    if getattr(cfg, "max_length", None):
        need.append(("--max-length", cfg.max_length))
    if getattr(cfg, "max_prompt_length", None) and getattr(cfg, "response_length", None):
        prompt = min(cfg.max_prompt_length, longest_prompt or cfg.max_prompt_length)
        need.append(
            (
                f"the longest prompt kept by --max-prompt-length ({prompt}) + --response-length "
                f"({cfg.response_length})",
                prompt + cfg.response_length,
            )
        )
    if getattr(cfg, "ptx_data", None) and getattr(cfg, "ptx_max_length", None):
        need.append(("--ptx-max-length", cfg.ptx_max_length))
    if getattr(cfg, "max_new_tokens", None):
        need.append(("--max-new-tokens", cfg.max_new_tokens))
    return need


def check_context(cfg: Any, *models: Any, longest_prompt: int | None = None) -> None:
    """Refuse lengths longer than any of ``models`` accepts, in one line naming the flag and the bound, before
    any training (a longer sequence would index past the position embeddings)."""
    for model in models:
        context = context_length(model)
        if context is None:
            continue
        for what, tokens in required_lengths(cfg, longest_prompt):
            if tokens > context:
                raise ConfigError(
                    f"{what} = {tokens} tokens exceeds the model's context of {context} tokens; "
                    f"lower {'them' if '+' in what else 'it'} to at most {context} in all (longer prompts are "
                    f"skipped and counted)"
                )


def mark_complete(out: str | os.PathLike, **info: Any) -> Path:
    """Write ``OUT/.complete`` atomically: the last file of a finished run."""
    path = Path(out) / COMPLETE
    tmp = path.with_name(COMPLETE + ".tmp")
    tmp.write_text(json.dumps({"complete": True, **info}, indent=1))
    os.replace(tmp, path)
    return path


def mark_unfinished(out: str | os.PathLike) -> None:
    """A run that starts writing into ``out`` is not finished: its marker returns only after its final save."""
    (Path(out) / COMPLETE).unlink(missing_ok=True)


def run_stage(path: str | os.PathLike) -> str | None:
    """The stage of an instructrl run folder (its config.yaml's ``stage``); None for any other folder or id."""
    config = Path(path) / "config.yaml"
    if not config.is_file():
        return None
    try:
        saved = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return saved.get("stage") if isinstance(saved, dict) else None


def check_finished(path: str | os.PathLike | None, what: str = "model") -> None:
    """Refuse an instructrl run folder without its completion marker (stopped before or during its final save).
    Hub ids and folders that instructrl did not write pass unchanged."""
    if not path or not Path(path).is_dir():
        return
    stage = run_stage(path)
    if stage is not None and not (Path(path) / COMPLETE).exists():
        raise ModelLoadError(
            f"{what} '{path}' is an unfinished {stage} run (no {COMPLETE}: it stopped before its final save); "
            f"finish it with --resume --out {path}, or choose a finished run"
        )
