"""Every route of the app, fuzzed: random and boundary inputs (huge, negative and non-numeric ids, wrong
JSON types, empty and huge strings, unicode, control characters), sent anonymously, as a labeler and as
an admin. Whatever comes in, the answer is never a 5xx. Seeded and bounded (SQLite, a few hundred
requests)."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from labelkit import seed, sign_in
from starlette.routing import Mount

from instructrl.label import service
from instructrl.label.app import create_app
from instructrl.label.security import ID_MAX
from instructrl.label.settings import Limits
from instructrl.label.web import SESSION_COOKIE

SEED, ROUNDS = 20261128, 4  # ROUNDS requests per route, method and caller

IDS: list[Any] = [
    0,
    -1,
    1,
    2,
    3,
    7,
    9,
    10,
    12,
    ID_MAX,
    ID_MAX + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**40,
    "abc",
    "1.5",
    "1e3",
    " 1",
]
IDS += ["%00", "\u0661", "-0", "", "9" * 400, "../1", "1;DROP TABLE labelers"]
STRINGS: list[str] = ["", " ", "a", "ana\n", "x\x00y", "\x07\x1b[31m", "\r\n", "🌊" * 10, "\u202eevil", "<script>x"]
STRINGS += ["' OR 1=1 --", "../../etc/passwd", "/abs", "a" * 65, "z" * 70_000, "demonstrations", "rankings", "on"]
STRINGS += ["admin", "labeler", "create", "reset", "deactivate", "activate", "ranking", "demonstration", "5", "-3"]
STRINGS += ["left", "right", "tie", "comparison"]
NUMBERS: list[Any] = [0, -1, 1, 4, 7, 8, 2**31, 2**63, 2**70, -(2**70), 0.5, -0.0, 1e308, 1.5, True, False]
FIELDS = ["text", "name", "role", "tag", "kind", "kinds", "labelers", "overlap", "overlap_share", "limit", "seed"]
FIELDS += ["by_labeler", "demonstrations", "token", "action", "status", "outputs", "prompts", "choice"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: numbers, strings, lists, objects, null (nested a little)."""
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(NUMBERS)
    if pick < 0.65:
        return rng.choice(STRINGS)
    if pick < 0.75 or depth > 2:
        return None
    if pick < 0.88:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELDS + ["completion_id", "likert", "flags", "rank", "prompt"]): _value(rng, depth + 1)}


def _outputs(rng: random.Random) -> Any:
    return [
        {
            "completion_id": rng.choice(IDS + NUMBERS),
            "likert": rng.choice(NUMBERS + STRINGS[:6]),
            "flags": rng.choice([[], ["hallucination"], ["nope"], "hallucination", 3, [None], [["x"]]]),
            "rank": rng.choice(NUMBERS + STRINGS[:6]),
        }
        for _ in range(rng.randint(0, 5))
    ]


def _prompts(rng: random.Random) -> Any:
    return [
        {
            "prompt": rng.choice(STRINGS + NUMBERS),
            **({"user": _value(rng)} if rng.random() < 0.4 else {}),
            **({"category": _value(rng)} if rng.random() < 0.4 else {}),
            **({"completions": rng.choice([STRINGS[:4], ["a"], [1, 2], "ab"])} if rng.random() < 0.4 else {}),
        }
        for _ in range(rng.randint(0, 3))
    ]


def _json_body(rng: random.Random) -> bytes:
    pick = rng.random()
    if pick < 0.08:
        return rng.choice([b"", b"not json", b"[1, 2]", b'"text"', b"{", b"\xff\xfe", b'{"text": NaN}'])
    if pick < 0.12:
        return b'{"text": "\\ud800 lone surrogate"}'
    if pick < 0.15:
        return b"[" * 50_000 + b"]" * 50_000
    if pick < 0.17:
        return b'{"text": "' + b"x" * (2 << 20) + b'"}'  # over the request-size limit
    body = {key: _value(rng) for key in rng.sample(FIELDS, rng.randint(0, 5))}
    if rng.random() < 0.5:
        body["outputs"] = _outputs(rng)
    if rng.random() < 0.4:
        body["prompts"] = _prompts(rng)
    return json.dumps(body).encode()


def _form(rng: random.Random, csrf: str | None) -> dict[str, Any]:
    form: dict[str, Any] = {key: str(_value(rng)) for key in rng.sample(FIELDS, rng.randint(0, 6))}
    for _ in range(rng.randint(0, 4)):
        cid = rng.choice(IDS)
        form[f"{rng.choice(['likert', 'rank', 'flags'])}_{cid}"] = str(rng.choice(NUMBERS + STRINGS[:8]))
    if csrf is not None and rng.random() < 0.85:
        form["csrf_token"] = csrf
    return form


