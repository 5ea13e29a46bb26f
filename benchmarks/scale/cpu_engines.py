"""PPO-ptx at GPT-2-medium size on this CPU: peak memory per process of real `instructrl ppo` runs under FSDP2 and
DeepSpeed ZeRO-3 (the deepspeed extra) with two processes and in one process with each memory lever, beside
`instructrl plan`'s estimate of the same setting.

    .venv/bin/python benchmarks/scale/cpu_engines.py --out benchmarks/scale/cpu_engines.json   # ~10-20 min
    .venv/bin/python benchmarks/scale/cpu_engines.py --table benchmarks/scale/cpu_engines.json

The model: a random GPT-2 of 24 layers, width 1024, 16 heads, GPT-2's vocabulary of 50,257 rows (the world's
tokenizer uses the first 2,048), 354.8M parameters; the reward and value models have the same backbone. One
PPO-ptx iteration (its optimizer step allocates AdamW's moments) of 4 episodes, prompts of 16 tokens, responses of
16, one pretraining window of 64 tokens per episode; fp32 weights, no autocast. Each process reports its peak RSS
above its own baseline after its imports (`ru_maxrss`), with glibc's mmap threshold fixed at 128 KiB so that freed
tensors go back to the system as a GPU caching allocator would reuse them (see results.md).

DDP with two processes is planned, not run: two whole copies of the four models and the trained models' states
need about 2 x 14 GiB, more than this machine's 24 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from plan_vs_measured import model_dir, ppo_world  # this folder: the random GPT-2 beside the world's tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = dict(model_type="gpt2", n_embd=1024, n_layer=24, n_head=16, n_positions=1024, vocab_size=50257)
# --size small: GPT-2 small's shape (124.4M), where ZeRO-3 with two processes fits this machine
SIZES = {"medium": MODEL, "small": dict(MODEL, n_embd=768, n_layer=12, n_head=12)}
SHAPE = dict(batch=4, prompt=16, response=16, ptx_length=64)
ARMS = {
    "fsdp2, 2 processes": dict(processes=2, flags=["--engine", "fsdp2"], engine="fsdp2"),
    "zero3, 2 processes": dict(processes=2, flags=["--engine", "zero3"], engine="zero3"),
    "one process": dict(processes=1, flags=[], engine="ddp"),
    "one process, gradient checkpointing": dict(processes=1, flags=["--gradient-checkpointing"], engine="ddp"),
    "one process, frozen bf16": dict(processes=1, flags=["--frozen-dtype", "bf16"], engine="ddp"),
    "ddp, 2 processes (planned only)": dict(processes=2, flags=["--engine", "ddp"], engine="ddp", run=False),
}
MB = 2**20
PEAK_WRAPPER = """
import json, os, resource, sys
import torch, transformers, accelerate  # the baseline: after the imports every run pays
from instructrl import cli
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
code = cli.main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rank = os.environ.get("RANK", "0")
with open(os.path.join(os.environ["PEAK_DIR"], f"rank{rank}.json"), "w") as fh:
    json.dump({"rank": int(rank), "peak_mb": peak - base, "baseline_mb": base}, fh)
