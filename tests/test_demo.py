"""A seconds-long end-to-end run of the whole method on the miniature world (`instructrl demo --micro`)."""

import json

from testkit import run_cli


def test_demo_micro_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    r = run_cli(["demo", "--out", str(out), "--micro"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("world", "sft", "rankings", "rm", "ppo_ptx", "eval"):
        assert (out / stage / ".done").exists(), stage
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["models"]) == {"GPT", "GPT prompted", "SFT", "PPO-ptx"}
    sft = results["models"]["SFT"]
    assert sft["win_rate"]["mean"] == 0.5 or 0 <= sft["win_rate"]["mean"] <= 1
    for name, m in results["models"].items():
        assert 1 <= m["likert"]["mean"] <= 7, name
        assert set(m["toxicity"]) == {"none", "respectful", "biased"}
        assert {"qa", "instruction_qa"} <= set(m["truthfulness"])
    rankings = [json.loads(x) for x in (out / "rankings" / "rankings.jsonl").read_text().splitlines()]
    assert all(len(x["completions"]) == len(x["ranks"]) == 4 for x in rankings)
    html = (out / "report.html").read_text()
    assert "Win rate against SFT" in html and "data:image/png;base64," in html and "What the demo shows" in html
    # a second run finds every stage cached and only rewrites the report
    r = run_cli(["demo", "--out", str(out), "--micro"], timeout=300)
    assert r.returncode == 0 and r.stdout.count("cached") == 6
