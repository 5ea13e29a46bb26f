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
import importlib.util
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from instructrl.errors import ConfigError

T = TypeVar("T", bound="BaseConfig")
SEED_MAX = 2**32 - 1  # numpy's generators take seeds in [0, 2**32)
PRESETS_DIR = Path(__file__).parent / "configs"


# the range keys a numeric field declares next to its help text (checked by BaseConfig.validate)
RANGE_KEYS = ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "unbounded")
# fields that cannot change what a resumed run computes: a resume may differ in them freely
RUN_NEUTRAL_FIELDS = ("resume", "progress", "logging_steps", "report_to", "output_dir", "allow_config_change")
# --report-to NAME -> the package its tracker needs. accelerate leaves out a tracker whose package is missing
# with a debug line only, so a run that asked for one is checked here and stops instead.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
}


def help_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (and a mutable default made safe).

    A numeric field declares its allowed range beside the help: ``minimum=0`` / ``maximum=1`` (inclusive),
    ``exclusive_minimum=True`` / ``exclusive_maximum=True`` to exclude the bound, or ``unbounded=True`` for
    any finite number. Every numeric value must be finite; :meth:`BaseConfig.validate` checks the range."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def number_type(kind: type, least: float, *, above: bool = False):
    """argparse type of a finite ``kind`` (int or float) of at least ``least`` (``above``: greater than it)."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not (value > least if above else value >= least):
            raise argparse.ArgumentTypeError(f"{text!r}: give {noun} {'above' if above else 'of at least'} {least}")
        return value

    return parse


def seed_type(text: str) -> int:
    """argparse type of every ``--seed``: a whole number in [0, SEED_MAX], refused as a usage error otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: give a whole number from 0 to {SEED_MAX}")
    return value


