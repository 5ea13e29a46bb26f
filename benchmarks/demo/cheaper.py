"""Cheaper variants of the default demo recipe, on a finished run of it: does PPO-ptx still beat SFT?

The reward model is the default recipe's largest stage (32,000 ranked prompts). This trains the reward model again
on a finished run's rankings with a cheaper setting, then PPO-ptx and the demo's full evaluation
(GPT, GPT prompted, SFT, PPO-ptx, and GPT prompted against GPT directly), exactly as ``instructrl demo`` runs them::

    OMP_NUM_THREADS=1 python benchmarks/demo/cheaper.py --src runs/demo-c0 --out runs/demo-e0 --seed 0 --rm-epochs 1
    OMP_NUM_THREADS=1 python benchmarks/demo/cheaper.py --src runs/demo-c0 --out runs/demo-h0 --seed 0 \\
        --rank-prompts 16000

``--rm-epochs N``: the reward model's epochs (the default recipe, as the paper: 1; before runs E0-E2: 2).
``--rank-prompts N``: the reward model trains on N of the run's ranked prompts, drawn at random (seeded, in the
file's order): what a run ranking N prompts of the same world build would give, and the rankings stage would take
about N / 32,000 of its time. The held-out rankings stay whole. ``--ppo-episodes N``: PPO-ptx's episodes (the
default recipe: 24,576; β reaches its KL target of 7 nats within the first 3,000). Hard-links the world, both SFT
stages, the rankings (without ``--rank-prompts``) and the reward model (when only ``--ppo-episodes`` is given) of
``--src``. Summarize with ``collect.py``; the run folder records the variant in ``recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from collect import link_stages  # this folder's collect.py (the script's own directory is on sys.path)

from instructrl.experiments import demo
from instructrl.world.base_models import resolve_model


def subset_rankings(src: Path, dst: Path, n: int, seed: int) -> None:
    """``dst`` as a rankings stage holding ``n`` of ``src``'s training rankings (in their order) and all its held-out
    ones; its recorded time is the fraction of ``src``'s that ranking ``n`` prompts would take."""
    lines = (src / "rankings.jsonl").read_text().splitlines()
    if not 0 < n <= len(lines):
        raise SystemExit(f"error: --rank-prompts {n}: {src} holds {len(lines)} rankings")
    keep = sorted(random.Random(seed).sample(range(len(lines)), n))
    dst.mkdir(parents=True, exist_ok=True)
    link_stages(src, dst, ("world",))
    (dst / "rankings.jsonl").write_text("".join(lines[i] + "\n" for i in keep))
    shutil.copy(src / "rankings_eval.jsonl", dst / "rankings_eval.jsonl")
    seconds = json.loads((src / ".done").read_text())["seconds"] * n / len(lines)
    (dst / ".done").write_text(json.dumps({"seconds": round(seconds, 1), "subset_of": str(src)}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="A finished run of the default demo recipe.")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True, help="The run's seed (its recipe.json must agree).")
    p.add_argument("--rm-epochs", type=int, default=None, help="Reward-model epochs (default: the recipe's).")
    p.add_argument("--rank-prompts", type=int, default=None, help="Train the RM on this many ranked prompts.")
    p.add_argument("--ppo-episodes", type=int, default=None, help="PPO-ptx episodes (default: the recipe's 24,576).")
    a = p.parse_args()
    src, out = Path(a.src), Path(a.out)
    made = json.loads((src / "recipe.json").read_text())
    if made.get("seed") != a.seed or made.get("rm_size") is None:
        raise SystemExit(f"error: {src} is not a default-recipe demo run at seed {a.seed}")
    if not (src / "rankings" / ".done").exists():
        raise SystemExit(f"error: {src}: no finished rankings stage")
    recipe = demo.demo_recipe()
    variant: dict = {}
    if a.rm_epochs is not None:
        recipe = recipe.with_overrides({"rm": {"epochs": a.rm_epochs}})
        variant["rm_epochs"] = a.rm_epochs
    if a.rank_prompts is not None:
        variant["rank_prompts"] = a.rank_prompts
    if a.ppo_episodes is not None:
        recipe = recipe.with_overrides({"ppo": {"total_episodes": a.ppo_episodes}})
        variant["ppo_episodes"] = a.ppo_episodes
    reused = ["world", "sft", "sft_rm"]
    if a.rank_prompts is None:
        reused.append("rankings")
        if a.rm_epochs is None:
            reused.append("rm")
    link_stages(src, out, reused)
    if a.rank_prompts and not (out / "rankings" / ".done").exists():
        subset_rankings(src / "rankings", out / "rankings", a.rank_prompts, a.seed)
    summary = {"seed": a.seed, "world_seed": 0, "size": "tiny", **demo.recipe_summary(recipe), "variant": variant}
    if a.rank_prompts:
        summary["rank_prompts"] = a.rank_prompts
    if "rankings" in reused:  # the rankings of --src, made by its own recipe
        summary["rank_prompts"] = made.get("rank_prompts")
    if "rm" in reused:  # the reward model of --src, trained by its own recipe
        summary["rm"] = made.get("rm", {})
    (out / "recipe.json").write_text(json.dumps(summary, indent=1) + "\n")

    for name in ("world", "sft", "sft_rm", "rankings"):
        if not (out / name / ".done").exists():
            raise SystemExit(f"error: {out / name}: not a finished stage")
    stages, _, report = demo.run_stages(out, recipe, a.seed, 0, resolve_model("tiny"), {}, tag="cheaper")
    print(f"[cheaper] {sum(stages.timings.values()):.0f}s of stages; report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
