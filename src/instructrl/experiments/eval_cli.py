"""`instructrl eval`: the evaluation command (``evaluate.cli``), plus evaluation by people through the
labeling app (``--judge humans:DB_URL``, ``--collect``: :mod:`instructrl.experiments.human_eval`).

It lives above both packages because it joins them: ``evaluate`` and ``label`` do not import each other.
"""

from __future__ import annotations

import logging

from instructrl.config import resolve_config
from instructrl.evaluate import cli as evaluate_cli
from instructrl.evaluate.config import EvalConfig

LIST_FIELDS = ("models", "suites", "assign_to")


def configure(parser) -> None:
    evaluate_cli.configure(parser)
    for action in parser._actions:  # --assign-to ana ben as well as --assign-to ana,ben
        if action.dest == "assign_to":
            action.nargs = "+"


def main(args) -> int:
    for key in LIST_FIELDS:
        if isinstance(getattr(args, key, None), list):
            setattr(args, key, [x for v in getattr(args, key) for x in v.split(",") if x])
    cfg = resolve_config(EvalConfig, args)
    if not (cfg.collect or cfg.judge.startswith("humans:")):
        return evaluate_cli.main(args)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # it logs each plugin it sets up at import: not news
    # Imported only now: the database stack is the optional 'label' extra, and torch loads slowly (--help stays instant)
    from instructrl.experiments import human_eval

    print(human_eval.run(cfg))
    return 0
