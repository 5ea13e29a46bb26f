"""The memory plan beside what training really holds: peak RSS of short CPU runs, minus the process's
baseline after its imports, next to `instructrl plan`'s parts for the same model and batch.

    .venv/bin/python benchmarks/scale/plan_vs_measured.py            # all arms, a table on stdout (~10 min)
    .venv/bin/python benchmarks/scale/plan_vs_measured.py --json     # the rows as JSON

Each arm runs in a fresh process (peak RSS only grows). The model is a random GPT-2 of 8 layers, width
512, with the vocabulary of the shipped small world model (2048 tokens): about 26M parameters, so that
model states and activations are both hundreds of MB and each step takes seconds on two cores.

Arms:
* loop: model + AdamW (torch's fused AdamW, as the stages build it on a CPU) and two optimizer steps of next-token
  training on random tokens, micro-batch B x T, fp32, with and without gradient checkpointing;
* sft: a real `instructrl sft` run (run_sft, two steps, residual dropout 0.2 as shipped) on the same
  model, whose demonstrations are all long enough to fill max_length.

The plan is asked for stage sft, one process (ddp) on a CPU, fp32 weights, no mixed precision, ``--overhead 0``:
each run is measured from its own peak after the imports, so the loaded libraries are left out on both sides.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "src" / "instructrl" / "resources" / "base_models" / "small"
MODEL = dict(model_type="gpt2", n_embd=512, n_layer=8, n_head=8, n_positions=512, vocab_size=2048)
ARMS = {
    "loop b1 t8 (model states)": dict(kind="loop", b=1, t=8, ckpt=False),
    "loop b8 t256": dict(kind="loop", b=8, t=256, ckpt=False),
    "loop b8 t256 ckpt": dict(kind="loop", b=8, t=256, ckpt=True),
    "loop b2 t512": dict(kind="loop", b=2, t=512, ckpt=False),
    "sft b8 t256": dict(kind="sft", b=8, t=256, ckpt=False),
    # one PPO-ptx iteration: 8 episodes of a 64-token prompt + 64 sampled tokens, 8 ptx windows of 256
    "ppo-ptx b8 p64 r64": dict(kind="ppo", b=8, t=128, ckpt=False, prompt=64, ptx=(8, 256)),
}
MB = 2**20


def peak_mb() -> float:
    """This process's own peak resident memory in MiB (``VmHWM``). Not ``ru_maxrss``: Linux carries the peak of the
    process that started this one (fork or vfork, then exec) into this one's ``ru_maxrss``, so a run started by a
    larger parent would report the parent's peak as its own baseline and understate its growth."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only)")


