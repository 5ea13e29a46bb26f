"""`instructrl reproduce --preset methods`: the table's arithmetic on hand-made results, and a micro-sized run."""

import json

import pytest
from testkit import run_cli

from instructrl.errors import ConfigError
from instructrl.experiments.methods import (
    BEST_OF,
    DPO_ARMS,
    RL_ARMS,
    alignment_tax,
    headline,
    run_methods,
    snapshot_iterations,
)
from instructrl.experiments.pipeline import MICRO, Recipe


def test_alignment_tax_counts_only_drops_below_sft():
    models = {
        "SFT": {"benchmarks": {"a": 0.5, "b": 0.4}},
        "X": {"benchmarks": {"a": 0.25, "b": 0.6}},  # a: 50% below SFT, b: above (no tax)
        "Y": {},
    }
    assert alignment_tax(models, "X") == pytest.approx(0.25)
    assert alignment_tax(models, "SFT") == 0.0
    assert alignment_tax(models, "Y") is None


def test_headline_names_the_best_method_and_who_beats_sft():
    arms = {
        "SFT": {"win_rate": {"mean": 0.5, "se": 0.0}},
        "A": {"win_rate": {"mean": 0.62, "se": 0.03}},
        "B": {"win_rate": {"mean": 0.55, "se": 0.03}},
    }
    text = headline({"arms": arms})
    assert "A has the highest win rate (0.620 ± 0.030)" in text and "1 of 2 methods" in text and "(A)" in text


def test_snapshots_fall_inside_the_run():
    recipe = Recipe.from_dict({"ppo": {"total_episodes": 2048, "batch_size": 64}})
    assert snapshot_iterations(recipe) == [4, 8, 16, 24]  # 32 iterations: 1/8, 1/4, 1/2, 3/4


def test_methods_takes_one_size(tmp_path):
    r = run_cli(["reproduce", "--preset", "methods", "--sizes", "tiny,small", "--out", str(tmp_path / "m")])
    assert r.returncode == 2 and "one --sizes value" in r.stderr and "Traceback" not in r.stderr


def test_an_arm_the_recipe_leaves_invalid_fails_before_any_stage(tmp_path):
    """A batch of 18 is fine for PPO but splits into no groups of 4 responses: GRPO's and RLOO's batches would
    fail only after the world, SFT, rankings, RM and the PPO arms had run."""
    recipe = Recipe.from_dict({**MICRO, "ppo": {"total_episodes": 36, "batch_size": 18, "mini_batch_size": 6}})
    with pytest.raises(ConfigError, match=r"the GRPO arm: .*multiple of samples_per_prompt=4"):
        run_methods(tmp_path / "m", seed=0, recipe=recipe, printer=lambda m: None)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # about a minute and a half on 2 cores: every method trains and is evaluated
def test_micro_run_of_every_method(tmp_path):
    out = tmp_path / "methods"
    res = run_methods(out, seed=0, recipe=Recipe.from_dict(MICRO), printer=lambda m: None)
    expected = {"SFT", *RL_ARMS, *DPO_ARMS, *BEST_OF, "Expert iteration"}
    assert set(res["arms"]) == expected
    assert res["arms"]["SFT"]["win_rate"] == {"mean": 0.5, "se": 0.0, "n": 8}  # the baseline ties itself
    for name, row in res["arms"].items():
        assert 0 <= row["win_rate"]["mean"] <= 1, name
        assert row["kl_from_sft"]["mean"] >= -1.0, name  # a sampled k1 estimate may dip below 0 by noise
    assert res["arms"]["Best-of-16"]["kl_from_sft"]["kind"] == "best-of-n bound"
    assert res["arms"]["GRPO"]["needs"] == "RM, reference"
    curves = res["curves"]
    assert [p["n"] for p in curves["Best-of-n"]] == [1, 2, 4, 8, 16]
    assert curves["PPO"][0]["kl"] == 0.0 and curves["PPO"][-1]["iteration"] == "final"
    for stage in ("grpo", "rloo"):  # critic-free: no value model trained or saved
        assert not (out / stage / "value_model").exists() and (out / "ppo" / "value_model").exists()
    assert "advantage: grpo" in (out / "grpo" / "config.yaml").read_text()
    assert "ranking_loss: plackett-luce" in (out / "dpo_pl" / "config.yaml").read_text()
    html = (out / "report.html").read_text()
    assert "Over-optimization" in html and html.count("data:image/png;base64,") == 3  # win-rate bars, two curves
    assert "| Best-of-4 |" in (out / "summary.md").read_text()
    assert json.loads((out / "results.json").read_text())["arms"].keys() == res["arms"].keys()
    # a second run finds every stage cached
    again = run_methods(out, seed=0, recipe=Recipe.from_dict(MICRO), printer=lambda m: None)
    assert again["arms"]["PPO"]["win_rate"] == res["arms"]["PPO"]["win_rate"]
