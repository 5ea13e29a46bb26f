"""The JSON API (``/api/...``): the same operations as the pages, for scripts and the page's own JS.

Authenticate with ``Authorization: Bearer <access token>``, or with the session cookie plus an
``X-CSRF-Token`` header on writes. Errors come back as ``{"error": "..."}`` with 401 (not signed in),
403 (not allowed), 404 (not yours or missing), 409 (already submitted) or 422 (invalid input).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from instructrl.errors import InstructRLError
from instructrl.label import service
from instructrl.label.models import Assignment
from instructrl.label.security import check_id, check_name, safe_subpath
from instructrl.label.service import OutputLabel
from instructrl.label.web import Principal, authenticate, check_csrf, parse_number, transaction

router = APIRouter(prefix="/api")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object of UTF-8 text (no NaN/Infinity, no lone surrogates, bounded nesting)."""
    raw = await request.body()  # bounded by the app's request-size limit
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\ud800) is not text
    except (ValueError, UnicodeError, RecursionError):
        raise InstructRLError("request body must be a JSON object of UTF-8 text") from None
    if not isinstance(body, dict):
        raise InstructRLError("request body must be a JSON object")
    return body


def _optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], expected: str) -> Any:
    """``body[key]`` when it is of ``kind`` (or missing: None); bools never count as numbers."""
    value = body.get(key)
    if value is not None and ((isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)):
        raise InstructRLError(f"'{key}' must be {expected}, got {type(value).__name__}")
    return value


def _assignment_json(a: Assignment, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "kind": a.task.kind,
        "status": a.status,
        "prompt": a.task.prompt.text,
        "submitted_at": a.submitted_at.isoformat() if a.submitted_at else None,
    }
    if full:
        ratings = {r.completion_id: r for r in a.ratings}
        out["completions"] = [
            {
                "id": c.id,
                "text": c.text,
                **(
                    {"likert": ratings[c.id].likert, "flags": ratings[c.id].flags, "rank": ratings[c.id].rank}
                    if c.id in ratings
                    else {}
                ),
            }
            for c in a.task.completions
        ]
        out["demonstration"] = a.demonstration.text if a.demonstration else None
    return out


@router.get("/me")
def me(request: Request) -> dict[str, Any]:
    with transaction(request) as s:
        p = authenticate(request, s)
        return {"name": p.labeler.name, "role": p.labeler.role}


@router.get("/assignments")
def my_assignments(request: Request, status: str | None = None) -> list[dict[str, Any]]:
    with transaction(request) as s:
        p = authenticate(request, s)
        return [_assignment_json(a) for a in service.assignments_of(s, p.labeler, status)]


@router.get("/assignments/{assignment_id}")
def my_assignment(request: Request, assignment_id: int) -> dict[str, Any]:
    with transaction(request) as s:
        p = authenticate(request, s)
        return _assignment_json(service.own_assignment(s, p.labeler, assignment_id), full=True)


@router.post("/assignments/{assignment_id}/demonstration")
async def submit_demonstration(request: Request, assignment_id: int) -> dict[str, Any]:
    body = await _json(request)

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            p = authenticate(request, s)
            check_csrf(request, p)
            a = service.submit_demonstration(s, p.labeler, assignment_id, body.get("text"))  # type: ignore[arg-type]
            return {"id": a.id, "status": "submitted"}

    return await run_in_threadpool(work)


@router.post("/assignments/{assignment_id}/ranking")
async def submit_ranking(request: Request, assignment_id: int) -> dict[str, Any]:
    """Body: ``{"outputs": [{"completion_id": int, "likert": 1-7, "flags": [str], "rank": int}, ...]}``."""
    body = await _json(request)
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "completion_id" in o for o in outputs):
        raise InstructRLError("'outputs' must be a list of objects with completion_id, likert, flags and rank")
    if not all(isinstance(o.get("flags"), list | None) for o in outputs):
        raise InstructRLError("'flags' must be a list of strings")
    labels = {
        check_id(o["completion_id"], "completion_id"): OutputLabel(
            o.get("likert"), [str(f) for f in o.get("flags") or []], o.get("rank")
        )
        for o in outputs
    }

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            p = authenticate(request, s)
            check_csrf(request, p)
            a = service.submit_ranking(s, p.labeler, assignment_id, labels)
            return {"id": a.id, "status": "submitted"}

    return await run_in_threadpool(work)


