"""The FastAPI application: authentication, CSRF, security headers, error mapping, and the routers.

Browsers sign in with their access token once and then carry a session cookie (HttpOnly,
SameSite=Lax); every state-changing form or cookie-authenticated API call must also carry the
session's CSRF token. Scripts call the JSON API with ``Authorization: Bearer <token>`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from instructrl.errors import InstructRLError
from instructrl.label import db, service
from instructrl.label.labels import FLAGS, LIKERT_MAX, LIKERT_MIN
from instructrl.label.models import Labeler
from instructrl.label.security import same_secret

HERE = Path(__file__).parent
SESSION_COOKIE = "irl_session"
LOGIN_COOKIE = "irl_login_csrf"
# Defence in depth on top of escaping: no inline script, nothing from other origins.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


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


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(engine: Engine, *, export_dir: str | Path = "exports", secure_cookies: bool = False,
               check_schema: bool = True) -> FastAPI:
    """The app over ``engine`` (whose schema must be migrated); exports land under ``export_dir``."""
    if check_schema:
        db.ensure_current(engine)
    app = FastAPI(title="instructrl labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.factory = db.session_factory(engine)
    app.state.export_dir = Path(export_dir).resolve()
    app.state.secure_cookies = secure_cookies
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.globals.update(FLAGS=FLAGS, LIKERT=range(LIKERT_MIN, LIKERT_MAX + 1), letter=lambda i: chr(65 + i))
    app.state.templates = env

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> Response:
        if _is_api(request):
            return JSONResponse({"error": "sign in: send 'Authorization: Bearer <token>' or a session cookie"},
                                status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return error_response(request, 403, str(exc) or "forbidden")

    @app.exception_handler(service.NotFound)
    async def _not_found(request: Request, exc: service.NotFound) -> Response:
        return error_response(request, 404, str(exc))

    @app.exception_handler(service.AlreadySubmitted)
    async def _conflict(request: Request, exc: service.AlreadySubmitted) -> Response:
        return error_response(request, 409, str(exc))

    @app.exception_handler(InstructRLError)
    async def _invalid(request: Request, exc: InstructRLError) -> Response:
        return error_response(request, 422, str(exc))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness only (no data): used by process managers and the tests."""
        return {"status": "ok"}

    from instructrl.label import api, pages

    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def render(request: Request, template: str, status: int = 200, principal: Principal | None = None,
           **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.templates
    html = env.get_template(template).render(
        request=request, me=principal.labeler if principal else None,
        csrf=principal.csrf if principal else None, **context)
    return HTMLResponse(html, status_code=status)


def error_response(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)
