"""``instructrl label ...``: the web app and its admin commands.

Every command takes ``--db URL`` (default: $INSTRUCTRL_LABEL_DB or sqlite:///labels.db) and brings the
schema up to date first (Alembic migrations shipped with the package). This module is only the parser;
the commands themselves are in ``commands``.
"""

from __future__ import annotations

import argparse
import logging

from instructrl.config import number_type, seed_type
from instructrl.label.settings import (
    DB_ENV,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SIGN_IN_LIMIT,
    DEFAULT_TOKEN_FAILURE_LIMIT,
    MAX_BODY_ENV,
    SIGN_IN_LIMIT_ENV,
    TOKEN_FAILURE_LIMIT_ENV,
    default_db,
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument(
            "--db",
            default=default_db(),
            help=f"Database URL: sqlite:///FILE.db or postgresql+psycopg://USER@HOST:PORT/DB (${DB_ENV}).",
        )
        return p

    p = add("serve", "Run the labeling web app.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to listen on (127.0.0.1: this machine only).")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--export-dir", default="exports", help="Folder the admin export page writes into (nothing outside it)."
    )
    p.add_argument("--workers", type=int, default=1, help="Worker processes.")
    p.add_argument("--secure-cookies", action="store_true", help="Mark cookies Secure (serve behind HTTPS).")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"Largest request body accepted; larger ones get 413 (workers read it from ${MAX_BODY_ENV}).",
    )
    p.add_argument(
        "--sign-in-limit",
        type=int,
        default=DEFAULT_SIGN_IN_LIMIT,
        help=f"Sign-ins per minute per client address and per account, then 429; 0: no limit (${SIGN_IN_LIMIT_ENV} in workers).",
    )
    p.add_argument(
        "--token-failure-limit",
        type=int,
        default=DEFAULT_TOKEN_FAILURE_LIMIT,
        help=f"Failed bearer tokens per minute per client address, then 429; 0: no limit (${TOKEN_FAILURE_LIMIT_ENV} in workers).",
    )

    p = add("migrate", "Create or upgrade the database schema.")
    p.add_argument("--revision", default="head")

    p = add("create-labeler", "Create a labeler (or admin) and print its access token once.")
    p.add_argument("name")
    p.add_argument("--role", choices=["labeler", "admin"], default="labeler")

    p = add("reset-token", "Give a labeler a new access token (the old one stops working).")
    p.add_argument("name")
    for name, verb in (
        ("deactivate", "Stop a labeler from signing in (their work is kept)."),
        ("activate", "Let a deactivated labeler sign in again."),
    ):
        add(name, verb).add_argument("name")

    p = add("import-prompts", 'Import prompts from JSONL: {"prompt": ..., "user"?, "category"?, "completions"?}.')
    p.add_argument("file")
    p.add_argument("--tag", help="Name this batch (queue-rankings --tag picks it).")
    p.add_argument(
        "--demonstrations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Queue a demonstration task for each prompt.",
    )

    p = add("queue-rankings", "Sample K outputs per prompt from a checkpoint and queue ranking tasks.")
    p.add_argument("--checkpoint", required=True, help="Hugging Face causal-LM folder.")
    p.add_argument("--k", type=int, default=4, help="Outputs per prompt (InstructGPT: K = 4..9).")
    p.add_argument("--tag", help="Only prompts imported with this tag.")
    p.add_argument("--limit", type=int, help="At most this many prompts.")
    p.add_argument("--max-new-tokens", type=number_type(int, 1), default=128)
    p.add_argument("--seed", type=seed_type, default=0)

    p = add("assign", "Assign tasks nobody holds yet, with an overlap to measure agreement.")
    p.add_argument("--kind", choices=["demonstration", "ranking"], help="Only this kind of task (default: both).")
    p.add_argument("--labelers", help="Comma-separated names (default: every active labeler).")
    p.add_argument("--overlap", type=int, default=1, help="Labelers per shared task.")
    p.add_argument(
        "--overlap-share",
        type=float,
        default=1.0,
        help="Share of tasks given to --overlap labelers (the rest get one).",
    )
    p.add_argument("--limit", type=int, help="At most this many tasks.")
    p.add_argument("--seed", type=seed_type, default=0)

    p = add("progress", "Tasks and assignments per kind and per labeler.")
    p.add_argument("--json", action="store_true")
    p = add("agreement", "Pairwise inter-labeler agreement on shared rankings (ties excluded).")
    p.add_argument("--json", action="store_true")

    p = add("export", "Write demonstrations.jsonl and rankings.jsonl for the SFT and reward-model stages.")
    p.add_argument("--out", required=True, help="Output folder.")
    p.add_argument("--kind", choices=["demonstrations", "rankings", "both"], default="both")
    p.add_argument("--by-labeler", action="store_true", help="One subfolder per labeler.")
    p.add_argument("--labeler", help="Only this labeler's work.")


def main(args: argparse.Namespace) -> int:
    # Alembic logs each plugin it sets up at import, at INFO: not news for the person running a command.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Imported here on purpose: the database and web stack (the optional 'label' extra) loads only once a
    # command runs, so `instructrl label --help` stays instant and works without the extra installed.
    from instructrl.label import commands

    return commands.run(args)
