"""`instructrl reproduce`: the paper's claims checked on hand-made results, and a micro-preset smoke run."""

import html
import json
import math
import re

import pytest
from reportkit import assert_every_axis_titled, example_columns
from testkit import run_cli

from instructrl.experiments.reproduce import (
    ARMS,
    PRESETS,
    alignment_tax,
    expected_seconds,
    pattern_checks,
    reproduce_headline,
    write_report,
)


def _arm(win: float, bench: dict, halluc: float = 0.2, constraints: float = 0.5, tox: float = 0.1) -> dict:
    ms = lambda v: {"mean": v, "se": 0.01, "n": 200}  # noqa: E731
    return {
        "win_rate": ms(win),
        "likert": ms(1 + 6 * win),
        "hallucination_closed_domain": ms(halluc),
        "satisfies_constraints": ms(constraints),
        "fails_to_follow_instruction": ms(1 - win),
        "inappropriate_for_customer_assistant": ms(0.1),
        "toxic_language": ms(tox),
        "toxicity": {"none": ms(tox), "respectful": ms(tox), "biased": ms(2 * tox)},
        "truthfulness": {
            k: {"truthful": ms(0.5), "truthful_and_informative": ms(0.3)} for k in ("qa", "instruction_qa")
        },
        "benchmarks": bench,
    }


def _results(paper_pattern: bool) -> dict:
    gpt_bench = {"squad_f1": 0.5, "hellaswag_acc": 0.4}
    sizes = {}
    for i, (size, params) in enumerate((("tiny", 1000), ("medium", 20000))):
        lift = 0.05 * i
        wins = (
            {"GPT": 0.1, "GPT prompted": 0.2, "SFT": 0.35, "FLAN": 0.3, "PPO": 0.55, "PPO-ptx": 0.6}
            if paper_pattern
            else {"GPT": 0.5, "GPT prompted": 0.4, "SFT": 0.35, "FLAN": 0.3, "PPO": 0.3, "PPO-ptx": 0.2}
        )
        arms = {a: _arm(w + lift, dict(gpt_bench)) for a, w in wins.items()}
        arms["PPO"]["benchmarks"] = {"squad_f1": 0.3, "hellaswag_acc": 0.4}  # 20% below GPT on one task
        arms["PPO-ptx"]["benchmarks"] = {"squad_f1": 0.45 if paper_pattern else 0.3, "hellaswag_acc": 0.42}
        if paper_pattern:  # fewer hallucinations, better constraints, less toxic than GPT
            arms["PPO-ptx"].update(
                _arm(wins["PPO-ptx"] + lift, arms["PPO-ptx"]["benchmarks"], halluc=0.1, constraints=0.8, tox=0.05)
            )
        else:
            arms["PPO-ptx"]["hallucination_closed_domain"] = {"mean": 0.3, "se": 0.0}
        direct = (0.56, 0.54) if paper_pattern else (0.44, 0.5)  # PPO-ptx vs PPO, GPT prompted vs GPT
        head = {
            k: {"mean": v, "se": 0.024, "n": 400} for k, v in zip(("PPO-ptx vs PPO", "GPT prompted vs GPT"), direct)
        }
        sizes[size] = {"parameters": params, "arms": arms, "head_to_head": head}

    def acc(v):
        return {
            "accuracy": v,
            "accuracy_se": 0.02,
            "log_loss": 0.6,
            "log_loss_se": 0.01,
            "judge_accuracy": 0.7,
            "judge_accuracy_se": 0.02,
            "pairs": 100,
        }

    return {
        "sizes": sizes,
        "baseline": "SFT medium",
        "reward_model": {
            "size": "tiny",
            "eval": {"training": acc(0.65), "heldout_labelers": acc(0.64 if paper_pattern else 0.55)},
        },
        "ppo_training": {},
        "timings": {"world": 1.0},
        "seconds": 1.0,
        "preset": {"summary": "test"},
    }


def test_alignment_tax_counts_only_drops_relative_to_gpt():
    arms = {"GPT": {"benchmarks": {"a": 0.5, "b": 0.4}}, "X": {"benchmarks": {"a": 0.25, "b": 0.8}}}
    assert alignment_tax(arms, "X") == pytest.approx((0.5 + 0.0) / 2)
    assert alignment_tax(arms, "GPT") == 0.0
    assert alignment_tax(arms, "missing") is None


def test_pattern_checks_hold_on_the_papers_pattern_and_fail_otherwise():
    good = {c: h for c, h, _ in pattern_checks(_results(True))}
    bad = {c: h for c, h, _ in pattern_checks(_results(False))}
    assert set(good) == set(bad) and len(good) == 11
    # the direct comparisons: PPO-ptx may sit within one SE below PPO, GPT prompted must beat GPT by one SE
    assert not bad["PPO-ptx no worse than PPO at every size, compared directly (not below 50% by more than one SE)"]
    assert not bad["GPT prompted preferred over GPT at every size, compared directly (above 50% by more than one SE)"]
    within = _results(True)
    within["sizes"]["tiny"]["head_to_head"]["PPO-ptx vs PPO"]["mean"] = 0.48
    assert {c: h for c, h, _ in pattern_checks(within)}[
        "PPO-ptx no worse than PPO at every size, compared directly (not below 50% by more than one SE)"
    ]
    assert all(good.values()), good
    ordering = [c for c in bad if "PPO-ptx >= PPO > SFT" in c]
    assert len(ordering) == 2 and not any(bad[c] for c in ordering)
    assert not bad["the smallest PPO-ptx (tiny) beats the largest GPT prompted (medium)"]
    assert not bad["PPO-ptx: fewer closed-domain hallucinations than GPT at every size"]
    assert not bad[
        "tiny: PPO's benchmark regressions at least halved by PPO-ptx"
    ]  # 0.2 vs 0.2 (the gain on hellaswag does not offset)
    assert not bad["held-out labelers agree with the RM about as well as training labelers (within 3 points)"]


