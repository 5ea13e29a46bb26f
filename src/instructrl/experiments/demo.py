"""`instructrl demo --out O`: the whole method on the miniature world, on a CPU, in minutes.

From the smallest shipped base model: the world's datasets, SFT on labeler demonstrations (with 10%
pretraining data, the PPO-init recipe), rankings of SFT samples by the training labelers, the reward
model, PPO-ptx, and an evaluation by held-out labelers of GPT (the base model), GPT prompted
(few-shot), SFT and PPO-ptx, written to ``O/report.html``. Stages are cached: run it again to
continue an interrupted demo.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from instructrl.evaluate import report as R
from instructrl.experiments.pipeline import (
    MICRO,
    Recipe,
    Stages,
    build_world,
    run_eval_stage,
    run_ppo_stage,
    run_rankings_stage,
    run_rm_stage,
    run_sft_stage,
)
from instructrl.world.base_models import resolve_model

# measured on a 2-core CPU; used for the ETA only
EXPECTED = {"world": 2, "sft": 65, "rankings": 95, "rm": 60, "ppo_ptx": 75, "eval": 45}


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="Output directory (every stage's outputs and report.html).")
    parser.add_argument("--seed", type=int, default=0, help="World and training seed.")
    parser.add_argument("--size", default="tiny", help="Base model size (tiny, small, medium) or a model directory.")
    parser.add_argument("--ppo-episodes", type=int, default=None, help="PPO episodes (default: the recipe's).")
    parser.add_argument(
        "--micro", action="store_true", help="A seconds-long smoke run with tiny data sizes (for tests)."
    )


def main(args) -> int:
    out = Path(args.out)
    recipe = Recipe.from_dict(MICRO) if args.micro else Recipe()
    if args.ppo_episodes:
        recipe = recipe.with_overrides({"ppo": {"total_episodes": args.ppo_episodes}})
    base = resolve_model(args.size)
    stages = Stages(out, EXPECTED, printer=lambda m: print(f"[demo] {m}", flush=True))
    world = stages.run("world", lambda o: build_world(o, args.seed, recipe))
    sft = stages.run("sft", lambda o: run_sft_stage(o, base, world, recipe, args.seed))
    ranks = stages.run("rankings", lambda o: run_rankings_stage(o, str(sft), world, recipe, args.seed))
    rm = stages.run("rm", lambda o: run_rm_stage(o, str(sft), ranks, world, recipe, args.seed))
    ppo = stages.run("ppo_ptx", lambda o: run_ppo_stage(o, str(sft), str(rm), world, recipe, args.seed, ptx=True))
    models = [f"GPT={base}", f"GPT prompted={base}+fewshot", f"SFT={sft}", f"PPO-ptx={ppo}"]
    ev = stages.run("eval", lambda o: run_eval_stage(o, models, f"SFT={sft}", world, recipe, args.seed))
    results = json.loads((ev / "results.json").read_text())
    report = write_demo_report(out, results, rm, ppo, stages.timings)
    total = sum(stages.timings.values())
    print(f"[demo] done: {total:.0f}s of stages; report: {report}")
    return 0


def write_demo_report(out: Path, results: dict, rm: Path, ppo: Path, timings: dict[str, float]) -> Path:
    models = results["models"]
    names = list(models)
    wr = {n: models[n]["win_rate"]["mean"] for n in names}
    wr_se = {n: models[n]["win_rate"]["se"] for n in names}
    sections = []
    sections.append(
        (
            "Win rate against SFT (held-out labelers, ties = 0.5)",
            R.bar_chart("Win rate vs SFT", wr, wr_se, "win rate", ref=0.5)
            + R.table(["model", "win rate"], [[n, models[n]["win_rate"]] for n in names]),
        )
    )
    meta_keys = [
        "likert",
        "fails_to_follow_instruction",
        "hallucination_closed_domain",
        "satisfies_constraints",
        "inappropriate_for_customer_assistant",
        "toxic_language",
    ]
    sections.append(
        (
            "Likert score and metadata (InstructGPT Fig. 4)",
            R.bar_chart(
                "Likert 1-7",
                {n: models[n]["likert"]["mean"] for n in names},
                {n: models[n]["likert"]["se"] for n in names},
                "Likert",
            )
            + R.table(["model", *meta_keys], [[n, *[models[n].get(k, "-") for k in meta_keys]] for n in names]),
        )
    )
    if all("truthfulness" in models[n] for n in names):
        rows = [
            [
                n,
                m["truthfulness"]["qa"]["truthful"],
                m["truthfulness"]["qa"]["truthful_and_informative"],
                m["truthfulness"]["instruction_qa"]["truthful"],
                m["truthfulness"]["instruction_qa"]["truthful_and_informative"],
            ]
            for n, m in models.items()
        ]
        sections.append(
            (
                "Truthfulness (TruthfulQA analogue)",
                R.table(
                    [
                        "model",
                        "QA truthful",
                        "QA truthful+informative",
                        "Instr+QA truthful",
                        "Instr+QA truthful+informative",
                    ],
                    rows,
                ),
            )
        )
    if all("toxicity" in models[n] for n in names):
        sections.append(
            (
                "Toxicity by instruction (RealToxicityPrompts analogue)",
                R.grouped_chart(
                    "Share of toxic continuations",
                    {n: {k: v["mean"] for k, v in models[n]["toxicity"].items()} for n in names},
                ),
            )
        )
    if all("benchmarks" in models[n] for n in names):
        keys = sorted(models[names[0]]["benchmarks"])
        sections.append(
            (
                "Benchmarks (alignment tax), few-shot, temperature 0",
                R.table(["model", *keys], [[n, *[models[n]["benchmarks"][k] for k in keys]] for n in names]),
            )
        )
    rm_eval = json.loads((rm / "eval_results.json").read_text()) if (rm / "eval_results.json").exists() else {}
    if rm_eval:
        sections.append(
            (
                "Reward model accuracy on held-out comparisons",
                "<pre>" + R.html.escape(json.dumps(rm_eval, indent=1)[:4000]) + "</pre>",
            )
        )
    curves = {k: R.metrics_series(ppo / "metrics.jsonl", k) for k in ("ppo/score_mean", "ppo/kl", "ppo/ptx_loss")}
    sections.append(
        ("PPO-ptx training", "".join(R.line_chart(k, {k: v}, "iteration", k) for k, v in curves.items() if v[0]))
    )
    checks = demo_checks(models)
    sections.insert(0, ("What the demo shows", R.checks_html(checks)))
    sections.append(("Stage timings (seconds)", R.table(["stage", "seconds"], [[k, v] for k, v in timings.items()])))
    intro = (
        "<p class='note'>Every number here was measured by this run (the miniature world, its smallest base "
        "model). Claims that did not hold are marked as such.</p>"
    )
    return R.write(out / "report.html", R.page("instructrl demo: InstructGPT in miniature", sections, intro))


def demo_checks(models: dict) -> list[tuple[str, bool | None, str]]:
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
                ", ".join(f"{n} {v:.3f}" for n, v in zip(order, vals)),
            )
        )
        out.append(
            ("PPO-ptx beats its SFT initialization in at least 60% of comparisons", vals[0] >= 0.6, f"{vals[0]:.3f}")
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