class Caller:
    """One client and how it signs its requests: anonymous, or a labeler/admin (cookie and bearer)."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client, self.token, self.csrf = client, token, None
        self.sign_in()

    def sign_in(self) -> None:
        if self.token is not None and SESSION_COOKIE not in self.client.cookies:
            self.csrf = sign_in(self.client, self.token)

    def headers(self, rng: random.Random, api: bool) -> dict[str, str]:
        if self.token is None:
            return {"Authorization": "Bearer " + rng.choice(STRINGS[:4])} if rng.random() < 0.1 else {}
        if api and rng.random() < 0.6:
            return {"Authorization": f"Bearer {self.token}"}
        return {"X-CSRF-Token": self.csrf} if self.csrf and rng.random() < 0.9 else {}


def _targets(routes) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path template) for every route in ``routes`` (``app.routes``), mounts included."""
    out = []
    for route in routes:
        if isinstance(route, APIRoute):
            out += [(method, route.path) for method in sorted(route.methods)]
        elif isinstance(route, Mount):
            out.append(("GET", route.path + "/{path}"))
        elif hasattr(route, "original_router"):  # newer FastAPI keeps an included router whole (no prefix here)
            out += _targets(route.original_router.routes)
    return out


def _fill(template: str, rng: random.Random) -> str:
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        name = path[start + 1 : end]
        if name == "kind":
            value = rng.choice(["rankings", "demonstrations", *STRINGS[:10]])
        elif name == "path":
            value = rng.choice(["style.css", "app.js", "../app.py", "..%2fapp.py", "%00", "x" * 300, ""])
        else:
            value = rng.choice(IDS)
        path = path[:start] + quote(str(value), safe="%/.") + path[end + 1 :]
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_route_answers_5xx_to_any_input(db_url, tmp_path):
    world = seed(db_url, ["ana", "ben"], overlap=2)
    with world.tx() as s:  # comparison tasks too (an evaluation's), in both labelers' queues
        pairs = [
            service.PairToCompare(i, f"prompt {i}", "one", "<b>two</b>", model="m", baseline="b") for i in range(2)
        ]
        pairs.append(service.PairToCompare(0, "check", "good", "bad"))
        service.queue_comparisons(s, pairs, batch="fuzz", labelers=["ana", "ben"], per_item=2)
    # High rate limits, so the fuzzed requests go on past sign-in instead of all meeting a 429.
    app = create_app(world.engine, export_dir=tmp_path / "exports", limits=Limits(1 << 20, 10_000, 10_000))
    targets = _targets(app.routes)
    assert {("GET", "/api/me"), ("POST", "/api/admin/prompts"), ("POST", "/tasks/{assignment_id}")} <= set(targets)
    rng = random.Random(SEED)
    failures, sent = [], 0
    clients = [TestClient(app, base_url="http://127.0.0.1", follow_redirects=False, raise_server_exceptions=False)]
    clients += [
        TestClient(app, base_url="http://127.0.0.1", follow_redirects=False, raise_server_exceptions=False)
        for _ in range(2)
    ]
    try:
        for c in clients:
            c.__enter__()
        callers = {
            "anonymous": Caller(clients[0], None),
            "labeler": Caller(clients[1], world.tokens["ana"]),
            "admin": Caller(clients[2], world.tokens["admin"]),
        }
        for method, template in targets:
            for who, caller in callers.items():
                for _ in range(ROUNDS):
                    caller.sign_in()  # again, if a fuzzed /logout ended the session
                    path = _fill(template, rng)
                    api = path.startswith("/api/")
                    headers = caller.headers(rng, api)
                    query = {
                        k: str(_value(rng))[:1000] for k in rng.sample(["status", "done", "already"], rng.randint(0, 2))
                    }
                    if method == "GET":
                        r = caller.client.get(path, params=query, headers=headers)
                    elif api:
                        r = caller.client.post(
                            path, content=_json_body(rng), headers={**headers, "Content-Type": "application/json"}
                        )
                    elif template == "/admin/prompts" and rng.random() < 0.6:
                        data = rng.choice([b'{"prompt": "hi"}\n', b"\xff\xfe", b"[" * 5000, _json_body(rng)])
                        r = caller.client.post(
                            path, data=_form(rng, caller.csrf), files={"file": ("p.jsonl", data)}, headers=headers
                        )
                    else:
                        r = caller.client.post(path, data=_form(rng, caller.csrf), headers=headers)
                    sent += 1
                    if r.status_code >= 500:
                        failures.append((who, method, path[:120], r.status_code, r.text[:300]))
    finally:
        for c in clients:
            c.__exit__(None, None, None)
        world.engine.dispose()
    assert sent >= 200
    assert not failures, "\n".join(map(str, failures))
