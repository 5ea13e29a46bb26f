"""Benchmark: SFT with --packing against padded batches, in training tokens per second.

Both arms train on the same batches and differ only in how each micro-batch is laid out: padded to its longest
example, or packed into rows of up to max_length tokens with restarted position ids. Two measurements:

  * steps (the table): the trainer's compute of one optimizer step (``collate`` / ``collate_packed``, then
    ``token_nll``, backward, AdamW step), the two arms alternating step by step on the same batches (padded
    first on even steps, packed first on odd ones), so that a shared machine's changing load falls on both
    alike; tokens per second = real tokens (not padding) / the median step time of the arm;
  * runs (the check): a short ``run_sft`` per arm, residual dropout 0: the two runs must log the same losses
    (they train on the same examples), and the packed one must report packing applied.

Workloads (the toolkit's own data, so it runs anywhere; nothing is downloaded):
  * world: the miniature world's SFT demonstrations (single turn, 12-99 tokens, mean 47);
  * chats: conversations of one to five of those demonstrations as `messages` rows (every assistant turn
    trained), a long-tailed length distribution up to the 256-token context.
Models: the shipped base models `small` (GPT-2, 4 layers, width 160) and `medium` (6 layers, width 304);
batch 32 (InstructGPT's SFT batch), one micro-batch per step, max_length 256, fp32.

Usage:  PYTHONPATH=src python benchmarks/packing/run.py [--steps 16] [--passes 3] [--out benchmarks/packing]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cpu_flags() -> list[str]:
    try:
        out = subprocess.run(
            ["grep", "-o", r"avx512[a-z_0-9]*\|amx[a-z_0-9]*", "/proc/cpuinfo"], capture_output=True, text=True
        ).stdout
    except OSError:
        return []
    return sorted(set(out.split()))


def conversations(demos: list[dict], seed: int = 0) -> list[dict]:
    """`messages` rows of 1-5 consecutive demonstrations each (a long-tailed length distribution)."""
    rng = random.Random(seed)
    rows, i = [], 0
    while i < len(demos):
        k = rng.choice([1, 1, 1, 2, 2, 3, 4, 5])
        turns = []
        for d in demos[i : i + k]:
            turns += [{"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["completion"]}]
        rows.append({"messages": turns})
        i += k
    return rows


def tokenized(model: str, data: Path, max_length: int = 256) -> tuple[list[dict], object]:
    from instructrl.data.formats import load_demonstrations
    from instructrl.data.tokenize import tokenize_demonstrations
    from instructrl.modeling.loading import load_tokenizer

    tok = load_tokenizer(model)
    examples, report = tokenize_demonstrations(load_demonstrations(str(data)), tok, max_length)
    return examples, tok, report


def time_steps(model_dir: str, data: Path, steps: int, passes: int, batch_size: int = 32) -> dict:
    """Per-step times of the two arms, alternating step by step on the same batches."""
    import numpy as np
    import torch

    from instructrl.data.tokenize import collate, collate_packed
    from instructrl.modeling.loading import load_causal_lm
    from instructrl.sft.trainer import packing_problem, token_nll
    from instructrl.training.loop import shuffled_plan

    examples, tok, report = tokenized(model_dir, data)
    torch.manual_seed(0)
    model = load_causal_lm(model_dir, tok, residual_dropout=0.0)
    assert packing_problem(model) is None
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    plan = shuffled_plan(len(examples), 0)(0)
    batches = [[examples[i] for i in plan[k * batch_size : (k + 1) * batch_size]] for k in range(steps)]
    layouts = {
        "padded": [collate(b, tok.pad_token_id) for b in batches],
        "packed": [collate_packed(b, tok.eos_token_id, 256) for b in batches],
    }
    real = [sum(len(e["input_ids"]) for e in b) for b in batches]

    def step(batch) -> float:
        start = time.perf_counter()
        nll, n = token_nll(model, batch)
        (nll / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times = {"padded": [], "packed": []}
    for k in range(2):  # warm-up, not timed
        step(layouts["padded"][k]), step(layouts["packed"][k])
    for p in range(passes):
        for k in range(steps):
            order = ("padded", "packed") if (p * steps + k) % 2 == 0 else ("packed", "padded")
            for arm in order:
                times[arm].append((real[k], step(layouts[arm][k])))
    out = {"assistant_turns_trained": report.assistant_turns_trained, "examples": len(examples)}
    for arm, rows in times.items():
        fed = sum(b["input_ids"].numel() for b in layouts[arm])
        out[arm] = {
            "median_step_s": float(np.median([t for _, t in rows])),
            "tokens_per_s": float(np.median([n / t for n, t in rows])),
            "rows_per_step": float(np.mean([b["input_ids"].shape[0] for b in layouts[arm]])),
            "padding_share": 1 - sum(real) / fed,
        }
    pairs = [(a[1], b[1]) for a, b in zip(times["padded"], times["packed"])]
    out["step_speedups_median"] = float(np.median([a / b for a, b in pairs]))
    out["speedup"] = out["packed"]["tokens_per_s"] / out["padded"]["tokens_per_s"]
    return out


def check_run(model: str, data: Path, out: Path, packing: bool, steps: int) -> dict:
    """A short run_sft: its losses and whether packing was applied."""
    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig
    from instructrl.training.tracking import read_metrics

    cfg = SFTConfig(
        model=model,
        data=str(data),
        output_dir=str(out),
        max_steps=steps,
        batch_size=32,
        max_length=256,
        learning_rate=1e-4,
        residual_dropout=0.0,
        eval_fraction=0.0,
        select_by="last",
        checkpoint_every=10**6,
        progress=False,
        packing=packing,
        seed=0,
    )
    run_sft(cfg)
    report = json.loads((out / "data_report.json").read_text())
    return {
        "packing_applied": report["packing"]["applied"],
        "losses": [r["sft/loss"] for r in read_metrics(out) if "sft/loss" in r],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16, help="batches timed per pass")
    ap.add_argument("--passes", type=int, default=3, help="passes over those batches")
    ap.add_argument("--check-steps", type=int, default=4, help="steps of each check run")
    ap.add_argument("--models", default="small,medium")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    logging.disable(logging.INFO)

    import torch

    from instructrl.world.base_models import resolve_model
    from instructrl.world.build import build

    work = Path(tempfile.mkdtemp(prefix="packing-bench-"))
    build(work / "world", seed=0, scale=1.0)
    demos = [json.loads(x) for x in (work / "world" / "sft.jsonl").read_text().splitlines()]
    data = {"world": work / "world" / "sft.jsonl", "chats": work / "chats.jsonl"}
    data["chats"].write_text("".join(json.dumps(r) + "\n" for r in conversations(demos)))
    load_start = os.getloadavg()[0]
    table = []
    for workload, path in data.items():
        for size in args.models.split(","):
            model = resolve_model(size)
            t = time_steps(model, path, args.steps, args.passes)
            padded = check_run(model, path, work / f"{workload}-{size}-padded", False, args.check_steps)
            packed = check_run(model, path, work / f"{workload}-{size}-packed", True, args.check_steps)
            t.update(
                workload=workload,
                model=size,
                check_packing_applied=packed["packing_applied"] and not padded["packing_applied"],
                check_max_rel_loss_diff=max(abs(a - b) / abs(a) for a, b in zip(padded["losses"], packed["losses"])),
            )
            table.append(t)
            print(
                f"[bench] {workload} {size}: padded {t['padded']['tokens_per_s']:.0f}, packed "
                f"{t['packed']['tokens_per_s']:.0f} tokens/s ({t['speedup']:.2f}x)",
                flush=True,
            )
    result = {
        "command": "PYTHONPATH=src python benchmarks/packing/run.py " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_flags": cpu_flags(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "steps": args.steps,
        "passes": args.passes,
        "table": table,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        "| workload | model | padding, padded / packed | rows per step, padded / packed | tokens/s padded | "
        "tokens/s packed | speed-up | losses equal (max rel. diff) |"
    )
    print("|---|---|---|---|---:|---:|---:|---|")
    for t in table:
        print(
            f"| {t['workload']} | {t['model']} | {t['padded']['padding_share']:.0%} / {t['packed']['padding_share']:.0%} "
            f"| {t['padded']['rows_per_step']:.0f} / {t['packed']['rows_per_step']:.1f} "
            f"| {t['padded']['tokens_per_s']:.0f} | {t['packed']['tokens_per_s']:.0f} | **{t['speedup']:.2f}x** "
            f"| {'yes' if t['check_packing_applied'] else 'NO'} ({t['check_max_rel_loss_diff']:.1e}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
