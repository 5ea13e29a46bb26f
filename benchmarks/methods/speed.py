"""Speed of the methods beyond PPO, side by side in one run at the PPO speed benchmark's setting.

1. Episodes/s of a full iteration of the PPO trainer with each advantage estimator: ``gae`` (PPO, a value model
   as large as the policy) against the critic-free ``grpo`` / ``rloo`` (4 responses per prompt) and
   ``reinforce``, which load and train no value model. The setting is benchmarks/ppo_speed's (GPT-2, 4 layers,
   width 256, vocab 4096; prompts of 16 tokens, responses of 32; batch 64; 4 PPO epochs; fp32).
2. Seconds per optimizer step of DPO against SFT on the same batch: 16 prompts with 4 completions each of 32
   tokens. DPO takes one step on the 16 rankings (all 6 pairs of each, the policy's forward and backward on the
   64 completions plus the reference's forward); SFT takes one step on the same 64 (prompt, completion)
   sequences, and, as a second baseline, on the 16 best completions only.

Runs alternate (A B A B ...) so that a change in the machine's load falls on both sides; each figure is the
median over the repeats. Writes results.json (or --out) with the CPU's flags.

    python benchmarks/methods/speed.py [--iterations 10] [--repeats 3] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "ppo_speed"))
sys.path.insert(0, str(ROOT / "src"))

import bench  # noqa: E402  (benchmarks/ppo_speed/bench.py: the setting and the machine facts)

ESTIMATORS = {"gae": 1, "grpo": 4, "rloo": 4, "reinforce": 1}


def run_estimator(work: Path, advantage: str, iterations: int, warm: int, device: str = "cpu") -> float:
    """Episodes/s of ``iterations`` PPO iterations (the first ``warm`` left out) with one estimator."""
    import shutil

    from instructrl.ppo.api import build_trainer

    out = work / f"out_{advantage}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = bench.ppo_config(
        work, out, iterations, device=device, advantage=advantage, samples_per_prompt=ESTIMATORS[advantage]
    )
    trainer = build_trainer(cfg)
    trainer.prompts = json.loads((work / "prompts.json").read_text())
    stamps: list[float] = []
    trainer.train(callbacks=[lambda it, m: stamps.append(time.perf_counter())])
    timed = stamps[warm - 1 :]
    return cfg.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def write_comparisons(work: Path) -> None:
    """16 prompts x 4 completions of 32 tokens as a K-way ranking file, and the same sequences as SFT data."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "policy")
    rng = random.Random(0)
    specials = {tok.eos_token_id, tok.pad_token_id}
    ids = [i for i in range(len(tok)) if i not in specials]

    def text(n: int) -> str:
        return tok.decode([rng.choice(ids) for _ in range(n)])

    rankings, demos, best = [], [], []
    for _ in range(16):
        prompt, completions = text(16), [text(32) for _ in range(4)]
        rankings.append({"prompt": prompt, "completions": completions, "ranks": [1, 2, 3, 4]})
        demos += [{"prompt": prompt, "completion": c} for c in completions]
        best.append({"prompt": prompt, "completion": completions[0]})
    for name, rows in (("rankings", rankings), ("sft_all", demos), ("sft_best", best)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_step(work: Path, kind: str, steps: int, warm: int, device: str = "cpu") -> float:
    """Seconds per optimizer step of ``steps`` steps (the first ``warm`` left out), one batch per step."""
    import shutil

    from instructrl.dpo.api import run_dpo
    from instructrl.dpo.config import DPOConfig
    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig
    from instructrl.training.tracking import read_metrics

    out = work / f"out_{kind}"
    shutil.rmtree(out, ignore_errors=True)
    common = dict(
        model=str(work / "policy"),
        output_dir=str(out),
        max_steps=steps,
        learning_rate=1e-5,
        warmup_steps=0,
        max_length=64,
        mixed_precision="no",
        progress=False,
        seed=0,
        cpu=(device == "cpu"),
    )
    if kind == "dpo":
        run_dpo(DPOConfig(data=str(work / "rankings.jsonl"), batch_size=16, eval_kl_prompts=0, epochs=100, **common))
    else:
        data, batch = ("sft_all", 64) if kind == "sft_all" else ("sft_best", 16)
        run_sft(SFTConfig(data=str(work / f"{data}.jsonl"), batch_size=batch, epochs=1000, packing=False, **common))
    times = [r["time"] for r in read_metrics(out) if "time" in r]
    timed = times[warm - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def child(args) -> None:
    work = Path(args.work)
    value = (
        run_estimator(work, args.child, args.iterations, args.warmup, args.device)
        if args.child in ESTIMATORS
        else run_step(work, args.child, args.steps, args.warmup, args.device)
    )
    print(json.dumps({"value": value}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=10, help="PPO iterations per estimator run")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per DPO / SFT run")
    ap.add_argument("--warmup", type=int, default=2, help="iterations or steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each arm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every arm runs")
    ap.add_argument("--arms", default=None, help="comma-separated arms to run (default: all)")
    ap.add_argument("--work", default="/tmp/methods_speed_bench")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        return child(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "setting.json").exists():
        bench.build_setting(work)
    if not (work / "rankings.jsonl").exists():
        write_comparisons(work)
    arms = args.arms.split(",") if args.arms else [*ESTIMATORS, "dpo", "sft_all", "sft_best"]
    runs: dict[str, list[float]] = {a: [] for a in [*ESTIMATORS, "dpo", "sft_all", "sft_best"]}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for rep in range(args.repeats):
        for arm in arms:
            cmd = [sys.executable, __file__, "--child", arm, "--work", str(work), "--threads", str(args.threads)]
            cmd += ["--iterations", str(args.iterations), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            cmd += ["--device", args.device]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if r.returncode != 0:
                raise SystemExit(f"{arm} failed:\n{r.stderr[-3000:]}")
            runs[arm].append(json.loads(r.stdout.strip().splitlines()[-1])["value"])
            print(f"[speed] repeat {rep + 1} {arm}: {runs[arm][-1]:.4g}", flush=True)
            write_result(args, runs)  # after every run: a run cut off keeps what it measured


def write_result(args, runs: dict[str, list[float]]) -> None:
    med = {a: statistics.median(v) for a, v in runs.items() if v}

    def ratio(a: str, b: str) -> float | None:
        return med[a] / med[b] if a in med and b in med else None

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": bench.device_name(args.device),
        "cpu": cpu_model(),
        "cpu_flags": bench.cpu_flags(),
        "threads": args.threads,
        "setting": bench.SETTING,
        "episodes_per_s": {a: med[a] for a in ESTIMATORS if a in med},
        "seconds_per_step": {a: med[a] for a in ("dpo", "sft_all", "sft_best") if a in med},
        "runs": runs,
        "ratios": {
            **{f"{a}_over_gae": ratio(a, "gae") for a in ESTIMATORS if a != "gae"},
            "dpo_over_sft_same_sequences": ratio("dpo", "sft_all"),
            "dpo_over_sft_best_only": ratio("dpo", "sft_best"),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
