"""A real browser (Debian's headless Chromium driven by Playwright) against a live server.

A labeler signs in, writes a demonstration, rates and ranks outputs (drag-and-drop, keyboard and typed
ranks, with a tie), an admin goes through every admin page and exports; the exported files are checked
against the formats the training stages read. With INSTRUCTRL_SCREENSHOTS=docs/label set, a
screenshot of each page is written there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labelkit import Shots, seed

from instructrl.cli import main as cli

pytestmark = pytest.mark.browser

DEMO = "Write a two-line poem about the sea."
XSS_TASK = {
    "prompt": "Name a fruit that is <b>yellow</b>.",
    "category": "open qa",
    "completions": [
        "A banana is yellow.",
        "<script>alert('xss')</script><img src=x onerror=alert(1)>",
        "Lemons & pineapples are yellow.",
        "I don't know.",
    ],
}
SAMPLED_PROMPT = "write a poem about the sea ."


def export_paths(export_dir: Path, name: str) -> dict[str, Path]:
    """The exported files, keyed like the training stages' inputs (SFT: demonstrations, RM: rankings)."""
    folder = export_dir / name
    return {"demonstrations": folder / "demonstrations.jsonl", "rankings": folder / "rankings.jsonl"}


def prepare(db_url: str, tiny_model: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A labeler 'ana' with three tasks: a demonstration, an imported ranking with hostile outputs, and a
    ranking sampled from the tiny checkpoint."""
    world = seed(db_url, ["ana"], demo_prompts=[DEMO], rank_prompts=[XSS_TASK])
    (tmp_path / "rm.jsonl").write_text(json.dumps({"prompt": SAMPLED_PROMPT}) + "\n")
    assert (
        cli(
            [
                "label",
                "import-prompts",
                "--db",
                db_url,
                str(tmp_path / "rm.jsonl"),
                "--tag",
                "rm",
                "--no-demonstrations",
            ]
        )
        == 0
    )
    assert (
        cli(
            [
                "label",
                "queue-rankings",
                "--db",
                db_url,
                "--checkpoint",
                str(tiny_model),
                "--k",
                "4",
                "--tag",
                "rm",
                "--max-new-tokens",
                "10",
            ]
        )
        == 0
    )
    assert cli(["label", "assign", "--db", db_url, "--labelers", "ana"]) == 0
    return world


def rank_values(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """{output letter: rank typed in its box}, in list order."""
    out = {}
    for li in page.locator(".rank-item").all():
        out[li.locator("strong").inner_text()] = li.locator(".rank-input").input_value()
    return out


def run_flow(browser, server, world, shots: Shots) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Label and export through the browser; returns the export paths."""
    context = browser.new_context(viewport={"width": 1200, "height": 720})
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    problems: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # CSP violations ("Refused to ...") and script errors; HTTP statuses are checked where they matter.
    page.on(
        "console",
        lambda m: (
            problems.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))

    # --- sign in as a labeler
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    shots(page, "login", full_page=False)
    page.fill("#token", world.tokens["ana"])
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    assert "3 to do" in page.inner_text(".summary")
    shots(page, "queue")

    # --- demonstration
    page.click("#start")
    page.wait_for_selector("textarea#text")
    assert page.inner_text("#prompt-text") == DEMO
    page.fill("textarea#text", "Waves fold the light in silver lines,\nand the tide keeps time.")
    shots(page, "demonstration")
    page.click("#submit")

    # --- ranking 1: Likert + flags, drag-and-drop and keyboard, with a tie
    page.wait_for_selector("#rank-list")
    assert page.inner_text("#prompt-text") == XSS_TASK["prompt"]  # shown as text, not as HTML
    outputs = page.locator("article.output").all()
    assert [o.locator("pre.text").inner_text() for o in outputs] == XSS_TASK["completions"]
    likert = [6, 1, 5, 3]
    flags = {1: ["harmful_advice", "inappropriate_for_customer_assistant"], 3: ["fails_to_follow_instruction"]}
    for i, o in enumerate(outputs):
        o.locator(f"input[type=radio][value='{likert[i]}']").check()
        for f in flags.get(i, []):
            o.locator(f"input[type=checkbox][value='{f}']").check()
    items = lambda letter: page.locator(".rank-item", has=page.locator("strong", has_text=letter))  # noqa: E731
    items("C").drag_to(items("A"))  # drag C above A: C A B D
    assert rank_values(page) == {"C": "1", "A": "2", "B": "3", "D": "4"}
    items("D").focus()
    page.keyboard.press("ArrowUp")  # D above B: C A D B
    page.keyboard.press("t")  # D tied with A
    assert rank_values(page) == {"C": "1", "A": "2", "D": "2", "B": "3"}
    assert items("D").get_attribute("class").split().count("tied") == 1
    shots(page, "ranking")
    page.click("#submit")

    # --- ranking 2 (sampled from the checkpoint): typed ranks, one tie
    page.wait_for_selector("#rank-list")
    assert page.inner_text("#prompt-text") == SAMPLED_PROMPT
    ids = [li.get_attribute("data-cid") for li in page.locator(".rank-item").all()]
    for cid, rank in zip(ids, ["2", "1", "2", "3"]):
        page.check(f"input[name=likert_{cid}][value='4']")
        page.fill(f"input[name=rank_{cid}]", rank)
    page.click("#submit")
    page.wait_for_url(server.url + "/?done=1")
    assert "Nothing left in your queue" in page.inner_text("main")
    shots(page, "queue-done")

    # --- a submitted task is read-only and shows the ranking in order
    page.goto(server.url + "/")
    page.locator("table.list tr", has_text="Name a fruit").locator("a").first.click()
    page.wait_for_selector("#rank-list.readonly")
    assert [li.locator("strong").inner_text() for li in page.locator(".rank-item").all()] == ["C", "A", "D", "B"]
    assert (
        page.locator("input[type=radio]:checked").count() == 4
        and page.locator("input[type=radio]:enabled").count() == 0
    )
    shots(page, "submitted")

    # --- a labeler cannot open admin pages
    assert page.goto(server.url + "/admin").status == 403
    page.goto(server.url + "/")
    page.click("text=Sign out")
    page.wait_for_url(server.url + "/login")

    # --- admin pages
    page.fill("#token", world.tokens["admin"])
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/admin")
    rows = {
        r.locator("td").first.inner_text(): [c.inner_text() for c in r.locator("td").all()]
        for r in page.locator("#progress-table tbody tr").all()
    }
    assert rows["ana"][2:] == ["1", "0", "2", "0", "0", "0"]
    shots(page, "admin-progress")
    page.click("text=Labelers")
    page.fill("input[name=name]", "cy")
    page.click("text=Create and show token")
    assert page.inner_text("#new-token").startswith("irl_")
    shots(page, "admin-labelers")
    page.click("text=Import")
    upload = Path(server.export_dir).parent / "batch.jsonl"
    upload.write_text('{"prompt": "List three uses for a paperclip.", "category": "brainstorming"}\n')
    page.set_input_files("#file", str(upload))
    page.fill("#tag", "batch-2")
    page.click("button:has-text('Import')")
    assert "1 prompt(s), 1 demonstration task(s)" in page.inner_text("#import-result")
    shots(page, "admin-import")
    page.click("nav >> text=Assign")
    page.check("input[name=labelers][value=cy]")
    page.fill("input[name=overlap]", "1")
    page.click("button:has-text('Assign')")
    assert "Made 1 assignment(s)" in page.inner_text("#assign-result")
    shots(page, "admin-assign")
    page.click("nav >> text=Export")
    page.fill("#name", "browser-run")
    page.click("button:has-text('Export')")
    assert "browser-run/rankings.jsonl" in page.inner_text("#export-result")
    shots(page, "admin-export")

    assert dialogs == [], f"a script from a prompt or output ran: {dialogs}"
    assert problems == [], f"browser errors (CSP violations, script errors): {problems}"
    context.close()
    return export_paths(Path(server.export_dir), "browser-run")


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_labeler_and_admin_in_a_real_browser(db_url, tiny_model, browser, live_server_factory, tmp_path):
    world = prepare(db_url, tiny_model, tmp_path)
    server = live_server_factory(db_url)
    paths = run_flow(browser, server, world, Shots(enabled=db_url.startswith("sqlite")))
    world.engine.dispose()

    demos = [json.loads(x) for x in paths["demonstrations"].read_text(encoding="utf-8").splitlines()]
    assert len(demos) == 1
    assert {k: demos[0][k] for k in ("prompt", "completion", "labeler")} == {
        "prompt": DEMO,
        "completion": "Waves fold the light in silver lines,\nand the tide keeps time.",
        "labeler": "ana",
    }

    rankings = [json.loads(x) for x in paths["rankings"].read_text(encoding="utf-8").splitlines()]
    assert len(rankings) == 2
    for rec in rankings:
        assert set(rec) == {"prompt", "completions", "ranks", "labeler", "likert", "flags"}
        assert (
            rec["labeler"] == "ana"
            and len(rec["completions"]) == len(rec["ranks"]) == len(rec["likert"]) == len(rec["flags"]) == 4
        )
        assert all(isinstance(c, str) for c in rec["completions"]) and all(isinstance(f, list) for f in rec["flags"])
    first, second = rankings
    assert first["prompt"] == XSS_TASK["prompt"] and first["completions"] == XSS_TASK["completions"]
    assert first["ranks"] == [2, 3, 1, 2]  # A B C D: C best, A and D tied, B worst
    assert first["likert"] == [6, 1, 5, 3]
    assert first["flags"] == [
        [],
        ["inappropriate_for_customer_assistant", "harmful_advice"],
        [],
        ["fails_to_follow_instruction"],
    ]
    assert second["prompt"] == SAMPLED_PROMPT and second["ranks"] == [2, 1, 2, 3] and second["likert"] == [4, 4, 4, 4]

    # the exported files are exactly what the training stages read: one reward-model step on the rankings,
    # normalized with the exported demonstrations
    out = tmp_path / "rm-from-labels"
    assert (
        cli(
            [
                "rm",
                "--model",
                str(tiny_model),
                "--data",
                str(paths["rankings"]),
                "--out",
                str(out),
                "--demonstrations",
                str(paths["demonstrations"]),
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--eval-fraction",
                "0",
                "--learning-rate",
                "1e-3",
                "--max-length",
                "128",  # the tiny model's context
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 1 and metrics[0]["rm/loss"] > 0
    assert json.loads((out / "reward_normalization.json").read_text())["method"] == "demonstrations"