sys.exit(code)
"""


def build_world(root: Path, model: dict) -> dict[str, Path]:
    """Random policy and reward model of ``model``'s shapes with the small world model's tokenizer, prompts of exactly
    SHAPE['prompt'] tokens, pretraining text."""
    return ppo_world(root, model_dir(root / "config", model), SHAPE["prompt"], facts=2000)


def run_arm(arm: dict, world: dict[str, Path], root: Path, name: str) -> list[float]:
    peak_dir = root / ("peaks-" + name.replace(" ", "_").replace(",", ""))
    peak_dir.mkdir()
    wrapper = root / "peak_wrapper.py"
    wrapper.write_text(PEAK_WRAPPER)
    b = SHAPE["batch"]
    args = [
        "ppo",
        "--policy", str(world["policy"]), "--reward-model", str(world["rm"]), "--prompts", str(world["prompts"]),
        "--ptx-data", str(world["ptx"]), "--ptx-max-length", str(SHAPE["ptx_length"]),
        "--ptx-micro-batch-size", str(b), "--ptx-per-episode", "1",
        "--out", str(peak_dir / "out"), "--total-episodes", str(b), "--batch-size", str(b),
        "--mini-batch-size", str(b), "--max-prompt-length", str(SHAPE["prompt"] + 8),
        "--response-length", str(SHAPE["response"]), "--mixed-precision", "no", "--cpu", "--no-progress",
        "--no-ema", "--sample-every", "0", "--no-save-value-model", *arm["flags"],
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PEAK_DIR": str(peak_dir),
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "OMP_NUM_THREADS": str(2 // arm["processes"]),
        "HF_HUB_OFFLINE": "1",
    }
    if arm["processes"] > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(arm["processes"])]
        cmd += ["--master_port", "29777", str(wrapper), *args]
    else:
        cmd = [sys.executable, str(wrapper), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}")
    rows = sorted((json.loads(p.read_text()) for p in peak_dir.glob("rank*.json")), key=lambda x: x["rank"])
    return [row["peak_mb"] for row in rows]


def planned(arm: dict, model: dict) -> dict:
    from instructrl.plan.arch import arch_from_config
    from instructrl.plan.config import PlanConfig
    from instructrl.plan.estimate import estimate

    flags = arm["flags"]
    cfg = PlanConfig(
        model="gpt2-medium",
        stage="ppo",
        batch_size=SHAPE["batch"],
        mini_batch_size=SHAPE["batch"],
        ptx_micro_batch_size=SHAPE["batch"],
        ptx_length=SHAPE["ptx_length"],
        ptx_per_episode=1.0,
        gpus=arm["processes"],
        engine=arm["engine"],
        weight_dtype="fp32",
        mixed_precision="no",
        overhead=0.0,
        prompt_length=SHAPE["prompt"],
        response_length=SHAPE["response"],
        gradient_checkpointing="--gradient-checkpointing" in flags,
        frozen_dtype="bf16" if "--frozen-dtype" in flags else "weights",
    )
    cfg.validate()
    est = estimate(cfg, arch_from_config(model))
    p = est.parts
    # torch's CPU AdamW steps without the foreach temporaries the plan counts for a GPU (results.md), one
    # parameter tensor at a time; under DeepSpeed it steps one flat partition, whose temporaries are the plan's
    held = est.total - max(p["activations"], p["rollout"], est.step_bytes)
    cpu_total = est.total if arm["engine"].startswith("zero") else held + max(p["activations"], p["rollout"])
    return {"plan_mb": est.total / MB, "plan_cpu_mb": cpu_total / MB, **{f"plan_{k}_mb": v / MB for k, v in p.items()}}


def table(rows: list[dict]) -> str:
    lines = [
        "| arm | plan per process | plan without the GPU step temporaries | measured peak per process | "
        "measured / plan | measured / plan without | states (plan) | frozen (plan) | rollout (plan) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peaks = r["peak_mb"]
        measured = " / ".join(f"{m:,.0f}" for m in peaks) if peaks else "not run"
        ratio = " / ".join(f"{m / r['plan_mb']:.2f}" for m in peaks) if peaks else "-"
        cpu_ratio = " / ".join(f"{m / r['plan_cpu_mb']:.2f}" for m in peaks) if peaks else "-"
        states = r["plan_weights_mb"] + r["plan_gradients_mb"] + r["plan_optimizer_mb"]
        lines.append(
            f"| {r['arm']} | {r['plan_mb']:,.0f} | {r['plan_cpu_mb']:,.0f} | {measured} | {ratio} | {cpu_ratio} | "
            f"{states:,.0f} | {r['plan_frozen_mb']:,.0f} | {r['plan_rollout_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--table", metavar="ROWS.json", help="print the table of saved rows, run nothing")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), help="which arms to run")
    ap.add_argument("--size", choices=list(SIZES), default="medium", help="the model's shape (default GPT-2 medium)")
    args = ap.parse_args()
    model = SIZES[args.size]
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    root = Path(tempfile.mkdtemp(prefix="cpu-engines-"))
    world = build_world(root, model)
    rows = []
    for name in args.arms:
        arm = ARMS[name]
        peaks = run_arm(arm, world, root, name) if arm.get("run", True) else []
        rows.append({"arm": name, "size": args.size, "peak_mb": peaks, **planned(arm, model)})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
