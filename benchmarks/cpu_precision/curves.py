"""SFT and reward-model loss curves in fp32 and under bf16 autocast on the CPU, side by side: does bf16 learn as
fp32 does? (The speed of bf16 depends on the CPU; its numerics do not: an emulated bf16 matmul rounds as a native
one does, so this runs on any CPU, only more slowly without native bf16.)

    .venv/bin/python benchmarks/cpu_precision/curves.py --world runs/demo/world --rankings runs/demo/rankings \\
        --out benchmarks/cpu_precision/curves.json

The stages run as the demo runs them (the sft-tiny and rm-tiny presets on the tiny base model), cut to
``--steps`` optimizer steps, once with ``--mixed-precision no`` and once with ``bf16``, from the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "src" / "instructrl" / "resources" / "base_models" / "tiny"


def stage_args(stage: str, world: Path, rankings: Path, out: Path, steps: int) -> list[str]:
    if stage == "sft":
        data = ["--data", str(world / "sft.jsonl"), "--config", "sft-tiny"]
    else:
        data = ["--data", str(rankings / "rankings.jsonl"), "--config", "rm-tiny"]
    return [stage, "--model", str(TINY), *data, "--out", str(out), "--max-steps", str(steps), "--no-progress"]


def run(stage: str, precision: str, args: argparse.Namespace, root: Path) -> dict:
    out = root / f"{stage}-{precision}"
    cmd = [sys.executable, "-m", "instructrl", *stage_args(stage, args.world, args.rankings, out, args.steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    r = subprocess.run([*cmd, "--mixed-precision", precision], env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"{stage} {precision}: exit {r.returncode}\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    key = f"{stage}/loss"
    eval_key = f"{stage}/eval_loss"
    return {
        "loss": [r[key] for r in rows if key in r],
        "eval_loss": [r[eval_key] for r in rows if eval_key in r],
        "accuracy": [r[f"{stage}/accuracy"] for r in rows if f"{stage}/accuracy" in r],
    }


def summary(results: dict) -> str:
    lines = [
        "| stage | precision | first loss | last loss | mean of last 10 | last eval loss | largest step gap to fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for stage, by_precision in results.items():
        base = by_precision["no"]["loss"]
        for precision, r in by_precision.items():
            tail = r["loss"][-10:]
            last_eval = f"{r['eval_loss'][-1]:.4f}" if r["eval_loss"] else "-"
            gap = max(abs(a - b) for a, b in zip(r["loss"], base))
            lines.append(
                f"| {stage} | {precision} | {r['loss'][0]:.4f} | {r['loss'][-1]:.4f} | {sum(tail) / len(tail):.4f} "
                f"| {last_eval} | {gap:.4f} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True, help="a demo run's world/ folder (sft.jsonl)")
    ap.add_argument("--rankings", type=Path, required=True, help="a demo run's rankings/ folder (rankings.jsonl)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cpu-precision-curves-"))
    results: dict[str, dict] = {}
    for stage in ("sft", "rm"):
        results[stage] = {p: run(stage, p, args, root) for p in ("no", "bf16")}
    if args.out:
        args.out.write_text(json.dumps({"steps": args.steps, "results": results}, indent=1))
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
