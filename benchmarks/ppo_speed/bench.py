"""PPO speed: episodes/s of a full PPO iteration, instructrl vs trl 1.12.0's PPOTrainer, same machine.

Setting (identical for both): GPT-2 architecture, 4 layers, width 256, 4 heads, vocab 4096 (about 4M
parameters) for policy, reference, value and reward models; prompts of 16 tokens, responses of 32,
batch 64, 4 PPO epochs, 1 minibatch; beta 0.02, clip 0.2, vf_coef 0.1, gamma 1, lambda 0.95, Adam
(0.9, 0.999, eps 1e-8), constant LR, no gradient clipping, no EOS penalty. The reward model is a
randomly initialized GPT-2 sequence classifier whose head is scaled so rewards of the initial policy's
samples have std 1: both trainers optimize the very same synthetic reward, and the learning curves
(score vs episodes) are compared.

    python benchmarks/ppo_speed/bench.py [--iterations 24] [--skip-bf16] [--skip-trl-fused] [--out FILE]
    python benchmarks/ppo_speed/bench.py --device cuda --trl-python python3 --bf16-iterations 48 --profile

Creates /work/trl-venv (torch 2.13.0 + trl 1.12.0) if it is missing and no ``--trl-python`` is given; trl
is never a dependency of instructrl. Writes results.json (or ``--out``) after every run, so a run that
fails or is cut off keeps the ones before it. On a GPU (``--device cuda``) the matmul rates are those of
an 8192^3 product and two short runs show instructrl without CUDA-graph sampling; ``--profile`` adds two
short runs, one per trainer, that write torch.profiler tables of two iterations beside ``--out``.
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
SETTING = dict(
    n_layer=4,
    n_embd=256,
    n_head=4,
    vocab_size=4096,
    prompt_length=16,
    response_length=32,
    batch_size=64,
    ppo_epochs=4,
    num_mini_batches=1,
    learning_rate=3e-5,
    kl_coef=0.02,
    seed=0,
)


# ------------------------------------------------------------------------------------ environment
def ensure_trl_venv() -> Path:
    py = TRL_VENV / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import trl.experimental.ppo"], capture_output=True).returncode == 0
    ):
        return py
    print(f"[bench] creating {TRL_VENV} with torch 2.13.0 and trl 1.12.0", flush=True)
    subprocess.run(["python3", "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "trl==1.12.0"], check=True)
    return py


def matmul_rate(dtype_name: str, device: str = "cpu", n: int | None = None, repeats: int = 10) -> float:
    """Measured GFLOP/s of an n x n matmul on this machine (best of a few runs; n = 2048 on a CPU, 8192
    on a GPU). fp32 on a GPU is true fp32 (PyTorch's default: no TF32), as the fp32 runs use. Where one
    product would take over half a second (bf16 on a CPU without native bf16 runs at about 2 GFLOP/s), n is
    halved, down to 512, and the repeats are cut, so the probe takes a few seconds."""
    import torch

    n = n or (8192 if device == "cuda" else 2048)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dtype = getattr(torch, dtype_name)

    def timed(size: int):
        x, y = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
        x @ y  # warm-up
        sync()
        t = time.perf_counter()
        x @ y
        sync()
        return x, y, time.perf_counter() - t

    small = min(n, 512)
    a, b, one = timed(small)  # sizes the probe: a slow dtype stays at 512
    while n > small and one * (n / small) ** 3 > 0.5:
        n //= 2
    if n > small:
        a, b, one = timed(n)
    repeats = max(1, min(repeats, int(1.0 / max(one, 1e-9))))
    best = one
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t) / repeats)
    return 2 * n**3 / best / 1e9


def device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores (torch {torch.__version__})"


def cpu_flags() -> list[str]:
    """The matmul-relevant CPU features (AMX / AVX-512 BF16 decide whether bf16 is fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].splitlines()[0].split()
    except (OSError, IndexError):
        return []
    return sorted(
        f for f in set(flags) if f.startswith(("amx", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512f"))
    )


# ------------------------------------------------------------------------------------ the setting
def build_setting(work: Path) -> None:
    """Policy (random GPT-2, BPE vocab 4096), reward model with unit reward std, 512 prompts of 16 tokens."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(ROOT / "src"))
    from instructrl.data.tokenize import left_pad
    from instructrl.modeling.tiny import make_tiny_model
    from instructrl.ppo.rollout import right_align, sample_responses

    s = SETTING
    rng = random.Random(0)
    syll = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"] + ["ra", "lo", "qui", "xe", "th", "sh"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + "." for _ in range(30000)]
    make_tiny_model(
        work / "policy",
        texts,
        vocab_size=s["vocab_size"],
        n_layer=s["n_layer"],
        n_embd=s["n_embd"],
        n_head=s["n_head"],
        n_positions=128,  # 48 positions used; room for the placeholder prompts the trainer checks at load
        seed=s["seed"],
    )
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
        resp, rmask, _ = sample_responses(
            policy, p_ids, p_mask, max_new_tokens=s["response_length"], eos_id=tok.eos_token_id, pad_id=tok.pad_token_id
        )
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
def ppo_config(work: Path, out: Path, iterations: int, precision: str = "fp32", device: str = "cpu", **extra):
    """Our PPOConfig at the benchmark's setting (``extra``: more PPOConfig fields, e.g. an advantage estimator)."""
    sys.path.insert(0, str(ROOT / "src"))
    from instructrl.ppo.config import PPOConfig

    s = SETTING
    B = s["batch_size"]
    return PPOConfig(
        policy=str(work / "policy"),
        reward_model=str(work / "rm"),
        prompts=str(work / "prompts.jsonl"),
        output_dir=str(out),
        total_episodes=B * iterations,
        batch_size=B,
        mini_batch_size=B // s["num_mini_batches"],
        ppo_epochs=s["ppo_epochs"],
        response_length=s["response_length"],
        learning_rate=s["learning_rate"],
        warmup_iterations=0,
        kl_coef=s["kl_coef"],
        missing_eos_penalty=None,
        ema=False,
        adam_beta2=0.999,
        adam_eps=1e-8,
        max_grad_norm=0.0,
        mixed_precision="bf16" if precision.startswith("bf16") else "no",
        cuda_graphs="nograph" not in precision,
        compile="compile" in precision,
        checkpoint_every=10**6,
        sample_every=0,
        progress=False,
        save_value_model=False,
        seed=s["seed"],
        max_kl=None,
        cpu=(device == "cpu"),
        **extra,
    )


def run_ours(
    work: Path, result_path: Path, iterations: int, precision: str, device: str = "cpu", profile_path: str = ""
) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import shutil

    from instructrl.ppo.api import build_trainer

    out = work / f"ours_out_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = ppo_config(work, out, iterations, precision, device)
    trainer = build_trainer(cfg)
    trainer.prompts = json.loads((work / "prompts.json").read_text())  # the same 16-token prompts as TRL
    profiler = None
    if profile_path:  # iterations 4 and 5, as trl_run.py
        from torch.profiler import ProfilerActivity, profile, schedule

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        profiler = profile(activities=acts, schedule=schedule(wait=2, warmup=1, active=2, repeat=1))
        profiler.start()
    rows, t0 = [], time.perf_counter()

    def clock(it: int, m: dict) -> None:  # metrics are floats: the GPU has finished the iteration
        rows.append(
            {
                "iteration": it,
                "t": time.perf_counter() - t0,
                "score_mean": m["ppo/score_mean"],
                "kl": m["ppo/kl"],
                "response_length": m["ppo/response_length"],
                **{k: m[k] for k in m if k.startswith("time/")},
            }
        )
        if profiler is not None:
            profiler.step()

    trainer.train(callbacks=[clock])
    from instructrl.ppo import rollout

    graph = device == "cuda" and cfg.cuda_graphs and not getattr(trainer.raw_policy, rollout.NO_CUDA_GRAPH, False)
    for r in rows:  # which sampler ran (a model that cannot decode with a CUDA graph falls back to plain)
        r["sampler"] = "cuda-graph" if graph else "plain"
    if profiler is not None:
        profiler.stop()
        sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        Path(profile_path).write_text(profiler.key_averages().table(sort_by=sort, row_limit=40))
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
# iterations under torch.profiler (its warm-up step and two active steps) and the one after, whose
# clock includes the profiler's processing of the trace
PROFILED = (3, 4, 5, 6)


def summarize(rows: list[dict], warm: int, skip: tuple[int, ...] = ()) -> dict:
    """Episodes/s over the iterations after the first ``warm``, leaving out the iterations in ``skip``
    (those under the profiler): each iteration's time is the clock difference to the one before."""
    kept = [i for i in range(warm, len(rows)) if rows[i]["iteration"] not in skip]
    total = sum(rows[i]["t"] - (rows[i - 1]["t"] if i else 0.0) for i in kept)
    n = len(kept)
    out = {
        "episodes_per_s": SETTING["batch_size"] * n / total,
        "iteration_s": total / n,
        "timed_iterations": n,
        # the iterations left out (a compiled run's compilation happens in them)
        "warmup_s": [round(rows[i]["t"] - (rows[i - 1]["t"] if i else 0.0), 3) for i in range(min(warm, len(rows)))],
        "sampler": rows[-1].get("sampler", "-"),
        "score_curve": [round(r["score_mean"], 4) for r in rows],
        "kl_curve": [round(r["kl"], 4) for r in rows],
    }
    phases = sorted({k for i in kept for k in rows[i] if k.startswith("time/")})
    if phases:  # instructrl's own split of an iteration (generation, scoring, training)
        out["phase_s"] = {k[5:]: sum(rows[i][k] for i in kept) / n for k in phases}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=24, help="PPO iterations per run (learning curve length)")
    ap.add_argument("--warmup", type=int, default=2, help="iterations left out of the timing")
    ap.add_argument("--work", default="/tmp/ppo_speed_bench")
    ap.add_argument("--skip-bf16", action="store_true", help="leave out the bf16 autocast timings")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every run (1 is the stable choice on a shared 2-core machine)",
    )
    ap.add_argument("--out", default=str(HERE / "results.json"), help="where to write the results")
    ap.add_argument(
        "--skip-trl-fused",
        action="store_true",
        help="leave out the TRL run with the fused GELU kernel (the control for that kernel)",
    )
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both trainers run")
    ap.add_argument(
        "--skip-trl",
        action="store_true",
        help="run instructrl only (its fp32 and bf16 curves side by side; no TRL environment needed)",
    )
    ap.add_argument(
        "--bf16-iterations",
        type=int,
        default=0,
        help="iterations of the bf16 runs (default: warmup + 2, timing only; more gives bf16 curves)",
    )
    ap.add_argument(
        "--trl-python", default="", help="a Python that imports trl 1.12.0 (default: create or reuse TRL_VENV)"
    )
    ap.add_argument("--run-timeout", type=int, default=3600, help="seconds one trainer run may take")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also run instructrl fp32 with --compile (torch.compile of the scoring and training forwards)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="two more short runs (bf16, or fp32 with --skip-bf16) that write torch.profiler tables of "
        "two iterations of each trainer beside --out",
    )
    ap.add_argument(
        "--ours", nargs=6, metavar=("WORK", "OUT", "ITERS", "PREC", "DEVICE", "PROFILE"), help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    if a.ours:
        run_ours(Path(a.ours[0]), Path(a.ours[1]), int(a.ours[2]), a.ours[3], a.ours[4], a.ours[5])
        return
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    if not (work / "setting.json").exists() or json.loads((work / "setting.json").read_text()) != SETTING:
        build_setting(work)
    trl_py = Path(a.trl_python) if a.trl_python or a.skip_trl else ensure_trl_venv()
    env = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
    )
    torch.set_num_threads(a.threads)
    threads = a.threads
    rates = {"fp32": matmul_rate("float32", a.device), "bf16": matmul_rate("bfloat16", a.device)}
    where = device_name(a.device)
    print(
        f"[bench] {where}; matmul on {a.device} ({threads} CPU threads): fp32 {rates['fp32']:.0f} GFLOP/s, "
        f"bf16 {rates['bf16']:.0f} GFLOP/s",
        flush=True,
    )
    # fp32 runs give the learning curves; bf16 (TRL's default precision) is timed over a few iterations
    runs = [("instructrl", "fp32", a.iterations), ("trl", "fp32", a.iterations)]
    if not a.skip_trl_fused:  # TRL with instructrl's GELU kernel: what the organization of the passes alone gives
        runs += [("trl", "fp32-fused-gelu", a.warmup + 6)]
    if not a.skip_bf16:
        n_bf16 = a.bf16_iterations or a.warmup + 2
        runs += [("instructrl", "bf16", n_bf16), ("trl", "bf16", n_bf16)]
    if a.device == "cuda":  # what the CUDA-graph decoding step is worth (sampling as on a CPU)
        runs += [("instructrl", "fp32-nograph", a.warmup + 8)]
        runs += [] if a.skip_bf16 else [("instructrl", "bf16-nograph", a.warmup + 8)]
    if a.compile:  # instructrl with --compile (its first iterations hold the compilation, left out with --warmup)
        runs += [("instructrl", "fp32-compile", a.iterations)]
    if a.profile:  # separate runs: the profiler's own cost stays out of the timed runs above
        prec = "fp32" if a.skip_bf16 else "bf16"
        runs += [("instructrl", f"{prec}-profile", max(PROFILED) + 2), ("trl", f"{prec}-profile", max(PROFILED) + 2)]
    if a.skip_trl:
        runs = [r for r in runs if r[0] != "trl"]
    results: dict[str, dict] = {}
    out: dict = {
        "setting": SETTING,
        "device": a.device,
        "device_name": where,
        "threads": threads,
        "matmul_gflops": rates,
        "iterations": a.iterations,
        "warmup_iterations": a.warmup,
        "params": json.loads((work / "params.json").read_text()),
        "results": results,
        "cpu_flags": cpu_flags(),
    }
    for name, prec, iterations in runs:
        path = work / f"{name}_{prec}.jsonl"
        dtype = prec.split("-")[0]
        t = time.perf_counter()
        prof = (
            str(Path(a.out).with_name(f"profile_{a.device}_{name}_{prec.split('-')[0]}.txt"))
            if prec.endswith("-profile")
            else ""
        )
        if name == "instructrl":
            cmd = [sys.executable, __file__, "--ours", str(work), str(path), str(iterations), prec, a.device, prof]
        else:
            cmd = [
                str(trl_py),
                str(HERE / "trl_run.py"),
                str(work),
                str(path),
                str(iterations),
                dtype,
                "--device",
                a.device,
            ] + (["--profile", prof] if prof else [])
            cmd += ["--fused-gelu"] if prec.endswith("fused-gelu") else []
        path.unlink(missing_ok=True)
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.run_timeout)
            failure = r.stderr[-4000:] if r.returncode != 0 else ""
        except subprocess.TimeoutExpired:
            failure = f"did not finish within --run-timeout {a.run_timeout} s"
        if failure:  # keep going: the other runs are still worth recording
            print(f"[bench] {name} {prec} FAILED:\n{failure}", flush=True)
            results[f"{name}_{prec}"] = {"failed": failure[-2000:]}
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        summ = summarize(rows, a.warmup, PROFILED if prof else ())
        R = sum(x.get("response_length", SETTING["response_length"]) for x in rows) / len(rows)
        fl = flops_per_iteration("ours" if name == "instructrl" else "trl", R)
        summ.update(
            flops_per_iteration=fl,
            achieved_gflops=fl / summ["iteration_s"] / 1e9,
            fraction_of_matmul_rate=fl / summ["iteration_s"] / 1e9 / rates[dtype],
            wall_s=time.perf_counter() - t,
        )
        results[f"{name}_{prec}"] = summ
        print(
            f"[bench] {name:10s} {prec}: {summ['episodes_per_s']:.1f} episodes/s, "
            f"{summ['iteration_s']:.3f} s/iteration, {fl / 1e9:.0f} GFLOP/iteration "
            f"({100 * summ['fraction_of_matmul_rate']:.2g}% of {dtype} matmul rate); "
            f"phases {summ.get('phase_s', '-')}; "
            f"scores {summ['score_curve'][:3]} ... {summ['score_curve'][-3:]}",
            flush=True,
        )
        out.update(speedups(results, rates))
        Path(a.out).write_text(json.dumps(out, indent=1))  # after every run: a later failure keeps these
    print(json.dumps({k: v for k, v in out.items() if k.startswith(("speedup", "fp32_bound"))}, indent=1))


