"""Peak memory of short SFT and PPO runs with each memory lever on and off (the numbers of levers.md).

    .venv/bin/python benchmarks/scale/levers.py                 # every arm, a markdown table on stdout
    .venv/bin/python benchmarks/scale/levers.py --json          # the rows as JSON
    .venv/bin/python benchmarks/scale/levers.py --only sft      # the arms whose name starts with "sft"

Every arm is a real run through the Python API (run_sft / run_ppo) in a fresh process, on the CPU, fp32 compute
(``--mixed-precision no``), two threads. The model is a random GPT-2 of 12 layers, width 512, with the
vocabulary of the shipped small world model (2048 tokens): 39.5M parameters. Measured: the process's own peak
resident memory (``VmHWM``: plan_vs_measured.peak_mb) minus the peak it had after its imports, with glibc's mmap
threshold fixed at 128 KiB so that a freed tensor goes back to the system at once (otherwise peak RSS also counts
heap that glibc keeps after tensors are freed). Beside each, the planner's estimate for the same setting
(``instructrl plan`` on one device, ``--overhead 0``, no mixed precision), where it models the lever.

* SFT: 2 optimizer steps of 8 demonstrations of 256 tokens (one micro-batch), residual dropout 0.2.
* PPO: 2 iterations of 8 episodes (64-token prompts, 64 sampled tokens), one minibatch, no EMA, a random
  reward model of the policy's shape, the value model from it (or sharing the policy's base).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plan_vs_measured import peak_mb  # this folder

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "src" / "instructrl" / "resources" / "base_models" / "small"
SHAPE = dict(n_layer=12, n_embd=512, n_head=8, n_positions=512, vocab_size=2048)
LORA = dict(lora_r=16, lora_target_modules=["c_attn", "c_proj", "c_fc"])

# name -> (stage, the stage's config fields of the levers)
ARMS: dict[str, tuple[str, dict]] = {
    "sft full fp32": ("sft", {}),
    "sft full fp32 + checkpointing": ("sft", dict(gradient_checkpointing=True)),
    "sft lora fp32 base": ("sft", dict(LORA)),
    "sft lora fp32 base, no lora dropout": ("sft", dict(LORA, lora_dropout=0.0)),
    "sft lora bf16 base": ("sft", dict(LORA, torch_dtype="bf16")),
    "sft lora bf16 base + checkpointing": ("sft", dict(LORA, torch_dtype="bf16", gradient_checkpointing=True)),
    "ppo full fp32": ("ppo", {}),
    "ppo full fp32 + checkpointing": ("ppo", dict(gradient_checkpointing=True)),
    "ppo full + frozen bf16": ("ppo", dict(frozen_dtype="bf16")),
    "ppo lora policy": ("ppo", dict(LORA)),
    "ppo lora policy + lora value": ("ppo", dict(LORA, value_lora_r=16)),
    "ppo lora policy + shared-base value": ("ppo", dict(LORA, value_shares_policy_base=True)),
    "ppo lora + shared value + bf16 base + frozen bf16": (
        "ppo",
        dict(LORA, value_shares_policy_base=True, torch_dtype="bf16", frozen_dtype="bf16"),
    ),
    "ppo lora + lora value + bf16 + frozen bf16 + checkpointing": (
        "ppo",
        dict(LORA, value_lora_r=16, torch_dtype="bf16", frozen_dtype="bf16", gradient_checkpointing=True),
    ),
}
MB = 2**20
B, T, PROMPT, RESPONSE = 8, 256, 64, 64


def make_models(root: Path) -> Path:
    """A random GPT-2 folder (weights and the small world model's tokenizer) and an RM-format folder beside it."""
    import torch
    from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

    from instructrl.modeling.loading import load_tokenizer

    tok = load_tokenizer(str(SMALL))
    config = GPT2Config(
        **SHAPE, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root / "policy")
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(root / "rm")
    for d in ("policy", "rm"):
        tok.save_pretrained(root / d)
    return root


def run_arm(name: str, models: Path) -> dict:
    """One arm in this process, on the model folders in ``models`` (made by the parent: creating them here would
    raise this process's peak before the run starts)."""
    import torch

    torch.set_num_threads(2)
    stage, levers = ARMS[name]
    tmp = Path(tempfile.mkdtemp(prefix="levers-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for d in ("policy", "rm"):
        (tmp / d).symlink_to(models / d)
    common = dict(output_dir=str(tmp / "out"), mixed_precision="no", cpu=True, progress=False, seed=0)
    if stage == "sft":
        from instructrl.sft.api import run_sft
        from instructrl.sft.config import SFTConfig

        words = " ".join(f"fact {i} is {i * 7 % 13}." for i in range(400))  # longer than T: every row is full
        data = tmp / "demos.jsonl"
        data.write_text(
            "".join(json.dumps({"prompt": f"Tell me fact {i}.", "completion": words}) + "\n" for i in range(16))
        )
        cfg = SFTConfig(
            model=str(tmp / "policy"), data=str(data), max_steps=2, batch_size=B, max_length=T, eval_fraction=0.0,
            select_by="last", checkpoint_every=1000, keep_checkpoints=0, **common, **levers,
        )  # fmt: skip
        base, start = peak_mb(), time.perf_counter()
        run_sft(cfg)
    else:
        from instructrl.data.template import encode_prompt
        from instructrl.modeling.loading import load_tokenizer
        from instructrl.ppo.api import run_ppo
        from instructrl.ppo.config import PPOConfig

        tok = load_tokenizer(str(tmp / "policy"))
        word = next(w for w in (" fact", "fact", " is", "is") if len(tok(w)["input_ids"]) == 1)
        prompt = word * PROMPT
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for _ in range(B)))
        rendered = len(encode_prompt(tok, prompt))  # the instruction template's tokens around the prompt
        cfg = PPOConfig(
            policy=str(tmp / "policy"), reward_model=str(tmp / "rm"), prompts=str(prompts), total_episodes=2 * B,
            batch_size=B, mini_batch_size=B, max_prompt_length=rendered, response_length=RESPONSE,
            missing_eos_penalty=None, ema=False, sample_every=0, checkpoint_every=1000, keep_checkpoints=0,
            learning_rate=1e-5, warmup_iterations=0, **common, **levers,
        )  # fmt: skip
        base, start = peak_mb(), time.perf_counter()
        run_ppo(cfg)
    return {"peak_mb": peak_mb() - base, "seconds": time.perf_counter() - start}


def planned(stage: str, levers: dict) -> float | None:
    """The planner's total for the same setting, MiB (None where the planner does not take a lever)."""
    from instructrl.plan.arch import arch_from_config
    from instructrl.plan.config import PlanConfig
    from instructrl.plan.estimate import estimate

    fields = dict(
        model="random-gpt2", stage=stage, device="cpu", gpus=1, engine="ddp", mixed_precision="no", overhead=0.0,
        micro_batch_size=B, batch_size=B, mini_batch_size=B, ptx_micro_batch_size=0,
        prompt_length=T // 2 if stage == "sft" else PROMPT, response_length=T // 2 if stage == "sft" else RESPONSE,
        weight_dtype=levers.get("torch_dtype", "fp32"), gradient_checkpointing=levers.get("gradient_checkpointing", False),
        lora_r=levers.get("lora_r", 0), lora_targets=levers.get("lora_target_modules", []),
        value_shares_base=levers.get("value_shares_policy_base", False),
        frozen_dtype=levers.get("frozen_dtype", "auto"), lora_dropout=levers.get("lora_dropout"),
    )  # fmt: skip
    value_lora = levers.get("value_lora_r") or levers.get("value_shares_policy_base")
    if stage == "ppo" and levers.get("lora_r") and not value_lora:
        return None  # the planner gives every trained model the policy's LoRA: it has no fully trained value model
    try:
        cfg = PlanConfig(**fields)
        cfg.validate()
        return estimate(cfg, arch_from_config({"model_type": "gpt2", **SHAPE})).total / MB
    except Exception as e:  # a lever the planner refuses in this combination
        sys.stderr.write(f"plan for {stage} {levers}: {e}\n")
        return None


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in flags if f.startswith(("avx512", "amx", "avx2")) or f in ("fma", "f16c")]
    return f"{model}, {os.cpu_count()} cores; {' '.join(sorted(wanted))}"


