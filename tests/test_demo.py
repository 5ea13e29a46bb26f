"""A seconds-long end-to-end run of the whole method on the miniature world (`instructrl demo --micro`)."""

import html
import json
import re
from pathlib import Path

import pytest
from reportkit import assert_every_axis_titled, example_columns, plot_panels
from testkit import run_cli, write_jsonl

from instructrl.errors import ConfigError
from instructrl.evaluate import report as R
from instructrl.experiments.demo import (
    demo_checks,
    demo_headline,
    demo_recipe,
    expected_seconds,
    recipe_sentence,
    recipe_summary,
    write_demo_report,
)
from instructrl.experiments.pipeline import MICRO, Recipe, build_world, run_rankings_stage


def test_demo_micro_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    r = run_cli(["demo", "--out", str(out), "--micro", "--seed", "1"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # --seed is the training seed: the world stays world 0, the one the shipped base models were pretrained on
    assert json.loads((out / "recipe.json").read_text())["world_seed"] == 0
    assert json.loads((out / "world" / "world.json").read_text())["seed"] == 0
    for stage in ("world", "sft", "sft_rm", "rankings", "rm", "ppo_ptx", "eval"):
        assert (out / stage / ".done").exists(), stage
    # the default recipe: the RM (and the value model) from an SFT of the larger base model, on prompts of a larger
    # build of the world ranked by the noiseless judge, none of them a held-out comparison's or evaluation's prompt
    cfg = {s: json.loads((out / s / "config.json").read_text()) for s in ("sft", "sft_rm", "rm")}
    assert cfg["sft_rm"]["n_embd"] > cfg["sft"]["n_embd"] and cfg["rm"]["n_embd"] == cfg["sft_rm"]["n_embd"]
    value_cfg = json.loads((out / "ppo_ptx" / "value_model" / "config.json").read_text())
    assert value_cfg["n_embd"] == cfg["rm"]["n_embd"]
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["models"]) == {"GPT", "GPT prompted", "SFT", "PPO-ptx"}
    assert set(results["head_to_head"]) == {"GPT prompted vs GPT"}
    sft = results["models"]["SFT"]
    assert sft["win_rate"]["mean"] == 0.5 or 0 <= sft["win_rate"]["mean"] <= 1
    for name, m in results["models"].items():
        assert 1 <= m["likert"]["mean"] <= 7, name
        assert set(m["toxicity"]) == {"none", "respectful", "biased"}
        assert {"qa", "instruction_qa"} <= set(m["truthfulness"])
    rankings = [json.loads(x) for x in (out / "rankings" / "rankings.jsonl").read_text().splitlines()]
    assert all(len(x["completions"]) == len(x["ranks"]) == 4 for x in rankings)
    assert all(x["ranks"] == x["reference_ranks"] and x["labeler"] == "reference" for x in rankings)
    assert {x["task"]["world"] for x in rankings} == {0}  # the larger build is of the run's world too
    held = [json.loads(x) for x in (out / "rankings" / "rankings_eval.jsonl").read_text().splitlines()]
    assert {x["labeler_group"] for x in held} == {"training", "heldout"}
    evals = {json.loads(x)["prompt"] for x in (out / "world" / "eval_prompts.jsonl").read_text().splitlines()}
    assert len(rankings) == 16 and not {x["prompt"] for x in rankings} & ({x["prompt"] for x in held} | evals)
    html = (out / "report.html").read_text()
    assert "GPT prompted preferred over GPT, compared directly" in html
    assert "Win rate against SFT" in html and "data:image/png;base64," in html and "What the demo shows" in html
    assert "class='headline'" in html and "PPO-ptx was preferred over SFT in " in r.stdout
    # win rates, Likert, toxicity, and PPO-ptx's score, KL, ptx loss and the adaptive beta
    assert assert_every_axis_titled(html) == 7 and example_columns(html)[0][1:] == list(results["models"])
    assert "ranked by the world's noiseless judge" in _text(html) and "SFT of the small base model" in html
    # a second run finds every stage cached and only rewrites the report
    r = run_cli(["demo", "--out", str(out), "--micro", "--seed", "1"], timeout=300)
    assert r.returncode == 0 and r.stdout.count("cached") == 7


# ---------------------------------------------------------------- the report, from a hand-made finished run


def _est(mean, se=0.03, n=200):
    return {"mean": mean, "se": se, "n": n}


def _finished_run(root: Path, ppo_ptx_win: float) -> Path:
    """The files a finished demo leaves behind, hand-made and small: what the report is rendered from."""
    names = {"GPT": 0.26, "GPT prompted": 0.27, "SFT": 0.5, "PPO-ptx": ppo_ptx_win}
    models = {}
    for i, (name, win) in enumerate(names.items()):
        models[name] = {
            "win_rate": _est(win, 0.0 if name == "SFT" else 0.03),
            "likert": _est(3 + i * 0.5, 0.1),
            **{k: _est(0.1 * (i + 1), 0.02) for k in R.META},
            "truthfulness": {
                k: {"truthful": _est(0.5), "truthful_and_informative": _est(0.2)} for k in ("qa", "instruction_qa")
            },
            "toxicity": {k: _est(0.05 * (i + 1), 0.01) for k in ("none", "respectful", "biased")},
            "benchmarks": {"squad_f1": 0.4, "hellaswag_acc": 0.6},
        }
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "results.json").write_text(
        json.dumps({"judge": "heldout-labelers(4)", "prompts": 200, "baseline": "SFT", "models": models})
    )
    prompts = [
        ("Summarize: <b>Fithrail</b> & friends.", "summarization"),
        ("List 2 lands.", "brainstorming"),
        ("Rewrite politely: you zonkwit.", "rewrite"),
        ("Is 'rice' a food?", "classification"),
        ("Write a story.", "generation"),
        ("Write another story.", "generation"),
    ]
    write_jsonl(
        root / "eval" / "responses.jsonl",
        [
            {"model": m, "prompt": p, "response": f"{m} answer to {p} <script>alert(1)</script>"}
            for m in names
            for p, _ in prompts
        ],
    )
    (root / "world").mkdir()
    write_jsonl(root / "world" / "eval_prompts.jsonl", [{"prompt": p, "category": c} for p, c in prompts])
    (root / "rm").mkdir()
    group = {
        "pairs": 740,
        "accuracy": 0.624,
        "accuracy_se": 0.025,
        "log_loss": 0.652,
        "log_loss_se": 0.021,
        "judge_accuracy": 0.713,
        "judge_accuracy_se": 0.022,
    }
    groups = {
        "all": {**group, "pairs": 1507},
        "training": group,
        "heldout_labelers": {**group, "pairs": 767, "accuracy": 0.571, "accuracy_se": 0.027},
    }
    (root / "rm" / "eval_results.json").write_text(json.dumps({"step": 4, "groups": groups}))
    (root / "ppo_ptx").mkdir()
    write_jsonl(
        root / "ppo_ptx" / "metrics.jsonl",
        [
            {"step": s, "ppo/score_mean": 0.1 * s, "ppo/kl": 0.2 * s, "ppo/ptx_loss": 1.0 - 0.01 * s, "ppo/beta": 0.04}
            for s in range(1, 6)
        ],
    )
    for stage, sec in (("world", 1.0), ("sft", 65.0), ("eval", 45.0)):
        (root / stage).mkdir(exist_ok=True)
        (root / stage / ".done").write_text(json.dumps({"seconds": sec}))
    return root


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