@router.post("/assignments/{assignment_id}/comparison")
async def submit_comparison(request: Request, assignment_id: int) -> dict[str, Any]:
    """Body: ``{"choice": "left" | "right" | "tie", "outputs": [{"completion_id": int, "likert": 1-7, "flags": [str]}, ...]}``."""
    body = await _json(request)
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and "completion_id" in o for o in outputs):
        raise InstructRLError("'outputs' must be a list of objects with completion_id, likert and flags")
    if not all(isinstance(o.get("flags"), list | None) for o in outputs):
        raise InstructRLError("'flags' must be a list of strings")
    choice = _optional(body, "choice", str, "a string")
    labels = {
        check_id(o["completion_id"], "completion_id"): OutputLabel(
            o.get("likert"), [str(f) for f in o.get("flags") or []], None
        )
        for o in outputs
    }

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            p = authenticate(request, s)
            check_csrf(request, p)
            a = service.submit_comparison(s, p.labeler, assignment_id, choice, labels)
            return {"id": a.id, "status": "submitted"}

    return await run_in_threadpool(work)


# ---------------------------------------------------------------------------- admin
def _admin(request: Request, s, write: bool = False) -> Principal:  # type: ignore[no-untyped-def]
    p = authenticate(request, s, admin=True)
    if write:
        check_csrf(request, p)
    return p


@router.get("/admin/progress")
def progress(request: Request) -> dict[str, Any]:
    with transaction(request) as s:
        _admin(request, s)
        return service.progress(s)


@router.get("/admin/agreement")
def agreement(request: Request) -> dict[str, Any]:
    with transaction(request) as s:
        _admin(request, s)
        return service.labeler_agreement(s).to_dict()


@router.post("/admin/labelers")
async def create_labeler(request: Request) -> dict[str, Any]:
    """Body: ``{"name": str, "role": "labeler" | "admin"}``; the answer holds the token, shown once."""
    body = await _json(request)

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            _admin(request, s, write=True)
            labeler, token = service.create_labeler(
                s, body.get("name"), _optional(body, "role", str, "a string") or "labeler"
            )
            return {"name": labeler.name, "role": labeler.role, "token": token}

    return await run_in_threadpool(work)


@router.post("/admin/prompts")
async def import_prompts(request: Request) -> dict[str, Any]:
    """Body: ``{"prompts": [{"prompt": ..., "user"?, "category"?, "completions"?}], "tag"?, "demonstrations"?}``."""
    body = await _json(request)
    records = body.get("prompts")
    if not isinstance(records, list):
        raise InstructRLError('\'prompts\' must be a list of objects like {"prompt": "..."}')
    lines = [service.parse_prompt_line(json.dumps(r), f"prompts[{i}]") for i, r in enumerate(records)]

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            _admin(request, s, write=True)
            r = service.import_prompts(
                s, lines, tag=body.get("tag"), demonstrations=bool(body.get("demonstrations", True)), source="api"
            )
            return {
                "prompts": r.prompts,
                "demonstration_tasks": r.demonstration_tasks,
                "ranking_tasks": r.ranking_tasks,
            }

    return await run_in_threadpool(work)


@router.post("/admin/assign")
async def assign(request: Request) -> dict[str, Any]:
    """Body: ``{"kind"?, "labelers"?: [str], "overlap"?: int, "overlap_share"?: float, "limit"?: int, "seed"?: int}``."""
    body = await _json(request)

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            _admin(request, s, write=True)
            labelers = _optional(body, "labelers", list, "a list of labeler names")
            n = service.assign(
                s,
                kind=_optional(body, "kind", str, "a string"),
                labelers=[check_name(x) for x in labelers] if labelers is not None else None,
                overlap=parse_number(body.get("overlap"), "overlap", int, 1),
                overlap_share=parse_number(body.get("overlap_share"), "overlap_share", float, 1.0),
                limit=parse_number(body.get("limit"), "limit", int, None),
                seed=parse_number(body.get("seed"), "seed", int, 0),
            )
            return {"assignments": n}

    return await run_in_threadpool(work)


@router.post("/admin/export")
async def export(request: Request) -> dict[str, Any]:
    """Body: ``{"name": "subfolder", "kinds"?: [...], "by_labeler"?: bool}``; writes under the export folder."""
    body = await _json(request)
    root = request.app.state.export_dir

    def work() -> dict[str, Any]:
        with transaction(request) as s:
            _admin(request, s, write=True)
            folder = safe_subpath(root, _optional(body, "name", str, "a string") or "")
            written = service.export(
                s,
                folder,
                kinds=_optional(body, "kinds", list, "a list of export kinds") or ["demonstrations", "rankings"],
                by_labeler=bool(body.get("by_labeler")),
            )
            return {"files": {k: str(v.relative_to(root)) for k, v in written.items()}}

    return await run_in_threadpool(work)


@router.get("/admin/export/{kind}")
def download(request: Request, kind: str) -> StreamingResponse:
    if kind not in service.EXPORT_FILES:
        raise service.NotFound(f"no export kind {kind!r}; expected one of {', '.join(service.EXPORT_FILES)}")
    with transaction(request) as s:
        _admin(request, s)
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in service.EXPORT_FILES[kind][1](s)]
    return StreamingResponse(iter(lines), media_type="application/x-ndjson")
