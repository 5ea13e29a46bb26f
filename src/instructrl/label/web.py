"""What the pages and the JSON API share: who is calling, CSRF checks, the request's database
transaction, and rendering a page or an error.

Browsers sign in with their access token once and then carry a session cookie (HttpOnly,
SameSite=Lax); every state-changing form or cookie-authenticated API call must also carry the
session's CSRF token. Scripts call the JSON API with ``Authorization: Bearer <token>`` instead.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from instructrl.label import db, service
from instructrl.label.labels import FLAGS, LIKERT_MAX, LIKERT_MIN
from instructrl.label.models import Labeler
from instructrl.label.security import same_secret

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "irl_session"
LOGIN_COOKIE = "irl_login_csrf"


class Unauthorized(Exception):
    """No valid session or token."""


class Forbidden(Exception):
    """Signed in, but not allowed (wrong role or bad CSRF token)."""


@dataclass
class Principal:
    labeler: Labeler
    csrf: str | None  # None when authenticated by a bearer token (no cookie, so no CSRF risk)

    @property
    def is_admin(self) -> bool:
        return self.labeler.is_admin


def transaction(request: Request) -> AbstractContextManager[Session]:
    """The request's unit of work on the app's session factory: commit on success, roll back on any error."""
    return db.transaction(request.app.state.factory)


def authenticate(request: Request, session: Session, *, admin: bool = False, allow_bearer: bool = True) -> Principal:
    """Who is calling; raises Unauthorized / Forbidden. Bearer tokens only on the JSON API."""
    header = request.headers.get("authorization", "")
    if allow_bearer and header.lower().startswith("bearer "):
        labeler = service.authenticate(session, header[7:])
        if labeler is None:
            raise Unauthorized()
        principal = Principal(labeler, None)
    else:
        ws = service.find_web_session(session, request.cookies.get(SESSION_COOKIE))
        if ws is None:
            raise Unauthorized()
        principal = Principal(ws.labeler, ws.csrf_token)
    if admin and not principal.is_admin:
        raise Forbidden("this page is for admins")
    return principal


def check_csrf(request: Request, principal: Principal, form: Any = None) -> None:
    if principal.csrf is None:
        return
    sent = request.headers.get("x-csrf-token") or (form.get("csrf_token") if form is not None else None)
    if not same_secret(sent, principal.csrf):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def template_environment() -> Environment:
    """The pages' Jinja environment: autoescaping on for every template (prompts and outputs are text)."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    env.globals.update(FLAGS=FLAGS, LIKERT=range(LIKERT_MIN, LIKERT_MAX + 1), letter=lambda i: chr(65 + i))
    return env


def render(
    request: Request, template: str, status: int = 200, principal: Principal | None = None, **context: Any
) -> HTMLResponse:
    env: Environment = request.app.state.templates
    html = env.get_template(template).render(
        request=request,
        me=principal.labeler if principal else None,
        csrf=principal.csrf if principal else None,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def error_response(request: Request, status: int, message: str) -> Response:
    if is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)
