"""The scale plans on paper: `instructrl plan` for 7B and 70B PPO-ptx on nodes of 8 x 80 GB, one row per setting,
as the table in results.md prints them (GiB per GPU; the planner as it is now).

    .venv/bin/python benchmarks/scale/paper_plans.py --llama7b llama-2-7b/config.json --llama70b llama-2-70b/config.json

Each argument is a model's config.json (or its folder): Llama 2 7B and 70B as published. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("weights", "gradients", "optimizer", "activations", "rollout", "frozen")
CKPT_BF16 = ["--gradient-checkpointing", "--frozen-dtype", "bf16"]


def rows(m7: str, m70: str) -> list[tuple[str, list[str]]]:
    one, four = ["--gpus", "8"], ["--gpus", "8", "--nodes", "4"]
    layer = ["--rollout-gather", "layer"]
    return [
        ("7B, ddp (as asked)", ["--model", m7, *one]),
        ("7B, fsdp2", ["--model", m7, *one, "--engine", "fsdp2"]),
        ("7B, zero3", ["--model", m7, *one, "--engine", "zero3"]),
        ("7B, zero3 + checkpointing + frozen bf16", ["--model", m7, *one, "--engine", "zero3", *CKPT_BF16]),
        ("7B, fsdp2 + checkpointing + frozen bf16", ["--model", m7, *one, "--engine", "fsdp2", *CKPT_BF16]),
        (
            "7B, fsdp2 + checkpointing + frozen bf16, sampling layer by layer",
            ["--model", m7, *one, "--engine", "fsdp2", *CKPT_BF16, *layer],
        ),
        (
            "70B, fsdp2 + checkpointing + frozen bf16, sampling layer by layer",
            ["--model", m70, *four, "--engine", "fsdp2", *CKPT_BF16, *layer],
        ),
        (
            "70B, zero3 + checkpointing + frozen bf16, sampling layer by layer, ptx micro-batch 4",
            ["--model", m70, *four, "--engine", "zero3", *CKPT_BF16, *layer, "--ptx-micro-batch-size", "4"],
        ),
        (
            "70B, zero3-offload + checkpointing + frozen bf16, sampling layer by layer",
            ["--model", m70, *four, "--engine", "zero3-offload", *CKPT_BF16, *layer],
        ),
        (
            "70B with a 7B RM and value model, fsdp2 + checkpointing + frozen bf16, sampling layer by layer",
            ["--model", m70, "--reward-config", m7, *four, "--engine", "fsdp2", *CKPT_BF16, *layer],
        ),
    ]


def plan(args: list[str], search: bool = False) -> dict:
    cmd = [sys.executable, "-m", "instructrl", "plan", "--stage", "ppo", "--gpu-memory", "80", "--json", *args]
    cmd += [] if search else ["--no-search"]
    env = {"PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if r.returncode:
        raise SystemExit(f"plan {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def line(name: str, p: dict) -> str:
    parts = p["parts_gib"]
    opt = f"{parts['optimizer']:.1f}" + (f" (+{p['cpu_gib_per_node']:.0f} CPU/node)" if p["cpu_gib_per_node"] else "")
    step = p["detail_gib"].get("optimizer_step", 0.0)
    cells = [f"{parts['weights']:.1f}", f"{parts['gradients']:.1f}", opt, f"{step:.1f}"]
    cells += [f"{parts[k]:.1f}" for k in ("activations", "rollout", "frozen")]
    eps = p.get("episodes_per_second")
    fits = "fits" if p["fits"] else "does not fit"
    return f"| {name} | {' | '.join(cells)} | **{p['total_gib']:.1f}** ({fits}) | {eps:.2f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama7b", required=True)
    ap.add_argument("--llama70b", required=True)
    a = ap.parse_args()
    print(
        "| setting | weights | grads | optimizer | step temporaries | activations | rollout | frozen | total | episodes/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, args in rows(a.llama7b, a.llama70b):
        print(line(name, plan(args)), flush=True)
    print()
    for what, args in (
        ("7B", ["--model", a.llama7b, "--gpus", "8"]),
        ("70B", ["--model", a.llama70b, "--gpus", "8", "--nodes", "4"]),
    ):
        s = plan(args, search=True).get("suggestion") or {}
        print(f"suggested for {what}: {s.get('step', 'none')}: {s.get('total_gib', 0):.1f} GiB; {s.get('command', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
