"""PPO speed: episodes/s of a full PPO iteration, instructrl vs trl 1.12.0's PPOTrainer, same machine.

Setting (identical for both): GPT-2 architecture, 4 layers, width 256, 4 heads, vocab 4096 (about 4M
parameters) for policy, reference, value and reward models; prompts of 16 tokens, responses of 32,
batch 64, 4 PPO epochs, 1 minibatch; beta 0.02, clip 0.2, vf_coef 0.1, gamma 1, lambda 0.95, Adam
(0.9, 0.999, eps 1e-8), constant LR, no gradient clipping, no EOS penalty. The reward model is a
randomly initialized GPT-2 sequence classifier whose head is scaled so rewards of the initial policy's
samples have std 1: both trainers optimize the very same synthetic reward, and the learning curves
(score vs episodes) are compared.

    python benchmarks/ppo_speed/bench.py [--iterations 24] [--skip-bf16] [--skip-trl-fused] [--out FILE]

Creates /work/trl-venv (torch 2.13.0 + trl 1.12.0) if it is missing; trl is never a dependency of
instructrl. Writes results.json and results.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRL_VENV = Path(os.environ.get("TRL_VENV", "/work/trl-venv"))
SETTING = dict(n_layer=4, n_embd=256, n_head=4, vocab_size=4096, prompt_length=16, response_length=32,
               batch_size=64, ppo_epochs=4, num_mini_batches=1, learning_rate=3e-5, kl_coef=0.02, seed=0)


# ------------------------------------------------------------------------------------ environment
def ensure_trl_venv() -> Path:
    py = TRL_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import trl.experimental.ppo"], capture_output=True).returncode == 0:
        return py
    print(f"[bench] creating {TRL_VENV} with torch 2.13.0 and trl 1.12.0", flush=True)
    subprocess.run(["python3", "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "trl==1.12.0"], check=True)
    return py


def matmul_rate(dtype_name: str, n: int = 2048, repeats: int = 10) -> float:
    """Measured GFLOP/s of an n x n matmul on this machine (best of a few runs)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - t) / repeats)
    return 2 * n**3 / best / 1e9


def cpu_flags() -> list[str]:
    """The matmul-relevant CPU features (AMX / AVX-512 BF16 decide whether bf16 is fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].splitlines()[0].split()
    except (OSError, IndexError):
        return []
    return sorted(f for f in set(flags) if f.startswith(("amx", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512f")))


# ------------------------------------------------------------------------------------ the setting
def build_setting(work: Path) -> None:
    """Policy (random GPT-2, BPE vocab 4096), reward model with unit reward std, 512 prompts of 16 tokens."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(ROOT / "src"))
    from instructrl.modeling.tiny import make_tiny_model
    from instructrl.ppo.rollout import left_pad, right_align, sample_responses

    s = SETTING
    rng = random.Random(0)
    syll = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"] + ["ra", "lo", "qui", "xe", "th", "sh"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + "." for _ in range(30000)]
    make_tiny_model(work / "policy", texts, vocab_size=s["vocab_size"], n_layer=s["n_layer"], n_embd=s["n_embd"],
                    n_head=s["n_head"], n_positions=64, seed=s["seed"])
    tok = AutoTokenizer.from_pretrained(work / "policy")
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(work / "policy", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    specials = {tok.eos_token_id, tok.pad_token_id}
    ids = [i for i in range(len(tok)) if i not in specials]
    prompts = [[rng.choice(ids) for _ in range(s["prompt_length"])] for _ in range(512)]
    # scale the RM head so the initial policy's samples get rewards of std 1 (normalization_gain_bias's gain)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(work / "policy").eval()
    with torch.no_grad():
        p_ids, p_mask = left_pad(prompts[:256], tok.pad_token_id)
        resp, rmask, _ = sample_responses(policy, p_ids, p_mask, max_new_tokens=s["response_length"],
                                          eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        full_ids = torch.cat([p_ids, resp], 1)
        r_ids, r_mask = right_align(full_ids, torch.cat([p_mask, rmask.long()], 1), tok.pad_token_id)
        raw = rm.eval()(input_ids=r_ids, attention_mask=r_mask).logits[:, 0]
        rm.score.weight.mul_(1.0 / raw.std())
    rm.save_pretrained(work / "rm")
    tok.save_pretrained(work / "rm")
    (work / "prompts.json").write_text(json.dumps(prompts))
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(len(prompts))))
    (work / "setting.json").write_text(json.dumps(s))
    n_params = sum(p.numel() for p in policy.parameters())
    (work / "params.json").write_text(json.dumps({"policy_params": n_params}))


