"""`instructrl demo --out O`: the whole method on the miniature world, on a CPU.

From the smallest shipped base model: the world's datasets, SFT on labeler demonstrations (with 10%
pretraining data, the PPO-init recipe), rankings of SFT samples, the reward model, PPO-ptx, and an
evaluation by held-out labelers of GPT (the base model), GPT prompted (few-shot), SFT and PPO-ptx,
written to ``O/report.html``. Stages are cached: run it again to continue an interrupted demo.

Two recipes:

* the default (:data:`DEMO`, about 36 minutes on 2 cores): the paper's amount of ranking data (32,000
  prompts, ranked by the world's noiseless judge) and a reward model larger than the policy (from the
  ``small`` base model, as the paper used one 6B RM for every policy size), trained for one epoch as the paper's
  was, then 24,576 PPO-ptx episodes with β adapted toward a KL of 7 nats per response. It is the fastest setting
  found where PPO-ptx is preferred over its SFT start (``benchmarks/ppo_quality``, ``benchmarks/demo``).
* ``--quick`` (:class:`Recipe`'s defaults, about 5 minutes): 2,000 prompts ranked by the noisy training
  labelers and an RM of the policy's size. Every stage runs, but that RM is too weak for PPO-ptx to beat
  SFT (about even).
"""

from __future__ import annotations

import html
import json
import math
from itertools import pairwise
from pathlib import Path

from instructrl.config import load_yaml
from instructrl.errors import ConfigError
from instructrl.evaluate import report as R
from instructrl.experiments.pipeline import (
    MICRO,
    Recipe,
    Stages,
    add_seed_arguments,
    build_world,
    run_eval_stage,
    run_ppo_stage,
    run_rankings_stage,
    run_rm_stage,
    run_sft_stage,
)
from instructrl.world.base_models import resolve_model

# the default recipe: 32,000 ranked prompts from a 12x build of the world (samples from the SFT policy's 50 likeliest
# tokens, the Recipe's rank_top_k), ranked by the noiseless judge; the RM from the small base model's SFT, 1 epoch;
# PPO-ptx with gamma 1, 24,576 episodes, beta starting at 0.04 and adapted toward a KL of 7 nats per response (Ziegler
# et al. 2019's controller, horizon 2,048 episodes: at a fixed beta one seed in three drifted to 13 nats and
# over-optimized the RM); 800 evaluation prompts (win-rate SE about 0.017).
# benchmarks/ppo_quality/history.md: the search that found it; benchmarks/demo/results.md: three seeds of it.
DEMO = {
    "rank_prompts": 32000,
    "rank_scale": 12.0,
    "rank_labels": "reference",
    "rm_size": "small",
    # one epoch over the rankings (the paper's; rm-tiny's 2 take twice as long, and PPO-ptx won by 0.58-0.61 against
    # 0.57-0.58 at the same seeds: benchmarks/demo/results.md, runs E0-E2 against Xc-Zc)
    "rm": {"epochs": 1},
    "eval_prompts": 800,
    "world_eval_prompts": 800,
    "ppo": {
        "ptx_coef": 1.0,
        "kl_coef": 0.04,
        "adaptive_kl": True,
        "kl_target": 7.0,
        "kl_horizon": 2048,
        "total_episodes": 24576,
    },
}
# measured on a quiet 2-core CPU (AMD EPYC, AVX2; benchmarks/demo run K, its 2-epoch RM halved); for the ETA only
EXPECTED_QUICK = {"world": 2, "sft": 65, "rankings": 95, "rm": 60, "ppo_ptx": 75, "eval": 45}
EXPECTED = {"world": 2, "sft": 57, "sft_rm": 151, "rankings": 221, "rm": 800, "ppo_ptx": 812, "eval": 52}


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="Output directory (every stage's outputs and report.html).")
    add_seed_arguments(parser)
    parser.add_argument("--size", default="tiny", help="Base model size (tiny, small, medium) or a model directory.")
    parser.add_argument("--ppo-episodes", type=int, default=None, help="PPO episodes (default: the recipe's).")
    parser.add_argument(
        "--rank-prompts", type=int, default=None, help="Prompts ranked for the reward model (default: the recipe's)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="The 5-minute recipe: 2,000 prompts ranked by the training labelers, an RM of the policy's size "
        "(PPO-ptx about even with SFT there).",
    )
    parser.add_argument(
        "--micro", action="store_true", help="A seconds-long smoke run with tiny data sizes (for tests)."
    )


