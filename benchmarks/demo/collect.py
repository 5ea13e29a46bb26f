"""Summarize finished demo runs: one table row each, and their numbers into run_info.json.

    python benchmarks/demo/collect.py --run F=runs/demo-s0 --run G=runs/demo-s1 --note "..." [--write]

Reads each run's recipe.json, stage .done files, rm/eval_results.json, eval/results.json and ppo_ptx/metrics.jsonl,
and judges eval/responses.jsonl again for closed-domain hallucination per task type (which kind of prompt moved).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from instructrl.evaluate.world_eval import CLOSED_DOMAIN
from instructrl.experiments.demo import recipe_sentence, stage_timings
from instructrl.world.judge import score

HERE = Path(__file__).parent


def est(m: dict | None) -> str:
    return "-" if not m else f"{m['mean']:.3f} ± {m.get('se', 0):.3f}"


def closed_domain_records(run: Path) -> dict[str, dict]:
    """The run's closed-domain evaluation prompts (summarize, closed QA, extract, polite rewrite), by prompt text."""
    records = {}
    for line in (run / "world" / "eval_prompts.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["task"]["type"] in CLOSED_DOMAIN:
            records[rec["prompt"]] = rec
    return records


def hallucination_by_task(run: Path, models=("SFT", "PPO-ptx")) -> dict:
    """{model: {task type: [hallucinated, prompts]}} over the evaluation's closed-domain prompts."""
    records = closed_domain_records(run)
    out: dict[str, dict[str, list[int]]] = {m: {t: [0, 0] for t in CLOSED_DOMAIN} for m in models}
    for line in (run / "eval" / "responses.jsonl").read_text().splitlines():
        r = json.loads(line)
        rec = records.get(r["prompt"])
        if r["model"] in out and rec is not None:
            counts = out[r["model"]][rec["task"]["type"]]
            counts[0] += bool(score(rec, r["response"])["hallucination"])
            counts[1] += 1
    return out


def ppo_rows(run: Path) -> list[dict]:
    """The PPO-ptx iterations' rows of the run's ``ppo_ptx/metrics.jsonl``."""
    rows = [json.loads(x) for x in (run / "ppo_ptx" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "ppo/score_mean" in r]


def quarter_means(rows: list[dict], key: str) -> list[float]:
    """Mean of ``key`` over each quarter of ``rows``, the last quarter ending at the last row (NaN where a quarter of
    a run shorter than 4 rows is empty)."""
    q = max(1, len(rows) // 4)
    quarters = [rows[:q], rows[q : 2 * q], rows[2 * q : 3 * q], rows[-q:]]
    return [sum(r[key] for r in part) / len(part) if part else float("nan") for part in quarters]


def summarize(run: Path) -> dict:
    res = json.loads((run / "eval" / "results.json").read_text())
    models = res["models"]
    stages = stage_timings(run)
    metrics = ppo_rows(run)
    score, kl = quarter_means(metrics, "ppo/score_mean"), quarter_means(metrics, "ppo/kl")
    return {
        "recipe": json.loads((run / "recipe.json").read_text()),
        "stage_seconds": stages,
        "rm_eval": json.loads((run / "rm" / "eval_results.json").read_text())["groups"],
        "win_rate_vs_sft": {n: m["win_rate"] for n, m in models.items()},
        "head_to_head": res.get("head_to_head", {}),
        "likert": {n: m["likert"] for n, m in models.items()},
        "hallucination_closed_domain": {n: m.get("hallucination_closed_domain") for n, m in models.items()},
        "hallucination_by_task": hallucination_by_task(run),
        "truthful_and_informative_qa": {
            n: m.get("truthfulness", {}).get("qa", {}).get("truthful_and_informative") for n, m in models.items()
        },
        "ppo_score_first_last_quarter": [round(score[0], 3), round(score[-1], 3)],
        "ppo_kl_last_quarter": round(kl[-1], 3),
        "benchmarks": {n: m.get("benchmarks") for n, m in models.items()},
    }


def row(name: str, s: dict) -> str:
    g = s["rm_eval"]
    w = s["win_rate_vs_sft"]
    h, t = s["hallucination_closed_domain"], s["truthful_and_informative_qa"]
    total = sum(s["stage_seconds"].values())
    return (
        f"| **{name}** | {s['recipe'].get('seed', '?')} / {s['recipe'].get('world_seed', s['recipe'].get('seed', '?'))} | "
        f"{total / 60:.0f} min | "
        f"{est({'mean': g['training']['accuracy'], 'se': g['training']['accuracy_se']})} / "
        f"{est({'mean': g['heldout_labelers']['accuracy'], 'se': g['heldout_labelers']['accuracy_se']})} "
        f"({g['all']['judge_accuracy']:.3f}) | "
        f"{w['SFT']['mean']:.3f} / {w['GPT prompted']['mean']:.3f} / {w['GPT']['mean']:.3f} | "
        f"{est(s['head_to_head'].get('GPT prompted vs GPT'))} | "
        f"**{est(w['PPO-ptx'])}** | {est(h['PPO-ptx'])} / {est(h['SFT'])} | {est(t['PPO-ptx'])} / {est(t['SFT'])} |"
    )


def link_stages(src: Path, out: Path, stages) -> None:
    """Hard-link the finished ``stages`` of the run in ``src`` into ``out`` (the demo then reuses them)."""
    out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        if (src / stage).exists() and not (out / stage).exists():
            subprocess.run(["cp", "-al", str(src / stage), str(out / stage)], check=True)


def finish_demo(out: Path, seed: int) -> int:
    """Run the demo's remaining stages in ``out`` at ``seed`` (world 0, the tiny policy) with the default recipe as
    this process has it, recording that recipe in ``out/recipe.json`` first."""
    from instructrl.experiments import demo

    recipe = {"seed": seed, "world_seed": 0, "size": "tiny", **demo.recipe_summary(demo.demo_recipe())}
    if not (out / "recipe.json").exists():
        (out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    parser = argparse.ArgumentParser()
    demo.configure(parser)  # every other option at its default, as `instructrl demo --out OUT --seed SEED` has it
    return demo.main(parser.parse_args(["--out", str(out), "--seed", str(seed)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=DIR of a finished demo run")
    ap.add_argument("--note", default="", help="how the runs were made (machine, load), kept with their numbers")
    ap.add_argument("--write", action="store_true", help="add the runs to run_info.json")
    a = ap.parse_args()
    info_path = HERE / "run_info.json"
    info = json.loads(info_path.read_text())
    for spec in a.run:
        name, _, path = spec.partition("=")
        s = summarize(Path(path))
        print(row(name, s))
        print("   ", recipe_sentence(s["recipe"]), "stages:", s["stage_seconds"])
        print("    closed-domain hallucination by task, [hallucinated, prompts]:", s["hallucination_by_task"])
        info[f"run_{name.lower()}"] = {"command": a.note, **s}
    if a.write:
        info_path.write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
