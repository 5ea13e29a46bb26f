"""The HTML report's shared pieces (instructrl.evaluate.report), from small hand-made inputs: the headline
sentence, the reward model's accuracy table, responses side by side, and axis titles on every plot."""

from __future__ import annotations

import html
import math
import re

import pytest
from reportkit import assert_every_axis_titled, example_columns, plot_panels

from instructrl.evaluate import report as R

# ---------------------------------------------------------------- the headline


def test_headline_states_a_win_with_its_uncertainty():
    s = R.headline("PPO-ptx", "SFT", {"mean": 0.62, "se": 0.03, "n": 200})
    assert s == (
        "PPO-ptx was preferred over SFT in 62% ± 3% of 200 comparisons by held-out labelers: "
        "better than SFT (more than two standard errors above 50%)."
    )


def test_headline_states_a_loss_with_its_uncertainty():
    s = R.headline("PPO-ptx", "SFT", {"mean": 0.381, "se": 0.031, "n": 200})
    assert s.startswith("PPO-ptx was preferred over SFT in 38% ± 3% of 200 comparisons by held-out labelers: ")
    assert s.endswith("worse than SFT (more than two standard errors below 50%).")
    assert "better" not in s


@pytest.mark.parametrize(
    ("mean", "words"),
    [(0.47, "no better than SFT at this scale"), (0.53, "not clearly better than SFT at this scale")],
)
def test_headline_within_two_standard_errors_claims_no_difference(mean, words):
    s = R.headline("PPO-ptx", "SFT", {"mean": mean, "se": 0.03, "n": 200})
    assert f"{round(100 * mean)}% ± 3% of 200 comparisons" in s
    assert s.endswith(f": {words} (within two standard errors of 50%).")
    assert s.count(".") == 1  # one sentence


def test_headline_edge_cases():
    # a small standard error gets a decimal; a missing one is said, not hidden
    assert "in 51.2% ± 0.4% of 5000 comparisons" in R.headline("A", "B", {"mean": 0.512, "se": 0.004, "n": 5000})
    one = R.headline("A", "B", {"mean": 1.0, "se": math.nan, "n": 1})
    assert "in 100% of 1 comparison by" in one and "too few comparisons" in one
    assert "no measured win rate" in R.headline("A", "B", {})
    assert R.judge_phrase("heldout-labelers(4)") == "held-out labelers"
    assert R.judge_phrase("rm:/x") == "the judge rm:/x"
    head = R.headline_html(R.headline("A<b>", "B", {"mean": 0.6, "se": 0.01, "n": 9}))
    assert "A&lt;b&gt;" in head and "<b>" not in head


# ---------------------------------------------------------------- the reward model's accuracy


def _group(acc, se, judge=None, pairs=100):
    g = {"pairs": pairs, "accuracy": acc, "accuracy_se": se, "log_loss": 0.65, "log_loss_se": 0.02}
    if judge is not None:
        g.update(judge_accuracy=judge, judge_accuracy_se=0.021)
    return g


def test_rm_accuracy_table_has_each_group_with_se_and_the_ceiling_beside_it():
    groups = {
        "all": _group(0.597, 0.018, 0.731, 1507),
        "heldout_labelers": _group(0.571, 0.027, 0.748, 767),
        "training": _group(0.624, 0.025, 0.713, 740),
    }
    page = R.rm_accuracy_table(groups)
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", page)]
    assert head[:4] == ["labelers", "comparison pairs", "RM accuracy", "noiseless judge (ceiling)"]
    rows = [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in re.findall(r"<tr>(.*?)</tr>", page)]
    rows = [r for r in rows if r]
    # training labelers first, held-out next, all comparisons last; accuracy ± SE, the judge's ceiling beside it
    assert [r[0] for r in rows] == ["Training labelers", "Held-out labelers", "All comparisons"]
    assert rows[0][1:4] == ["740", "62.4% ± 2.5%", "71.3% ± 2.1%"]
    assert rows[1][1:4] == ["767", "57.1% ± 2.7%", "74.8% ± 2.1%"]
    assert rows[2][1:4] == ["1,507", "59.7% ± 1.8%", "73.1% ± 2.1%"]
    assert "0.650 ± 0.020" in rows[0][4]
    assert "ceiling" in page and "chance" in page


def test_rm_accuracy_table_without_a_judge_or_groups():
    page = R.rm_accuracy_table({"train_labelers": _group(0.7, 0.01), "team-b": _group(0.6, 0.05)})
    assert "Training labelers" in page and "team-b" in page and "<td>-</td>" in page
    assert "not found" in R.rm_accuracy_table({})


# ---------------------------------------------------------------- responses side by side


MODELS = ["GPT", "SFT", "PPO-ptx"]


def _responses(n_prompts=10):
    rows = []
    for m in MODELS:
        for i in range(n_prompts):
            rows.append({"model": m, "prompt": f"prompt {i} <b>&", "response": f"{m} says <script>x</script> {i}"})
    rows.append({"model": "GPT", "prompt": "only GPT answered", "response": "-"})
    return rows


def test_pick_examples_takes_one_prompt_per_category_answered_by_every_model():
    cats = {f"prompt {i} <b>&": ("qa" if i < 5 else "rewrite" if i < 8 else "story") for i in range(10)}
    ex = R.pick_examples(_responses(), MODELS, k=4, categories=cats)
    assert len(ex) == 4 and "only GPT answered" not in [e["prompt"] for e in ex]
    assert {"qa", "rewrite", "story"} <= {e["category"] for e in ex}
    assert all(list(e["responses"]) == MODELS for e in ex)
    assert len(R.pick_examples(_responses(3), MODELS, k=5)) == 3  # no more than there are


def test_examples_table_has_one_column_per_model_and_escapes_text():
    ex = R.pick_examples(_responses(), MODELS, k=3, categories={"prompt 0 <b>&": "qa"})
    page = R.examples_table(ex, MODELS)
    head, rows = example_columns(page)
    assert head == ["prompt", *MODELS] and len(rows) == 3
    assert all(len(r) == 1 + len(MODELS) for r in rows)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "prompt 0 &lt;b&gt;&amp;" in rows[0][0] and "<span class='cat'>qa</span>" in rows[0][0]
    assert rows[0][2].startswith("SFT says")
    long = R.examples_table([{"prompt": "p", "responses": {"A": "x" * 1000, "B": ""}}], limit=50)
    assert "x" * 49 + "…" in long and "(empty)" in long


# ---------------------------------------------------------------- plots


def test_every_chart_has_axis_titles_in_its_alt_text():
    charts = [
        R.bar_chart("Win rate", {"A": 0.4, "B": 0.6}, {"A": 0.01, "B": math.nan}, "win rate (%)", ref=0.5),
        R.grouped_chart("Toxicity", {"A": {"none": 0.1}, "B": {"none": 0.2}}, "share (0-1)", xlabel="instruction"),
        R.line_chart("KL", {"kl": ([1, 2], [0.0, 0.5])}, "PPO iteration", "KL (nats)"),
        R.toxicity_chart("Toxic", {"A": {"toxicity": {"none": {"mean": 0.1}, "biased": {"mean": 0.3}}}}),
    ]
    for chart in charts:
        assert_every_axis_titled(chart)
    assert plot_panels(charts[0]) == [("Win rate", "model", "win rate (%)")]
    with pytest.raises(AssertionError):  # a panel without an x-axis title is caught
        assert_every_axis_titled(R.grouped_chart("t", {"A": {"m": 1.0}}, "y"))
