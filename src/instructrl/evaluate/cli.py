"""`instructrl eval --models A B ... --baseline X --prompts D --out O`."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.evaluate.config import EvalConfig


def configure(parser) -> None:
    add_config_arguments(parser, EvalConfig, aliases={"output_dir": ["--out"]})
    for action in parser._actions:  # --models A B C as well as --models A,B,C
        if action.dest in ("models", "suites"):
            action.nargs = "+"


def main(args) -> int:
    # torch and transformers load only when the command runs, so `instructrl eval --help` stays instant
    from instructrl.evaluate.runner import run_eval, summary_markdown

    for key in ("models", "suites"):
        if isinstance(getattr(args, key, None), list):
            setattr(args, key, [x for v in getattr(args, key) for x in v.split(",") if x])
    cfg = resolve_config(EvalConfig, args)
    results = run_eval(cfg)
    print(summary_markdown(results))
    return 0
