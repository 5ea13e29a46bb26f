"""The FastAPI application: the request-size limit, security headers, error mapping, and the routers.

Who may call what (sessions, bearer tokens, CSRF) is in ``web``; the pages in ``pages``; the JSON API
in ``api``. ``app_from_env`` is the factory ``instructrl label serve`` hands to each uvicorn worker.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instructrl.errors import InstructRLError
from instructrl.label import api, db, pages, service
from instructrl.label.settings import Limits, ServeSettings
from instructrl.label.web import (
    Forbidden,
    RateLimits,
    TooManyRequests,
    Unauthorized,
    error_response,
    is_api,
    template_environment,
)

STATIC = Path(__file__).parent / "static"
# Defence in depth on top of escaping: no inline script, nothing from other origins.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, before it is read in full.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a body
    sent without one (chunked) is counted as it streams in and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received, started = 0, False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        mib = self.max_bytes / (1024 * 1024)
        message = f"request body too large: at most {self.max_bytes} bytes ({mib:.2g} MiB) per request"
        await error_response(Request(scope), 413, message)(scope, receive, send)


def create_app(
    engine: Engine,
    *,
    export_dir: str | Path = "exports",
    secure_cookies: bool = False,
    check_schema: bool = True,
    limits: Limits | None = None,
) -> FastAPI:
    """The app over ``engine`` (whose schema must be migrated); exports land under ``export_dir``.

    ``limits``: the request-size and rate limits (default: ``Limits()``, as ``serve`` uses).
    """
    limits = limits or Limits()
    if check_schema:
        db.ensure_current(engine)
    app = FastAPI(title="instructrl labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.factory = db.session_factory(engine)
    app.state.export_dir = Path(export_dir).resolve()
    app.state.secure_cookies = secure_cookies
    app.state.templates = template_environment()
    app.state.limits = limits
    app.state.rate_limits = RateLimits.from_limits(limits)
    # Added first, so it runs inside the headers middleware below: a 413 gets the same headers.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

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
        if is_api(request):
            return JSONResponse(
                {"error": "sign in: send 'Authorization: Bearer <token>' or a session cookie"}, status_code=401
            )
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(TooManyRequests)
    async def _too_many(request: Request, exc: TooManyRequests) -> Response:
        response = error_response(request, 429, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(request, 422, f"invalid request: {problems}")

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

    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` (each worker process builds its own engine from ``settings``)."""
    settings = ServeSettings.from_env()
    return create_app(
        db.make_engine(settings.db),
        export_dir=settings.export_dir,
        secure_cookies=settings.secure_cookies,
        limits=settings.limits,
    )
