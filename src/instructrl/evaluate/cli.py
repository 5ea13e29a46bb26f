"""`instructrl eval --models A B ... --baseline X --prompts D --out O`."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.evaluate.config import EvalConfig

MODEL_SPECS = """model specs (--models, --baseline):
  PATH | NAME=PATH                 a policy folder (or a Hub id as owner/name)
  NAME=PATH+fewshot                a base model prompted with --few-shot-k demonstrations
  NAME=PATH+best-of-N@RM_PATH      each answer the best of N samples by the reward model at RM_PATH
                                   (best-of-n; also after +fewshot), e.g. "BoN4=runs/sft+best-of-4@runs/rm"
"""


def configure(parser) -> None:
    add_config_arguments(parser, EvalConfig, aliases={"output_dir": ["--out"]})
    parser.epilog = MODEL_SPECS
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
