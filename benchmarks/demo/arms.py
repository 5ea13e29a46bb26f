"""Variants of the 5-minute demo recipe on a finished run of it (``instructrl demo --quick``), reusing its cached
stages.

    python benchmarks/demo/arms.py --demo runs/demo --out runs/demo-arms/NAME \
        --recipe '{"ppo": {"kl_coef": 0.05, "ptx_coef": 5}}'

Links the demo's ``world`` and ``sft`` stages, its ``rankings`` unless the recipe changes ``rank_prompts`` or
``k``, and its ``rm`` unless the rankings or ``rm`` change; runs the rest and PPO-ptx, and evaluates SFT against
PPO-ptx only (``--full``: also GPT and GPT prompted, as the demo does; ``--rm-only``: stop after the RM). Prints
one JSON line: win rate, hallucination, truthfulness, the last PPO iteration's RM score and KL, stage seconds.
Findings: history.md, "PPO-ptx against SFT: recipe variants on the demo's stages".
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from instructrl.experiments.demo import is_quick_run
from instructrl.experiments.pipeline import (
    Recipe,
    Stages,
    run_eval_stage,
    run_ppo_stage,
    run_rankings_stage,
    run_rm_stage,
)
from instructrl.world.base_models import resolve_model


def last_metrics(path: Path) -> dict:
    """Mean RM score and KL of the last PPO iteration."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if '"ppo/kl"' in line]
    return {k: round(rows[-1][k], 3) for k in ("ppo/score_mean", "ppo/kl")} if rows else {}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", required=True, help="A finished demo run (its world, sft, rankings, rm).")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="The demo run's seed.")
    p.add_argument("--recipe", default="{}", help="Recipe overrides as JSON (Recipe.from_dict).")
    p.add_argument("--full", action="store_true", help="Evaluate GPT and GPT prompted too.")
    p.add_argument(
        "--rm-only", action="store_true", help="Stop after the reward model (its accuracy: rm/eval_results.json)."
    )
    a = p.parse_args()
    demo, out = Path(a.demo).resolve(), Path(a.out)
    overrides = json.loads(a.recipe)
    recipe = Recipe.from_dict(overrides)
    if {"rank_labels", "rank_scale", "rm_size"} & set(overrides):
        raise SystemExit("error: arms.py varies the 5-minute recipe only: rank_labels, rank_scale, rm_size stay")
    if not is_quick_run(demo):
        raise SystemExit(f"error: {demo} is a run of the default demo recipe; start from `instructrl demo --quick`")
    out.mkdir(parents=True, exist_ok=True)
    reuse = ["world", "sft"]
    if not {"rank_prompts", "k"} & set(overrides):
        reuse.append("rankings")
        if "rm" not in overrides:
            reuse.append("rm")
    for name in reuse:
        if not (out / name).exists():
            os.symlink(demo / name, out / name)
    (out / "recipe.json").write_text(json.dumps(overrides))
    stages = Stages(out, {}, printer=lambda m: print(f"[arm] {m}", flush=True))
    world, sft = out / "world", out / "sft"
    ranks = stages.run("rankings", lambda o: run_rankings_stage(o, str(sft), world, recipe, a.seed))
    rm = stages.run("rm", lambda o: run_rm_stage(o, str(sft), ranks, world, recipe, a.seed))
    if a.rm_only:
        groups = json.loads((rm / "eval_results.json").read_text())["groups"]
        print(json.dumps({"out": str(out), "recipe": overrides, "rm": groups, "seconds": stages.timings}))
        return 0
    ppo = stages.run("ppo_ptx", lambda o: run_ppo_stage(o, str(sft), str(rm), world, recipe, a.seed, ptx=True))
    models = [f"SFT={sft}", f"PPO-ptx={ppo}"]
    if a.full:
        base = resolve_model("tiny")
        models = [f"GPT={base}", f"GPT prompted={base}+fewshot", *models]
    ev = stages.run("eval", lambda o: run_eval_stage(o, models, f"SFT={sft}", world, recipe, a.seed))
    res = json.loads((ev / "results.json").read_text())["models"]

    def get(model, *keys):
        v = res.get(model, {})
        for k in keys:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        return v if v != {} else None

    summary = {
        "out": str(out),
        "recipe": overrides,
        "win_rate": get("PPO-ptx", "win_rate"),
        "halluc": {m: get(m, "hallucination_closed_domain", "mean") for m in ("SFT", "PPO-ptx")},
        "truthful_informative_qa": {
            m: get(m, "truthfulness", "qa", "truthful_and_informative", "mean") for m in ("SFT", "PPO-ptx")
        },
        "ppo_last": last_metrics(ppo / "metrics.jsonl"),
        "seconds": stages.timings,
    }
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
