"""Benchmark: per-prompt K-way batching (InstructGPT §3.5) against shuffled independent pairs.

One epoch of reward-model training on synthetic rankings, for K = 4 and K = 9, each configuration in a fresh
subprocess (so that its peak memory is its own). Both modes forward the same number of sequences per optimizer
step (prompts mode: B prompts x K completions; pairs mode: B*K/2 pairs x 2 completions), so memory per step is
alike and the epoch's cost follows the number of completion forward passes: K per prompt against 2*C(K, 2).

Measured per configuration:
  * forward passes: completion rows through the model (a forward hook counts the rows of every call), and calls;
  * wall time of the epoch (training steps only: no evaluation, no checkpoint);
  * peak memory: the process's own peak resident set size (VmHWM), and its growth over the
    peak reached after setup (model, optimizer, data), i.e. what the training steps add.
    (tracemalloc does not see PyTorch's tensor allocations, so it is not used.)

Usage:  PYTHONPATH=src python benchmarks/rm_batching/run.py [--prompts 32] [--out benchmarks/rm_batching]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "red blue green yellow black white orange purple gold silver river mountain city forest ocean desert "
    "bright quiet ancient modern small large north south east west"
).split()


def synthetic_rankings(n: int, k: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(16, 24))) + "." for _ in range(k)]
        rows.append(
            {
                "prompt": f"Describe place number {i} in a few words.",
                "completions": completions,
                "ranks": rng.sample(range(1, k + 1), k),
            }
        )
    return rows


def own_peak_kib() -> int:
    """This process's own peak resident set size in KiB (``VmHWM``). ``ru_maxrss`` would start from the peak of the
    process that started this one (Linux carries it over fork and exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def one(model_dir: str, k: int, mode: str, prompts: int, per_step: int) -> dict:
    import torch

    from instructrl.data.io import Record
    from instructrl.modeling.loading import load_tokenizer
    from instructrl.modeling.reward import build_reward_model
    from instructrl.reward.config import RMConfig
    from instructrl.reward.data import encode_rankings, to_ranking
    from instructrl.reward.trainer import RMTrainer
    from instructrl.training.accelerator import make_accelerator

    out = Path(tempfile.mkdtemp())
    batch = per_step if mode == "prompts" else per_step * k // 2  # same sequences per step in both modes
    cfg = RMConfig(
        model=model_dir,
        output_dir=str(out),
        batching=mode,
        batch_size=batch,
        learning_rate=1e-4,
        max_length=64,
        progress=False,
        checkpoint_every=10**9,
        mixed_precision="no",
        cpu=True,
    )
    acc = make_accelerator(cfg, out)
    tok = load_tokenizer(model_dir)
    model = build_reward_model(model_dir, tok)
    rankings = [to_ranking(Record(r, f"synthetic[{i}]")) for i, r in enumerate(synthetic_rankings(prompts, k))]
    rankings, encoded, _ = encode_rankings(rankings, tok, cfg.max_length)
    trainer = RMTrainer(cfg, acc, model, tok, rankings, encoded, [], [], out)
    rows, calls = [0], [0]

    def count(module, args, kwargs):
        rows[0] += kwargs["input_ids"].shape[0]
        calls[0] += 1

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    rss_setup = own_peak_kib()  # model, optimizer, data: before any step
    trainer.train_step(0)  # warm-up step (allocator, kernels): not timed, not counted, its memory is
    rows[0] = calls[0] = 0
    t0 = time.perf_counter()
    for step in range(trainer.steps_per_epoch):
        trainer.train_step(step)
    wall = time.perf_counter() - t0
    rss_peak = own_peak_kib()
    return {
        "K": k,
        "batching": mode,
        "prompts": prompts,
        "pairs": sum(len(r.pairs) for r in rankings),
        "batch_size": batch,
        "optimizer_steps": trainer.steps_per_epoch,
        "sequences_per_step": per_step * k,
        "completion_forward_passes": rows[0],
        "model_calls": calls[0],
        "wall_s": round(wall, 3),
        "tokens_forwarded": sum(len(ids) for u in trainer.pool for ids in trainer.unit_rows(u)[0]),
        "peak_rss_mib": round(rss_peak / 1024, 1),
        "peak_rss_growth_in_training_mib": round((rss_peak - rss_setup) / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
    }


def markdown(machine: dict, results: list[dict], summary: list[dict]) -> str:
    """The results page: the conclusion and the ratio table first, then the setup and every measurement."""
    r0 = results[0]
    big, *rest = sorted(summary, key=lambda s: -s["K"])
    rss = [s["peak_rss_ratio"] for s in summary]
    lines = [
        "# Reward-model batching: per-prompt K-way vs shuffled pairs",
        "",
        f"**Batching each prompt's K completions together forwards each completion once: at K = {big['K']} an "
        f"epoch needs {big['forward_pass_ratio']:.1f}x fewer completion forward passes and "
        f"{big['wall_time_ratio']:.2f}x less time than shuffled pairs"
        + "".join(f", at K = {s['K']} {s['forward_pass_ratio']:.1f}x and {s['wall_time_ratio']:.2f}x" for s in rest)
        + f"; peak memory is within {max(abs(1 - r) for r in rss):.0%} (pairs / prompts "
        f"{min(rss):.2f}-{max(rss):.2f}x).** The forward-pass ratios are exact (K - 1, as expected); wall "
        "times are noisy on the shared machine.",
        "",
        "| K | forward passes, pairs / prompts | expected (K - 1) | wall time, pairs / prompts | "
        "peak RSS, pairs / prompts |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['K']} | {s['forward_pass_ratio']:.1f}x | {s['K'] - 1}x | {s['wall_time_ratio']:.2f}x | "
            f"{s['peak_rss_ratio']:.2f}x |"
        )
    lines += [
        "",
        "Written by `run.py` (`PYTHONPATH=src python benchmarks/rm_batching/run.py`); raw numbers in `results.json`.",
        "",
        f"Setup: GPT-2, 4 layers, width 256, {r0['params']:,} parameters (scalar head), fp32 on CPU, "
        f"{r0['torch_threads']} torch threads; {r0['prompts']} synthetic prompts with K ranked completions of "
        "16-24 words; one epoch; each configuration in its own process. Both modes forward the same number of "
        "sequences per optimizer step (prompts: 8 prompts x K; pairs: 4K pairs x 2), so the epoch's cost follows "
        "the completion forward passes. Memory is the process's own peak resident set size (`VmHWM`), and its "
        "growth over the peak after setup (model, optimizer, data).",
        "",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, shared with other jobs (load average "
        f"{machine['loadavg_at_start'][0]:.1f} at start, {machine['loadavg_at_end'][0]:.1f} at end): wall times are "
        "noisy; the forward-pass counts are exact.",
        "",
        "| K | batching | optimizer steps | completion forward passes | model calls | tokens forwarded | wall time (s) "
        "| peak RSS (MiB) | RSS growth in training (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['K']} | {r['batching']} | {r['optimizer_steps']} | {r['completion_forward_passes']} | "
            f"{r['model_calls']} | {r['tokens_forwarded']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_growth_in_training_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--per-step", type=int, default=8, help="prompts per optimizer step (prompts mode)")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "K", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.prompts, args.per_step)))
        return

    from instructrl.modeling.tiny import make_tiny_model

    load_start = os.getloadavg()
    model_dir = Path(tempfile.mkdtemp()) / "gpt2-4x256"
    texts = [" ".join(r["completions"]) + " " + r["prompt"] for r in synthetic_rankings(200, 4, seed=1)]
    texts += ["### Instruction:\n", "### Response:\n"]
    make_tiny_model(model_dir, texts, vocab_size=512, n_layer=4, n_embd=256, n_head=4, n_positions=128)
    results = []
    for k in (4, 9):
        for mode in ("prompts", "pairs"):
            cmd = [
                sys.executable,
                __file__,
                "--prompts",
                str(args.prompts),
                "--per-step",
                str(args.per_step),
                "--one",
                str(model_dir),
                str(k),
                mode,
            ]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
            )
            if proc.returncode:
                sys.exit(proc.stderr)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row))
            results.append(row)
    summary = []
    for k in (4, 9):
        p = next(r for r in results if r["K"] == k and r["batching"] == "prompts")
        q = next(r for r in results if r["K"] == k and r["batching"] == "pairs")
        summary.append(
            {
                "K": k,
                "forward_pass_ratio": q["completion_forward_passes"] / p["completion_forward_passes"],
                "expected_ratio_K_minus_1": k - 1,
                "wall_time_ratio": q["wall_s"] / p["wall_s"],
                "peak_rss_ratio": q["peak_rss_mib"] / p["peak_rss_mib"],
            }
        )
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
    }
    out = Path(args.out)
    (out / "results.json").write_text(
        json.dumps({"machine": machine, "results": results, "summary": summary}, indent=1)
    )
    (out / "results.md").write_text(markdown(machine, results, summary))
    for s in summary:
        print(
            f"K={s['K']}: {s['forward_pass_ratio']:.1f}x fewer completion forward passes (expected {s['K'] - 1}), "
            f"{s['wall_time_ratio']:.2f}x less wall time, peak RSS ratio {s['peak_rss_ratio']:.2f}"
        )
    assert all(math.isclose(s["forward_pass_ratio"], s["K"] - 1) for s in summary)


if __name__ == "__main__":
    main()
