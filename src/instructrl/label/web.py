"""What the pages and the JSON API share: who is calling, CSRF checks, the request's database
transaction, and rendering a page or an error.

Browsers sign in with their access token once and then carry a session cookie (HttpOnly,
SameSite=Lax); every state-changing form or cookie-authenticated API call must also carry the
session's CSRF token. Scripts call the JSON API with ``Authorization: Bearer <token>`` instead.
Sign-in attempts and failed bearer tokens are rate limited per client address (and sign-ins per
account too); over the limit a client gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from instructrl.errors import InstructRLError
from instructrl.label import db, service
from instructrl.label.labels import FLAGS, LIKERT_MAX, LIKERT_MIN
from instructrl.label.models import Labeler
from instructrl.label.security import RateLimiter, same_secret
from instructrl.label.settings import RATE_WINDOW_SECONDS, Limits

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "irl_session"
LOGIN_COOKIE = "irl_login_csrf"
log = logging.getLogger("instructrl.label")


class Unauthorized(Exception):
    """No valid session or token."""


class Forbidden(Exception):
    """Signed in, but not allowed (wrong role or bad CSRF token)."""


class TooManyRequests(Exception):
    """Over a rate limit; ``retry_after`` seconds until the client may try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class RateLimits:
    """The app's rate limiters (in this process; each worker keeps its own)."""

    sign_in_by_address: RateLimiter
    sign_in_by_account: RateLimiter
    token_failures_by_address: RateLimiter

    @classmethod
    def from_limits(cls, limits: Limits) -> RateLimits:
        return cls(
            RateLimiter(limits.sign_in_per_minute, RATE_WINDOW_SECONDS),
            RateLimiter(limits.sign_in_per_minute, RATE_WINDOW_SECONDS),
            RateLimiter(limits.token_failures_per_minute, RATE_WINDOW_SECONDS),
        )


def client_address(request: Request) -> str:
    """The peer's address (behind a reverse proxy: the proxy's, unless uvicorn is told to trust it)."""
    return request.client.host if request.client else "unknown"


def check_rate(request: Request, limiter: RateLimiter, key: str, what: str) -> None:
    """Raise TooManyRequests when ``key`` is over ``limiter``'s limit; logged with the address, never a secret."""
    wait = limiter.retry_after(key)
    if wait:
        log.warning("rate limit: %s (%s, from %s); retry after %d s", what, key, client_address(request), wait)
        raise TooManyRequests(f"{what}: try again in {wait} s", wait)


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
        failures: RateLimiter = request.app.state.rate_limits.token_failures_by_address
        address = client_address(request)
        check_rate(request, failures, address, "too many failed access tokens from this address")
        labeler = service.authenticate(session, header[7:])
        if labeler is None:
            failures.hit(address)
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


def parse_number(value: Any, key: str, kind: type[int] | type[float], default: Any) -> Any:
    """A form or JSON value as a finite ``kind``, or ``default`` when missing; anything else is a clear 422.

    Numbers and numeric strings (forms send strings) are accepted; bools, lists, NaN, infinities and
    fractions where a whole number is expected are not.
    """
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str) or len(str(value)) > 32:
            raise ValueError
        if kind is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if isinstance(value, float) and not value.is_integer():  # inf and nan are not integers either
            raise ValueError
        return int(value)
    except (ValueError, OverflowError):
        what = "a whole number" if kind is int else "a number"
        raise InstructRLError(f"{key}: expected {what}, got {str(value)[:40]!r}") from None


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