def table(rows: list[dict]) -> str:
    lines = [
        "| arm | peak RSS, MiB | vs the lever off | planner, MiB (measured / planned) | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    base = {r["stage"]: r["peak_mb"] for r in rows if r["arm"] in ("sft full fp32", "ppo full fp32")}
    for r in rows:
        rel = r["peak_mb"] / base[r["stage"]] if r["stage"] in base else float("nan")
        planned_now = planned(r["stage"], r)  # the planner as it is now, for the row's levers
        plan = "-" if planned_now is None else f"{planned_now:.0f} ({r['peak_mb'] / planned_now:.2f})"
        lines.append(f"| {r['arm']} | {r['peak_mb']:.0f} | {rel:.2f} | {plan} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    ap.add_argument("--models", help=argparse.SUPPRESS)  # internal: the model folders the arm runs on
    ap.add_argument("--rows", metavar="ROWS.jsonl", help="also append each row to this file as it is measured")
    ap.add_argument("--only", default="", help="run only the arms whose name starts with this")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--table", metavar="ROWS", help="print the table of rows saved with --json or --rows, run nothing")
    args = ap.parse_args()
    if args.table:  # a --json output or a --rows file
        text = Path(args.table).read_text()
        rows = [json.loads(x) for x in text.splitlines() if x.strip()] if args.table.endswith(".jsonl") else None
        rows = rows if rows is not None else json.loads(text)["rows"]
        print(table(rows))
        return 0
    if args.arm:
        print(json.dumps(run_arm(args.arm, Path(args.models))))
        return 0
    models_root = Path(tempfile.mkdtemp(prefix="levers-models-"))
    atexit.register(shutil.rmtree, models_root, ignore_errors=True)
    models = make_models(models_root)
    env = {
        **os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }  # fmt: skip
    rows = []
    for name, (stage, levers) in ARMS.items():
        if not name.startswith(args.only):
            continue
        cmd = [sys.executable, __file__, "--arm", name, "--models", str(models)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            sys.stderr.write(f"{name}: failed\n{r.stderr[-3000:]}")
            return 1
        measured = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append({"arm": name, "stage": stage, **levers, **measured, "plan_mb": planned(stage, levers)})
        if args.rows:
            with open(args.rows, "a") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")
        sys.stderr.write(f"{name}: {measured['peak_mb']:.0f} MiB, {measured['seconds']:.0f} s\n")
    print(json.dumps({"cpu": cpu_flags(), "rows": rows}, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
