"""Fixtures for the labeling-app tests: databases (SQLite, PostgreSQL), seeded data, clients, a live
server, and a tiny causal LM built on the spot (nothing is downloaded)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from labelkit import (
    LiveServer,
    _pg_schema_url,
    build_eval_model,
    build_tiny_model,
    chromium_path,
    pg_base_url,
    seed,
    start_server,
    stop_server,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a throwaway schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'labels.db'}"
        return
    base = pg_base_url()
    if not base:
        pytest.skip('INSTRUCTRL_PG_URL is not set: start PostgreSQL with `eval "$(bash scripts/services.sh start)"`')
    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def world(db_url):
    w = seed(db_url, ["ana", "ben"], overlap=2)
    yield w
    w.engine.dispose()


@pytest.fixture
def client(world, tmp_path):
    from fastapi.testclient import TestClient

    from instructrl.label.app import create_app

    app = create_app(world.engine, export_dir=tmp_path / "exports")
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as c:
        yield c


@pytest.fixture
def client_for(tmp_path):
    """A TestClient on the app for any seeded database."""
    from fastapi.testclient import TestClient

    from instructrl.label.app import create_app

    clients = []

    def make(w):  # type: ignore[no-untyped-def]
        c = TestClient(
            create_app(w.engine, export_dir=tmp_path / "exports"), base_url="http://127.0.0.1", follow_redirects=False
        )
        clients.append(c.__enter__())
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def live_server_factory(tmp_path):
    started: list[subprocess.Popen] = []

    def make(db_url: str, workers: int = 1) -> LiveServer:
        server = start_server(db_url, tmp_path / "exports", workers=workers)
        started.append(server.process)
        return server

    yield make
    for proc in started:
        stop_server(proc)


# ---------------------------------------------------------------------------- a tiny causal LM
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def eval_model(tmp_path_factory) -> Path:
    """A tiny policy for `instructrl eval` (in a folder whose name a labeler must never see)."""
    return build_eval_model(tmp_path_factory.mktemp("evalmodels") / "secret-policy-dir")


# ---------------------------------------------------------------------------- a real browser
@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if not path:
        pytest.skip(
            "Chromium not found: install Debian's chromium (bash scripts/services.sh start) or set INSTRUCTRL_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()
