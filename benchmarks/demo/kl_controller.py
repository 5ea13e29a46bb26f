"""PPO-ptx's KL penalty at the demo's seeds: a fixed β against β adapted toward a KL target.

Two steps, each run from the repository root:

``run``: the demo with its PPO table changed (``--ppo '{"adaptive_kl": true, "kl_target": 7}'``), reusing the world,
SFT, rankings and reward model of a finished demo run of the same seed (``--src``), so that the runs of a seed differ
in PPO's KL penalty alone. The earlier stages are hard-linked into ``--out``; PPO-ptx, the evaluation and the report
then run there as in ``instructrl demo``::

    OMP_NUM_THREADS=1 python benchmarks/demo/kl_controller.py run --src runs/demo-t0 --out runs/demo-b0 --seed 0 \\
        --ppo '{"adaptive_kl": true, "kl_target": 7.0, "kl_horizon": 2048}'

``summarize``: each run's KL and RM score by quarter of PPO and its last β, and the held-out labelers' head-to-head
of each variant's PPO-ptx against the fixed-β one of its seed (``instructrl eval`` on the same 800 prompts), into
``kl_controller.json``::

    python benchmarks/demo/kl_controller.py summarize --fixed N=runs/demo-t0 O=runs/demo-t1 P=runs/demo-t2 \\
        --variant T=runs/demo-b0 U=runs/demo-b1 V=runs/demo-b2 --label "adaptive, target 7 (default)"

``summarize`` adds to the JSON file (one call per variant); the head-to-head evaluations are cached in
``--work`` (default ``runs/kl-controller``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# this folder's collect.py (the script's own directory is on sys.path)
from collect import finish_demo, link_stages, ppo_rows, quarter_means

HERE = Path(__file__).resolve().parent
REUSED = ("world", "sft", "sft_rm", "rankings", "rm")


def run(args) -> int:
    from instructrl.experiments import demo

    src, out = Path(args.src), Path(args.out)
    if not (src / "rm" / ".done").exists():
        sys.exit(f"{src}: not a finished demo run (no rm/.done)")
    demo.DEMO["ppo"] = {**demo.DEMO["ppo"], **json.loads(args.ppo)}
    link_stages(src, out, REUSED)
    return finish_demo(out, args.seed)


def quarters(run_dir: Path) -> dict:
    rows = ppo_rows(run_dir)
    return {
        "kl_by_quarter": [round(m, 2) for m in quarter_means(rows, "ppo/kl")],
        "rm_score_by_quarter": [round(m, 3) for m in quarter_means(rows, "ppo/score_mean")],
        "beta_last": round(rows[-1]["ppo/beta"], 4),
    }


def head_to_head(fixed: Path, variant: Path, out: Path) -> dict:
    """The held-out labelers' win rate of ``variant``'s PPO-ptx against ``fixed``'s on the demo's 800 prompts."""
    if not (out / "results.json").exists():
        cmd = [
            sys.executable, "-m", "instructrl", "eval",
            "--models", f"fixed={fixed}/ppo_ptx", f"variant={variant}/ppo_ptx",
            "--baseline", f"fixed={fixed}/ppo_ptx",
            "--prompts", f"{variant}/world/eval_prompts.jsonl", "--world-dir", f"{variant}/world",
            "--num-prompts", "800", "--max-new-tokens", "40", "--temperature", "0.7",
            "--suites", "winrate", "--seed", "7", "--out", str(out), "--no-progress",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    result = json.loads((out / "results.json").read_text())
    name = next(m for m in result["models"] if m != "fixed")
    w = result["models"][name]["win_rate"]
    return {"win_rate": round(w["mean"], 4), "se": round(w["se"], 4), "n": w["n"], "judge": result["judge"]}


def pairs(items: list[str]) -> list[tuple[str, Path]]:
    return [(name, Path(path)) for name, path in (item.split("=", 1) for item in items)]


def summarize(args) -> int:
    path = Path(args.json)
    record = json.loads(path.read_text()) if path.exists() else {"what": __doc__.split("\n\n")[0], "runs": {}}
    record.setdefault("head_to_head", {})
    if args.machine:
        record["machine"] = args.machine
    fixed, variant = pairs(args.fixed), pairs(args.variant)
    if len(fixed) != len(variant):
        sys.exit("--fixed and --variant need one run per seed each, in the same order")
    for seed, ((fname, fdir), (vname, vdir)) in enumerate(zip(fixed, variant)):
        record["runs"][fname] = {"seed": seed, "kl_penalty": "fixed beta", **quarters(fdir)}
        record["runs"][vname] = {"seed": seed, "kl_penalty": args.label, **quarters(vdir)}
        h2h = head_to_head(fdir, vdir, Path(args.work) / f"{vname}-vs-{fname}")
        record["head_to_head"][f"{vname} vs {fname}"] = {"seed": seed, **h2h}
        print(f"{vname} ({args.label}) vs {fname}: {h2h['win_rate']:.3f} ± {h2h['se']:.3f}")
    path.write_text(json.dumps(record, indent=1) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="PPO-ptx and the evaluation with PPO overrides, on another run's earlier stages")
    p.add_argument("--src", required=True, help="A finished demo run of the same seed.")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--ppo", required=True, help="PPO overrides as JSON, over the demo recipe's PPO table.")
    p.set_defaults(fn=run)
    p = sub.add_parser("summarize", help="KL by quarter and head-to-heads into kl_controller.json")
    p.add_argument("--fixed", nargs="+", required=True, help="NAME=DIR of the fixed-beta runs, seeds 0, 1, 2.")
    p.add_argument("--variant", nargs="+", required=True, help="NAME=DIR of the variant's runs, same seeds.")
    p.add_argument("--label", required=True, help="How the variant sets beta.")
    p.add_argument("--work", default="runs/kl-controller", help="Where the head-to-head evaluations go.")
    p.add_argument("--json", default=str(HERE / "kl_controller.json"))
    p.add_argument("--machine", default=None, help="The CPU, threads and date the runs had, kept in the JSON.")
    p.set_defaults(fn=summarize)
    args = parser.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
