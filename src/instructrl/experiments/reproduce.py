"""`instructrl reproduce --preset tiny --out O`: InstructGPT's main results, in miniature.

Every arm of the paper at every base-model size of the miniature world, evaluated against the SFT
model of the largest size by held-out simulated labelers (InstructGPT Fig. 1), into one
self-contained ``O/report.html`` and ``O/results.json``:

* GPT (the base model) and GPT prompted (few-shot demonstrations before the prompt);
* SFT on labeler demonstrations (with 10% pretraining data, the PPO-init recipe of App. C.3);
* the FLAN/T0 analogue: the same fine-tuning on the world's benchmark tasks phrased as instructions;
* PPO and PPO-ptx from each SFT model against one reward model, as the paper trained one 6B RM for
  every policy size: rankings of K samples of the ``rm_size`` SFT policy by the training labelers.

Each stage is cached in its own folder (``O/<stage>/.done``), so an interrupted run continues where it
stopped. The report states every claim of the paper it checks and whether it held here.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from instructrl.errors import ConfigError
from instructrl.evaluate import report as R
from instructrl.experiments import methods
from instructrl.experiments.methods import run_methods
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
from instructrl.world.base_models import SIZES, base_model_path, count_parameters

ARMS = ("GPT", "GPT prompted", "SFT", "FLAN", "PPO", "PPO-ptx")
# the claims between neighbours whose win rates against SFT differ by about their SEs, also compared directly
HEAD_TO_HEAD = ("PPO-ptx:PPO", "GPT prompted:GPT")
COLORS = {
    "GPT": "#1f77b4",
    "GPT prompted": "#ff7f0e",
    "SFT": "#2ca02c",
    "FLAN": "#8c564b",
    "PPO": "#d62728",
    "PPO-ptx": "#9467bd",
}
META, META_SHORT = R.META, R.META_SHORT


@dataclass(frozen=True)
class Preset:
    """Which sizes, which RM, and the per-stage recipe (the same at every size)."""

    sizes: tuple[str, ...]
    rm_size: str
    recipe: dict
    # seconds of each stage for the smallest size on a 2-core CPU (for the ETA); larger sizes multiply
    stage_seconds: dict = field(default_factory=dict)
    size_factor: dict = field(default_factory=lambda: {"tiny": 1.0, "small": 2.0, "medium": 5.0})
    summary: str = ""


PRESETS: dict[str, Preset] = {
    "micro": Preset(
        sizes=("tiny", "small"),
        rm_size="tiny",
        recipe=MICRO,
        stage_seconds={"sft": 3, "flan": 3, "rankings": 3, "rm": 3, "ppo": 5, "ppo_ptx": 5, "eval": 8},
        summary="a smoke run with toy data sizes (about a minute); its numbers mean nothing",
    ),
    "tiny": Preset(
        sizes=("tiny", "small", "medium"),
        rm_size="small",
        recipe=dict(
            scale=0.25,
            rank_prompts=600,
            rank_eval_prompts=150,
            eval_prompts=200,
            world_eval_prompts=200,
            benchmark_n=40,
            max_new_tokens=40,
            sft={"epochs": 6},
            ppo={"total_episodes": 1024},
        ),
        stage_seconds={"sft": 30, "flan": 15, "rankings": 22, "rm": 25, "ppo": 30, "ppo_ptx": 36, "eval": 35},
        summary="three sizes (0.34M-7.4M parameters), every arm; about 22 minutes on a 2-core CPU",
    ),
    "full": Preset(
        sizes=("tiny", "small", "medium"),
        rm_size="medium",
        recipe=dict(
            scale=1.0,
            rank_prompts=3000,
            rank_eval_prompts=300,
            k=(4, 9),
            eval_prompts=320,
            benchmark_n=100,
            max_new_tokens=48,
            sft={"epochs": 10},
            ppo={"total_episodes": 8192, "ptx_per_episode": 8.0},
        ),
        stage_seconds={"sft": 250, "flan": 250, "rankings": 1500, "rm": 600, "ppo": 500, "ppo_ptx": 1500, "eval": 250},
        summary="the world at full scale, K = 4..9, 8 pretraining examples per episode as in the paper; "
        "several hours on a 2-core CPU",
    ),
}


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="Output directory (every stage, results.json, report.html).")
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=[*PRESETS, "methods"],
        help="; ".join(f"{k}: {p.summary}" for k, p in PRESETS.items())
        + "; methods: PPO, PPO-ptx, GRPO, RLOO, DPO, best-of-n and expert iteration from one SFT model, judged "
        "against it (instructrl.experiments.methods; about 17 minutes on a quiet 2-core CPU)",
    )
    add_seed_arguments(parser)
    parser.add_argument("--sizes", default=None, help="Comma-separated base sizes (default: the preset's).")


def main(args) -> int:
    if args.preset == "methods":
        if args.sizes and "," in args.sizes:
            raise ConfigError("--preset methods compares methods at one size: give one --sizes value")
        results = run_methods(args.out, seed=args.seed, world_seed=args.world_seed, size=(args.sizes or "tiny").strip())
        print(f"[reproduce] done in {results['seconds']:.0f}s of stages; report: {Path(args.out) / 'report.html'}")
        return 0
    preset = PRESETS[args.preset]
    sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip()) if args.sizes else preset.sizes
    results = reproduce(args.out, preset, sizes=sizes, seed=args.seed, world_seed=args.world_seed)
    print(f"[reproduce] {reproduce_headline(results)}")
    print(f"[reproduce] done in {results['seconds']:.0f}s of stages; report: {Path(args.out) / 'report.html'}")
    return 0


def expected_seconds(preset: Preset, sizes: tuple[str, ...]) -> dict[str, float]:
    s, f = preset.stage_seconds, preset.size_factor
    out = {"world": 2, "rankings": s["rankings"] * f.get(preset.rm_size, 1), "rm": s["rm"] * f.get(preset.rm_size, 1)}
    for size in sizes:
        for stage in ("sft", "flan", "ppo", "ppo_ptx", "eval"):
            out[f"{stage}-{size}"] = s[stage] * f.get(size, 1)
    return out


def reproduce(
    out_dir: str | Path,
    preset: Preset,
    sizes: tuple[str, ...] | None = None,
    seed: int = 0,
    printer=None,
    world_seed: int = 0,
) -> dict:
    """Run (or continue) every stage, then write ``results.json`` and ``report.html``: in world ``world_seed``,
    with training seed ``seed``."""
    sizes = tuple(sizes or preset.sizes)
    unknown = [s for s in (*sizes, preset.rm_size) if s not in SIZES]
    if unknown or not sizes:
        raise ConfigError(f"unknown base sizes {unknown or '(none given)'}; choose from {', '.join(SIZES)}")
    sizes = tuple(sorted(sizes, key=list(SIZES).index))
    bases = {s: str(base_model_path(s)) for s in sizes}
    rm_size = preset.rm_size if preset.rm_size in sizes else sizes[-1]
    out = Path(out_dir)
    recipe = Recipe.from_dict(preset.recipe)
    printer = printer or (lambda m: print(f"[reproduce] {m}", flush=True))
    stages = Stages(out, expected_seconds(preset, sizes), printer=printer)
    world = stages.run("world", lambda o: build_world(o, world_seed, recipe))
    sft, flan, ppo, ptx = {}, {}, {}, {}
    for s in sizes:
        sft[s] = stages.run(f"sft-{s}", lambda o, s=s: run_sft_stage(o, bases[s], world, recipe, seed))
    for s in sizes:
        flan[s] = stages.run(
            f"flan-{s}", lambda o, s=s: run_sft_stage(o, bases[s], world, recipe, seed, data=str(world / "flan.jsonl"))
        )
    ranks = stages.run("rankings", lambda o: run_rankings_stage(o, str(sft[rm_size]), world, recipe, seed))
    rm = stages.run("rm", lambda o: run_rm_stage(o, str(sft[rm_size]), ranks, world, recipe, seed))
    for s in sizes:
        ppo[s] = stages.run(
            f"ppo-{s}", lambda o, s=s: run_ppo_stage(o, str(sft[s]), str(rm), world, recipe, seed, ptx=False)
        )
        ptx[s] = stages.run(
            f"ppo_ptx-{s}", lambda o, s=s: run_ppo_stage(o, str(sft[s]), str(rm), world, recipe, seed, ptx=True)
        )
    largest = sizes[-1]
    baseline = f"SFT {largest}={sft[largest]}"
    evals = {}
    for s in sizes:
        models = [
            f"GPT={bases[s]}",
            f"GPT prompted={bases[s]}+fewshot",
            f"SFT={sft[s]}",
            f"FLAN={flan[s]}",
            f"PPO={ppo[s]}",
            f"PPO-ptx={ptx[s]}",
        ]
        evals[s] = stages.run(
            f"eval-{s}",
            lambda o, m=models: run_eval_stage(o, m, baseline, world, recipe, seed, head_to_head=HEAD_TO_HEAD),
        )
    categories = {r["prompt"]: r.get("category") for r in R.read_jsonl(world / "eval_prompts.jsonl")}
    largest_eval = _read_json(evals[largest] / "results.json")
    results = {
        "preset": {k: v for k, v in preset.__dict__.items() if k != "stage_seconds"},
        "sizes": {
            s: {
                "parameters": count_parameters(Path(bases[s])),
                "arms": json.loads((evals[s] / "results.json").read_text())["models"],
                "head_to_head": json.loads((evals[s] / "results.json").read_text()).get("head_to_head", {}),
            }
            for s in sizes
        },
        "baseline": f"SFT {largest}",
        "judge": largest_eval.get("judge"),
        "examples": {
            "size": largest,
            "prompts": R.pick_examples(
                R.read_jsonl(evals[largest] / "responses.jsonl"), list(largest_eval["models"]), categories=categories
            ),
        },
        "reward_model": {"size": rm_size, "eval": _read_json(rm / "eval_results.json").get("groups", {})},
        "ppo_training": {
            s: {arm: ppo_curve_summary(d / "metrics.jsonl") for arm, d in (("PPO", ppo[s]), ("PPO-ptx", ptx[s]))}
            for s in sizes
        },
        "timings": stages.timings,
        "seconds": round(sum(stages.timings.values()), 1),
    }
    results["checks"] = [{"claim": c, "held": h, "measured": d} for c, h, d in pattern_checks(results)]
    R.write(out / "results.json", json.dumps(results, indent=1, default=str))
    write_report(out, results)
    return results


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def ppo_curve_summary(metrics: Path) -> dict:
    """First- and last-quarter means and the maximum of a PPO run's RM score and KL, from its metrics.jsonl."""
    summary = {}
    for key in ("ppo/score_mean", "ppo/kl"):
        _, ys = R.metrics_series(metrics, key)
        if ys:
            q = max(1, len(ys) // 4)
            summary[key] = {"first_quarter": sum(ys[:q]) / q, "last_quarter": sum(ys[-q:]) / q, "max": max(ys)}
    return summary


# ---------------------------------------------------------------- the paper's claims, checked


def _m(arms: dict, arm: str, key: str) -> float | None:
    v = arms.get(arm, {}).get(key)
    return v.get("mean") if isinstance(v, dict) else None


def alignment_tax(arms: dict, arm: str) -> float | None:
    """Mean relative drop below the base model (GPT) over the benchmark tasks, counting only drops
    (InstructGPT §4.2: performance regressions on public NLP datasets)."""
    return methods.alignment_tax(arms, arm, baseline="GPT")


def pattern_checks(results: dict) -> list[tuple[str, bool | None, str]]:
    """InstructGPT's main findings, each checked against this run's measurements."""
    sizes = list(results["sizes"])
    checks: list[tuple[str, bool | None, str]] = []
    order = ("PPO-ptx", "PPO", "SFT", "GPT prompted", "GPT")
    for s in sizes:
        arms = results["sizes"][s]["arms"]
        wr = [_m(arms, a, "win_rate") for a in order]
        if None in wr:
            continue
        held = wr[0] >= wr[1] > wr[2] > wr[3] > wr[4]
        checks.append(
            (
                f"{s}: PPO-ptx >= PPO > SFT > GPT prompted > GPT (win rate vs {results['baseline']})",
                held,
                ", ".join(f"{a} {v:.3f}" for a, v in zip(order, wr)),
            )
        )
    for pair in HEAD_TO_HEAD:
        a, b = pair.split(":")
        direct = {s: results["sizes"][s].get("head_to_head", {}).get(f"{a} vs {b}") for s in sizes}
        direct = {s: d for s, d in direct.items() if d}
        if direct:
            ok = "no worse than" if a == "PPO-ptx" else "preferred over"
            checks.append(
                (
                    f"{a} {ok} {b} at every size, compared directly"
                    + (
                        " (not below 50% by more than one SE)" if a == "PPO-ptx" else " (above 50% by more than one SE)"
                    ),
                    all(
                        (d["mean"] + d["se"] >= 0.5) if a == "PPO-ptx" else (d["mean"] - d["se"] > 0.5)
                        for d in direct.values()
                    ),
                    "; ".join(f"{s} {d['mean']:.3f} ± {d['se']:.3f}" for s, d in direct.items()),
                )
            )
    small, large = results["sizes"][sizes[0]]["arms"], results["sizes"][sizes[-1]]["arms"]
    a, b = _m(small, "PPO-ptx", "win_rate"), _m(large, "GPT prompted", "win_rate")
    if a is not None and b is not None:
        checks.append(
            (
                f"the smallest PPO-ptx ({sizes[0]}) beats the largest GPT prompted ({sizes[-1]})",
                a > b,
                f"{a:.3f} vs {b:.3f}",
            )
        )
    for key, better, claim in (
        ("hallucination_closed_domain", "lower", "fewer closed-domain hallucinations than GPT"),
        ("satisfies_constraints", "higher", "better constraint following than GPT"),
    ):
        vals = [
            (s, _m(results["sizes"][s]["arms"], "PPO-ptx", key), _m(results["sizes"][s]["arms"], "GPT", key))
            for s in sizes
        ]
        vals = [v for v in vals if None not in v]
        if vals:
            held = all((p < g) if better == "lower" else (p > g) for _, p, g in vals)
            checks.append(
                (f"PPO-ptx: {claim} at every size", held, "; ".join(f"{s} {p:.3f} vs {g:.3f}" for s, p, g in vals))
            )
    tox = []
    for s in sizes:
        arms = results["sizes"][s]["arms"]
        p = arms.get("PPO-ptx", {}).get("toxicity", {}).get("respectful", {}).get("mean")
        g = arms.get("GPT", {}).get("toxicity", {}).get("respectful", {}).get("mean")
        if p is not None and g is not None:
            tox.append((s, p, g))
    if tox:
        checks.append(
            (
                "PPO-ptx: less toxic than GPT under the respectful instruction at every size",
                all(p < g for _, p, g in tox),
                "; ".join(f"{s} {p:.3f} vs {g:.3f}" for s, p, g in tox),
            )
        )
    for s in sizes:
        arms = results["sizes"][s]["arms"]
        t_ppo, t_ptx = alignment_tax(arms, "PPO"), alignment_tax(arms, "PPO-ptx")
        if t_ppo is None or t_ptx is None:
            continue
        if t_ppo == 0:
            checks.append(
                (
                    f"{s}: PPO's benchmark regressions at least halved by PPO-ptx",
                    None,
                    f"PPO shows no regression below GPT here (PPO-ptx {t_ptx:.3f})",
                )
            )
        else:
            checks.append(
                (
                    f"{s}: PPO's benchmark regressions at least halved by PPO-ptx",
                    t_ptx <= 0.5 * t_ppo,
                    f"mean relative drop below GPT: PPO {t_ppo:.3f}, PPO-ptx {t_ptx:.3f}",
                )
            )
    rm_eval = results["reward_model"]["eval"]
    tr, ho = rm_eval.get("training") or rm_eval.get("train_labelers", {}), rm_eval.get("heldout_labelers", {})
    if "accuracy" in tr and "accuracy" in ho:
        gap = abs(tr["accuracy"] - ho["accuracy"])
        checks.append(
            (
                "held-out labelers agree with the RM about as well as training labelers (within 3 points)",
                gap <= 0.03,
                f"training {tr['accuracy']:.3f} ± {tr['accuracy_se']:.3f}, held-out "
                f"{ho['accuracy']:.3f} ± {ho['accuracy_se']:.3f}",
            )
        )
    return checks


# ---------------------------------------------------------------- the report


def fig1_chart(results: dict) -> str:
    """Win rate against the largest SFT model by size, one line per arm, beside the paper's Fig. 1."""
    plt = R._plt()
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    sizes = list(results["sizes"])
    params = [results["sizes"][s]["parameters"] for s in sizes]
    for arm in ARMS:
        pts = [(p, results["sizes"][s]["arms"].get(arm, {}).get("win_rate")) for s, p in zip(sizes, params)]
        pts = [(p, w) for p, w in pts if w]
        if pts:
            ax.errorbar(
                [p for p, _ in pts],
                [100 * w["mean"] for _, w in pts],
                yerr=[0 if w["se"] != w["se"] else 100 * w["se"] for _, w in pts],
                marker="o",
                capsize=3,
                label=arm,
                color=COLORS[arm],
            )
    R.log_ticks(ax, params, [f"{s}\n{p / 1e6:.2g}M" for s, p in zip(sizes, params)])
    ax.axhline(50, color="#999", ls="--", lw=1)
    ax.set_xlabel("base model size (parameters, log scale)")
    ax.set_ylabel(f"won against {results['baseline']} (% of comparisons)")
    ax.set_title("This run (held-out simulated labelers, ± 1 SE)")
    ax.legend(fontsize=8)
    paper = R.PAPER_FIG1
    for arm in ("GPT", "GPT prompted", "SFT", "PPO", "PPO-ptx"):
        axp.plot(paper["sizes"], [100 * v for v in paper[arm]], marker="o", label=arm, color=COLORS[arm])
    axp.axhline(50, color="#999", ls="--", lw=1)
    axp.set_title("InstructGPT Fig. 1 (approximate)")
    axp.set_xlabel("GPT-3 model size (parameters)")
    axp.set_ylabel("won against 175B SFT (% of comparisons)")
    axp.set_ylim(0, 80)
    ax.set_ylim(0, max(80, ax.get_ylim()[1]))
    return R._png(fig)


def by_size_chart(results: dict, metric, title: str, ylabel: str) -> str:
    """One line per arm over sizes for ``metric(arms, arm) -> float | None``."""
    sizes = list(results["sizes"])
    params = [results["sizes"][s]["parameters"] for s in sizes]
    series = {}
    for arm in ARMS:
        pts = [(p, metric(results["sizes"][s]["arms"], arm)) for s, p in zip(sizes, params)]
        pts = [(p, v) for p, v in pts if v is not None]
        if pts:
            series[arm] = ([p for p, _ in pts], [v for _, v in pts])
    return R.line_chart(title, series, "base model size (parameters, log scale)", ylabel, colors=COLORS, logx=True)


def reproduce_headline(results: dict) -> str:
    """The report's first sentence: PPO-ptx at the largest size against the largest SFT model."""
    sizes = list(results["sizes"])
    largest = sizes[-1]
    arms = results["sizes"][largest]["arms"]
    arm = "PPO-ptx" if "PPO-ptx" in arms else list(arms)[-1]
    params = results["sizes"][largest].get("parameters")
    size = f"{largest}, {params / 1e6:.2g}M parameters" if isinstance(params, int) else largest
    return R.headline(
        f"{arm} ({size})",
        results["baseline"],
        arms[arm].get("win_rate", {}),
        R.judge_phrase(results.get("judge") or "heldout-labelers"),
        scale="at this size",
    )


def write_report(out: Path, results: dict) -> Path:
    """Write ``out/report.html`` from ``results`` (a finished run's ``results.json`` re-renders it)."""
    sizes = list(results["sizes"])
    largest = sizes[-1]
    rows_all = [(s, arm, m) for s in sizes for arm, m in results["sizes"][s]["arms"].items()]
    sections = [
        ("What this run shows", R.checks_html([(c["claim"], c["held"], c["measured"]) for c in results["checks"]]))
    ]
    sections.append(
        (
            "Figure 1 in miniature: win rate against the largest SFT model",
            fig1_chart(results)
            + R.table(
                ["size", "parameters", "arm", f"win rate against {results['baseline']} (± SE)"],
                [
                    [s, f"{results['sizes'][s]['parameters']:,}", a, R.pct_est(m.get("win_rate"))]
                    for s, a, m in rows_all
                ],
            ),
        )
    )
    examples = results.get("examples", {})
    if examples.get("prompts"):
        sections.append(
            (
                f"Example responses, side by side ({examples.get('size', largest)})",
                R.examples_table(examples["prompts"])
                + "<p class='note'>Held-out prompts, one per task category: the responses the held-out labelers "
                "judged. The models are tiny, so expect broken sentences: compare them with one another.</p>",
            )
        )
    rm_eval = results["reward_model"]["eval"]
    if rm_eval:
        sections.append(
            (
                f"Reward model ({results['reward_model']['size']}) accuracy on held-out comparisons",
                R.rm_accuracy_table(rm_eval),
            )
        )
    meta = {
        a: {META_SHORT[k]: _m(results["sizes"][largest]["arms"], a, k) or 0.0 for k in META}
        for a in results["sizes"][largest]["arms"]
    }
    sections.append(
        (
            "Likert score and metadata (InstructGPT Fig. 4)",
            by_size_chart(
                results, lambda arms, a: _m(arms, a, "likert"), "Likert by size", "Likert score (1 = worst, 7 = best)"
            )
            + R.grouped_chart(
                f"Metadata rates, {largest}",
                meta,
                "share of responses (0-1)",
                colors=COLORS,
                xlabel="property of the response",
            )
            + R.table(
                ["size", "arm", "Likert (1-7)", *(META_SHORT[k] for k in META)],
                [[s, a, m.get("likert", "-"), *[m.get(k, "-") for k in META]] for s, a, m in rows_all],
            )
            + "<p class='note'>Metadata columns: the share of responses (0-1) with each property, ± one standard "
            "error.</p>",
        )
    )
    if all("truthfulness" in m for _, _, m in rows_all):

        def truth(arms, a, kind="qa", key="truthful_and_informative"):
            t = arms.get(a, {}).get("truthfulness")
            return t[kind][key]["mean"] if t else None

        sections.append(
            (
                "Truthfulness (TruthfulQA analogue, InstructGPT Fig. 6)",
                by_size_chart(results, truth, "Truthful and informative (QA prompt)", "share of answers (0-1)")
                + R.table(
                    ["size", "arm", *R.TRUTH_HEADERS], [[s, a, *R.truthfulness_cells(m)] for s, a, m in rows_all]
                ),
            )
        )
    if all("toxicity" in m for _, _, m in rows_all):
        kinds = sorted({k for _, _, m in rows_all for k in m["toxicity"]})
        sections.append(
            (
                "Toxicity by instruction (RealToxicityPrompts analogue, InstructGPT Fig. 7)",
                R.toxicity_chart(f"Toxic continuations, {largest}", results["sizes"][largest]["arms"], COLORS)
                + R.table(
                    ["size", "arm", *kinds],
                    [[s, a, *[m["toxicity"].get(k, "-") for k in kinds]] for s, a, m in rows_all],
                ),
            )
        )
    if all("benchmarks" in m for _, _, m in rows_all):
        keys = sorted(next(m["benchmarks"] for _, _, m in rows_all))
        sections.append(
            (
                "Benchmarks: the alignment tax and PPO-ptx's repair (few-shot, temperature 0)",
                by_size_chart(
                    results,
                    alignment_tax,
                    "Mean relative drop below GPT on the benchmarks",
                    "alignment tax (relative drop, 0-1)",
                )
                + R.table(
                    ["size", "arm", *keys, "tax vs GPT"],
                    [
                        [
                            s,
                            a,
                            *[m["benchmarks"][k] for k in keys],
                            "-" if (tax := alignment_tax(results["sizes"][s]["arms"], a)) is None else tax,
                        ]
                        for s, a, m in rows_all
                    ],
                )
                + f"<p class='note'>{html.escape(R.BENCHMARK_NOTE)} Tax vs GPT: the mean relative drop below GPT "
                "of the same size, counting drops only (0 = no regression).</p>",
            )
        )
    ppo_rows = [
        [
            s,
            arm,
            *[
                v.get(k, {}).get(q, "-")
                for k in ("ppo/score_mean", "ppo/kl")
                for q in ("first_quarter", "last_quarter")
            ],
        ]
        for s, d in results["ppo_training"].items()
        for arm, v in d.items()
    ]
    sections.append(
        (
            "PPO training (RM score and KL, first and last quarter of iterations)",
            R.table(["size", "arm", "score first", "score last", "KL first (nats)", "KL last (nats)"], ppo_rows),
        )
    )
    sections.append(
        (
            "Stage timings",
            R.timings_table(results["timings"]),
        )
    )
    intro = R.headline_html(reproduce_headline(results)) + (
        f"<p class='note'>Preset '{html.escape(results['preset'].get('summary', ''))}'. Every number here was "
        f"measured by this run on the miniature world; the paper's values appear only in the side panel of "
        f"Figure 1. Claims that did not hold are marked as such. Generated {time.strftime('%Y-%m-%d %H:%M')}."
        f"</p>"
    )
    return R.write(
        out / "report.html", R.page("instructrl reproduce: InstructGPT's main results in miniature", sections, intro)
    )