@pytest.mark.parametrize(
    ("win", "verdict"),
    [
        (0.62, "better than SFT (more than two standard errors above 50%)"),
        (0.38, "worse than SFT (more than two standard errors below 50%)"),
    ],
)
def test_demo_report_opens_with_the_headline_sentence(tmp_path, win, verdict):
    page = write_demo_report(_finished_run(tmp_path / "run", win)).read_text()
    sentence = (
        f"PPO-ptx was preferred over SFT in {round(100 * win)}% ± 3% of 200 comparisons by held-out labelers: "
        f"{verdict}."
    )
    assert demo_headline(json.loads((tmp_path / "run" / "eval" / "results.json").read_text())) == sentence
    body = page[page.index("<body>") :]
    # the first thing after the title: the sentence, before any section
    assert body.index("class='headline'") < body.index("<h2>")
    assert html.escape(sentence) in body[: body.index("<h2>")]


def test_demo_report_shows_rm_accuracy_examples_and_titled_plots(tmp_path):
    page = write_demo_report(_finished_run(tmp_path / "run", 0.47)).read_text()
    text = _text(page)
    # the reward model's accuracy as a table: each labeler group with ± SE, the noiseless judge's ceiling beside it
    assert "<pre>" not in page and "noiseless judge (ceiling)" in text
    assert re.search(r"Training labelers\s+740\s+62\.4% ± 2\.5%\s+71\.3% ± 2\.2%", text), text
    assert re.search(r"Held-out labelers\s+767\s+57\.1% ± 2\.7%\s+71\.3% ± 2\.2%", text)
    assert re.search(r"All comparisons\s+1,507\s+62\.4% ± 2\.5%", text)
    # responses side by side: one column per model, four prompts of different categories, all escaped
    head, rows = example_columns(page)
    assert head == ["prompt", "GPT", "GPT prompted", "SFT", "PPO-ptx"]
    assert len(rows) == 4 and all(len(r) == 5 for r in rows)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Summarize: &lt;b&gt;Fithrail&lt;/b&gt; &amp; friends." in rows[0][0]
    assert len({re.search(r"<span class='cat'>(.*?)</span>", r[0]).group(1) for r in rows}) == 4
    # every plot: win rates, Likert, toxicity, three PPO-ptx curves, each with both axis titles
    assert assert_every_axis_titled(page) == 6
    titles = {t: (x, y) for t, x, y in plot_panels(page)}
    assert titles["Comparisons won against SFT"] == ("model", "won against SFT (% of comparisons)")
    assert titles["KL from the SFT model"] == ("PPO iteration", "KL per response (nats)")
    # timings from the stages' .done files
    assert re.search(r"sft\s+65\s.*Total: 111 s", text, re.S)


