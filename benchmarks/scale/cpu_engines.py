"""PPO-ptx on this CPU: peak memory per process of real `instructrl ppo` runs under DDP, FSDP2 and DeepSpeed ZeRO-2 /
ZeRO-3 (the deepspeed extra) with two processes and in one process with each memory lever, beside `instructrl plan
--device cpu`'s estimate of the same setting.

    .venv/bin/python benchmarks/scale/cpu_engines.py --out benchmarks/scale/cpu_engines.json   # ~30 min
    .venv/bin/python benchmarks/scale/cpu_engines.py --size small --out benchmarks/scale/cpu_engines_small.json
    .venv/bin/python benchmarks/scale/cpu_engines.py --table benchmarks/scale/cpu_engines.json

The model (`--size medium`, the default): a random GPT-2 of 24 layers, width 1024, 16 heads, GPT-2's vocabulary of
50,257 rows (the world's tokenizer uses the first 2,048), 354.8M parameters; `--size small` is GPT-2 small's shape
(124.4M), where every arm fits this machine. The reward and value models have the same backbone. Two PPO-ptx
iterations (the first creates AdamW's moments, the second holds them beside the gradients) of 4 episodes, prompts
of 16 tokens, responses of 16, one pretraining window of 64 tokens per episode; fp32 weights, no autocast. Each
process reports its peak RSS above its own baseline after its imports (`VmHWM`: `ru_maxrss` would carry this
script's own peak into every run it starts), with glibc's mmap threshold
fixed at 128 KiB so that freed tensors go back to the system as a GPU caching allocator would reuse them (see
results.md). `--table` recomputes the plan's columns with the planner as it is now.

At GPT-2-medium size DDP with two processes is planned, not run: two whole copies of the four models and the
trained models' states need about 2 x 16 GiB, more than this machine's 24 GB.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from plan_vs_measured import model_dir, ppo_world  # this folder: the random GPT-2 beside the world's tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = dict(model_type="gpt2", n_embd=1024, n_layer=24, n_head=16, n_positions=1024, vocab_size=50257)
# --size small: GPT-2 small's shape (124.4M), where ZeRO-3 with two processes fits this machine
SIZES = {
    "medium": MODEL,
    "small": dict(MODEL, n_embd=768, n_layer=12, n_head=12),
    # --size tiny: what a PPO-ptx process holds beyond its tensors, where the tensors are almost nothing
    "tiny": dict(MODEL, n_embd=64, n_layer=2, n_head=2),
}
SHAPE = dict(batch=4, prompt=16, response=16, ptx_length=64)
LORA = ["--lora-r", "16", "--value-lora-r", "16"]
ARMS = {
    "fsdp2, 2 processes": dict(processes=2, flags=["--engine", "fsdp2"], engine="fsdp2"),
    "zero3, 2 processes": dict(processes=2, flags=["--engine", "zero3"], engine="zero3"),
    "zero2, 2 processes": dict(processes=2, flags=["--engine", "zero2"], engine="zero2", sizes=("small",)),
    "ddp, 2 processes": dict(processes=2, flags=["--engine", "ddp"], engine="ddp", run_at=("small", "tiny")),
    "one process": dict(processes=1, flags=[], engine="ddp"),
    "one process, gradient checkpointing": dict(processes=1, flags=["--gradient-checkpointing"], engine="ddp"),
    "one process, frozen bf16": dict(processes=1, flags=["--frozen-dtype", "bf16"], engine="ddp"),
    # LoRA on both trained models (the plan's --lora-r; instructrl ppo's value model trains whole without --value-lora-r)
    "one process, LoRA r16": dict(processes=1, flags=[*LORA], engine="ddp", sizes=("small",)),
    "one process, LoRA r16, bf16 bases": dict(
        processes=1, flags=[*LORA, "--torch-dtype", "bf16"], engine="ddp", sizes=("small",)
    ),
    "one process, LoRA r16, value model on the policy's base": dict(
        processes=1, flags=["--lora-r", "16", "--value-shares-policy-base"], engine="ddp", sizes=("small",)
    ),
}
MB = 2**20
PEAK_WRAPPER = """
import json, os, sys
import torch, transformers, accelerate  # the baseline: after the imports every run pays
from instructrl import cli
from plan_vs_measured import peak_mb  # this process's own peak (benchmarks/scale, on PYTHONPATH)
base = peak_mb()
code = cli.main(sys.argv[1:])
peak = peak_mb()
rank = os.environ.get("RANK", "0")
with open(os.path.join(os.environ["PEAK_DIR"], f"rank{rank}.json"), "w") as fh:
    json.dump({"rank": int(rank), "peak_mb": peak - base, "baseline_mb": base}, fh)