def current_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def saved_mb(model, ids) -> float:
    """What one forward keeps for its backward, exactly: the storages autograd saves (parameters aside)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids, use_cache=False)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params) / MB


def model_dir(root: Path, model: dict = MODEL) -> Path:
    """A random GPT-2's config (``model``) beside the small world model's tokenizer (no weights: load_causal_lm
    initializes it from the config)."""
    from transformers import GPT2Config

    d = root / "model"
    d.mkdir(parents=True, exist_ok=True)
    for f in SMALL.iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            (d / f.name).write_bytes(f.read_bytes())
    cfg = {k: v for k, v in model.items() if k != "model_type"}
    GPT2Config(**cfg, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=1, eos_token_id=0).save_pretrained(
        d
    )
    return d


def run_arm(name: str) -> dict:
    """One arm, in this process: the measured MB (after imports as the baseline)."""
    import torch

    torch.set_num_threads(2)
    arm = ARMS[name]
    tmp = Path(tempfile.mkdtemp(prefix="plan-vs-measured-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    path = model_dir(tmp)
    if arm["kind"] == "loop":
        from instructrl.modeling.loading import load_causal_lm, load_tokenizer

        tokenizer = load_tokenizer(str(path))
        base = peak_mb()
        torch.manual_seed(0)
        model = load_causal_lm(str(path), tokenizer)  # as the stages load it (fp32, fused GELU)
        if arm["ckpt"]:
            model.activation_checkpointing_enable()
        model.train()
        after_weights = current_mb() - base
        from instructrl.training.optim import fused_adamw

        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused_adamw(torch.device("cpu")))
        ids = torch.randint(0, MODEL["vocab_size"], (arm["b"], arm["t"]))
        states = 0.0
        for _ in range(2):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            states = max(states, current_mb() - base)  # weights + gradients + both moments, all live here
            opt.zero_grad(set_to_none=True)
        peak = peak_mb() - base
        return {"weights_mb": after_weights, "states_mb": states, "peak_mb": peak, "saved_mb": saved_mb(model, ids)}
    if arm["kind"] == "ppo":
        return run_ppo_arm(arm, path, tmp)
    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig

    words = " ".join(f"fact {i} is {i * 7 % 13}." for i in range(400))  # far longer than max_length
    data = tmp / "demos.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"Tell me fact {i}.", "completion": words}) + "\n" for i in range(16))
    )
    cfg = SFTConfig(
        model=str(path),
        data=str(data),
        output_dir=str(tmp / "out"),
        max_steps=2,
        batch_size=arm["b"],
        micro_batch_size=arm["b"],
        max_length=arm["t"],
        eval_fraction=0.0,
        mixed_precision="no",
        cpu=True,
        progress=False,
        select_by="last",
        checkpoint_every=1000,
        keep_checkpoints=0,
    )
    base = peak_mb()
    run_sft(cfg)
    return {"weights_mb": None, "states_mb": None, "peak_mb": peak_mb() - base, "saved_mb": None}


def ppo_world(root: Path, config_dir: Path, prompt: int, facts: int) -> dict[str, Path]:
    """A random policy and a random reward model of ``config_dir``'s shapes (the value model starts from the
    reward model, as in InstructGPT) with its tokenizer, prompts of exactly ``prompt`` tokens (a single-token word
    repeated) and ``facts`` sentences of pretraining text."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from instructrl.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(str(config_dir))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir)).save_pretrained(root / "policy")
    config = AutoConfig.from_pretrained(config_dir, num_labels=1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(root / "rm")
    for d in ("policy", "rm"):
        tokenizer.save_pretrained(root / d)
    word = next(w for w in ("fact", " fact", "is", " is") if len(tokenizer(w)["input_ids"]) == 1)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": word * prompt}) + "\n" for _ in range(8)))
    text = root / "ptx.txt"
    text.write_text(" ".join(f"fact {i} is {i * 7 % 13}." for i in range(facts)))
    return {"policy": root / "policy", "rm": root / "rm", "prompts": prompts, "ptx": text}


def run_ppo_arm(arm: dict, path: Path, tmp: Path) -> dict:
    """A real `instructrl ppo` iteration (PPO-ptx) with a random policy and a random reward model of the same
    shapes (the value model starts from the reward model, as in InstructGPT)."""
    from instructrl.ppo.api import run_ppo
    from instructrl.ppo.config import PPOConfig

    world = ppo_world(tmp, path, arm["prompt"], facts=4000)
    prompts, text = world["prompts"], world["ptx"]
    ptx_mb, ptx_len = arm["ptx"]
    cfg = PPOConfig(
        policy=str(tmp / "policy"),
        reward_model=str(tmp / "rm"),
        prompts=str(prompts),
        ptx_data=str(text),
        ptx_max_length=ptx_len,
        ptx_micro_batch_size=ptx_mb,
        ptx_per_episode=ptx_mb / arm["b"],
        output_dir=str(tmp / "out"),
        total_episodes=2 * arm["b"],  # two iterations: the second runs with the optimizer states allocated
        batch_size=arm["b"],
        mini_batch_size=arm["b"],
        max_prompt_length=arm["prompt"] + 8,
        response_length=arm["t"] - arm["prompt"],
        mixed_precision="no",
        cpu=True,
        progress=False,
        ema=False,
        sample_every=0,
        save_value_model=False,
    )
    base = peak_mb()
    run_ppo(cfg)
    metrics = [json.loads(line) for line in (tmp / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("ppo/ptx_loss" in m for m in metrics), "the run did no PPO-ptx step"
    return {"weights_mb": None, "states_mb": None, "peak_mb": peak_mb() - base, "saved_mb": None}


def planned(arm: dict) -> dict:
    from instructrl.plan.arch import arch_from_config
    from instructrl.plan.config import PlanConfig
    from instructrl.plan.estimate import estimate, layer_activation_bytes

    ppo = arm["kind"] == "ppo"
    prompt = arm.get("prompt", arm["t"] // 2)
    ptx_mb, ptx_len = arm.get("ptx", (0, 1))
    cfg = PlanConfig(
        model="gpt2-8x512",
        stage="ppo" if ppo else "sft",
        batch_size=arm["b"],
        mini_batch_size=arm["b"],
        ptx_micro_batch_size=ptx_mb,
        ptx_length=ptx_len,
        gpus=1,
        engine="ddp",
        device="cpu",
        weight_dtype="fp32",
        mixed_precision="no",
        overhead=0.0,
        micro_batch_size=arm["b"],
        prompt_length=prompt,
        response_length=arm["t"] - prompt,
        gradient_checkpointing=arm["ckpt"],
    )
    cfg.validate()
    arch = arch_from_config(MODEL)
    est = estimate(cfg, arch)
    if arm["kind"] == "loop":  # the plain loop has no residual dropout: take what its dropouts keep out
        b, t = arm["b"], arm["t"]
        masks = layer_activation_bytes(arch, b, t, 4, 4, dropout=True, cpu=True) - layer_activation_bytes(
            arch, b, t, 4, 4, dropout=False, cpu=True
        )
        est.parts["activations"] -= (1 if arm["ckpt"] else arch.num_layers) * masks
    p = {k: v / MB for k, v in est.parts.items()}
    return {
        "params": arch.lm_params,
        "plan_weights_mb": p["weights"],
        "plan_states_mb": p["weights"] + p["gradients"] + p["optimizer"],
        "plan_frozen_mb": p["frozen"],
        "plan_activations_mb": p["activations"],
        "plan_total_mb": est.total / MB,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| arm | planned states | planned frozen | planned activations | saved for backward (measured) "
        "| planned total | peak RSS, fixed mmap threshold | peak / plan | peak RSS, glibc default |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        saved = "-" if r["saved_mb"] is None else f"{r['saved_mb']:.0f}"
        lines.append(
            f"| {r['arm']} | {r['plan_states_mb']:.0f} | {r['plan_frozen_mb']:.0f} | {r['plan_activations_mb']:.0f} | "
            f"{saved} | {r['plan_total_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] / r['plan_total_mb']:.2f} | "
            f"{r['default_peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--table", metavar="ROWS.json", help="print the table of rows saved with --json, run nothing")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.arm:
        print(json.dumps(run_arm(args.arm)))
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    rows = []
    for name, arm in ARMS.items():
        row = {"arm": name, **arm, **planned(arm)}
        # glibc's default lets its mmap threshold grow with the tensors freed, then serves later tensors from a
        # heap it does not give back: peak RSS then counts freed memory. A fixed threshold returns each freed
        # tensor at once, as a GPU caching allocator would hold it for reuse: closer to the live bytes.
        for tag, extra in (("", {"MALLOC_MMAP_THRESHOLD_": "131072"}), ("default_", {})):
            r = subprocess.run(
                [sys.executable, __file__, "--arm", name],
                capture_output=True,
                text=True,
                env={**env, **extra},
                check=False,
            )
            if r.returncode:
                sys.stderr.write(r.stderr[-3000:])
                return 1
            measured = json.loads(r.stdout.strip().splitlines()[-1])
            row.update({tag + k: v for k, v in measured.items()})
        rows.append(row)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
