"""The FastAPI application: security headers, error mapping, and the pages' and the API's routers.

Who may call what (sessions, bearer tokens, CSRF) is in ``web``; the pages in ``pages``; the JSON API
in ``api``. ``app_from_env`` is the factory ``instructrl label serve`` hands to each uvicorn worker.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from instructrl.errors import InstructRLError
from instructrl.label import api, db, pages, service
from instructrl.label.settings import ServeSettings
from instructrl.label.web import Forbidden, Unauthorized, error_response, is_api, template_environment

STATIC = Path(__file__).parent / "static"
# Defence in depth on top of escaping: no inline script, nothing from other origins.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(
    engine: Engine, *, export_dir: str | Path = "exports", secure_cookies: bool = False, check_schema: bool = True
) -> FastAPI:
    """The app over ``engine`` (whose schema must be migrated); exports land under ``export_dir``."""
    if check_schema:
        db.ensure_current(engine)
    app = FastAPI(title="instructrl labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.factory = db.session_factory(engine)
    app.state.export_dir = Path(export_dir).resolve()
    app.state.secure_cookies = secure_cookies
    app.state.templates = template_environment()

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
        db.make_engine(settings.db), export_dir=settings.export_dir, secure_cookies=settings.secure_cookies
    )
