"""Limits and validation: request size, rate limits, names, ids and field types, the server header, and
the environment errors of the CLI (one line, exit 2)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from labelkit import CSRF_RE, ROOT, sign_in
from sqlalchemy import func, select

from instructrl.cli import main as cli
from instructrl.errors import InstructRLError
from instructrl.label.app import create_app
from instructrl.label.models import Demonstration, Prompt
from instructrl.label.security import ID_MAX, RateLimiter, check_id, check_name
from instructrl.label.settings import (
    DB_ENV,
    EXPORT_DIR_ENV,
    MAX_BODY_ENV,
    SECURE_COOKIES_ENV,
    SIGN_IN_LIMIT_ENV,
    TOKEN_FAILURE_LIMIT_ENV,
    Limits,
    ServeSettings,
)
from instructrl.label.web import parse_number

BEARER = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731


@pytest.fixture
def make_client(world, tmp_path):
    """A TestClient over ``world`` with the given limits (closed at the end of the test)."""
    clients = []

    def make(**limits) -> TestClient:
        app = create_app(world.engine, export_dir=tmp_path / "exports", limits=Limits(**limits))
        c = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _demo_id(world, client, name="ana"):
    rows = client.get("/api/assignments", headers=BEARER(world.tokens[name])).json()
    return next(r["id"] for r in rows if r["kind"] == "demonstration")


def _count(world, column):
    with world.tx() as s:
        return s.scalar(select(func.count(column)))


# ---------------------------------------------------------------------------- request size
def test_a_body_over_the_limit_is_refused_before_it_is_stored(world, make_client):
    client = make_client(max_body_bytes=2000)
    aid, headers = _demo_id(world, client), BEARER(world.tokens["ana"])
    url = f"/api/assignments/{aid}/demonstration"
    r = client.post(url, json={"text": "x" * 3000}, headers=headers)  # declared Content-Length
    assert r.status_code == 413 and "at most 2000 bytes" in r.json()["error"]
    assert r.headers["x-content-type-options"] == "nosniff"  # the 413 carries the usual headers

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(10):
            yield b'{"text": "' + b"y" * 500

    r = client.post(url, content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413 and "Content-Length" not in r.request.headers
    page = client.post("/login", content=b"token=" + b"z" * 5000, headers={"Content-Type": "x"})
    assert page.status_code == 413 and "text/html" in page.headers["content-type"]
    assert _count(world, Demonstration.id) == 0
    # Under the limit, nothing changes.
    r = client.post(url, json={"text": "a demonstration"}, headers=headers)
    assert r.status_code == 200 and _count(world, Demonstration.id) == 1


def test_the_default_limit_is_one_mib(client, world):
    aid, headers = _demo_id(world, client), BEARER(world.tokens["ana"])
    r = client.post(f"/api/assignments/{aid}/demonstration", json={"text": "x" * (20 << 20)}, headers=headers)
    assert r.status_code == 413 and "1048576 bytes" in r.json()["error"]
    assert Limits().max_body_bytes == 1 << 20


# ---------------------------------------------------------------------------- rate limits
def test_rate_limiter_window_expiry_and_bounded_memory():
    now = [0.0]
    rl = RateLimiter(2, window=60, max_keys=3, clock=lambda: now[0])
    assert rl.retry_after("a") == 0
    rl.hit("a")
    now[0] = 10.0
    rl.hit("a")
    assert rl.retry_after("a") == 50  # the first hit leaves the window at t=60
    now[0] = 60.5
    assert rl.retry_after("a") == 0
    for key in "bcdef":
        rl.hit(key)
    assert len(rl) == 3  # the least recently seen keys were dropped
    off = RateLimiter(0)
    for _ in range(100):
        off.hit("x")
    assert off.retry_after("x") == 0 and len(off) == 0


def test_sign_in_is_rate_limited_per_address_and_per_account(world, make_client, caplog):
    client = make_client(sign_in_per_minute=3)
    page = client.get("/login")
    login_csrf = CSRF_RE.search(page.text).group(1)
    guesses = [f"irl_guess{i}" for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="instructrl.label"):
        for guess in guesses:
            assert client.post("/login", data={"token": guess, "csrf_token": login_csrf}).status_code == 401
        r = client.post("/login", data={"token": world.tokens["ana"], "csrf_token": login_csrf})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert "too many sign-in attempts" in r.text
    assert "rate limit" in caplog.text
    assert not any(secret in caplog.text for secret in [*guesses, world.tokens["ana"]])
    # Per account: a fresh address limit, but the same account signing in again and again.
    limits = client.app.state.rate_limits
    limits.sign_in_by_address = RateLimiter(100)
    for _ in range(3):
        client.cookies.clear()
        sign_in(client, world.tokens["ben"])
    page = client.get("/login")
    r = client.post("/login", data={"token": world.tokens["ben"], "csrf_token": CSRF_RE.search(page.text).group(1)})
    assert r.status_code == 429 and "too many sign-ins to this account" in r.text
    client.cookies.clear()
    sign_in(client, world.tokens["ana"])  # another account is not held back


def test_failed_bearer_tokens_are_rate_limited_per_address(world, make_client, caplog):
    client = make_client(token_failures_per_minute=3)
    ok = client.get("/api/me", headers=BEARER(world.tokens["ana"]))
    assert ok.status_code == 200  # successes do not count
    with caplog.at_level(logging.WARNING, logger="instructrl.label"):
        for i in range(3):
            assert client.get("/api/me", headers=BEARER(f"irl_wrong{i}")).status_code == 401
        r = client.get("/api/me", headers=BEARER(world.tokens["ana"]))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "too many failed access tokens" in r.json()["error"]
    assert "irl_wrong" not in caplog.text and world.tokens["ana"] not in caplog.text
    off = make_client(token_failures_per_minute=0)
    for i in range(30):
        assert off.get("/api/me", headers=BEARER(f"irl_wrong{i}")).status_code == 401


def test_limits_travel_to_the_workers_through_the_environment(monkeypatch):
    for key in (DB_ENV, EXPORT_DIR_ENV, SECURE_COOKIES_ENV, MAX_BODY_ENV, SIGN_IN_LIMIT_ENV, TOKEN_FAILURE_LIMIT_ENV):
        monkeypatch.setenv(key, "")  # restored (or removed) after the test, whatever to_env writes
    settings = ServeSettings("sqlite:///x.db", limits=Limits(4096, 7, 9))
    settings.to_env()
    assert ServeSettings.from_env().limits == Limits(4096, 7, 9)
    monkeypatch.setenv("INSTRUCTRL_LABEL_MAX_BODY_BYTES", "lots")
    with pytest.raises(InstructRLError, match="INSTRUCTRL_LABEL_MAX_BODY_BYTES"):
        ServeSettings.from_env()
    with pytest.raises(InstructRLError, match="--max-body-bytes 0"):
        Limits(max_body_bytes=0)


# ---------------------------------------------------------------------------- names, ids, types
def test_names_are_checked_whole():
    for good in ("ana", "a", "Lab-01.x_y", "a" * 64):
        assert check_name(good) == good
    for bad in ("ana\n", "\nana", "an a", "a\x00", "a\t", "", "-ana", "a" * 65, "anä", "../x", None, 5, ["ana"]):
        with pytest.raises(InstructRLError, match="labeler name"):
            check_name(bad)
    for good in (1, ID_MAX):
        assert check_id(good) == good
    for bad in (0, -1, ID_MAX + 1, 2**64, True, "1", 1.0, None):
        with pytest.raises(InstructRLError):
            check_id(bad)


def test_numbers_from_forms_and_json():
    assert parse_number("3", "limit", int, None) == 3 and parse_number(4.0, "seed", int, 0) == 4
    assert parse_number(None, "limit", int, None) is None and parse_number("", "seed", int, 0) == 0
    assert parse_number("0.25", "overlap_share", float, 1.0) == 0.25
    for value, kind in ((True, int), ([1], int), ("1e999", float), (float("nan"), float), (1.5, int), ("9" * 40, int)):
        with pytest.raises(InstructRLError, match="expected"):
            parse_number(value, "x", kind, None)


def test_the_api_refuses_bad_names_ids_and_types_with_4xx(client, world):
    admin, ana = BEARER(world.tokens["admin"]), BEARER(world.tokens["ana"])
    r = client.post("/api/admin/labelers", json={"name": "eve\n"}, headers=admin)
    assert r.status_code == 422 and "labeler name 'eve\\n'" in r.json()["error"]
    assert client.post("/api/admin/labelers", json={"name": ["eve"]}, headers=admin).status_code == 422
    assert client.post("/api/admin/labelers", json={"name": "eve", "role": 1}, headers=admin).status_code == 422
    for tag in ({"a": 1}, 7, "bad tag", "x\n"):
        r = client.post("/api/admin/prompts", json={"prompts": [{"prompt": "p"}], "tag": tag}, headers=admin)
        assert r.status_code == 422 and "tag" in r.json()["error"], tag
    for aid in (2**63, 2**64 + 1, 10**30, -1, 0):
        assert client.get(f"/api/assignments/{aid}", headers=ana).status_code == 404, aid
        assert client.post(f"/api/assignments/{aid}/demonstration", json={"text": "x"}, headers=ana).status_code == 404
    for status in ("x\x00y", "s" * 5000, "pending\n"):
        r = client.get("/api/assignments", params={"status": status}, headers=ana)
        assert r.status_code == 422 and "expected pending or submitted" in r.json()["error"]
    assert len(client.get("/api/assignments", params={"status": "pending"}, headers=ana).json()) == 4
    r = client.get("/api/assignments/abc", headers=ana)
    assert r.status_code == 422 and "assignment_id" in r.json()["error"]
    aid = _demo_id(world, client)
    for body in (
        b'{"text": NaN}',
        b'{"text": "\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"text": "a\\u0000b"}',
        b'{"text": ["a"]}',
    ):
        r = client.post(f"/api/assignments/{aid}/demonstration", content=body, headers=ana)
        assert r.status_code == 422, body[:20]
    for outputs in (
        [{"completion_id": 2**70, "likert": 5, "rank": 1}],
        [{"completion_id": "1", "likert": 5, "rank": 1}],
        [{"completion_id": 1, "likert": 5, "rank": 1, "flags": 3}],
    ):
        r = client.post(f"/api/assignments/{aid}/ranking", json={"outputs": outputs}, headers=ana)
        assert r.status_code == 422, outputs
    for body in (
        {"limit": -1},
        {"limit": "x"},
        {"limit": 2**70},
        {"overlap": 1e300},
        {"overlap_share": "nan"},
        {"seed": [1]},
        {"labelers": "ana"},
        {"labelers": [1]},
        {"kind": {"a": 1}},
    ):
        assert client.post("/api/admin/assign", json=body, headers=admin).status_code == 422, body
    for body in ({"name": "x", "kinds": [{"a": 1}]}, {"name": 5}, {"name": "x", "kinds": "rankings"}):
        assert client.post("/api/admin/export", json=body, headers=admin).status_code == 422, body
    long_user = {"prompt": "p", "user": "u" * 129}
    r = client.post("/api/admin/prompts", json={"prompts": [long_user]}, headers=admin)
    assert r.status_code == 422 and "at most 128" in r.json()["error"]
    with world.tx() as s:
        assert s.scalar(select(func.count(Prompt.id))) == 4  # only the seeded prompts


def test_pages_refuse_bad_names_and_huge_ids(client, world):
    csrf = sign_in(client, world.tokens["admin"])
    r = client.post("/admin/labelers", data={"csrf_token": csrf, "action": "create", "name": "eve\x07"})
    assert r.status_code == 422 and "labeler name" in r.text
    upload = {"file": ("p.jsonl", b'{"prompt": "hi"}\n', "application/json")}
    r = client.post("/admin/prompts", data={"csrf_token": csrf, "tag": "a/b"}, files=upload)
    assert r.status_code == 422 and "tag" in r.text
    r = client.post("/admin/assign", data={"csrf_token": csrf, "limit": str(2**80)})
    assert r.status_code == 422
    assert client.get(f"/tasks/{2**64}").status_code == 404


# ---------------------------------------------------------------------------- the server header
def test_no_server_header(client):
    for path in ("/healthz", "/login", "/api/me", "/static/style.css"):
        assert "server" not in client.get(path).headers, path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_live_server_hides_its_name_and_limits_bodies(world, live_server_factory):
    server = live_server_factory(world.url)
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and "server" not in r.headers
    headers = BEARER(world.tokens["ana"])
    url = server.url + "/api/assignments/1/demonstration"
    r = httpx.post(url, content=b"x" * ((1 << 20) + 1), headers=headers, timeout=30)
    assert r.status_code == 413 and "server" not in r.headers

    def chunks():
        for _ in range(40):
            yield b"y" * 65536

    r = httpx.post(url, content=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413


# ---------------------------------------------------------------------------- the CLI
def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli(["label", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_refuses_bad_names_and_tags(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    for argv, message in [
        (["create-labeler", "--db", url, "ana\n"], "labeler name 'ana\\n'"),
        (["create-labeler", "--db", url, "x" * 65], "use 1-64 letters"),
        (["import-prompts", "--db", url, str(tmp_path / "p.jsonl"), "--tag", "two words"], "tag 'two words'"),
        (["assign", "--db", url, "--limit", "-3"], "--limit -3"),
    ]:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc: a folder nobody can create files in")
def test_cli_environment_errors_are_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    (tmp_path / "a-file").write_text("")
    for argv, message in [
        (["export", "--db", url, "--out", str(tmp_path / "a-file")], f"export folder {tmp_path / 'a-file'} is a file"),
        (["export", "--db", url, "--out", "/proc/no-export"], "cannot write the export /proc/no-export"),
        (["progress", "--db", "sqlite:////proc/labels.db"], "cannot open the SQLite database /proc/labels.db"),
        (
            ["progress", "--db", "postgresql+psycopg://who:pw@127.0.0.1:1/none"],
            "cannot reach the database postgresql+psycopg://who:***@127.0.0.1:1/none",
        ),
        (["serve", "--db", url, "--port", "99999"], "--port 99999: must be between 1 and 65535"),
        (["serve", "--db", url, "--max-body-bytes", "0"], "--max-body-bytes 0"),
    ]:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
        assert "pw@" not in err


def test_cli_environment_error_in_a_subprocess_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "instructrl", "label", "serve", "--db", f"sqlite:///{tmp_path / 'l.db'}"]
        + ["--port", "99999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --port 99999: must be between 1 and 65535 (e.g. --port 8000)"]


def test_valid_demonstration_with_newlines_and_unicode_is_kept(client, world):
    aid = _demo_id(world, client)
    text = "Línea uno\n\tdos — 🌊"
    r = client.post(f"/api/assignments/{aid}/demonstration", json={"text": text}, headers=BEARER(world.tokens["ana"]))
    assert r.status_code == 200
    with world.tx() as s:
        assert s.scalar(select(Demonstration.text)) == text
    assert json.loads(json.dumps(text)) == text
