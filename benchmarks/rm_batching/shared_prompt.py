"""Benchmark: reward-model steps with each prompt forwarded once per ranking (``--share-prompt``, the default)
against the plain forward (every completion with its own copy of the prompt, ``--no-share-prompt``).

Both run ``instructrl rm`` on the same rankings from the same model, one epoch, no evaluation, alternating
(plain, shared, plain, shared, ...) so that a slow spell of a shared machine hits both; each in its own process
with ``OMP_NUM_THREADS`` threads. Measured: seconds per optimizer step (the metrics' time stamps, first step
left out), the last step's loss (equal up to rounding when the shared forward is exact), and the tokens each
mode forwards.

Usage:
    python benchmarks/rm_batching/shared_prompt.py --model runs/demo/sft_rm \\
        --rankings runs/demo/rankings/rankings.jsonl [--prompts 400] [--pairs 2] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))


def token_counts(rankings: Path, model: str, max_length: int = 256) -> dict[str, int]:
    """Tokens forwarded per epoch: plain (every completion with its prompt) and shared (each prompt once)."""
    from instructrl.modeling.loading import load_tokenizer
    from instructrl.modeling.reward import shared_prefix
    from instructrl.reward.data import encode_rankings, load_rankings

    tok = load_tokenizer(model)
    rows, _ = load_rankings(str(rankings))
    _, encoded, _ = encode_rankings(rows, tok, max_length)
    plain = sum(len(s) for seqs in encoded for s in seqs)
    shared = 0
    for seqs in encoded:
        cut = shared_prefix(seqs)
        shared += cut + sum(len(s) - cut for s in seqs)
    return {"plain": plain, "shared": shared}


def run_once(flags: list[str], model: str, data: Path, out: Path, threads: int) -> dict:
    """One epoch of ``instructrl rm`` (preset rm-tiny, no evaluation) with ``flags`` added, in its own process with
    ``threads`` threads: seconds per step (first step left out), steps, the last step's loss."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "instructrl", "rm", "--config", "rm-tiny", "--model", model, "--data", str(data)]
    cmd += ["--out", str(out), *flags, "--epochs", "1", "--eval-fraction", "0", "--no-progress"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rm/loss" in r]
    return {
        "s_per_step": (steps[-1]["time"] - steps[0]["time"]) / (len(steps) - 1),
        "steps": len(steps),
        "last_loss": steps[-1]["rm/loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the causal LM the reward model starts from")
    ap.add_argument("--rankings", required=True, type=Path, help="K-way rankings (JSONL)")
    ap.add_argument("--prompts", type=int, default=400, help="first N rankings of the file")
    ap.add_argument("--pairs", type=int, default=2, help="alternating (plain, shared) pairs of runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "shared_prompt.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rankings.jsonl"
        lines = a.rankings.read_text().splitlines()[: a.prompts]
        data.write_text("\n".join(lines) + "\n")
        runs: dict[str, list[dict]] = {"no-share-prompt": [], "share-prompt": []}
        for i in range(a.pairs):
            for mode in runs:
                runs[mode].append(run_once([f"--{mode}"], a.model, data, Path(tmp) / f"{mode}-{i}", a.threads))
                print(f"[shared_prompt] {mode} run {i}: {runs[mode][-1]}", flush=True)
        tokens = token_counts(data, a.model)
    plain = statistics.median(r["s_per_step"] for r in runs["no-share-prompt"])
    shared = statistics.median(r["s_per_step"] for r in runs["share-prompt"])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    result = {
        "model": a.model,
        "rankings": str(a.rankings),
        "prompts": len(lines),
        "threads": a.threads,
        "machine": f"{cpu} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "runs": runs,
        "median_s_per_step": {"plain": plain, "shared": shared},
        "speedup": plain / shared,
        "tokens_per_epoch": tokens,
        "token_ratio": tokens["plain"] / tokens["shared"],
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s_per_step", "speedup", "tokens_per_epoch")}, indent=1))


if __name__ == "__main__":
    main()