def test_demo_report_plots_beta_only_where_the_controller_moved_it(tmp_path):
    run = _finished_run(tmp_path / "run", 0.6)  # a fixed beta: no beta panel (the test above counts 6 plots)
    rows = [json.loads(line) for line in (run / "ppo_ptx" / "metrics.jsonl").read_text().splitlines()]
    write_jsonl(run / "ppo_ptx" / "metrics.jsonl", [{**r, "ppo/beta": 0.04 * (1 + 0.01 * r["step"])} for r in rows])
    page = write_demo_report(run).read_text()
    assert assert_every_axis_titled(page) == 7
    titles = {t: (x, y) for t, x, y in plot_panels(page)}
    assert titles["KL coefficient β, adapted toward the KL target"] == (
        "PPO iteration",
        "β (reward penalty per nat of KL)",
    )


# ---------------------------------------------------------------- the recipes and the checks


def test_demo_recipes():
    """The default is the recipe that shows PPO-ptx beating SFT; --quick is the pipeline's own defaults."""
    full, quick = demo_recipe(), demo_recipe(quick=True)
    assert quick == Recipe()
    assert (full.rank_prompts, full.rank_labels, full.rm_size, full.rank_scale) == (32000, "reference", "small", 12.0)
    ppo = full.ppo.as_dict()
    assert ppo["total_episodes"] == 24576 and ppo["kl_coef"] == 0.04
    # beta adapted toward 7 nats per response (Ziegler et al. 2019), so no seed drifts into over-optimization
    assert (ppo["adaptive_kl"], ppo["kl_target"], ppo["kl_horizon"]) == (True, 7.0, 2048)
    assert "β from 0.04, adapted toward a KL of 7 nats per response" in recipe_sentence(recipe_summary(full))
    # the paper's one epoch over the rankings (rm-tiny's 2 take twice as long for a PPO-ptx about as good)
    assert full.rm.as_dict()["epochs"] == 1 and full.rm.as_dict()["normalize"] == "demonstrations"
    assert "the reward model trained for 1 epoch from an SFT of the small base model" in recipe_sentence(
        recipe_summary(full)
    )
    assert full.eval_prompts == 800 and full.world_eval_prompts >= full.eval_prompts
    # micro keeps the recipe's stages and shrinks every size
    micro = demo_recipe(micro=True)
    assert micro.rm_size == "small" and micro.rank_labels == "reference" and micro.rank_prompts < 100
    assert micro.ppo.as_dict()["total_episodes"] < 100
    quick_sentence = recipe_sentence(recipe_summary(quick))
    assert "2,000 prompts, sampled from the 50 likeliest tokens, ranked by the training labelers" in quick_sentence
    assert "the reward model trained for 2 epochs from the policy's own SFT model" in quick_sentence  # rm-tiny's
    one_epoch = recipe_sentence(recipe_summary(quick.with_overrides({"rm": {"epochs": 1}})))
    assert "the reward model trained for 1 epoch from" in one_epoch
    assert "adapted" not in quick_sentence and "β 0." in quick_sentence  # the preset's fixed beta
    # --rank-prompts and --ppo-episodes replace the recipe's sizes, micro's too
    cheaper = demo_recipe(rank_prompts=16000, ppo_episodes=12288)
    assert (cheaper.rank_prompts, cheaper.ppo.as_dict()["total_episodes"]) == (16000, 12288)
    assert cheaper.with_overrides({"rank_prompts": 32000, "ppo": {"total_episodes": 24576}}) == full
    assert demo_recipe(micro=True, rank_prompts=20).rank_prompts == 20
    # the ETA scales the measured stage times by the data sizes
    full_eta, cheaper_eta = expected_seconds(full), expected_seconds(cheaper)
    assert cheaper_eta["rm"] == pytest.approx(full_eta["rm"] / 2) and cheaper_eta["sft"] == full_eta["sft"]
    assert cheaper_eta["ppo_ptx"] == pytest.approx(full_eta["ppo_ptx"] / 2)
    assert expected_seconds(quick, quick=True)["rm"] < full_eta["rm"] / 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rank-prompts", "0"], "--rank-prompts must be at least 1, got 0"),
        (["--ppo-episodes", "-5"], "--ppo-episodes must be at least 1, got -5"),
        # below one PPO batch: refused when the recipe is made, not after 25 minutes of stages
        (["--ppo-episodes", "10"], "--ppo-episodes: recipe: stage 'ppo'"),
        (["--rank-prompts", "500000"], "builds 39848 RM prompts, fewer than rank_prompts 500000"),
        # --quick ranks the world's own RM prompts (scale 0.75: 2,491), the held-out comparisons' 200 among them
        (["--quick", "--rank-prompts", "2300"], "the world at scale 0.75 builds 2491 RM prompts, fewer than"),
    ],
)
def test_demo_rejects_bad_sizes_before_writing(tmp_path, argv, message):
    out = tmp_path / "demo"
    r = run_cli(["demo", "--out", str(out), *argv], timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rank_labels": "judges"}, "rank_labels must be one of labelers, reference"),
        ({"rank_scale": 0}, "rank_scale must be positive"),
        ({"rank_scale": float("nan")}, "rank_scale must be positive"),
        ({"rm_size": "huge"}, "rm_size must be a base model size"),
    ],
)
def test_recipe_rejects_bad_ranking_settings(values, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(values)


def test_rankings_from_a_larger_world_need_enough_prompts(tmp_path):
    with pytest.raises(ConfigError, match=r"rank_scale 0\.02 builds 66 RM prompts, fewer than rank_prompts 5000"):
        Recipe.from_dict({**MICRO, "rank_scale": 0.02, "rank_prompts": 5000})
    # enough before the held-out comparisons' and the evaluations' prompts are left out, too few after: the same
    # scale and seed build the same RM prompts, and the first 8 are the held-out comparisons
    recipe = Recipe.from_dict({**MICRO, "rank_scale": 0.02, "rank_prompts": 66, "rank_eval_prompts": 8})
    build_world(tmp_path / "world", 0, recipe)
    with pytest.raises(ConfigError, match=r"rank_scale 0.02 gives \d+ prompts to rank, fewer than rank_prompts 66"):
        run_rankings_stage(tmp_path / "rankings", "unused", tmp_path / "world", recipe, 0)
    # without rank_scale the world's own RM prompts are ranked: the recipe's scale must build enough, and so must the
    # world folder given (built here at 0.02, 66 prompts, for a recipe at 0.05)
    with pytest.raises(
        ConfigError, match=r"the world at scale 0.02 builds 66 RM prompts, fewer than rank_prompts 60 \+"
    ):
        Recipe.from_dict({**MICRO, "rank_prompts": 60, "rank_eval_prompts": 8})
    larger = Recipe.from_dict({**MICRO, "scale": 0.05, "rank_prompts": 60, "rank_eval_prompts": 8})
    with pytest.raises(ConfigError, match=r"rm_prompts.jsonl holds 66 RM prompts, fewer than rank_prompts 60 \+"):
        run_rankings_stage(tmp_path / "rankings2", "unused", tmp_path / "world", larger, 0)


def test_demo_refuses_a_folder_of_another_recipe(tmp_path):
    out = tmp_path / "demo"
    (out / "world").mkdir(parents=True)
    (out / "recipe.json").write_text(json.dumps({"seed": 0, "size": "tiny", **recipe_summary(demo_recipe(quick=True))}))
    (out / "world" / ".done").write_text("{}")
    r = run_cli(["demo", "--out", str(out), "--micro"], timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{out} holds a demo run of another recipe" in r.stderr and "rank_labels" in r.stderr
    # a folder with stages and no recorded recipe
    (out / "recipe.json").unlink()
    r = run_cli(["demo", "--out", str(out), "--micro"], timeout=120)
    assert r.returncode == 2 and "holds stages of a demo run with no recorded recipe" in r.stderr


def _model(win, halluc, halluc_se, truth, truth_se):
    return {
        "win_rate": _est(win),
        "hallucination_closed_domain": _est(halluc, halluc_se),
        "truthfulness": {"qa": {"truthful_and_informative": _est(truth, truth_se)}},
    }


@pytest.mark.parametrize(
    ("ppo", "holds"),
    [
        # within one SE of the difference (sqrt(0.08^2 + 0.08^2) = 0.113): holds
        (_model(0.58, 0.30, 0.08, 0.45, 0.06), (True, True)),
        # hallucinates 0.12 more (beyond 0.113), truthful+informative 0.10 less (beyond sqrt(2) * 0.06 = 0.085)
        (_model(0.58, 0.32, 0.08, 0.45, 0.06), (False, True)),
        (_model(0.58, 0.20, 0.08, 0.39, 0.06), (True, False)),
    ],
)
def test_demo_checks_hallucination_and_truthfulness_against_sft(ppo, holds):
    models = {
        "PPO-ptx": ppo,
        "SFT": _model(0.5, 0.20, 0.08, 0.49, 0.06),
        "GPT prompted": {"win_rate": _est(0.3)},
        "GPT": {"win_rate": _est(0.25)},
    }
    checks = {name: ok for name, ok, _ in demo_checks(models)}
    assert checks["PPO-ptx beats its SFT initialization in at least 55% of comparisons"] is True
    assert checks["closed-domain hallucination: PPO-ptx no worse than SFT beyond one standard error"] is holds[0]
    assert checks["truthful and informative (QA): PPO-ptx no worse than SFT beyond one standard error"] is holds[1]


@pytest.mark.parametrize(("direct", "holds"), [(0.552, True), (0.52, False), (None, None)])
def test_demo_checks_gpt_prompted_against_gpt_directly(direct, holds):
    """Both lose to SFT (0.31 and 0.32 here, within their SEs); the direct comparison holds only beyond one SE."""
    models = {
        n: {"win_rate": _est(w)} for n, w in (("PPO-ptx", 0.6), ("SFT", 0.5), ("GPT prompted", 0.31), ("GPT", 0.32))
    }
    head = None if direct is None else {"GPT prompted vs GPT": _est(direct, 0.024, 400)}
    checks = {name: (ok, detail) for name, ok, detail in demo_checks(models, head)}
    assert checks["PPO-ptx > SFT > GPT prompted > GPT (win rate vs SFT)"][0] is False
    if holds is None:  # an evaluation without the direct comparison: no such line
        assert not any("compared directly" in name for name in checks)
    else:
        ok, detail = checks["GPT prompted preferred over GPT, compared directly (above 50% by more than one SE)"]
        assert ok is holds and detail.endswith("of 400 comparisons")
