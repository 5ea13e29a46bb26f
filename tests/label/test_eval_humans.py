"""`instructrl eval --judge humans:DB_URL`: blind comparisons queued in the labeling app, judged through its
pages and API, and collected into win rates, Likert, metadata, agreement and attention checks (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import re

import pytest
from labelkit import comparison_sides, seed, sign_in
from sqlalchemy import func, select

from instructrl.cli import main as cli
from instructrl.label import db, service
from instructrl.label.models import Assignment, ComparisonItem, Completion, Labeler, Rating

PROMPTS = ["What color is the flag of Zor1?", "What color is the flag of Zor2?", "What color is the flag of Zor3?"]
# the worse answer is hostile markup: shown as text, never run
CHECK = {"prompt": "Spell the word cat.", "better": "c-a-t", "worse": "<img src=x onerror=alert(1)>Lyon is a capital."}


def eval_args(db_url, model, tmp_path, *extra):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    checks = tmp_path / "checks.jsonl"
    checks.write_text(json.dumps(CHECK) + "\n")
    return [
        "eval",
        "--judge",
        f"humans:{db_url}",
        "--models",
        f"MODELX={model}",
        f"MODELZ={model}",
        "--baseline",
        f"BASELINEY={model}",
        "--prompts",
        str(prompts),
        "--attention-checks",
        str(checks),
        "--max-new-tokens",
        "6",
        "--out",
        str(tmp_path / "human-eval"),
        "--no-progress",
        *extra,
    ]


@pytest.fixture
def people(db_url):
    w = seed(db_url, ["ana", "ben"], demo_prompts=[], rank_prompts=[])
    yield w
    w.engine.dispose()


def _submit(world, name, assignment_id, choice, likert=(5, 5), flags=((), ())):
    with world.tx() as s:
        labeler = service.labeler_by_name(s, name)
        a = service.own_assignment(s, labeler, assignment_id)
        labels = {
            c.id: service.OutputLabel(likert[c.position], list(flags[c.position]), None) for c in a.task.completions
        }
        service.submit_comparison(s, labeler, assignment_id, choice, labels)


def _side_for(preference, model_position, answer=None):
    """The side a labeler clicks to prefer 'model', 'baseline', or the check's answer."""
    if preference == "tie":
        return "tie"
    if preference == "check":
        return answer
    model_side = ("left", "right")[model_position]
    return model_side if preference == "model" else ("right" if model_side == "left" else "left")


