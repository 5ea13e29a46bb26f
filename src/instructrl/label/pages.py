"""Server-rendered pages: sign-in, the labeler's queue and tasks, and the admin pages."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from instructrl.errors import InstructRLError
from instructrl.label import service
from instructrl.label.labels import LabelError
from instructrl.label.models import KINDS, PENDING, Assignment, Labeler
from instructrl.label.security import new_csrf_token, safe_subpath, same_secret
from instructrl.label.service import OutputLabel
from instructrl.label.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Principal,
    RateLimits,
    authenticate,
    check_csrf,
    check_rate,
    client_address,
    parse_number,
    render,
    transaction,
)

router = APIRouter()


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---------------------------------------------------------------------------- sign in / out
@router.get("/login")
def login_page(request: Request) -> Response:
    token = new_csrf_token()  # login CSRF: double-submit cookie (there is no session yet)
    response = render(request, "login.html", login_csrf=token)
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.secure_cookies, max_age=3600
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: FormData) -> Response:
    limits: RateLimits = request.app.state.rate_limits
    address = client_address(request)
    check_rate(request, limits.sign_in_by_address, address, "too many sign-in attempts from this address")
    limits.sign_in_by_address.hit(address)
    if not same_secret(form.get("csrf_token"), request.cookies.get(LOGIN_COOKIE)):
        return render(
            request,
            "login.html",
            status=403,
            login_csrf=request.cookies.get(LOGIN_COOKIE) or "",
            error="Your sign-in form expired: reload the page and try again.",
        )
    with transaction(request) as s:
        labeler = service.authenticate(s, str(form.get("token") or ""))
        if labeler is None:
            return render(
                request,
                "login.html",
                status=401,
                login_csrf=request.cookies.get(LOGIN_COOKIE),
                error="Unknown or deactivated access token.",
            )
        account = f"labeler {labeler.id}"
        check_rate(request, limits.sign_in_by_account, account, "too many sign-ins to this account")
        limits.sign_in_by_account.hit(account)
        key, _csrf = service.open_web_session(s, labeler)
    response = _see_other("/admin" if labeler.is_admin else "/")
    response.set_cookie(
        SESSION_COOKIE,
        key,
        httponly=True,
        samesite="lax",
        secure=request.app.state.secure_cookies,
        max_age=service.SESSION_HOURS * 3600,
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_logout, request, form)


def _logout(request: Request, form: FormData) -> Response:
    with transaction(request) as s:
        p = authenticate(request, s, allow_bearer=False)
        check_csrf(request, p, form)
        service.close_web_session(s, request.cookies.get(SESSION_COOKIE))
    response = _see_other("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------------- the labeler's work
@router.get("/")
def queue(request: Request) -> Response:
    with transaction(request) as s:
        p = authenticate(request, s, allow_bearer=False)
        mine = service.assignments_of(s, p.labeler)
        pending = [a for a in mine if a.status == PENDING]
        done = [a for a in mine if a.status != PENDING]
        return render(
            request,
            "queue.html",
            principal=p,
            pending=pending,
            done=done,
            finished=request.query_params.get("done") == "1",
        )


@router.get("/next")
def next_task(request: Request) -> Response:
    with transaction(request) as s:
        p = authenticate(request, s, allow_bearer=False)
        a = service.next_pending(s, p.labeler)
    return _see_other(f"/tasks/{a.id}" if a else "/?done=1")


@router.get("/tasks/{assignment_id}")
def task_page(request: Request, assignment_id: int) -> Response:
    with transaction(request) as s:
        p = authenticate(request, s, allow_bearer=False)
        a = service.own_assignment(s, p.labeler, assignment_id)
        return _render_task(
            request,
            p,
            a,
            notice="You already submitted this task; your first submission is kept."
            if request.query_params.get("already")
            else None,
        )


def _render_task(
    request: Request,
    p: Principal,
    a: Assignment,
    status: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    notice: str | None = None,
) -> Response:
    ratings = {r.completion_id: r for r in a.ratings}
    return render(
        request,
        f"{a.task.kind}.html",
        status=status,
        principal=p,
        a=a,
        task=a.task,
        completions=a.task.completions,
        ratings=ratings,
        error=error,
        values=values or {},
        notice=notice,
    )


@router.post("/tasks/{assignment_id}")
async def submit_task(request: Request, assignment_id: int) -> Response:
    form = await request.form()
    return await run_in_threadpool(_submit_task, request, assignment_id, form)


def _form_labels(form: FormData, completion_ids: list[int]) -> dict[int, OutputLabel]:
    return {
        cid: OutputLabel(
            form.get(f"likert_{cid}"), [str(v) for v in form.getlist(f"flags_{cid}")], form.get(f"rank_{cid}") or None
        )
        for cid in completion_ids
    }


def _submit_task(request: Request, assignment_id: int, form: FormData) -> Response:
    try:
        with transaction(request) as s:  # one transaction: check who, check CSRF, store, mark submitted
            p = authenticate(request, s, allow_bearer=False)
            check_csrf(request, p, form)
            a = service.own_assignment(s, p.labeler, assignment_id)
            if a.task.kind == "demonstration":
                service.submit_demonstration(s, p.labeler, assignment_id, str(form.get("text") or ""))
            elif a.task.kind == "comparison":
                ids = [c.id for c in a.task.completions]
                service.submit_comparison(s, p.labeler, assignment_id, form.get("choice"), _form_labels(form, ids))
            else:
                ids = [c.id for c in a.task.completions]
                service.submit_ranking(s, p.labeler, assignment_id, _form_labels(form, ids))
    except service.AlreadySubmitted:
        return _see_other(f"/tasks/{assignment_id}?already=1")
    except LabelError as e:
        with transaction(request) as s:
            p = authenticate(request, s, allow_bearer=False)
            a = service.own_assignment(s, p.labeler, assignment_id)
            values = {
                "text": form.get("text") or "",
                "choice": form.get("choice") or "",
                "likert": {k[7:]: v for k, v in form.items() if k.startswith("likert_")},
                "rank": {k[5:]: v for k, v in form.items() if k.startswith("rank_")},
                "flags": {str(c.id): form.getlist(f"flags_{c.id}") for c in a.task.completions},
            }
            return _render_task(request, p, a, status=422, error=str(e), values=values)
    return _see_other("/next")


# ---------------------------------------------------------------------------- admin
def _admin(request: Request, s, form: FormData | None = None) -> Principal:  # type: ignore[no-untyped-def]
    p = authenticate(request, s, admin=True, allow_bearer=False)
    if form is not None:
        check_csrf(request, p, form)
    return p


@router.get("/admin")
def admin_home(request: Request) -> Response:
    with transaction(request) as s:
        p = _admin(request, s)
        return render(
            request,
            "admin.html",
            principal=p,
            progress=service.progress(s),
            agreement=service.labeler_agreement(s).to_dict(),
        )


@router.get("/admin/labelers")
def admin_labelers(request: Request) -> Response:
    with transaction(request) as s:
        return _labelers_page(request, _admin(request, s), s)


def _labelers_page(request: Request, p: Principal, s, status: int = 200, **extra: Any) -> Response:  # type: ignore[no-untyped-def]
    people = list(s.scalars(select(Labeler).order_by(Labeler.name)))
    return render(request, "admin_labelers.html", status=status, principal=p, people=people, **extra)


@router.post("/admin/labelers")
async def admin_labelers_post(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_admin_labelers_post, request, form)


def _admin_labelers_post(request: Request, form: FormData) -> Response:
    action, name = str(form.get("action") or "create"), str(form.get("name") or "").strip()
    try:
        with transaction(request) as s:
            p = _admin(request, s, form)
            if action == "create":
                _, token = service.create_labeler(s, name, str(form.get("role") or "labeler"))
                message = f"Created {name}. Give them this access token; it is shown only once."
            elif action == "reset":
                token = service.reset_token(s, name)
                message = f"New token for {name} (the old one no longer works). It is shown only once."
            elif action in ("deactivate", "activate"):
                if name == p.labeler.name:
                    raise InstructRLError("you cannot deactivate your own account")
                service.set_active(s, name, action == "activate")
                token, message = None, f"{name} is now {'active' if action == 'activate' else 'deactivated'}."
            else:
                raise InstructRLError(f"unknown action {action!r}")
    except InstructRLError as e:
        with transaction(request) as s:
            return _labelers_page(request, _admin(request, s), s, status=422, error=str(e))
    with transaction(request) as s:
        return _labelers_page(request, p, s, message=message, token=token, token_for=name)


@router.get("/admin/prompts")
def admin_prompts(request: Request) -> Response:
    with transaction(request) as s:
        return render(request, "admin_prompts.html", principal=_admin(request, s))


@router.post("/admin/prompts")
async def admin_prompts_post(request: Request) -> Response:
    form = await request.form()
    upload = form.get("file")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    name = upload.filename if isinstance(upload, UploadFile) and upload.filename else "upload.jsonl"
    return await run_in_threadpool(_admin_prompts_post, request, form, data, name)


def _admin_prompts_post(request: Request, form: FormData, data: bytes, filename: str) -> Response:
    try:
        with transaction(request) as s:
            p = _admin(request, s, form)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InstructRLError(f"{filename}: not UTF-8 text") from None
            lines = service.parse_prompt_text(text, filename)
            result = service.import_prompts(
                s,
                lines,
                tag=str(form.get("tag") or "").strip() or None,
                demonstrations=form.get("demonstrations") == "on",
                source=filename,
            )
    except InstructRLError as e:
        with transaction(request) as s:
            return render(request, "admin_prompts.html", status=422, principal=_admin(request, s), error=str(e))
    return render(request, "admin_prompts.html", principal=p, result=result, filename=filename)


@router.get("/admin/assign")
def admin_assign(request: Request) -> Response:
    with transaction(request) as s:
        return _assign_page(request, _admin(request, s), s)


def _assign_page(request: Request, p: Principal, s, status: int = 200, **extra: Any) -> Response:  # type: ignore[no-untyped-def]
    people = list(s.scalars(select(Labeler).where(Labeler.active.is_(True)).order_by(Labeler.name)))
    return render(
        request,
        "admin_assign.html",
        status=status,
        principal=p,
        people=people,
        progress=service.progress(s),
        kinds=KINDS,
        **extra,
    )


@router.post("/admin/assign")
async def admin_assign_post(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_admin_assign_post, request, form)


def _admin_assign_post(request: Request, form: FormData) -> Response:
    try:
        with transaction(request) as s:
            p = _admin(request, s, form)
            n = service.assign(
                s,
                kind=str(form.get("kind") or "") or None,
                labelers=[str(x) for x in form.getlist("labelers")] or None,
                overlap=parse_number(str(form.get("overlap") or "").strip(), "overlap", int, 1),
                overlap_share=parse_number(str(form.get("overlap_share") or "").strip(), "overlap_share", float, 1.0),
                limit=parse_number(str(form.get("limit") or "").strip(), "limit", int, None),
                seed=parse_number(str(form.get("seed") or "").strip(), "seed", int, 0),
            )
    except InstructRLError as e:
        with transaction(request) as s:
            return _assign_page(request, _admin(request, s), s, status=422, error=str(e))
    with transaction(request) as s:
        return _assign_page(request, p, s, message=f"Made {n} assignment(s).")


@router.get("/admin/export")
def admin_export(request: Request) -> Response:
    with transaction(request) as s:
        return render(
            request,
            "admin_export.html",
            principal=_admin(request, s),
            default_name=datetime.now().strftime("export-%Y%m%d-%H%M%S"),
        )


@router.post("/admin/export")
async def admin_export_post(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_admin_export_post, request, form)


def _admin_export_post(request: Request, form: FormData) -> Response:
    root = request.app.state.export_dir
    name = str(form.get("name") or "").strip()
    try:
        with transaction(request) as s:
            p = _admin(request, s, form)
            kinds = [str(k) for k in form.getlist("kinds")] or ["demonstrations", "rankings"]
            folder = safe_subpath(root, name)  # refuses '..', absolute paths and symlinks out of the folder
            written = service.export(s, folder, kinds=kinds, by_labeler=form.get("by_labeler") == "on")
    except InstructRLError as e:
        with transaction(request) as s:
            return render(
                request, "admin_export.html", status=422, principal=_admin(request, s), error=str(e), default_name=name
            )
    files = [(str(path.relative_to(root)), sum(1 for _ in path.open(encoding="utf-8"))) for path in written.values()]
    return render(request, "admin_export.html", principal=p, files=files, root=str(root), default_name=name)


@router.get("/admin/download/{kind}.jsonl")
def admin_download(request: Request, kind: str) -> Response:
    if kind not in service.EXPORT_FILES:
        raise service.NotFound(f"no export kind {kind!r}")
    with transaction(request) as s:
        _admin(request, s)
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in service.EXPORT_FILES[kind][1](s)]
    return StreamingResponse(
        iter(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{kind}.jsonl"'},
    )
