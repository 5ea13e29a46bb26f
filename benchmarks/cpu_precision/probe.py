"""What `mixed_precision: auto` picks on this CPU, and the rates behind it.

    python benchmarks/cpu_precision/probe.py [--out benchmarks/cpu_precision/results.json]

Prints and writes: the CPU model and its native bf16 flags, the decision of ``instructrl.training.precision``
with its reason (no cache, no INSTRUCTRL_CPU_BF16), the probe's fp32 and bf16 GFLOP/s (an autocast linear of
256 x 512 -> 1024, the casts included) and those of a plain 2048x2048 matmul (fp32 against bf16 tensors, as
the numbers measured on other CPUs), each at 1 and 2 threads, best of 5 repeats of each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from instructrl.training import precision


def matmul_gflops(n: int, dtype: torch.dtype, threads: int, seconds: float = 0.5) -> float:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        calls += 1
    return round(2 * n**3 / best / 1e9, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop(precision.ENV_FORCE, None)
    os.environ[precision.ENV_CACHE_DIR] = tempfile.mkdtemp()  # a fresh decision, nothing cached
    info = precision.cpu_info()
    decision = precision.cpu_bf16(info)
    rows = {}
    for threads in (1, 2):
        probes = [precision.probe(threads) for _ in range(args.repeats)]
        fp32 = max(p.fp32_gflops for p in probes)
        bf16 = max(p.bf16_gflops for p in probes)
        mm32 = max(matmul_gflops(2048, torch.float32, threads) for _ in range(args.repeats))
        mm16 = max(matmul_gflops(2048, torch.bfloat16, threads) for _ in range(args.repeats))
        rows[threads] = {
            "probe_fp32_gflops": fp32,
            "probe_bf16_gflops": bf16,
            "probe_speedup": round(bf16 / fp32, 2),
            "matmul2048_fp32_gflops": mm32,
            "matmul2048_bf16_gflops": mm16,
            "matmul2048_speedup": round(mm16 / mm32, 2),
        }
    result = {
        "cpu": info.model,
        "native_bf16_flags": list(info.native),
        "x86": info.x86,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "auto": decision.precision,
        "reason": decision.reason,
        "threads": rows,
        "measured": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
