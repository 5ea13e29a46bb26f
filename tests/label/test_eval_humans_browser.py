"""The whole human-evaluation loop in a real browser (Debian's Chromium through Playwright), on SQLite and
PostgreSQL: `instructrl eval --judge humans:DB_URL` queues blind comparisons, two labelers judge them from
the keyboard in their own browsers, and `instructrl eval --collect` turns the judgments into results."""

from __future__ import annotations

import json

import pytest
from labelkit import comparison_sides, seed
from test_eval_humans import eval_args

from instructrl.cli import main as cli

pytestmark = pytest.mark.browser
SECRETS = ("MODELX", "MODELZ", "BASELINEY", "secret-policy-dir")


def judge_all(browser, server, token: str, plan) -> list[int]:  # type: ignore[no-untyped-def]
    """Sign in with ``token`` and judge every comparison in the queue from the keyboard; ``plan(assignment id)``
    gives (left Likert, right Likert, choice key). The first one also gets a flag on its right side, by mouse.
    Returns the assignment ids judged, in order."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    page.click("#start")
    judged: list[int] = []
    while True:
        page.wait_for_load_state()
        if "/tasks/" not in page.url:
            break
        page.wait_for_selector("#comparison-form")
        html = page.content()
        assert not any(s in html for s in SECRETS), "a model name or path reached the labeler's page"
        aid = int(page.url.rsplit("/", 1)[1])
        left, right, key = plan(aid)
        page.locator("#choice").click(position={"x": 2, "y": 2})  # focus the page, not a field
        page.keyboard.press(str(left))  # the highlighted (left) side, then the right one
        page.keyboard.press(str(right))
        assert page.locator(f"#side-left input[type=radio][value='{left}']").is_checked()
        assert page.locator(f"#side-right input[type=radio][value='{right}']").is_checked()
        if not judged:  # flags stay a click away
            page.locator("#side-right input[value=harmful_advice]").check()
        page.keyboard.press(key)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        judged.append(aid)
    assert "Nothing left in your queue" in page.inner_text("main")
    assert problems == [], f"browser errors: {problems}"
    assert dialogs == [], f"a script from a response ran: {dialogs}"
    context.close()
    return judged


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_queue_compare_in_chromium_and_collect(db_url, eval_model, browser, live_server_factory, tmp_path, capsys):
    world = seed(db_url, ["ana", "ben"], demo_prompts=[], rank_prompts=[])
    out = tmp_path / "human-eval"
    assert cli(eval_args(db_url, eval_model, tmp_path, "--labelers-per-item", "2")) == 0
    sides = comparison_sides(world)  # what the test knows and the labelers do not
    arrow = {"left": "ArrowLeft", "right": "ArrowRight", "tie": "ArrowDown"}

    def prefers(who: str):  # type: ignore[no-untyped-def]
        def plan(aid: int) -> tuple[int, int, str]:
            model, pos, answer = sides[aid]
            if model is None:  # the attention check: both answer it right
                return 5, 5, arrow[answer]
            model_side = ("left", "right")[pos]
            other = "right" if model_side == "left" else "left"
            if who == "model":  # ana: the model is better (6 vs 2)
                return (6, 2, arrow[model_side]) if pos == 0 else (2, 6, arrow[model_side])
            return (3, 5, arrow[other]) if pos == 0 else (5, 3, arrow[other])  # ben: the baseline (5 vs 3)

        return plan

    server = live_server_factory(db_url)
    first = []
    done = judge_all(browser, server, world.tokens["ana"], prefers("model"))
    assert len(done) == 7
    first.append(done[0])
    capsys.readouterr()
    assert cli(["eval", "--collect", "--out", str(out)]) == 0  # halfway: ben's half is open
    partial = json.loads((out / "results.json").read_text())
    assert partial["human"]["judgments"]["open"] == 6 and partial["models"]["MODELX"]["win_rate"]["mean"] == 1.0
    assert "**6 still open**" in capsys.readouterr().out

    done = judge_all(browser, server, world.tokens["ben"], prefers("baseline"))
    assert len(done) == 7
    first.append(done[0])
    assert cli(["eval", "--collect", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    world.engine.dispose()
    for name in ("MODELX", "MODELZ"):
        r = res["models"][name]
        assert (r["win_rate"]["mean"], r["win_rate"]["n"], r["open"]) == (0.5, 6, 0)
        assert r["likert"]["mean"] == pytest.approx((6 + 3) / 2)
    assert res["human"]["baseline"]["likert"]["mean"] == pytest.approx((2 + 5) / 2)
    assert res["human"]["agreement"]["agreement"] == 0.0 and res["human"]["agreement"]["labeler_pairs"] == 6
    assert res["human"]["attention_checks"]["pass_rate"] == 1.0
    # the flag ticked on each labeler's first task (its right side) lands on the model or baseline shown there
    expected = {"MODELX": 0, "MODELZ": 0, "BASELINEY": 0}
    for aid in first:
        model, pos, _ = sides[aid]
        if model is not None:  # an attention check's flags are not counted
            expected[model if pos == 1 else "BASELINEY"] += 1
    rows = {**res["models"], "BASELINEY": res["human"]["baseline"]}
    assert {k: round(v["harmful_advice"]["mean"] * v["harmful_advice"]["n"]) for k, v in rows.items()} == expected
    assert res["judge"].startswith("humans (") and (out / "summary.md").read_text().count("| MODEL") >= 2
