"""The ``instructrl label`` commands: each brings the schema up to date, then does one thing.

``serve`` runs the web app (``app``) under uvicorn; the admin commands each run in one transaction
through ``service``; ``queue-rankings`` samples outputs with ``sampling``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import uvicorn

from instructrl.errors import InstructRLError
from instructrl.label import db, labels, sampling, service
from instructrl.label.settings import Limits, ServeSettings

log = logging.getLogger("instructrl.label")


def run(args: argparse.Namespace) -> int:
    """Bring the schema up to date, then run ``args.action`` (one transaction for the admin commands)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = _serve_settings(args) if args.action == "serve" else None  # bad flags fail before the database
    engine = db.make_engine(args.db)
    before = db.current_revision(engine)
    after = db.migrate(engine)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    if args.action == "migrate":
        print(f"schema at revision {db.current_revision(engine)}", file=sys.stderr)
        return 0
    if settings is not None:
        return _serve(args, settings)
    factory = db.session_factory(engine)
    with db.reachable(engine), db.transaction(factory) as s:  # e.g. a read-only SQLite file: one line
        return ACTIONS[args.action](s, args)


def _serve_settings(args: argparse.Namespace) -> ServeSettings:
    if not 1 <= args.port <= 65535:
        raise InstructRLError(f"--port {args.port}: must be between 1 and 65535 (e.g. --port 8000)")
    if args.workers < 1:
        raise InstructRLError(f"--workers {args.workers}: must be at least 1")
    limits = Limits(args.max_body_bytes, args.sign_in_limit, args.token_failure_limit)
    return ServeSettings(args.db, args.export_dir, args.secure_cookies, limits)


def _serve(args: argparse.Namespace, settings: ServeSettings) -> int:
    settings.to_env()  # read back by every worker
    log.info("serving on http://%s:%d (exports under %s)", args.host, args.port, os.path.abspath(args.export_dir))
    uvicorn.run(
        "instructrl.label.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        server_header=False,  # do not name the server software in every response
    )
    return 0


def _create_labeler(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    labeler, token = service.create_labeler(s, args.name, args.role)
    print(f"created {labeler.role} {labeler.name}; access token (shown only once):", file=sys.stderr)
    print(token)
    return 0


def _reset_token(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    token = service.reset_token(s, args.name)
    print(f"new access token for {args.name} (shown only once; the old one no longer works):", file=sys.stderr)
    print(token)
    return 0


def _set_active(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    service.set_active(s, args.name, args.action == "activate")
    print(f"{args.name}: {args.action}d", file=sys.stderr)
    return 0


def _import_prompts(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    lines = service.parse_prompt_file(args.file)  # the whole file is checked before anything is stored
    r = service.import_prompts(s, lines, tag=args.tag, demonstrations=args.demonstrations, source=args.file)
    print(
        f"{args.file}: {r.prompts} prompts, {r.demonstration_tasks} demonstration tasks, "
        f"{r.ranking_tasks} ranking tasks",
        file=sys.stderr,
    )
    return 0


def _queue_rankings(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    if not labels.K_MIN <= args.k <= labels.K_MAX:
        raise InstructRLError(f"--k {args.k}: must be between {labels.K_MIN} and {labels.K_MAX} (InstructGPT: 4..9)")
    prompts = service.prompts_needing_rankings(s, tag=args.tag, limit=args.limit)
    if not prompts:
        print("no prompts without a ranking task" + (f" under tag {args.tag!r}" if args.tag else ""), file=sys.stderr)
        return 0
    model, tokenizer = sampling.load_checkpoint(args.checkpoint)
    outputs = sampling.sample_outputs(
        model, tokenizer, [p.text for p in prompts], args.k, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    for prompt, samples in zip(prompts, outputs):
        service.add_ranking_task(s, prompt, samples, source=os.path.abspath(args.checkpoint))
    print(f"queued {len(prompts)} ranking tasks with K={args.k} outputs from {args.checkpoint}", file=sys.stderr)
    return 0


def _assign(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    names = [n.strip() for n in args.labelers.split(",") if n.strip()] if args.labelers else None
    n = service.assign(
        s,
        kind=args.kind,
        labelers=names,
        overlap=args.overlap,
        overlap_share=args.overlap_share,
        limit=args.limit,
        seed=args.seed,
    )
    print(f"made {n} assignments", file=sys.stderr)
    return 0


def _progress(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    report = service.progress(s)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for kind, t in report["tasks"].items():
        print(
            f"{kind:<14} tasks {t['tasks']:>5}  unassigned {t['unassigned']:>5}  pending {t['pending']:>5}  submitted {t['submitted']:>5}"
        )
    print(
        f"\n{'labeler':<20} {'role':<8} {'demo done':>9} {'pending':>8} {'rank done':>9} {'pending':>8} "
        f"{'compare done':>12} {'pending':>8}"
    )
    for p in report["labelers"]:
        print(
            f"{p['labeler']:<20} {p['role']:<8} {p['demonstration_submitted']:>9} {p['demonstration_pending']:>8} "
            f"{p['ranking_submitted']:>9} {p['ranking_pending']:>8} {p['comparison_submitted']:>12} "
            f"{p['comparison_pending']:>8}{'' if p['active'] else '  (deactivated)'}"
        )
    return 0


def _agreement(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    report: dict[str, Any] = service.labeler_agreement(s).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report["agreement"] is None:
        print("no ranking task has been submitted by two labelers yet (assign with --overlap 2)")
        return 0
    print(
        f"agreement {100 * report['agreement']:.1f}% +- {100 * report['stderr']:.1f} "
        f"({report['agreeing_pairs']}/{report['compared_pairs']} comparisons on {report['tasks']} tasks)"
    )
    for row in report["by_pair"]:
        rate = f"{100 * row['agreement']:.1f}%" if row["agreement"] is not None else "-"
        print(f"  {' / '.join(row['labelers']):<40} {rate:>7}  ({row['compared_pairs']} comparisons)")
    return 0


def _export(s, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    kinds = ["demonstrations", "rankings"] if args.kind == "both" else [args.kind]
    written = service.export(s, args.out, kinds=kinds, by_labeler=args.by_labeler, labeler=args.labeler)
    for key, path in written.items():
        print(f"{key}: {path}")
    return 0


ACTIONS = {
    "create-labeler": _create_labeler,
    "reset-token": _reset_token,
    "deactivate": _set_active,
    "activate": _set_active,
    "import-prompts": _import_prompts,
    "queue-rankings": _queue_rankings,
    "assign": _assign,
    "progress": _progress,
    "agreement": _agreement,
    "export": _export,
}