# ------------------------------------------------------------------------------------ our side
def run_ours(work: Path, result_path: Path, iterations: int, precision: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import shutil

    from instructrl.ppo.api import build_trainer
    from instructrl.ppo.config import PPOConfig

    s = SETTING
    out = work / f"ours_out_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    B = s["batch_size"]
    cfg = PPOConfig(policy=str(work / "policy"), reward_model=str(work / "rm"), prompts=str(work / "prompts.jsonl"),
                    output_dir=str(out), total_episodes=B * iterations, batch_size=B,
                    mini_batch_size=B // s["num_mini_batches"], ppo_epochs=s["ppo_epochs"],
                    response_length=s["response_length"], learning_rate=s["learning_rate"], warmup_iterations=0,
                    kl_coef=s["kl_coef"], missing_eos_penalty=None, ema=False, adam_beta2=0.999, adam_eps=1e-8,
                    max_grad_norm=0.0, mixed_precision="bf16" if precision == "bf16" else "no",
                    checkpoint_every=10**6, sample_every=0, progress=False, save_value_model=False, seed=s["seed"],
                    max_kl=None)
    trainer = build_trainer(cfg)
    trainer.prompts = json.loads((work / "prompts.json").read_text())  # the same 16-token prompts as TRL
    rows, t0 = [], time.perf_counter()

    def clock(it: int, m: dict) -> None:
        rows.append({"iteration": it, "t": time.perf_counter() - t0, "score_mean": m["ppo/score_mean"],
                     "kl": m["ppo/kl"], "response_length": m["ppo/response_length"],
                     **{k: m[k] for k in m if k.startswith("time/")}})

    trainer.train(callbacks=[clock])
    result_path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------ FLOPs
def flops_per_iteration(kind: str, response_length: float) -> float:
    """Model FLOPs of one PPO iteration (matmuls: 2 per multiply-add; backward = 2x forward)."""
    s = SETTING
    L, d, V, B, P = s["n_layer"], s["n_embd"], s["vocab_size"], s["batch_size"], s["prompt_length"]
    R = response_length
    T = P + R
    body = 24 * L * d * d  # per token: QKV, attention output, MLP (12 L d^2 multiply-adds)
    attn = lambda ctx: 4 * L * d * ctx  # noqa: E731  scores and weighted sum over ctx keys
    head = 2 * d * V
    full_fwd_body = B * T * (body + attn(T / 2))  # one causal pass over the whole sequence
    gen = B * (P + R - 1) * (body + attn(T / 2)) + B * R * head
    value_fwd = full_fwd_body
    if kind == "ours":  # LM head only on the R+1 positions that predict response tokens
        pol_fwd = full_fwd_body + B * (R + 1) * head
        passes = gen + pol_fwd + value_fwd  # reference and reward model (same shapes as policy / value)
        train = s["ppo_epochs"] * 3 * (pol_fwd + value_fwd)  # the first forward doubles as the rollout pass
    else:  # TRL: logits over all positions; old log-probs come from generation; no recompute saved
        pol_fwd = full_fwd_body + B * T * head
        passes = gen + pol_fwd + value_fwd + value_fwd  # reference, value, reward model
        train = s["ppo_epochs"] * 3 * (pol_fwd + value_fwd)
    return passes + train


# ------------------------------------------------------------------------------------ orchestration
def summarize(rows: list[dict], warm: int) -> dict:
    t_warm = rows[warm - 1]["t"] if warm else 0.0
    n = len(rows) - warm
    eps = SETTING["batch_size"] * n / (rows[-1]["t"] - t_warm)
    return {"episodes_per_s": eps, "iteration_s": (rows[-1]["t"] - t_warm) / n,
            "score_curve": [round(r["score_mean"], 4) for r in rows], "kl_curve": [round(r["kl"], 4) for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=24, help="PPO iterations per run (learning curve length)")
    ap.add_argument("--warmup", type=int, default=2, help="iterations left out of the timing")
    ap.add_argument("--work", default="/tmp/ppo_speed_bench")
    ap.add_argument("--skip-bf16", action="store_true", help="leave out the bf16 autocast timings")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every run (1 is the stable choice on a shared 2-core machine)")
    ap.add_argument("--out", default=str(HERE / "results.json"), help="where to write the results")
    ap.add_argument("--skip-trl-fused", action="store_true",
                    help="leave out the TRL run with the fused GELU kernel (the control for that kernel)")
    ap.add_argument("--ours", nargs=4, metavar=("WORK", "OUT", "ITERS", "PREC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ours:
        run_ours(Path(a.ours[0]), Path(a.ours[1]), int(a.ours[2]), a.ours[3])
        return
    import torch

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "setting.json").exists() or json.loads((work / "setting.json").read_text()) != SETTING:
        build_setting(work)
    trl_py = ensure_trl_venv()
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    torch.set_num_threads(a.threads)
    threads = a.threads
    rates = {"fp32": matmul_rate("float32"), "bf16": matmul_rate("bfloat16")}
    print(f"[bench] matmul 2048^2 on {threads} threads: fp32 {rates['fp32']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s", flush=True)
    # fp32 runs give the learning curves; bf16 (TRL's default precision) is timed over a few iterations
    runs = [("instructrl", "fp32", a.iterations), ("trl", "fp32", a.iterations)]
    if not a.skip_trl_fused:  # TRL with instructrl's GELU kernel: what the organization of the passes alone gives
        runs += [("trl", "fp32-fused-gelu", a.warmup + 6)]
    if not a.skip_bf16:
        runs += [("instructrl", "bf16", a.warmup + 2), ("trl", "bf16", a.warmup + 2)]
    results = {}
    for name, prec, iterations in runs:
        path = work / f"{name}_{prec}.jsonl"
        dtype = prec.split("-")[0]
        t = time.perf_counter()
        if name == "instructrl":
            cmd = [sys.executable, __file__, "--ours", str(work), str(path), str(iterations), prec]
        else:
            cmd = [str(trl_py), str(HERE / "trl_run.py"), str(work), str(path), str(iterations), dtype]
            cmd += ["fused-gelu"] if prec.endswith("fused-gelu") else []
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{name} {prec} failed:\n{r.stderr[-4000:]}")
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        summ = summarize(rows, a.warmup)
        R = sum(x.get("response_length", SETTING["response_length"]) for x in rows) / len(rows)
        fl = flops_per_iteration("ours" if name == "instructrl" else "trl", R)
        summ.update(flops_per_iteration=fl, achieved_gflops=fl / summ["iteration_s"] / 1e9,
                    fraction_of_matmul_rate=fl / summ["iteration_s"] / 1e9 / rates[dtype],
                    wall_s=time.perf_counter() - t)
        results[f"{name}_{prec}"] = summ
        print(f"[bench] {name:10s} {prec}: {summ['episodes_per_s']:.1f} episodes/s, "
              f"{summ['iteration_s']:.2f} s/iteration, {fl / 1e9:.0f} GFLOP/iteration "
              f"({100 * summ['fraction_of_matmul_rate']:.0f}% of {dtype} matmul rate); "
              f"scores {summ['score_curve'][:3]} ... {summ['score_curve'][-3:]}", flush=True)
    out = {"setting": SETTING, "threads": threads, "matmul_gflops": rates, "iterations": a.iterations,
           "warmup_iterations": a.warmup, "params": json.loads((work / "params.json").read_text()),
           "results": results, "cpu_flags": cpu_flags(),
           "speedup_fp32": results["instructrl_fp32"]["episodes_per_s"] / results["trl_fp32"]["episodes_per_s"]}
    if "trl_fp32-fused-gelu" in results:
        out["speedup_vs_trl_fused_gelu"] = (results["instructrl_fp32"]["episodes_per_s"]
                                            / results["trl_fp32-fused-gelu"]["episodes_per_s"])
    out["fp32_bound_speedup"] = (results["trl_fp32"]["iteration_s"]
                                 / (results["instructrl_fp32"]["flops_per_iteration"] / 1e9 / rates["fp32"]))
    if "trl_bf16" in results:  # TRL's own default precision (bf16=True) against our default (fp32 on CPU)
        out["speedup_vs_trl_default"] = (results["instructrl_fp32"]["episodes_per_s"]
                                         / results["trl_bf16"]["episodes_per_s"])
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k.startswith("speedup")}, indent=1))


if __name__ == "__main__":
    main()