sys.exit(code)
"""


def free_port() -> int:
    """A TCP port free now, for the torchrun rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        "--out", str(peak_dir / "out"), "--total-episodes", str(2 * b), "--batch-size", str(b),
        "--mini-batch-size", str(b), "--max-prompt-length", str(SHAPE["prompt"] + 8),
        "--response-length", str(SHAPE["response"]), "--mixed-precision", "no", "--cpu", "--no-progress",
        "--no-ema", "--sample-every", "0", "--no-save-value-model", *arm["flags"],
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(Path(__file__).resolve().parent)]),
        "PEAK_DIR": str(peak_dir),
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "OMP_NUM_THREADS": str(2 // arm["processes"]),
        "HF_HUB_OFFLINE": "1",
    }
    if arm["processes"] > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(arm["processes"])]
        cmd += ["--master_port", str(free_port()), str(wrapper), *args]
    else:
        cmd = [sys.executable, str(wrapper), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}")
    rows = sorted((json.loads(p.read_text()) for p in peak_dir.glob("rank*.json")), key=lambda x: x["rank"])
    return [row["peak_mb"] for row in rows], [row["baseline_mb"] for row in rows]


def planned(arm: dict, model: dict) -> dict:
    from instructrl.plan.arch import arch_from_config
    from instructrl.plan.config import PlanConfig
    from instructrl.plan.estimate import estimate

    flags = arm["flags"]

    def value(flag: str, default):
        return flags[flags.index(flag) + 1] if flag in flags else default

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
        device="cpu",
        weight_dtype=value("--torch-dtype", "fp32"),
        mixed_precision="no",
        overhead=0.0,
        prompt_length=SHAPE["prompt"],
        response_length=SHAPE["response"],
        gradient_checkpointing="--gradient-checkpointing" in flags,
        frozen_dtype=value("--frozen-dtype", "auto"),
        lora_r=int(value("--lora-r", 0)),
        value_shares_base="--value-shares-policy-base" in flags,
    )
    cfg.validate()
    est = estimate(cfg, arch_from_config(model))
    return {
        "plan_mb": est.total / MB,
        "plan_step_mb": est.step_bytes / MB,
        **{f"plan_{k}_mb": v / MB for k, v in est.parts.items()},
    }


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table, the plan's columns recomputed by the planner as it is now.

    Two comparisons: the tensors (``--overhead 0``) against each process's growth above its baseline after its
    imports, and the plan as a user runs it (the CPU's default overhead) against the whole process's peak RSS,
    baseline included. Rows saved before baselines were recorded show the first comparison only."""
    from instructrl.plan.config import PlanConfig

    overhead_mb = PlanConfig(model="gpt2", device="cpu").effective_overhead * 1024
    lines = [
        "| arm | plan, tensors | peak above baseline | / plan | plan, default overhead | peak, whole process | / plan | "
        "states (plan) | frozen (plan) | activations (plan) | rollout (plan) | optimizer step (plan) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def per_rank(values: list[float], fmt: str) -> str:
        return " / ".join(format(v, fmt) for v in values) if values else "-"

    for r in rows:
        r = {**r, **planned(ARMS[r["arm"]], SIZES[r["size"]])}
        peaks, bases = r["peak_mb"], r.get("baseline_mb", [])
        whole = [p + b for p, b in zip(peaks, bases, strict=False)]
        plan_run = r["plan_mb"] + overhead_mb
        states = r["plan_weights_mb"] + r["plan_gradients_mb"] + r["plan_optimizer_mb"]
        lines.append(
            f"| {r['arm']} | {r['plan_mb']:,.0f} | {per_rank(peaks, ',.0f') if peaks else 'not run'} | "
            f"{per_rank([m / r['plan_mb'] for m in peaks], '.2f')} | {plan_run:,.0f} | {per_rank(whole, ',.0f')} | "
            f"{per_rank([m / plan_run for m in whole], '.2f')} | {states:,.0f} | {r['plan_frozen_mb']:,.0f} | "
            f"{r['plan_activations_mb']:,.0f} | {r['plan_rollout_mb']:,.0f} | {r['plan_step_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--table", metavar="ROWS.json", help="print the table of saved rows, run nothing")
    ap.add_argument("--arms", nargs="*", help="which arms to run (default: every arm of the size)")
    ap.add_argument("--size", choices=list(SIZES), default="medium", help="the model's shape (default GPT-2 medium)")
    args = ap.parse_args()
    model = SIZES[args.size]
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    root = Path(tempfile.mkdtemp(prefix="cpu-engines-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # its checkpoints take gigabytes
    world = build_world(root, model)
    rows = []
    for name in args.arms or [n for n, a in ARMS.items() if args.size in a.get("sizes", SIZES)]:
        arm = ARMS[name]
        peaks, baselines = run_arm(arm, world, root, name) if args.size in arm.get("run_at", SIZES) else ([], [])
        rows.append({"arm": name, "size": args.size, "peak_mb": peaks, "baseline_mb": baselines, **planned(arm, model)})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        if args.out:  # after every arm: a long run killed later keeps what it measured
            Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