def speedups(results: dict[str, dict], rates: dict[str, float]) -> dict[str, float]:
    """instructrl / TRL episodes/s ratios for every pair of runs measured so far."""
    eps = {k: v["episodes_per_s"] for k, v in results.items() if "episodes_per_s" in v}
    out = {}
    pairs = {
        "speedup_fp32": ("instructrl_fp32", "trl_fp32"),
        "speedup_bf16": ("instructrl_bf16", "trl_bf16"),
        "speedup_fp32_compile": ("instructrl_fp32-compile", "trl_fp32"),
        "speedup_vs_trl_fused_gelu": ("instructrl_fp32", "trl_fp32-fused-gelu"),
        "speedup_fp32_without_cuda_graphs": ("instructrl_fp32-nograph", "trl_fp32"),
        "speedup_bf16_without_cuda_graphs": ("instructrl_bf16-nograph", "trl_bf16"),
        # TRL's own default precision (bf16=True) against our CPU default (fp32)
        "speedup_vs_trl_default": ("instructrl_fp32", "trl_bf16"),
    }
    for key, (ours, theirs) in pairs.items():
        if ours in eps and theirs in eps:
            out[key] = eps[ours] / eps[theirs]
    if "instructrl_fp32" in eps and "trl_fp32" in eps:  # what 100% of the fp32 matmul rate would give
        out["fp32_bound_speedup"] = results["trl_fp32"]["iteration_s"] / (
            results["instructrl_fp32"]["flops_per_iteration"] / 1e9 / rates["fp32"]
        )
    return out


if __name__ == "__main__":
    main()