def test_queue_label_collect(people, eval_model, tmp_path, capsys):
    out = tmp_path / "human-eval"
    assert cli(eval_args(people.url, eval_model, tmp_path, "--labelers-per-item", "2")) == 0
    printed = capsys.readouterr().out
    assert "queued 6 blind comparisons (2 model(s) x 3 prompts against BASELINEY) and 1 attention check(s)" in printed
    manifest = json.loads((out / "human_eval.json").read_text())
    assert (manifest["comparisons"], manifest["attention_checks"], manifest["assignments"]) == (6, 1, 14)
    assert manifest["labelers"] == ["ana", "ben"] and len((out / "responses.jsonl").read_text().splitlines()) == 9

    sides = comparison_sides(people)
    assert len(sides) == 14
    with people.tx() as s:
        items = list(s.scalars(select(ComparisonItem)))
        per_task = dict(
            s.execute(select(Assignment.task_id, func.count(Assignment.id)).group_by(Assignment.task_id)).all()
        )
    assert {i.model_position for i in items if i.model} == {0, 1}  # sides drawn per item
    assert set(per_task.values()) == {2}  # every item (and the check) to both labelers
    check_pos = next(i for i in items if i.model is None)
    # the check's better response is on the side its stored answer names
    with people.tx() as s:
        comps = s.scalars(select(Completion).where(Completion.task_id == check_pos.task_id)).all()
    by_pos = {c.position: c.text for c in comps}
    assert by_pos[("left", "right").index(check_pos.check_answer)] == CHECK["better"]

    # nothing labeled yet: one line, exit 2, nothing written
    assert cli(["eval", "--collect", "--out", str(out)]) == 2
    assert "nothing labeled yet: 0 of 12 comparisons" in capsys.readouterr().err
    assert not (out / "results.json").exists()

    # ana prefers the model everywhere and passes the check; ben: model on prompt 0, baseline on 1, tie on 2,
    # fails the check, and leaves one MODELZ comparison open
    left_open = None
    with people.tx() as s:
        prompt_of = dict(
            s.execute(
                select(Assignment.id, ComparisonItem.prompt_index).join(
                    ComparisonItem, ComparisonItem.task_id == Assignment.task_id
                )
            ).all()
        )
        owner = dict(s.execute(select(Assignment.id, Labeler.name).join(Labeler)).all())
    for aid, (model, pos, answer) in sorted(sides.items()):
        name = owner[aid]
        if model is None:
            choice = answer if name == "ana" else ("left" if answer == "right" else "right")
            _submit(people, name, aid, choice)
            continue
        if name == "ana":
            likert = (6, 3) if pos == 0 else (3, 6)  # model 6, baseline 3
            flags = ((), ("hallucination",)) if pos == 0 else (("hallucination",), ())  # the baseline's
            _submit(people, name, aid, _side_for("model", pos), likert, flags)
        else:
            if model == "MODELZ" and prompt_of[aid] == 2 and left_open is None:
                left_open = aid
                continue
            pref = ["model", "baseline", "tie"][prompt_of[aid]]
            _submit(people, name, aid, _side_for(pref, pos), (4, 4))

    assert cli(["eval", "--collect", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    x, z = res["models"]["MODELX"], res["models"]["MODELZ"]
    assert x["win_rate"]["mean"] == pytest.approx(4.5 / 6) and x["win_rate"]["n"] == 6 and x["open"] == 0
    assert z["win_rate"]["mean"] == pytest.approx(4.0 / 5) and z["judgments"] == 5 and z["open"] == 1
    # clustered by prompt: MODELX's outcomes per prompt are (1, 1), (1, 0), (1, .5) around 0.75
    resid = [0.25 + 0.25, 0.25 - 0.75, 0.25 - 0.25]
    assert x["win_rate"]["se"] == pytest.approx((3 / 2 * sum(r * r for r in resid)) ** 0.5 / 6)
    assert x["likert"]["mean"] == pytest.approx(5.0) and res["human"]["baseline"]["likert"]["mean"] == pytest.approx(
        (6 * 3 + 5 * 4) / 11
    )
    assert res["human"]["baseline"]["hallucination_closed_domain"]["mean"] == pytest.approx(6 / 11)
    assert x["hallucination_closed_domain"]["mean"] == 0.0
    h = res["human"]
    assert h["judgments"] == {
        "submitted": 11,
        "open": 1,
        "by_model": {"MODELX": {"submitted": 6, "open": 0}, "MODELZ": {"submitted": 5, "open": 1}},
    }
    # shared items: 3 + 2; same choice on prompt 0 only
    assert h["agreement"]["items"] == 5 and h["agreement"]["agreement"] == pytest.approx(2 / 5)
    assert h["agreement"]["agreement_excluding_ties"] == pytest.approx(2 / 4)
    assert h["attention_checks"]["pass_rate"] == 0.5
    assert h["attention_checks"]["by_labeler"] == {
        "ana": {"passed": 1, "submitted": 1},
        "ben": {"passed": 0, "submitted": 1},
    }
    summary = (out / "summary.md").read_text()
    assert "11 of 12 comparisons judged, **1 still open**" in summary and "| MODELZ | 5 | 1 |" in summary
    assert "by labeler: ana 1/1, ben 0/1" in summary

    # ben failed his attention check: with --min-attention-pass 1 his judgments are left out
    assert cli(["eval", "--collect", "--out", str(out), "--min-attention-pass", "1"]) == 0
    strict = json.loads((out / "results.json").read_text())
    assert strict["models"]["MODELX"]["win_rate"] == {"mean": 1.0, "se": 0.0, "n": 3}
    assert strict["human"]["excluded_labelers"] == ["ben"] and strict["human"]["agreement"]["items"] == 0
    assert "Left out of the results (attention checks passed below 1.00): ben." in capsys.readouterr().out

    # the queuing command run again collects (queues nothing new)
    with people.tx() as s:
        before = s.scalar(select(func.count(Assignment.id)))
    assert cli(eval_args(people.url, eval_model, tmp_path, "--labelers-per-item", "2")) == 0
    assert "## Human judgments" in capsys.readouterr().out
    with people.tx() as s:
        assert s.scalar(select(func.count(Assignment.id))) == before
    # the comparisons stay out of the reward model's rankings and the ranking agreement
    with people.tx() as s:
        assert list(service.ranking_records(s)) == []
        assert service.labeler_agreement(s).total == 0
        assert s.scalar(select(func.count(Rating.id))) == 2 * (11 + 2)


def test_labelers_compare_blind_in_the_app(people, eval_model, tmp_path, client_for):
    assert cli(eval_args(people.url, eval_model, tmp_path)) == 0
    client = client_for(people)
    csrf = sign_in(client, people.tokens["ana"])
    mine = client.get("/api/assignments").json()
    assert mine and {a["kind"] for a in mine} == {"comparison"}
    first = mine[0]["id"]
    page = client.get(f"/tasks/{first}")
    detail = client.get(f"/api/assignments/{first}").json()
    for shown in (page.text, json.dumps(detail)):  # model names and paths never reach the labeler
        for secret in ("MODELX", "MODELZ", "BASELINEY", "secret-policy-dir", "eval:"):
            assert secret not in shown
    assert 'name="choice"' in page.text and "Left response" in page.text and "Right response" in page.text
    left, right = [c["id"] for c in detail["completions"]]

    # a missing choice is refused and the form keeps what was entered
    form = {"csrf_token": csrf, f"likert_{left}": "6", f"likert_{right}": "2", f"flags_{right}": "harmful_advice"}
    r = client.post(f"/tasks/{first}", data=form)
    assert r.status_code == 422 and "choose which response is better" in r.text
    assert re.search(rf'name="likert_{left}" value="6" required\s+checked', r.text)
    r = client.post(f"/tasks/{first}", data={**form, "choice": "left"})
    assert r.status_code == 303
    again = client.get(f"/tasks/{first}").text
    assert again.count("disabled") >= 2 and 'value="left" required checked' in again

    # through the API (bearer token): a tie; a second submission is refused; someone else's is not found
    second = mine[1]["id"]
    d2 = client.get(f"/api/assignments/{second}").json()
    body = {
        "choice": "tie",
        "outputs": [{"completion_id": c["id"], "likert": 4, "flags": []} for c in d2["completions"]],
    }
    bearer = {"Authorization": f"Bearer {people.tokens['ana']}"}
    assert (
        client.post(
            f"/api/assignments/{second}/comparison", json={**body, "choice": "best"}, headers=bearer
        ).status_code
        == 422
    )
    assert client.post(f"/api/assignments/{second}/comparison", json=body, headers=bearer).status_code == 200
    assert client.post(f"/api/assignments/{second}/comparison", json=body, headers=bearer).status_code == 409
    bens = [aid for aid, _ in comparison_sides(people).items() if aid not in {a["id"] for a in mine}]
    ben_bearer = {"Authorization": f"Bearer {people.tokens['ben']}"}
    assert client.post(f"/api/assignments/{second}/comparison", json=body, headers=ben_bearer).status_code == 404
    assert bens  # ben has his own queue
    # a comparison cannot be submitted as a ranking, nor without CSRF from a browser session
    assert (
        client.post(f"/api/assignments/{mine[2]['id']}/ranking", json={"outputs": []}, headers=bearer).status_code
        == 422
    )
    assert client.post(f"/api/assignments/{mine[2]['id']}/comparison", json=body).status_code == 403

    # the admin progress page counts the comparisons
    client.post("/logout", data={"csrf_token": csrf})
    sign_in(client, people.tokens["admin"])
    progress = client.get("/api/admin/progress").json()
    assert progress["tasks"]["comparison"] == {"tasks": 7, "unassigned": 0, "pending": 6, "submitted": 2}


@pytest.mark.parametrize(
    "judge, message",
    [
        ("humans:", "give the labeling app's database"),
        ("humans:mysql://x/y", "--judge humans:'mysql://x/y': expected sqlite:///FILE.db or postgresql+psycopg"),
        ("humans:postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot reach the database"),
        ("humans:sqlite:////no/such/folder/labels.db", "folder /no/such/folder does not exist"),
    ],
)
def test_database_errors_are_one_line(judge, message, eval_model, tmp_path, capsys):
    args = eval_args("x", eval_model, tmp_path)
    args[args.index("--judge") + 1] = judge
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "human-eval").exists()


def test_queue_refusals(people, eval_model, tmp_path, capsys):
    args = eval_args(people.url, eval_model, tmp_path)
    no_base = args[: args.index("--baseline")] + args[args.index("--baseline") + 2 :]
    for bad, message in [
        (no_base, "--baseline NAME=PATH"),
        ([*args, "--labelers-per-item", "3"], "must be between 1 and the number of labelers (2)"),
        ([*args, "--assign-to", "zed"], "no labeler named 'zed'"),
        (["eval", "--collect", "--out", str(tmp_path / "nothing")], "no queued human evaluation"),
    ]:
        assert cli(bad) == 2, bad
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    bad_checks = tmp_path / "bad.jsonl"
    bad_checks.write_text(json.dumps({"prompt": "p", "better": "b"}) + "\n")
    i = args.index("--attention-checks")
    assert cli(args[: i + 1] + [str(bad_checks)] + args[i + 2 :]) == 2
    assert "bad.jsonl:1: an attention check needs non-empty text in worse" in capsys.readouterr().err
    with people.tx() as s:
        assert s.scalar(select(func.count(ComparisonItem.id))) == 0  # nothing queued half


def test_existing_databases_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = db.make_engine(url)
    db.migrate(engine, "0001")
    factory = db.session_factory(engine)
    with db.transaction(factory) as s:
        service.create_labeler(s, "ana")
    assert db.migrate(engine) == db.head_revision() == "0002"
    with db.transaction(factory) as s:
        assert service.labeler_by_name(s, "ana").active
        assert s.scalar(select(func.count(ComparisonItem.id))) == 0
    engine.dispose()