def demo_recipe(
    quick: bool = False, micro: bool = False, rank_prompts: int | None = None, ppo_episodes: int | None = None
) -> Recipe:
    """The demo's recipe: :data:`DEMO`, or with ``quick`` the pipeline's defaults; ``micro`` shrinks every data
    size to a seconds-long smoke run of the same stages; ``rank_prompts`` and ``ppo_episodes`` (the options of the
    same names) replace the recipe's, after ``micro``."""
    recipe = Recipe() if quick else Recipe.from_dict(DEMO, "the demo recipe")
    if micro:
        recipe = recipe.with_overrides(
            {**MICRO, "world_eval_prompts": None, **({"rank_scale": 0.05} if recipe.rank_scale else {})}, "micro"
        )
    for option, value in (("--rank-prompts", rank_prompts), ("--ppo-episodes", ppo_episodes)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    if rank_prompts is not None:
        recipe = recipe.with_overrides({"rank_prompts": rank_prompts}, "--rank-prompts")
    if ppo_episodes is not None:
        recipe = recipe.with_overrides({"ppo": {"total_episodes": ppo_episodes}}, "--ppo-episodes")
    return recipe


def expected_seconds(recipe: Recipe, quick: bool = False) -> dict[str, float]:
    """Each stage's expected seconds, for the ETA: the measured times of the default recipe (or ``--quick``'s), with
    the rankings and the reward model scaled by the prompts ranked and PPO-ptx by its episodes against that recipe's."""
    measured, times = (Recipe(), EXPECTED_QUICK) if quick else (demo_recipe(), EXPECTED)
    ranked = recipe.rank_prompts / measured.rank_prompts
    episodes = recipe.ppo.as_dict()["total_episodes"] / measured.ppo.as_dict()["total_episodes"]
    return {
        **times,
        "rankings": times["rankings"] * ranked,
        "rm": times["rm"] * ranked,
        "ppo_ptx": times["ppo_ptx"] * episodes,
    }


def main(args) -> int:
    out = Path(args.out)
    recipe = demo_recipe(args.quick, args.micro, args.rank_prompts, args.ppo_episodes)
    base = resolve_model(args.size)
    claim_folder(out, {"seed": args.seed, "world_seed": args.world_seed, "size": args.size, **recipe_summary(recipe)})
    expected = {} if args.micro else expected_seconds(recipe, args.quick)
    stages, ev, report = run_stages(out, recipe, args.seed, args.world_seed, base, expected)
    total = sum(stages.timings.values())
    print(f"[demo] {demo_headline(json.loads((ev / 'results.json').read_text()))}")
    print(f"[demo] done: {total:.0f}s of stages; report: {report}")
    return 0


def run_stages(
    out: Path, recipe: Recipe, seed: int, world_seed: int, base: str, expected: dict[str, float], tag: str = "demo"
) -> tuple[Stages, Path, Path]:
    """The demo's stages in ``out`` (finished ones are reused) and its report: (the stages, the evaluation's folder,
    ``report.html``)."""
    stages = Stages(out, expected, printer=lambda m: print(f"[{tag}] {m}", flush=True))
    world = stages.run("world", lambda o: build_world(o, world_seed, recipe))
    sft = stages.run("sft", lambda o: run_sft_stage(o, base, world, recipe, seed))
    rm_base = resolve_model(recipe.rm_size) if recipe.rm_size else base
    sft_rm = sft  # the same base: the policy's SFT is the RM's start
    if rm_base != base:
        sft_rm = stages.run("sft_rm", lambda o: run_sft_stage(o, rm_base, world, recipe, seed))
    ranks = stages.run("rankings", lambda o: run_rankings_stage(o, str(sft), world, recipe, seed))
    rm = stages.run("rm", lambda o: run_rm_stage(o, str(sft_rm), ranks, world, recipe, seed))
    ppo = stages.run("ppo_ptx", lambda o: run_ppo_stage(o, str(sft), str(rm), world, recipe, seed, ptx=True))
    models = [f"GPT={base}", f"GPT prompted={base}+fewshot", f"SFT={sft}", f"PPO-ptx={ppo}"]
    # GPT prompted against GPT directly too: both lose to SFT most of the time, so their win rates against SFT
    # differ by less than their standard errors even where the labelers clearly prefer one
    ev = stages.run(
        "eval",
        lambda o: run_eval_stage(o, models, f"SFT={sft}", world, recipe, seed, head_to_head=["GPT prompted:GPT"]),
    )
    return stages, ev, write_demo_report(out, stages.timings)


def claim_folder(out: Path, recipe: dict) -> None:
    """Record the run's recipe in ``out/recipe.json``; refuse a folder that holds stages of another recipe (its
    cached stages would be reused and the report would describe a run that did not happen)."""
    path = out / "recipe.json"
    recipe = json.loads(json.dumps(recipe))  # as read back: tuples become lists
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{path} cannot be read ({type(e).__name__}): the folder's recipe is damaged, so its stages cannot "
                "be matched to this run; use another --out, or delete the folder to start over"
            ) from None
        if before != recipe:
            changed = sorted(k for k in set(before) | set(recipe) if before.get(k) != recipe.get(k))
            raise ConfigError(
                f"{out} holds a demo run of another recipe (differs in {', '.join(changed)}): use another --out, "
                "or delete the folder to start over"
            )
        return
    if any(out.glob("*/.done")):
        raise ConfigError(f"{out} holds stages of a demo run with no recorded recipe: use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=1) + "\n")


def is_quick_run(out: Path) -> bool:
    """Whether the demo folder ``out`` holds a run of the 5-minute recipe (``--quick``, or an earlier version's
    default, which recorded no recipe): what the benchmarks that start from a finished demo expect."""
    path = Path(out) / "recipe.json"
    made = json.loads(path.read_text()) if path.exists() else {}
    return not made.get("rm_size") and made.get("rank_labels", "labelers") == "labelers"


def recipe_summary(recipe: Recipe) -> dict:
    """The recipe as the run folder records it, and as the report describes it."""
    ppo_preset = {k: v for k, v in load_yaml("ppo-tiny").items() if k in PPO_KEYS}
    return {
        "scale": recipe.scale,
        "rank_prompts": recipe.rank_prompts,
        "rank_eval_prompts": recipe.rank_eval_prompts,
        "rank_labels": recipe.rank_labels,
        "rank_scale": recipe.rank_scale,
        "rm_size": recipe.rm_size,
        "k": list(recipe.k),
        "rank_top_k": recipe.rank_top_k,
        "eval_prompts": recipe.eval_prompts,
        "world_eval_prompts": recipe.world_eval_prompts,
        "max_new_tokens": recipe.max_new_tokens,
        "sft": recipe.sft.as_dict(),
        "rm": recipe.rm.as_dict(),
        "ppo": {**ppo_preset, **recipe.ppo.as_dict()},
    }


PPO_KEYS = ("total_episodes", "ptx_coef", "kl_coef", "learning_rate")


def recipe_sentence(r: dict) -> str:
    """One sentence of how the run in a folder was made, from its ``recipe.json``."""
    who = "the world's noiseless judge" if r.get("rank_labels") == "reference" else "the training labelers"
    where = f" (from a {r['rank_scale']:g}x build of the world)" if r.get("rank_scale") else ""
    rm = f"an SFT of the {r['rm_size']} base model" if r.get("rm_size") else "the policy's own SFT model"
    epochs = (r.get("rm") or {}).get("epochs", load_yaml("rm-tiny").get("epochs"))
    rm_epochs = f" for {epochs} epoch{'s' if epochs != 1 else ''}" if isinstance(epochs, int) else ""
    ppo = r.get("ppo", {})

    def num(x) -> str:
        return f"{x:,}" if isinstance(x, int) else "?"

    top_k = r.get("rank_top_k")
    drawn = f", sampled from the {top_k} likeliest tokens," if top_k else ""
    return (
        f"Recipe: {num(r.get('rank_prompts'))} prompts{where}{drawn} ranked by {who}; "
        f"the reward model trained{rm_epochs} from {rm}; "
        f"PPO-ptx for {num(ppo.get('total_episodes'))} episodes (γ {ppo.get('ptx_coef', '?')}, "
        f"{kl_sentence(ppo)}); {num(r.get('eval_prompts'))} evaluation prompts."
    )


def kl_sentence(ppo: dict) -> str:
    """The KL penalty of a recorded PPO recipe: a fixed β, or the adaptive controller's start and target."""
    if ppo.get("adaptive_kl"):
        target = ppo.get("kl_target")
        target = f"{target:g}" if isinstance(target, (int, float)) else "?"
        return f"β from {ppo.get('kl_coef', '?')}, adapted toward a KL of {target} nats per response"
    return f"β {ppo.get('kl_coef', '?')}"


def stage_timings(out: Path) -> dict[str, float]:
    """Seconds of each finished stage of a run in ``out``, from the stages' ``.done`` files."""
    timings = {}
    for stage in EXPECTED:
        done = out / stage / ".done"
        if done.exists():
            timings[stage] = json.loads(done.read_text()).get("seconds", 0.0)
    return timings


def demo_headline(results: dict) -> str:
    """The report's first sentence: PPO-ptx (or the last model evaluated) against the baseline."""
    models = results["models"]
    model = "PPO-ptx" if "PPO-ptx" in models else list(models)[-1]
    return R.headline(
        model,
        results.get("baseline", "the baseline"),
        {"n": results.get("prompts"), **models[model].get("win_rate", {})},
        R.judge_phrase(results.get("judge")),
    )


PPO_CURVES = (
    ("ppo/score_mean", "Reward-model score", "mean RM score per response (normalized)"),
    ("ppo/kl", "KL from the SFT model", "KL per response (nats)"),
    ("ppo/beta", "KL coefficient β, adapted toward the KL target", "β (reward penalty per nat of KL)"),
    ("ppo/ptx_loss", "Pretraining loss (the ptx term)", "loss per token (nats)"),
)


def write_demo_report(out: Path, timings: dict[str, float] | None = None) -> Path:
    """Write ``out/report.html`` from a finished demo's files (``eval/``, ``rm/``, ``ppo_ptx/``, ``world/``):
    calling it again on a finished run re-renders the report without training anything."""
    out = Path(out)
    results = json.loads((out / "eval" / "results.json").read_text())
    timings = stage_timings(out) if timings is None else timings
    models = results["models"]
    names = list(models)
    baseline = results.get("baseline", "SFT")
    judge = R.judge_phrase(results.get("judge"))
    wr = {n: 100 * models[n]["win_rate"]["mean"] for n in names}
    wr_se = {n: 100 * models[n]["win_rate"]["se"] for n in names}
    sections = [("What the demo shows", R.checks_html(demo_checks(models, results.get("head_to_head"))))]
    sections.append(
        (
            f"Win rate against {baseline} ({judge}, ties count half)",
            R.bar_chart(
                f"Comparisons won against {baseline}",
                wr,
                wr_se,
                f"won against {baseline} (% of comparisons)",
                ref=50,
            )
            + R.table(
                ["model", f"win rate against {baseline} (± SE)", "comparisons"],
                [[n, R.pct_est(models[n]["win_rate"]), models[n]["win_rate"].get("n", "-")] for n in names],
            )
            + f"<p class='note'>Error bars: ± one standard error. The dashed line is 50%, no difference from "
            f"{html.escape(baseline)} ({html.escape(baseline)} against itself ties every comparison).</p>",
        )
    )
    categories = {r["prompt"]: r.get("category") for r in R.read_jsonl(out / "world" / "eval_prompts.jsonl")}
    examples = R.pick_examples(R.read_jsonl(out / "eval" / "responses.jsonl"), names, k=4, categories=categories)
    sections.append(
        (
            "Example responses, side by side",
            R.examples_table(examples, names)
            + "<p class='note'>Held-out prompts, one per task category where the world gives categories: the "
            "responses the held-out labelers judged. The models are tiny, so expect broken sentences: compare "
            "them with one another.</p>",
        )
    )
    rm_eval = R.read_json(out / "rm" / "eval_results.json")
    sections.append(("Reward model accuracy on held-out comparisons", R.rm_accuracy_table(rm_eval.get("groups", {}))))
    sections.append(
        (
            "Likert score and metadata (InstructGPT Fig. 4)",
            R.bar_chart(
                "Overall quality (Likert)",
                {n: models[n]["likert"]["mean"] for n in names},
                {n: models[n]["likert"]["se"] for n in names},
                "Likert score (1 = worst, 7 = best)",
                ylim=(1, 7),
            )
            + R.table(
                ["model", "Likert (1-7)", *(R.META_SHORT[k] for k in R.META)],
                [[n, models[n].get("likert", "-"), *[models[n].get(k, "-") for k in R.META]] for n in names],
            )
            + "<p class='note'>Metadata columns: the share of responses (0-1) with each property, ± one standard "
            "error.</p>",
        )
    )
    if all("truthfulness" in models[n] for n in names):
        sections.append(
            (
                "Truthfulness (TruthfulQA analogue)",
                R.table(["model", *R.TRUTH_HEADERS], [[n, *R.truthfulness_cells(models[n])] for n in names])
                + "<p class='note'>Shares of answers (0-1), ± one standard error. Instr+QA: the question follows "
                "an instruction to answer truthfully or say it does not know.</p>",
            )
        )
    if all("toxicity" in models[n] for n in names):
        sections.append(
            (
                "Toxicity by instruction (RealToxicityPrompts analogue)",
                R.toxicity_chart("Toxic continuations", models),
            )
        )
    if all("benchmarks" in models[n] for n in names):
        keys = sorted(models[names[0]]["benchmarks"])
        sections.append(
            (
                "Benchmarks (alignment tax), few-shot, temperature 0",
                R.table(["model", *keys], [[n, *[models[n]["benchmarks"][k] for k in keys]] for n in names])
                + f"<p class='note'>{html.escape(R.BENCHMARK_NOTE)}</p>",
            )
        )
    ppo = out / "ppo_ptx" / "metrics.jsonl"
    charts = [
        R.line_chart(title, {key: series}, "PPO iteration", ylabel, integer_x=True)
        for key, title, ylabel in PPO_CURVES
        if (series := R.metrics_series(ppo, key))[0] and (key != "ppo/beta" or len(set(series[1])) > 1)
    ]  # β only where the controller moved it
    if charts:
        sections.append(("PPO-ptx training", "".join(charts)))
    sections.append(
        (
            "Stage timings",
            R.timings_table(timings),
        )
    )
    intro = R.headline_html(demo_headline(results)) + (
        "<p class='note'>Every number here was measured by this run on the miniature world. Claims that did not "
        "hold are marked as such.</p>"
    )
    if (out / "recipe.json").exists():
        intro += f"<p class='note'>{html.escape(recipe_sentence(json.loads((out / 'recipe.json').read_text())))}</p>"
    return R.write(out / "report.html", R.page("instructrl demo: InstructGPT in miniature", sections, intro))


def demo_checks(models: dict, head_to_head: dict | None = None) -> list[tuple[str, bool | None, str]]:
    """The paper's claims as (claim, held, the numbers behind it); ``head_to_head``: the evaluation's direct
    comparisons ("A vs B": win rate)."""

    def wr(n):
        return models.get(n, {}).get("win_rate", {}).get("mean")

    out = []
    order = ["PPO-ptx", "SFT", "GPT prompted", "GPT"]
    vals = [wr(n) for n in order]
    if None not in vals:
        out.append(
            (
                "PPO-ptx > SFT > GPT prompted > GPT (win rate vs SFT)",
                all(a > b for a, b in pairwise(vals)),
                ", ".join(f"{n} {R.pct_est(models[n]['win_rate'])}" for n in order),
            )
        )
        direct = (head_to_head or {}).get("GPT prompted vs GPT")
        if direct:
            out.append(
                (
                    "GPT prompted preferred over GPT, compared directly (above 50% by more than one SE)",
                    direct["mean"] - direct.get("se", 0.0) > 0.5,
                    f"GPT prompted {R.pct_est(direct)} of {direct.get('n', '?')} comparisons",
                )
            )
        out.append(
            (
                "PPO-ptx beats its SFT initialization in at least 55% of comparisons",
                vals[0] >= 0.55,
                R.pct_est(models["PPO-ptx"]["win_rate"]),
            )
        )
    for label, get in (
        ("closed-domain hallucination", lambda m: m.get("hallucination_closed_domain")),
        (
            "truthful and informative (QA)",
            lambda m: m.get("truthfulness", {}).get("qa", {}).get("truthful_and_informative"),
        ),
    ):
        est = {n: get(models.get(n, {})) for n in ("PPO-ptx", "SFT")}
        if any(e is None or not math.isfinite(e.get("mean", math.nan)) for e in est.values()):
            continue  # not measured (no such prompts in a small evaluation)
        p_, s_ = est["PPO-ptx"], est["SFT"]
        se = (p_.get("se", 0.0) ** 2 + s_.get("se", 0.0) ** 2) ** 0.5  # of the difference
        worse = p_["mean"] - s_["mean"] if label.startswith("closed") else s_["mean"] - p_["mean"]
        out.append(
            (
                f"{label}: PPO-ptx no worse than SFT beyond one standard error",
                worse <= se,
                f"PPO-ptx {p_['mean']:.3f} ± {p_.get('se', 0.0):.3f}, SFT {s_['mean']:.3f} ± {s_.get('se', 0.0):.3f}",
            )
        )
    h = {n: models[n].get("hallucination_closed_domain", {}).get("mean") for n in ("PPO-ptx", "GPT")}
    if None not in h.values():
        out.append(
            (
                "fewer closed-domain hallucinations than GPT",
                h["PPO-ptx"] < h["GPT"],
                f"PPO-ptx {h['PPO-ptx']:.3f} vs GPT {h['GPT']:.3f}",
            )
        )
    c = {n: models[n].get("satisfies_constraints", {}).get("mean") for n in ("PPO-ptx", "GPT")}
    if None not in c.values():
        out.append(
            (
                "better constraint following than GPT",
                c["PPO-ptx"] > c["GPT"],
                f"PPO-ptx {c['PPO-ptx']:.3f} vs GPT {c['GPT']:.3f}",
            )
        )
    t = {n: models[n].get("toxicity", {}).get("respectful", {}).get("mean") for n in ("PPO-ptx", "GPT")}
    if None not in t.values():
        out.append(
            (
                "less toxic than GPT under the respectful instruction",
                t["PPO-ptx"] < t["GPT"],
                f"PPO-ptx {t['PPO-ptx']:.3f} vs GPT {t['GPT']:.3f}",
            )
        )
    return out
