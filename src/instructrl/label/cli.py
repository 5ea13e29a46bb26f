"""``instructrl label ...``: the web app and its admin commands.

Every command takes ``--db URL`` (default: $INSTRUCTRL_LABEL_DB or sqlite:///labels.db) and brings the
schema up to date first (Alembic migrations shipped with the package).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from instructrl.errors import InstructRLError

log = logging.getLogger("instructrl.label")
DEFAULT_DB = "sqlite:///labels.db"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--db", default=os.environ.get("INSTRUCTRL_LABEL_DB", DEFAULT_DB),
                       help="Database URL: sqlite:///FILE.db or postgresql+psycopg://USER@HOST:PORT/DB ($INSTRUCTRL_LABEL_DB).")
        return p

    p = add("serve", "Run the labeling web app.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to listen on (127.0.0.1: this machine only).")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--export-dir", default="exports", help="Folder the admin export page writes into (nothing outside it).")
    p.add_argument("--workers", type=int, default=1, help="Worker processes.")
    p.add_argument("--secure-cookies", action="store_true", help="Mark cookies Secure (serve behind HTTPS).")

    p = add("migrate", "Create or upgrade the database schema.")
    p.add_argument("--revision", default="head")

    p = add("create-labeler", "Create a labeler (or admin) and print its access token once.")
    p.add_argument("name")
    p.add_argument("--role", choices=["labeler", "admin"], default="labeler")

    p = add("reset-token", "Give a labeler a new access token (the old one stops working).")
    p.add_argument("name")
    for name, verb in (("deactivate", "Stop a labeler from signing in (their work is kept)."),
                       ("activate", "Let a deactivated labeler sign in again.")):
        add(name, verb).add_argument("name")

    p = add("import-prompts", "Import prompts from JSONL: {\"prompt\": ..., \"user\"?, \"category\"?, \"completions\"?}.")
    p.add_argument("file")
    p.add_argument("--tag", help="Name this batch (queue-rankings --tag picks it).")
    p.add_argument("--demonstrations", action=argparse.BooleanOptionalAction, default=True,
                   help="Queue a demonstration task for each prompt.")

    p = add("queue-rankings", "Sample K outputs per prompt from a checkpoint and queue ranking tasks.")
    p.add_argument("--checkpoint", required=True, help="Hugging Face causal-LM folder.")
    p.add_argument("--k", type=int, default=4, help="Outputs per prompt (InstructGPT: K = 4..9).")
    p.add_argument("--tag", help="Only prompts imported with this tag.")
    p.add_argument("--limit", type=int, help="At most this many prompts.")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)

    p = add("assign", "Assign tasks nobody holds yet, with an overlap to measure agreement.")
    p.add_argument("--kind", choices=["demonstration", "ranking"], help="Only this kind of task (default: both).")
    p.add_argument("--labelers", help="Comma-separated names (default: every active labeler).")
    p.add_argument("--overlap", type=int, default=1, help="Labelers per shared task.")
    p.add_argument("--overlap-share", type=float, default=1.0, help="Share of tasks given to --overlap labelers (the rest get one).")
    p.add_argument("--limit", type=int, help="At most this many tasks.")
    p.add_argument("--seed", type=int, default=0)

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
    from instructrl.label import db

    logging.getLogger("alembic").setLevel(logging.WARNING)
    engine = db.make_engine(args.db)
    before = db.current_revision(engine)
    after = db.migrate(engine)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    if args.action == "migrate":
        print(f"schema at revision {db.current_revision(engine)}", file=sys.stderr)
        return 0
    if args.action == "serve":
        return _serve(args)
    factory = db.session_factory(engine)
    with db.transaction(factory) as s:
        return ACTIONS[args.action](s, args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["INSTRUCTRL_LABEL_DB"] = args.db
    os.environ["INSTRUCTRL_LABEL_EXPORT_DIR"] = os.path.abspath(args.export_dir)
    os.environ["INSTRUCTRL_LABEL_SECURE_COOKIES"] = "1" if args.secure_cookies else "0"
    log.info("serving on http://%s:%d (exports under %s)", args.host, args.port, os.path.abspath(args.export_dir))
    uvicorn.run("instructrl.label.cli:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")
    return 0


def app_from_env():  # type: ignore[no-untyped-def]
    """The app for ``uvicorn --factory`` (each worker process builds its own engine)."""
    from instructrl.label import db
    from instructrl.label.app import create_app

    return create_app(db.make_engine(os.environ.get("INSTRUCTRL_LABEL_DB", DEFAULT_DB)),
                      export_dir=os.environ.get("INSTRUCTRL_LABEL_EXPORT_DIR", "exports"),
                      secure_cookies=os.environ.get("INSTRUCTRL_LABEL_SECURE_COOKIES") == "1")


def _create_labeler(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    labeler, token = service.create_labeler(s, args.name, args.role)
    print(f"created {labeler.role} {labeler.name}; access token (shown only once):", file=sys.stderr)
    print(token)
    return 0


def _reset_token(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    token = service.reset_token(s, args.name)
    print(f"new access token for {args.name} (shown only once; the old one no longer works):", file=sys.stderr)
    print(token)
    return 0


def _set_active(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    service.set_active(s, args.name, args.action == "activate")
    print(f"{args.name}: {args.action}d", file=sys.stderr)
    return 0


def _import_prompts(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    lines = service.parse_prompt_file(args.file)  # the whole file is checked before anything is stored
    r = service.import_prompts(s, lines, tag=args.tag, demonstrations=args.demonstrations, source=args.file)
    print(f"{args.file}: {r.prompts} prompts, {r.demonstration_tasks} demonstration tasks, "
          f"{r.ranking_tasks} ranking tasks", file=sys.stderr)
    return 0


def _queue_rankings(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import labels, sampling, service

    if not labels.K_MIN <= args.k <= labels.K_MAX:
        raise InstructRLError(f"--k {args.k}: must be between {labels.K_MIN} and {labels.K_MAX} (InstructGPT: 4..9)")
    prompts = service.prompts_needing_rankings(s, tag=args.tag, limit=args.limit)
    if not prompts:
        print("no prompts without a ranking task" + (f" under tag {args.tag!r}" if args.tag else ""), file=sys.stderr)
        return 0
    model, tokenizer = sampling.load_checkpoint(args.checkpoint)
    outputs = sampling.sample_outputs(model, tokenizer, [p.text for p in prompts], args.k,
                                      max_new_tokens=args.max_new_tokens, seed=args.seed)
    for prompt, samples in zip(prompts, outputs):
        service.add_ranking_task(s, prompt, samples, source=os.path.abspath(args.checkpoint))
    print(f"queued {len(prompts)} ranking tasks with K={args.k} outputs from {args.checkpoint}", file=sys.stderr)
    return 0


def _assign(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    names = [n.strip() for n in args.labelers.split(",") if n.strip()] if args.labelers else None
    n = service.assign(s, kind=args.kind, labelers=names, overlap=args.overlap, overlap_share=args.overlap_share,
                       limit=args.limit, seed=args.seed)
    print(f"made {n} assignments", file=sys.stderr)
    return 0


def _progress(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    report = service.progress(s)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for kind, t in report["tasks"].items():
        print(f"{kind:<14} tasks {t['tasks']:>5}  unassigned {t['unassigned']:>5}  pending {t['pending']:>5}  submitted {t['submitted']:>5}")
    print(f"\n{'labeler':<20} {'role':<8} {'demo done':>9} {'pending':>8} {'rank done':>9} {'pending':>8}")
    for p in report["labelers"]:
        print(f"{p['labeler']:<20} {p['role']:<8} {p['demonstration_submitted']:>9} {p['demonstration_pending']:>8} "
              f"{p['ranking_submitted']:>9} {p['ranking_pending']:>8}{'' if p['active'] else '  (deactivated)'}")
    return 0


def _agreement(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    report: dict[str, Any] = service.labeler_agreement(s).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report["agreement"] is None:
        print("no ranking task has been submitted by two labelers yet (assign with --overlap 2)")
        return 0
    print(f"agreement {100 * report['agreement']:.1f}% +- {100 * report['stderr']:.1f} "
          f"({report['agreeing_pairs']}/{report['compared_pairs']} comparisons on {report['tasks']} tasks)")
    for row in report["by_pair"]:
        rate = f"{100 * row['agreement']:.1f}%" if row["agreement"] is not None else "-"
        print(f"  {' / '.join(row['labelers']):<40} {rate:>7}  ({row['compared_pairs']} comparisons)")
    return 0


def _export(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from instructrl.label import service

    kinds = ["demonstrations", "rankings"] if args.kind == "both" else [args.kind]
    written = service.export(s, args.out, kinds=kinds, by_labeler=args.by_labeler, labeler=args.labeler)
    for key, path in written.items():
        print(f"{key}: {path}")
    return 0


ACTIONS = {"create-labeler": _create_labeler, "reset-token": _reset_token, "deactivate": _set_active,
           "activate": _set_active, "import-prompts": _import_prompts, "queue-rankings": _queue_rankings,
           "assign": _assign, "progress": _progress, "agreement": _agreement, "export": _export}
