"""Benchmark: the demo's two largest stages, each the old way and the new way, side by side in one run.

* **Rankings sampling.** K samples of the tiny SFT policy per prompt: transformers' ``generate`` (the rankings'
  sampler before 2026-11-29), our KV-cached sampler with every row carried to the end (``compact_at`` > 1), and
  the same sampler with prompts batched by length and finished rows leaving the batch (``sample_texts``, the
  default now). Batches of 256 prompts, at most 40 new tokens (the demo's), temperature 1, each arm from the 50
  likeliest tokens (``generate``'s default top-k, the recipe's ``rank_top_k``).
* **Reward-model steps.** ``instructrl rm`` with each prompt forwarded once per ranking, its completions in one
  batch padded to the longest (``length_buckets=1``) against up to 4 batches of similar length (the default now),
  one epoch over the first N rankings, in its own process, alternating, the first step left out. The last
  step's loss agrees up to rounding: the same rewards, fewer padded tokens.

Each arm runs ``--repeats`` times, alternating, so a slow spell of a shared machine hits every arm; the median
is reported, with the machine's CPU flags.

Usage:
    python benchmarks/demo/stage_speed.py --run runs/demo-s0 [--threads 2] [--prompts 512] [--rm-prompts 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_NEW = 40  # the demo's response length
TOP_K = 50  # the recipe's rank_top_k (and transformers' default top-k)
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE.parent / "rm_batching"))

from shared_prompt import run_once  # noqa: E402  (the same one-epoch RM run as that benchmark)


def cpu_description() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return {"cpu": name, "cpus": os.cpu_count(), "flags": [f for f in wanted if f in flags], "arch": platform.machine()}


def sampling_arms(run: Path, n_prompts: int, k: int, repeats: int) -> dict:
    import torch

    from instructrl.experiments.pipeline import sample_texts
    from instructrl.modeling.generation import generate
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(run / "sft"))
    model = load_causal_lm(str(run / "sft"), tok, init_from_config=False).eval()
    lines = (run / "rankings" / "rankings.jsonl").read_text().splitlines()[:n_prompts]
    prompts = [json.loads(line)["prompt"] for line in lines for _ in range(k)]

    def hf() -> list[str]:
        return [
            g.text
            for g in generate(model, tok, prompts, max_new_tokens=MAX_NEW, temperature=1.0, top_k=TOP_K, batch_size=256)
        ]

    def carried() -> list[str]:  # our sampler, prompts in their order, every row decoded until the batch ends
        return sample_texts(model, tok, prompts, max_new_tokens=MAX_NEW, by_length=False, compact_at=2.0, top_k=TOP_K)

    def ours() -> list[str]:
        return sample_texts(model, tok, prompts, max_new_tokens=MAX_NEW, top_k=TOP_K)

    arms = {"generate": hf, "sampler, all rows to the end": carried, "sample_texts (default)": ours}
    times: dict[str, list[float]] = {name: [] for name in arms}
    words: dict[str, float] = {}
    for rep in range(repeats):
        for name, fn in arms.items():
            torch.manual_seed(rep)
            t = time.perf_counter()
            texts = fn()
            times[name].append(time.perf_counter() - t)
            words[name] = sum(len(x.split()) for x in texts) / len(texts)
            print(f"[stage_speed] sampling {name} run {rep}: {times[name][-1]:.2f} s", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "samples": len(prompts),
        "seconds": times,
        "median_s": med,
        "speedup_vs_generate": {name: med["generate"] / v for name, v in med.items()},
        "mean_words_per_response": words,
    }


def rm_arms(run: Path, n_prompts: int, threads: int, repeats: int) -> dict:
    runs: dict[str, list[dict]] = {"1": [], "4": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rankings.jsonl"
        data.write_text("\n".join((run / "rankings" / "rankings.jsonl").read_text().splitlines()[:n_prompts]) + "\n")
        for rep in range(repeats):
            for buckets in runs:
                out = Path(tmp) / f"b{buckets}-{rep}"
                runs[buckets].append(
                    run_once(["--set", f"length_buckets={buckets}"], str(run / "sft_rm"), data, out, threads)
                )
                print(f"[stage_speed] rm length_buckets={buckets} run {rep}: {runs[buckets][-1]}", flush=True)
    med = {b: statistics.median(r["s_per_step"] for r in v) for b, v in runs.items()}
    return {
        "rankings": n_prompts,
        "runs": runs,
        "median_s_per_step": med,
        "speedup": med["1"] / med["4"],
        "last_loss_gap": max(abs(a["last_loss"] - b["last_loss"]) for a, b in zip(runs["1"], runs["4"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a demo run folder (its sft, sft_rm and rankings)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=512, help="prompts sampled (K = 5 samples each)")
    ap.add_argument("--rm-prompts", type=int, default=400, help="rankings in each reward-model run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "stage_speed.json")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": cpu_description(),
        "threads": a.threads,
        "torch": torch.__version__,
        "run": str(a.run),
        "sampling": sampling_arms(a.run, a.prompts, 5, a.repeats),
        "rm": rm_arms(a.run, a.rm_prompts, a.threads, a.repeats),
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"sampling": result["sampling"]["median_s"], "rm": result["rm"]["median_s_per_step"]}, indent=1))


if __name__ == "__main__":
    main()
