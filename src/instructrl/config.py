"""Typed configs shared by every stage.

Each stage has a dataclass config deriving from :class:`BaseConfig`. Every field carries a help text
in ``field(metadata={"help": ...})``; the CLI turns each field into a flag (``max_steps`` ->
``--max-steps``). Values resolve in this order: dataclass defaults < ``--config FILE.yaml`` preset <
``--set key=value`` < explicit flags. The resolved config is saved beside every output as
``config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from instructrl.errors import ConfigError

T = TypeVar("T", bound="BaseConfig")
PRESETS_DIR = Path(__file__).parent / "configs"


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (and a mutable default made safe)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class BaseConfig:
    """Fields every stage shares: reproducibility, hardware, outputs and logging."""

    seed: int = help_field(0, "Random seed for data order, initialization and sampling.")
    output_dir: str | None = help_field(None, "Where checkpoints, metrics.jsonl and config.yaml go (also --out).")
    mixed_precision: str = help_field(
        "auto",
        "'no', 'bf16', 'fp16' or 'auto' (bf16 on GPUs that support it, fp32 on CPU; bf16 also works on "
        "CPUs with AMX and can be faster for larger models).",
        choices=["auto", "no", "bf16", "fp16"],
    )
    cpu: bool = help_field(False, "Force CPU even when a GPU is present.")
    report_to: str = help_field(
        "none", "Experiment tracker: 'none', 'tensorboard' or 'wandb' (through accelerate's trackers)."
    )
    logging_steps: int = help_field(1, "Write metrics every N optimizer steps.")
    resume: bool = help_field(False, "Resume from the newest complete checkpoint in output_dir.")
    progress: bool = help_field(True, "Show a progress bar (step, loss, tokens/s, ETA).")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump({"stage": type(self).__name__, **self.to_dict()}, sort_keys=False))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key == "stage":
                continue
            name = key.replace("-", "_")
            if name not in known:
                close = [k for k in known if k.startswith(name[:4])]
                hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
                raise ConfigError(f"{source}: unknown field '{key}' for {cls.__name__}{hint}")
            kwargs[name] = coerce(value, known[name], source)
        obj = cls(**kwargs)
        obj.validate()
        return obj

    def replace(self: T, **changes: Any) -> T:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Check values; subclasses extend. Raises ConfigError naming the field."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of {choices}")


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; `list[str]` -> list."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is not None:
        return origin
    return tp


def _field_type(f: dataclasses.Field) -> Any:
    tp = f.type
    if isinstance(tp, str):  # from __future__ annotations
        tp = eval(tp, {**vars(typing), "list": list, "dict": dict})
    return tp


def coerce(value: Any, f: dataclasses.Field, source: str = "config") -> Any:
    """Convert a YAML / CLI value to the field's type, with a clear error."""
    tp = _field_type(f)
    base = _base_type(tp)
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("none", "null") and f.default is None:
        return None
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if base is float:
            return float(value)
        if base is list:
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            return list(value)
        if base is dict:
            if isinstance(value, str):
                return yaml.safe_load(value)
            return dict(value)
        return str(value) if base is str else value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: field '{f.name}' expects {getattr(base, '__name__', base)}, got {value!r}"
        ) from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and (PRESETS_DIR / f"{path}.yaml").exists():
        p = PRESETS_DIR / f"{path}.yaml"  # a named preset shipped with the package
    if not p.exists():
        presets = sorted(x.stem for x in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"config file '{path}' not found (shipped presets: {', '.join(presets)})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of field: value, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- argparse glue
def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type[BaseConfig], aliases: dict[str, list[str]] | None = None
) -> None:
    """Add --config, --set and one flag per dataclass field (its help text as the flag's help)."""
    aliases = aliases or {}
    parser.add_argument("--config", metavar="FILE.yaml", help="Preset to start from (a path or a shipped preset name).")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="Override any config field, e.g. --set learning_rate=1e-5 (repeatable).",
    )
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        flags = [f"--{f.name.replace('_', '-')}"] + aliases.get(f.name, [])
        base = _base_type(_field_type(f))
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        default_repr = f.default if f.default is not dataclasses.MISSING else "[]"
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{help_text} (default: {default_repr})",
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = getattr(base, "__name__", "VALUE").upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        group.add_argument(*flags, **kwargs)


def resolve_config(cls: type[T], args: argparse.Namespace) -> T:
    """defaults < --config YAML < --set < flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    for item in getattr(args, "set", []) or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        values[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    for name in cls.field_names():
        if name in vars(args):
            values[name] = getattr(args, name)
    return cls.from_dict(values, source="--config/--set" if getattr(args, "config", None) else "flags")