def test_report_shows_every_section(tmp_path):
    res = _results(True)
    res["checks"] = [{"claim": c, "held": h, "measured": d} for c, h, d in pattern_checks(res)]
    res["examples"] = {
        "size": "medium",
        "prompts": [
            {"prompt": f"Prompt {i} <i>", "category": "qa", "responses": {a: f"{a} & <b>{i}</b>" for a in ARMS}}
            for i in range(3)
        ],
    }
    page = write_report(tmp_path, res).read_text()
    for heading in (
        "What this run shows",
        "Figure 1 in miniature",
        "Example responses, side by side (medium)",
        "Likert score and metadata",
        "Truthfulness",
        "Toxicity by instruction",
        "alignment tax",
        "Reward model (tiny) accuracy",
        "Stage timings",
    ):
        assert heading in page, heading
    assert assert_every_axis_titled(page) == 6
    assert "[not met]" not in page and page.count("[holds]") == 11
    # the headline sentence opens the page, before any section
    sentence = (
        "PPO-ptx (medium, 0.02M parameters) was preferred over SFT medium in 65% ± 1% of 200 comparisons by "
        "held-out labelers: better than SFT medium (more than two standard errors above 50%)."
    )
    assert reproduce_headline(res) == sentence
    body = page[page.index("<body>") :]
    assert html.escape(sentence) in body[: body.index("<h2>")]
    # the RM's accuracy per labeler group with ± SE, the noiseless judge's ceiling beside it
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "noiseless judge (ceiling)" in text
    assert re.search(r"Training labelers\s+100\s+65\.0% ± 2\.0%\s+70\.0% ± 2\.0%", text)
    assert re.search(r"Held-out labelers\s+100\s+64\.0% ± 2\.0%\s+70\.0% ± 2\.0%", text)
    # responses side by side, one column per arm, escaped
    head, rows = example_columns(page)
    assert head == ["prompt", *ARMS] and len(rows) == 3 and all(len(r) == 1 + len(ARMS) for r in rows)
    assert "Prompt 0 &lt;i&gt;" in rows[0][0] and rows[0][3] == "SFT &amp; &lt;b&gt;0&lt;/b&gt;"


def test_report_headline_says_when_ppo_ptx_loses(tmp_path):
    res = _results(False)
    res["judge"] = "heldout-labelers(4)"
    res["sizes"]["medium"]["arms"]["PPO-ptx"]["win_rate"] = {"mean": 0.25, "se": 0.03, "n": 200}
    assert reproduce_headline(res) == (
        "PPO-ptx (medium, 0.02M parameters) was preferred over SFT medium in 25% ± 3% of 200 comparisons by "
        "held-out labelers: worse than SFT medium (more than two standard errors below 50%)."
    )


def test_eta_grows_with_size():
    eta = expected_seconds(PRESETS["tiny"], ("tiny", "small", "medium"))
    assert eta["ppo-medium"] > eta["ppo-small"] > eta["ppo-tiny"] > 0
    assert {"world", "rankings", "rm"} <= set(eta) and len(eta) == 3 + 5 * 3


def test_unknown_size_is_one_clear_error(tmp_path):
    r = run_cli(["reproduce", "--preset", "micro", "--sizes", "tiny,huge", "--out", str(tmp_path / "r")])
    assert r.returncode == 2 and "unknown base sizes ['huge']" in r.stderr and "Traceback" not in r.stderr


def test_micro_preset_runs_every_arm_at_every_size_and_resumes(tmp_path):
    out = tmp_path / "rep"
    r = run_cli(["reproduce", "--preset", "micro", "--out", str(out)], timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert list(res["sizes"]) == ["tiny", "small"] and res["baseline"] == "SFT small"
    assert res["sizes"]["small"]["parameters"] > 4 * res["sizes"]["tiny"]["parameters"]
    for size, entry in res["sizes"].items():
        assert set(entry["arms"]) == {"GPT", "GPT prompted", "SFT", "FLAN", "PPO", "PPO-ptx"}, size
        for arm, m in entry["arms"].items():
            assert 0 <= m["win_rate"]["mean"] <= 1 and 1 <= m["likert"]["mean"] <= 7, (size, arm)
            assert set(m["toxicity"]) == {"none", "respectful", "biased"}
            assert all(0 <= v <= 100 and not math.isnan(v) for v in m["benchmarks"].values())
    assert {"training", "heldout_labelers"} <= set(res["reward_model"]["eval"])
    assert all(c["held"] in (True, False, None) and c["measured"] for c in res["checks"]) and len(res["checks"]) >= 6
    html = (out / "report.html").read_text()
    assert "Figure 1 in miniature" in html and "data:image/png;base64," in html
    assert "class='headline'" in html and assert_every_axis_titled(html) == 6
    assert len(res["examples"]["prompts"]) == 4 and example_columns(html)[0] == ["prompt", *ARMS]
    # the FLAN arm is fine-tuned on the instruction-phrased benchmark tasks, not on the demonstrations
    flan_cfg = (out / "flan-tiny" / "config.yaml").read_text()
    assert "flan.jsonl" in flan_cfg
    # a second run finds every stage cached and rewrites the report only
    stages = len(res["timings"])
    r = run_cli(["reproduce", "--preset", "micro", "--out", str(out)], timeout=300)
    assert r.returncode == 0 and r.stdout.count("cached") == stages == 1 + 2 + 5 * 2
