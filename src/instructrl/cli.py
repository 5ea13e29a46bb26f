"""The `instructrl` command: one entry point, one subcommand per stage or tool.

Each subcommand lives in its stage's package as a module exposing ``configure(parser)`` and
``main(args) -> int``; it is imported only when chosen, so ``instructrl --help`` is instant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import sys

from instructrl import __version__
from instructrl.errors import InstructRLError
from instructrl.training.checkpoints import remove_empty_outputs

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("instructrl.sft.cli", "Stage 1: supervised fine-tuning on demonstrations (InstructGPT §3.5)."),
    "rm": ("instructrl.reward.cli", "Stage 2: reward model trained on K-way rankings (Eq. 1)."),
    "ppo": ("instructrl.ppo.cli", "Stage 3: PPO / PPO-ptx against the reward model (Eq. 2)."),
    "dpo": ("instructrl.dpo.cli", "DPO: the policy trained directly on comparisons (Rafailov et al. 2023)."),
    "eval": (
        "instructrl.experiments.eval_cli",
        "Win rates (judged by a reward model, the world's labelers or people), Likert/metadata, alignment tax.",
    ),
    "expert-iteration": (
        "instructrl.expert.cli",
        "Expert iteration: fine-tune on the RM's best of n samples, round after round (Anthony et al. 2017).",
    ),
    "generate": ("instructrl.generate", "Generate a response from a checkpoint for a prompt (or chat)."),
    "plan": ("instructrl.plan.cli", "Per-GPU memory of a stage by part; the cheapest setting that fits."),
    "engines": (
        "instructrl.training.engines_cli",
        "The shipped accelerate launch configs (DDP, FSDP2, FSDP2 offload).",
    ),
    "pretrain": ("instructrl.sft.pretrain_cli", "Language-model pretraining on plain text (same trainer as SFT)."),
    "world": (
        "instructrl.experiments.world_cli",
        "The miniature world: build datasets, collect rankings from simulated labelers.",
    ),
    "label": ("instructrl.label.cli", "The labeling web app and its admin commands."),
    "demo": ("instructrl.experiments.demo", "Run the whole method on the miniature world and write a report."),
    "reproduce": ("instructrl.experiments.reproduce", "Recreate the paper's main figures in miniature (HTML report)."),
}


def _top_level_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"instructrl {__version__}: align language models with human feedback (InstructGPT recipe).",
        "",
        "usage: instructrl COMMAND [options]    (instructrl COMMAND --help for its options)",
        "",
        "commands:",
    ]
    for name, (module, summary) in COMMANDS.items():
        built = importlib.util.find_spec(module) is not None
        lines.append(f"  {name:<{width}}  {summary}{'' if built else '  [not built yet]'}")
    return "\n".join(lines)


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, summary = COMMANDS[name]
    if importlib.util.find_spec(module_name) is None:
        raise InstructRLError(f"'instructrl {name}' is not built yet in this version of instructrl")
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"instructrl {name}", description=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.configure(parser)
    return parser, module


def _quiet_libraries() -> None:
    """Our own progress bars and log lines only (no per-file download/shard bars from transformers)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def environment_error(e: OSError) -> str:
    """One line for an error of the environment rather than of the code: what, where, and what to do."""
    where = f" '{e.filename}'" if e.filename else ""
    what = e.strerror or str(e)
    advice = {
        errno.EACCES: "check its permissions, or choose another path",
        errno.EPERM: "check its permissions, or choose another path",
        errno.EROFS: "the file system is read-only: choose another path",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
        errno.EISDIR: "it is a folder: give a file",
        errno.EEXIST: "it is in the way: remove it or choose another path",
        errno.ENOENT: "check the path",
        errno.ENOSPC: "free some space or choose another disk",
        errno.EADDRINUSE: "the port is taken: choose another one",
    }.get(e.errno, "check the path and the machine")
    return f"{what}{where}: {advice}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "torch.distributed", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)  # "removed shared tensor" on tied weights
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_level_help())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(_top_level_help(), file=sys.stderr)
        print(f"\nerror: unknown command '{name}'", file=sys.stderr)
        return 2
    try:
        _quiet_libraries()
        parser, module = build_parser(name)
        args = parser.parse_args(argv[1:])
        return int(module.main(args) or 0)
    except InstructRLError as e:
        remove_empty_outputs()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment: permissions, a path that is a file, a full disk, a missing file
        remove_empty_outputs()
        print(f"error: {environment_error(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if type(e).__name__ != "OperationalError":  # SQLite (sqlite3, SQLAlchemy) cannot open or write its file
            raise
        print(
            f"error: database: {str(e).splitlines()[0]}; check that its file and folder exist and are writable",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