@dataclass
class BaseConfig:
    """Fields every stage shares: reproducibility, hardware, outputs and logging."""

    seed: int = help_field(0, "Random seed for data order, initialization and sampling.", minimum=0, maximum=SEED_MAX)
    output_dir: str | None = help_field(None, "Where checkpoints, metrics.jsonl and config.yaml go (also --out).")
    mixed_precision: str = help_field(
        "auto",
        "'no', 'bf16', 'fp16' or 'auto': bf16 on GPUs that support it; on a CPU, bf16 only where it is clearly "
        "faster (native bf16: AMX or AVX512-BF16, confirmed by a short probe cached per machine; "
        "INSTRUCTRL_CPU_BF16=1/0 forces it), else fp32. config.yaml records the choice (resolved_mixed_precision).",
        choices=["auto", "no", "bf16", "fp16"],
    )
    cpu: bool = help_field(False, "Force CPU even when a GPU is present.")
    report_to: str = help_field(
        "none", "Experiment tracker: 'none', 'tensorboard' or 'wandb' (through accelerate's trackers)."
    )
    logging_steps: int = help_field(1, "Write metrics every N optimizer steps.", minimum=1)
    resume: bool = help_field(False, "Resume from the newest complete checkpoint in output_dir.")
    allow_config_change: bool = help_field(
        False,
        "With --resume: accept settings that differ from the run's saved config.yaml (the changes are recorded "
        "in config_changes.jsonl); without it a changed setting that would alter the run is refused.",
    )
    progress: bool = help_field(True, "Show a progress bar (step, loss, tokens/s, ETA).")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike, **resolved: Any) -> Path:
        """Write ``config.yaml``; on a resume, first compare it with the run's saved one (:meth:`check_resume`).

        ``resolved``: what a setting resolved to on this machine, each written after its field as
        ``resolved_<field>`` (``resolved_mixed_precision="bf16"`` for ``mixed_precision: auto``); a record
        for readers, skipped by :meth:`from_dict`, compared on a resume like the fields."""
        path = Path(directory) / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.check_resume(Path(directory), resolved)
        data: dict[str, Any] = {"stage": type(self).__name__}
        for key, value in self.to_dict().items():
            data[key] = value
            if f"resolved_{key}" in resolved:
                data[f"resolved_{key}"] = resolved[f"resolved_{key}"]
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump({**data, **resolved}, sort_keys=False))
        os.replace(tmp, path)
        return path

    def run_started(self, directory: Path) -> bool:
        """Whether ``directory`` holds progress of a run (a checkpoint) that a resume continues."""
        return any((directory / "checkpoints").glob("step-*"))

    def check_resume(self, directory: Path, resolved: dict[str, Any] | None = None) -> None:
        """A resumed run must continue the run it resumes: settings that would alter it (anything but
        :data:`RUN_NEUTRAL_FIELDS`) must equal the saved ``config.yaml``, unless ``allow_config_change``,
        which records the changes in ``config_changes.jsonl``."""
        saved_path = directory / "config.yaml"
        if not (self.resume and saved_path.exists() and self.run_started(directory)):
            return
        saved = read_yaml_file(saved_path)
        if not isinstance(saved, dict):
            raise ConfigError(f"{saved_path}: expected the run's saved fields, got {type(saved).__name__}")
        new = yaml.safe_load(yaml.safe_dump({**self.to_dict(), **(resolved or {})}))  # the types the saved file holds
        changes = {
            k: (saved[k], v) for k, v in new.items() if k in saved and k not in RUN_NEUTRAL_FIELDS and saved[k] != v
        }
        if not changes:
            return
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        if "resolved_mixed_precision" in changes and "mixed_precision" not in changes:
            listed += "; auto resolves otherwise on this machine: INSTRUCTRL_CPU_BF16=1 or 0 keeps the saved one"
        if not self.allow_config_change:
            raise ConfigError(
                f"{saved_path}: --resume with settings that differ from the saved run ({listed}); resume with the "
                f"saved settings, or pass --allow-config-change to continue with the new ones"
            )
        with open(directory / "config_changes.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: {"saved": a, "now": b} for k, (a, b) in changes.items()}, default=str) + "\n")

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if key == "stage" or (name.startswith("resolved_") and name[len("resolved_") :] in known):
                continue  # a saved config.yaml's records: the stage, and what a setting resolved to (save)
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
        """Check values; subclasses extend. Raises ConfigError naming the field.

        Here, for every stage: choices, and every numeric field finite and within the range its
        :func:`help_field` declares (see :func:`field_range`)."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of {choices}")
            check_range(type(self), f, value)
        check_tracker(self.report_to)


def check_tracker(report_to: str | None) -> None:
    """``--report-to`` names a known tracker whose package is installed, or 'none'."""
    if report_to in ("none", "", None):
        return
    package = TRACKER_PACKAGES.get(str(report_to))
    if package is None:
        raise ConfigError(
            f"report_to={report_to!r} (--report-to): expected none or one of {', '.join(TRACKER_PACKAGES)}"
        )
    if importlib.util.find_spec(package) is None:
        how = (
            f"pip install 'instructrl[{package}]'" if package in ("wandb", "tensorboard") else f"pip install {package}"
        )
        raise ConfigError(
            f"--report-to {report_to}: the {package} package is not installed ({how}), or use --report-to none"
        )


def field_range(cls: type, name: str) -> dict[str, Any]:
    """The range a numeric field declares; a subclass that overrides the field's default and help without
    restating the range inherits it from the class that declared it."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and any(k in f.metadata for k in RANGE_KEYS):
            return {k: f.metadata[k] for k in RANGE_KEYS if k in f.metadata}
    return {}


def is_numeric(f: dataclasses.Field) -> bool:
    return _base_type(_field_type(f)) in (int, float)


def check_range(cls: type, f: dataclasses.Field, value: Any) -> None:
    """A numeric field's value: the right type, finite, and within its declared range."""
    if value is None or not is_numeric(f):
        return
    base = _base_type(_field_type(f))
    flag = f"--{f.name.replace('_', '-')}"
    ok_type = isinstance(value, int) if base is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{f.name} ({flag}) expects {base.__name__}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{f.name}={value} ({flag}) must be a finite number")
    r = field_range(cls, f.name)
    low, high = r.get("minimum"), r.get("maximum")
    if low is not None and (value <= low if r.get("exclusive_minimum") else value < low):
        raise ConfigError(f"{f.name}={value} ({flag}) must be {'>' if r.get('exclusive_minimum') else '>='} {low}")
    if high is not None and (value >= high if r.get("exclusive_maximum") else value > high):
        raise ConfigError(f"{f.name}={value} ({flag}) must be {'<' if r.get('exclusive_maximum') else '<='} {high}")


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; `list[str]` -> list."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is not None:
        return origin
    return tp


def _allows_none(tp: Any) -> bool:
    """`float | None` -> True: 'none' on the command line or in a preset sets such a field to None."""
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


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
    if isinstance(value, str) and value.lower() in ("none", "null") and (f.default is None or _allows_none(tp)):
        return None
    try:
        if base in (str, list, int, float, bool) and isinstance(value, dict):
            raise TypeError(value)
        if base in (str, int, float, bool) and isinstance(value, (list, tuple)):
            raise TypeError(value)
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


def read_yaml_file(p: Path) -> Any:
    """A YAML file's content; a file that is not UTF-8 YAML is one line naming it and where it breaks."""
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file (byte {e.start} is not UTF-8); give a YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and (PRESETS_DIR / f"{path}.yaml").exists():
        p = PRESETS_DIR / f"{path}.yaml"  # a named preset shipped with the package
    if not p.exists():
        presets = sorted(x.stem for x in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"config file '{path}' not found (shipped presets: {', '.join(presets)})")
    data = read_yaml_file(p)
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
