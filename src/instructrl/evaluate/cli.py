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
    from instructrl.evaluate.runner import run_eval

    for key in ("models", "suites"):
        if isinstance(getattr(args, key, None), list):
            setattr(args, key, [x for v in getattr(args, key) for x in v.split(",") if x])
    cfg = resolve_config(EvalConfig, args)
    results = run_eval(cfg)
    from instructrl.evaluate.runner import summary_markdown

    print(summary_markdown(results))
    return 0
