"""PPO vs PPO-ptx on the miniature world (smallest size), against their SFT initialization.

Reuses (or creates) the demo's stages in OUT: world, sft, rankings, rm, ppo_ptx; adds plain PPO
(`ppo`, no pretraining mix), then measures for SFT, PPO and PPO-ptx:
  * win rate against SFT judged by the held-out simulated labelers (ties 0.5, standard error);
  * the reward model's mean score of their responses;
  * the language-modeling loss on held-out pretraining text (a fresh corpus sample).
Writes OUT/ppo_quality.json (the shape of schema.md; recorded as results.json here) and prints it.

    python benchmarks/ppo_quality/run.py --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from record import header


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--heldout-docs", type=int, default=400)
    args = ap.parse_args()

    from instructrl.evaluate.lm_loss import checkpoint_heldout_loss, world_heldout_texts
    from instructrl.experiments.pipeline import (
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

    out, recipe, seed = Path(args.out), Recipe(), args.seed
    base = resolve_model(args.size)
    st = Stages(out, {})
    world = st.run("world", lambda o: build_world(o, seed, recipe))
    sft = st.run("sft", lambda o: run_sft_stage(o, base, world, recipe, seed))
    ranks = st.run("rankings", lambda o: run_rankings_stage(o, str(sft), world, recipe, seed))
    rm = st.run("rm", lambda o: run_rm_stage(o, str(sft), ranks, world, recipe, seed))
    ppo_ptx = st.run("ppo_ptx", lambda o: run_ppo_stage(o, str(sft), str(rm), world, recipe, seed, ptx=True))
    ppo = st.run("ppo", lambda o: run_ppo_stage(o, str(sft), str(rm), world, recipe, seed, ptx=False))
    ev = st.run(
        "eval_ppo_quality",
        lambda o: run_eval_stage(
            o,
            [f"SFT={sft}", f"PPO={ppo}", f"PPO-ptx={ppo_ptx}"],
            f"SFT={sft}",
            world,
            recipe,
            seed,
            suites=["winrate", "likert"],
        ),
    )
    results = json.loads((ev / "results.json").read_text())["models"]
    texts = world_heldout_texts(seed, args.heldout_docs)

    def measured(name: str, path) -> dict:  # what the evaluation measured (nothing for the base model)
        res = results.get(name, {})
        found = {"win_rate_vs_sft": res.get("win_rate"), "likert": res.get("likert")}
        return {
            **{k: v for k, v in found.items() if v is not None},
            "heldout_lm_loss": checkpoint_heldout_loss(str(path), texts),
        }

    def training(path: Path) -> dict:  # RM score of the first and last quarter of iterations, and the KL
        m = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
        sc = [r["ppo/score_mean"] for r in m if "ppo/score_mean" in r]
        kl = [r["ppo/kl"] for r in m if "ppo/kl" in r]
        q = max(1, len(sc) // 4)
        return {
            "score_first_quarter": sum(sc[:q]) / q,
            "score_last_quarter": sum(sc[-q:]) / q,
            "kl_last": kl[-1],
            "kl_max": max(kl),
        }

    # the shape of schema.md; the arms are the sweep's ppo and ppo_ptx (the demo's RM, the demo's recipe)
    report = {
        **header({"size": args.size, "seed": seed, "ppo": recipe.ppo.as_dict()}),
        "references": {"base": measured("base", base), "SFT": measured("SFT", sft)},
        "arms": {
            name: {"recipe": {"rm": "demo", "ptx": ptx, "ppo": {}}, **measured(name, path), "training": training(path)}
            for name, path, ptx in (("PPO", ppo, False), ("PPO-ptx", ppo_ptx, True))
        },
        "reward_models": {},
        "labelers_vs_reference": {},
        "stage_seconds": st.timings,
    }
    (out / "ppo_quality.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
