"""API and page tests for every role and the forbidden paths (FastAPI TestClient, SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from labelkit import CSRF_RE, sign_in
from sqlalchemy import func, select

from instructrl.label.models import Assignment, Demonstration, Labeler, Rating

BEARER = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731


def _kinds(client, token):
    rows = client.get("/api/assignments", headers=BEARER(token)).json()
    return {r["id"]: r["kind"] for r in rows}


def _ranking_body(detail, ranks=None, likert=None, flags=None):
    comps = detail["completions"]
    ranks = ranks or list(range(1, len(comps) + 1))
    return {
        "outputs": [
            {
                "completion_id": c["id"],
                "likert": (likert or [5] * len(comps))[i],
                "flags": (flags or [[]] * len(comps))[i],
                "rank": ranks[i],
            }
            for i, c in enumerate(comps)
        ]
    }


def _counts(world):
    with world.tx() as s:
        return (
            s.scalar(select(func.count(Demonstration.id))),
            s.scalar(select(func.count(Rating.id))),
            s.scalar(select(func.count(Assignment.id)).where(Assignment.status == "submitted")),
        )


def test_anonymous_is_sent_to_sign_in_everywhere(client):
    for path in (
        "/",
        "/next",
        "/tasks/1",
        "/admin",
        "/admin/labelers",
        "/admin/prompts",
        "/admin/assign",
        "/admin/export",
        "/admin/download/rankings.jsonl",
    ):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
    for path in (
        "/api/me",
        "/api/assignments",
        "/api/assignments/1",
        "/api/admin/progress",
        "/api/admin/agreement",
        "/api/admin/export/rankings",
    ):
        assert client.get(path).status_code == 401, path
    for path in ("/api/assignments/1/demonstration", "/api/admin/labelers", "/api/admin/assign", "/api/admin/export"):
        assert client.post(path, json={}).status_code == 401, path
    assert client.post("/tasks/1", data={"text": "x"}).status_code == 303
    assert client.get("/api/me", headers=BEARER("irl_not-a-token")).status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}


def test_sign_in_requires_a_valid_token_and_login_csrf(client, world):
    page = client.get("/login")
    login_csrf = CSRF_RE.search(page.text).group(1)
    assert client.post("/login", data={"token": "wrong", "csrf_token": login_csrf}).status_code == 401
    assert client.post("/login", data={"token": world.tokens["ana"], "csrf_token": "forged"}).status_code == 403
    r = client.post("/login", data={"token": world.tokens["ana"], "csrf_token": login_csrf})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "ana" in client.get("/").text


def test_labeler_sees_only_own_assignments(client, world):
    ana, ben = world.tokens["ana"], world.tokens["ben"]
    mine = client.get("/api/assignments", headers=BEARER(ana)).json()
    assert sorted(a["id"] for a in mine) == world.assignments["ana"]
    assert set(world.assignments["ana"]).isdisjoint(world.assignments["ben"])
    other = world.assignments["ben"][0]
    assert client.get(f"/api/assignments/{other}", headers=BEARER(ana)).status_code == 404
    assert client.get("/api/assignments/999999", headers=BEARER(ana)).status_code == 404
    # Ben's own view works.
    assert client.get(f"/api/assignments/{other}", headers=BEARER(ben)).status_code == 200
    # Pages: Ana's session cannot open or submit Ben's task.
    csrf = sign_in(client, ana)
    assert client.get(f"/tasks/{other}").status_code == 404
    r = client.post(f"/tasks/{other}", data={"csrf_token": csrf, "text": "sneaky"})
    assert r.status_code == 404
    kinds = _kinds(client, ben)
    body = {"text": "sneaky"} if kinds[other] == "demonstration" else {"outputs": []}
    path = f"/api/assignments/{other}/{kinds[other]}"
    assert client.post(path, json=body, headers=BEARER(ana)).status_code == 404
    assert _counts(world) == (0, 0, 0)


def test_labeler_cannot_reach_admin_functions(client, world):
    ana = world.tokens["ana"]
    for path in ("/api/admin/progress", "/api/admin/agreement", "/api/admin/export/rankings"):
        assert client.get(path, headers=BEARER(ana)).status_code == 403, path
    assert (
        client.post("/api/admin/labelers", json={"name": "mallory", "role": "admin"}, headers=BEARER(ana)).status_code
        == 403
    )
    assert client.post("/api/admin/assign", json={}, headers=BEARER(ana)).status_code == 403
    assert client.post("/api/admin/export", json={"name": "x"}, headers=BEARER(ana)).status_code == 403
    assert (
        client.post("/api/admin/prompts", json={"prompts": [{"prompt": "x"}]}, headers=BEARER(ana)).status_code == 403
    )
    csrf = sign_in(client, ana)
    for path in (
        "/admin",
        "/admin/labelers",
        "/admin/prompts",
        "/admin/assign",
        "/admin/export",
        "/admin/download/demonstrations.jsonl",
    ):
        assert client.get(path).status_code == 403, path
    r = client.post(
        "/admin/labelers", data={"csrf_token": csrf, "action": "create", "name": "mallory", "role": "admin"}
    )
    assert r.status_code == 403
    with world.tx() as s:
        assert s.scalar(select(Labeler).where(Labeler.name == "mallory")) is None


def test_admin_api_end_to_end(client, world, tmp_path):
    admin = BEARER(world.tokens["admin"])
    me = client.get("/api/me", headers=admin).json()
    assert me == {"name": "admin", "role": "admin"}
    r = client.post("/api/admin/labelers", json={"name": "cy"}, headers=admin)
    assert r.status_code == 200
    cy_token = r.json()["token"]
    assert client.get("/api/me", headers=BEARER(cy_token)).json()["name"] == "cy"
    with world.tx() as s:  # only the hash is stored
        assert s.scalar(select(Labeler.token_hash).where(Labeler.name == "cy")) != cy_token
    assert client.post("/api/admin/labelers", json={"name": "cy"}, headers=admin).status_code == 422
    assert client.post("/api/admin/labelers", json={"name": "../evil"}, headers=admin).status_code == 422
    bad = client.post(
        "/api/admin/prompts",
        json={"prompts": [{"prompt": "ok"}, {"prompt": "x", "completions": ["one"]}]},
        headers=admin,
    )
    assert bad.status_code == 422 and "prompts[1]" in bad.json()["error"]
    ok = client.post("/api/admin/prompts", json={"prompts": [{"prompt": "Tell a joke."}]}, headers=admin).json()
    assert ok == {"prompts": 1, "demonstration_tasks": 1, "ranking_tasks": 0}
    assert client.post("/api/admin/assign", json={"labelers": ["cy"]}, headers=admin).json() == {"assignments": 1}
    assert len(client.get("/api/assignments", headers=BEARER(cy_token)).json()) == 1
    progress = client.get("/api/admin/progress", headers=admin).json()
    assert progress["tasks"]["demonstration"]["tasks"] == 3
    assert {p["labeler"] for p in progress["labelers"]} == {"admin", "ana", "ben", "cy"}
    assert client.get("/api/admin/agreement", headers=admin).json()["agreement"] is None


def _submit_everything(client, world, name, ranks_by_prompt=None):
    token = world.tokens[name]
    for aid, kind in _kinds(client, token).items():
        if kind == "demonstration":
            r = client.post(
                f"/api/assignments/{aid}/demonstration", json={"text": f"{name} answers {aid}"}, headers=BEARER(token)
            )
        else:
            detail = client.get(f"/api/assignments/{aid}", headers=BEARER(token)).json()
            ranks = (ranks_by_prompt or {}).get(detail["prompt"])
            r = client.post(
                f"/api/assignments/{aid}/ranking",
                headers=BEARER(token),
                json=_ranking_body(
                    detail,
                    ranks=ranks,
                    likert=[7, 1, 4, 2],
                    flags=[["satisfies_constraints"], ["harmful_advice", "violent_content"], [], []],
                ),
            )
        assert r.status_code == 200, r.text


def test_export_formats_agreement_and_path_escape(client, world, tmp_path):
    ranks = {"Name a fruit that is <b>yellow</b>.": [1, 4, 2, 2], "Say hello politely.": [2, 4, 1, 3]}
    _submit_everything(client, world, "ana", ranks)
    _submit_everything(client, world, "ben", {**ranks, "Say hello politely.": [1, 4, 2, 3]})
    admin = BEARER(world.tokens["admin"])
    agreement = client.get("/api/admin/agreement", headers=admin).json()
    # Task 1: same ranking, one tie -> 5/5. Task 2: (A, C) flipped -> 5/6.
    assert (agreement["agreeing_pairs"], agreement["compared_pairs"], agreement["tasks"]) == (10, 11, 2)
    r = client.post("/api/admin/export", json={"name": "../outside"}, headers=admin)
    assert r.status_code == 422 and "leaves the export folder" in r.json()["error"]
    assert client.post("/api/admin/export", json={"name": "/tmp/abs"}, headers=admin).status_code == 422
    assert not (tmp_path / "outside").exists()
    r = client.post("/api/admin/export", json={"name": "run1", "by_labeler": True}, headers=admin)
    assert r.status_code == 200
    files = r.json()["files"]
    assert files == {
        "ana/demonstrations": "run1/ana/demonstrations.jsonl",
        "ben/demonstrations": "run1/ben/demonstrations.jsonl",
        "ana/rankings": "run1/ana/rankings.jsonl",
        "ben/rankings": "run1/ben/rankings.jsonl",
    }
    root = tmp_path / "exports"
    rankings = [json.loads(x) for x in (root / "run1/ana/rankings.jsonl").read_text().splitlines()]
    assert len(rankings) == 2
    for rec in rankings:
        assert set(rec) == {"prompt", "completions", "ranks", "labeler", "likert", "flags"}
        assert rec["labeler"] == "ana" and len(rec["completions"]) == 4
        assert (
            rec["ranks"]
            == {"Name a fruit that is <b>yellow</b>.": [1, 3, 2, 2], "Say hello politely.": [2, 4, 1, 3]}[rec["prompt"]]
        )
        assert rec["likert"] == [7, 1, 4, 2]
        assert rec["flags"] == [["satisfies_constraints"], ["violent_content", "harmful_advice"], [], []]
    fruit = next(r for r in rankings if r["prompt"].startswith("Name a fruit"))
    assert fruit["completions"][1] == "<script>alert('xss')</script>"  # stored and exported verbatim
    demos = [json.loads(x) for x in (root / "run1/ben/demonstrations.jsonl").read_text().splitlines()]
    assert len(demos) == 2 and all(d["labeler"] == "ben" and d["completion"].startswith("ben answers") for d in demos)
    assert {d["prompt"] for d in demos} == {
        "Write a short poem about the sea.",
        "Explain why the sky is blue to a child.",
    }
    streamed = client.get("/api/admin/export/rankings", headers=admin).text.splitlines()
    assert len(streamed) == 4


def test_csrf_is_required_for_cookie_writes(client, world):
    ana_csrf = sign_in(client, world.tokens["ana"])
    aid = world.assignments["ana"][0]
    kind = _kinds(client, world.tokens["ana"])[aid]
    assert kind == "demonstration"
    assert client.post(f"/tasks/{aid}", data={"text": "no token"}).status_code == 403
    assert client.post(f"/tasks/{aid}", data={"text": "bad token", "csrf_token": "x" * 43}).status_code == 403
    assert client.post(f"/api/assignments/{aid}/demonstration", json={"text": "api, no header"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert _counts(world) == (0, 0, 0)
    # Another session's CSRF token does not work either.
    from fastapi.testclient import TestClient

    other = TestClient(client.app, base_url="http://127.0.0.1", follow_redirects=False)
    ben_csrf = sign_in(other, world.tokens["ben"])
    assert client.post(f"/tasks/{aid}", data={"text": "ben's token", "csrf_token": ben_csrf}).status_code == 403
    r = client.post(
        f"/api/assignments/{aid}/demonstration", json={"text": "api with header"}, headers={"X-CSRF-Token": ana_csrf}
    )
    assert r.status_code == 200
    assert _counts(world) == (1, 0, 1)


def test_outputs_and_prompts_are_escaped(client, world):
    sign_in(client, world.tokens["ana"])
    pages = [client.get(f"/tasks/{aid}") for aid in world.assignments["ana"]]
    ranking = next(p for p in pages if "Rate and rank" in p.text)
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in ranking.text
    assert "<script>alert" not in ranking.text
    assert "&lt;b&gt;yellow&lt;/b&gt;" in ranking.text and "<b>yellow" not in ranking.text
    csp = ranking.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert ranking.headers["x-content-type-options"] == "nosniff"


def test_double_submit_keeps_the_first_and_duplicates_nothing(client, world):
    ana = world.tokens["ana"]
    kinds = _kinds(client, ana)
    rid = next(a for a, k in kinds.items() if k == "ranking")
    detail = client.get(f"/api/assignments/{rid}", headers=BEARER(ana)).json()
    first = _ranking_body(detail, ranks=[1, 2, 3, 4], likert=[7, 6, 5, 4])
    assert client.post(f"/api/assignments/{rid}/ranking", json=first, headers=BEARER(ana)).status_code == 200
    again = _ranking_body(detail, ranks=[4, 3, 2, 1], likert=[1, 1, 1, 1])
    r = client.post(f"/api/assignments/{rid}/ranking", json=again, headers=BEARER(ana))
    assert r.status_code == 409 and "already submitted" in r.json()["error"]
    stored = client.get(f"/api/assignments/{rid}", headers=BEARER(ana)).json()
    assert [c["rank"] for c in stored["completions"]] == [1, 2, 3, 4]
    assert [c["likert"] for c in stored["completions"]] == [7, 6, 5, 4]
    # The same through the page form: the second POST is redirected to the (unchanged) task.
    csrf = sign_in(client, ana)
    did = next(a for a, k in kinds.items() if k == "demonstration")
    assert client.post(f"/tasks/{did}", data={"csrf_token": csrf, "text": "first"}).headers["location"] == "/next"
    r = client.post(f"/tasks/{did}", data={"csrf_token": csrf, "text": "second"})
    assert r.status_code == 303 and r.headers["location"] == f"/tasks/{did}?already=1"
    page = client.get(r.headers["location"])
    assert "already submitted" in page.text and "first" in page.text and "second" not in page.text
    assert _counts(world) == (1, 4, 2)


def test_invalid_submissions_store_nothing(client, world):
    ana = world.tokens["ana"]
    kinds = _kinds(client, ana)
    rid = next(a for a, k in kinds.items() if k == "ranking")
    detail = client.get(f"/api/assignments/{rid}", headers=BEARER(ana)).json()
    cases = [
        (_ranking_body(detail, likert=[9, 5, 5, 5]), "output A: Likert score must be between 1 and 7"),
        (_ranking_body(detail, flags=[["made_up"], [], [], []]), "unknown flag"),
        ({"outputs": _ranking_body(detail)["outputs"][:3]}, "missing a rank"),
        (_ranking_body(detail, ranks=[1, 2, 3, 9]), "between 1 and 4"),
        ({"outputs": "nope"}, "'outputs' must be a list"),
    ]
    for body, message in cases:
        r = client.post(f"/api/assignments/{rid}/ranking", json=body, headers=BEARER(ana))
        assert r.status_code == 422 and message in r.json()["error"], (body, r.text)
    did = next(a for a, k in kinds.items() if k == "demonstration")
    assert (
        client.post(f"/api/assignments/{did}/demonstration", json={"text": "   "}, headers=BEARER(ana)).status_code
        == 422
    )
    assert (
        client.post(f"/api/assignments/{did}/ranking", json=_ranking_body(detail), headers=BEARER(ana)).status_code
        == 422
    )
    assert (
        client.post(f"/api/assignments/{did}/demonstration", content=b"not json", headers=BEARER(ana)).status_code
        == 422
    )
    assert _counts(world) == (0, 0, 0)
    # The form shows the error and keeps what was entered.
    csrf = sign_in(client, ana)
    form = {"csrf_token": csrf, **{f"likert_{c['id']}": "5" for c in detail["completions"]}}
    form[f"rank_{detail['completions'][0]['id']}"] = "1"
    r = client.post(f"/tasks/{rid}", data=form)
    assert r.status_code == 422 and "rank every output" in r.text and 'value="1"' in r.text
    assert _counts(world) == (0, 0, 0)
    r = client.post(
        f"/api/assignments/{rid}/ranking", json=_ranking_body(detail, ranks=[2, 2, 1, 3]), headers=BEARER(ana)
    )
    assert r.status_code == 200
    assert _counts(world) == (0, 4, 1)


def test_deactivated_labeler_is_locked_out(client, world):
    csrf = sign_in(client, world.tokens["admin"])
    from fastapi.testclient import TestClient

    ben_browser = TestClient(client.app, base_url="http://127.0.0.1", follow_redirects=False)
    sign_in(ben_browser, world.tokens["ben"])
    r = client.post("/admin/labelers", data={"csrf_token": csrf, "action": "deactivate", "name": "ben"})
    assert r.status_code == 200 and "deactivated" in r.text
    assert client.get("/api/me", headers=BEARER(world.tokens["ben"])).status_code == 401
    assert ben_browser.get("/").status_code == 303  # the open session ended too
    r = client.post("/admin/labelers", data={"csrf_token": csrf, "action": "deactivate", "name": "admin"})
    assert r.status_code == 422 and "your own account" in r.text
    r = client.post("/admin/labelers", data={"csrf_token": csrf, "action": "reset", "name": "ana"})
    new_token = r.text.split('id="new-token">')[1].split("<")[0]
    assert client.get("/api/me", headers=BEARER(world.tokens["ana"])).status_code == 401
    assert client.get("/api/me", headers=BEARER(new_token)).json()["name"] == "ana"


def test_admin_pages_work(client, world, tmp_path):
    csrf = sign_in(client, world.tokens["admin"])
    for path in ("/admin", "/admin/labelers", "/admin/prompts", "/admin/assign", "/admin/export"):
        assert client.get(path).status_code == 200, path
    upload = {
        "file": ("batch.jsonl", b'{"prompt": "One"}\n{"prompt": "Two", "category": "chat"}\n', "application/x-ndjson")
    }
    r = client.post("/admin/prompts", data={"csrf_token": csrf, "demonstrations": "on", "tag": "b1"}, files=upload)
    assert r.status_code == 200 and "2 prompt(s), 2 demonstration task(s)" in r.text
    bad = {"file": ("bad.jsonl", b'{"prompt": "One"}\n{oops\n', "application/x-ndjson")}
    r = client.post("/admin/prompts", data={"csrf_token": csrf}, files=bad)
    assert r.status_code == 422 and "bad.jsonl:2: not valid JSON" in r.text
    r = client.post(
        "/admin/assign",
        data={
            "csrf_token": csrf,
            "kind": "demonstration",
            "labelers": ["ana", "ben"],
            "overlap": "2",
            "overlap_share": "1",
        },
    )
    assert r.status_code == 200 and "Made 4 assignment(s)" in r.text
    r = client.post("/admin/assign", data={"csrf_token": csrf, "overlap": "5"})
    assert r.status_code == 422 and "--overlap 5" in r.text
    r = client.post("/admin/export", data={"csrf_token": csrf, "name": "../../etc"})
    assert r.status_code == 422 and "leaves the export folder" in r.text
    r = client.post("/admin/export", data={"csrf_token": csrf, "name": "ok", "kinds": ["rankings"]})
    assert r.status_code == 200 and "ok/rankings.jsonl" in r.text
    assert (tmp_path / "exports/ok/rankings.jsonl").exists() and not (
        tmp_path / "exports/ok/demonstrations.jsonl"
    ).exists()
    r = client.post("/admin/labelers", data={"csrf_token": csrf, "action": "create", "name": "dee", "role": "labeler"})
    assert r.status_code == 200 and 'id="new-token">irl_' in r.text
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/admin").status_code == 303
