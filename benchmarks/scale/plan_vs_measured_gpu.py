"""The memory plan beside CUDA's own count: peak `torch.cuda.max_memory_allocated` of a few training steps of a
random Llama-style model (fp32 weights, bf16 autocast, SDPA, AdamW: how instructrl trains on a GPU), next to
`instructrl plan`'s parts for the same model and micro-batch.

    PYTHONPATH=src python benchmarks/scale/plan_vs_measured_gpu.py [--small] [--adamw fused|foreach] [--out rows.json]

``--adamw fused`` (the default) steps with torch's fused AdamW, as the stages do; ``foreach`` with torch's default
AdamW on a GPU, as the run recorded on 2026-11-28 did. Each row records which, and the plan counts that one's step.

The plan is asked for stage sft, one GPU, ddp, fp32 weights, bf16 mixed precision and no overhead (the CUDA
context is outside the allocator's count); the loop has no dropout, so the plan's residual-dropout masks are
taken out. ``--small`` runs a small model on whatever device there is (a check of the script itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from instructrl.plan.arch import arch_from_config
from instructrl.plan.config import PlanConfig
from instructrl.plan.estimate import ADAMW, estimate
from instructrl.training.optim import fused_adamw

GIB = 2**30
# about 0.85B parameters, grouped-query attention (16 heads, 4 KV heads), Llama's 32k vocabulary
MODEL = dict(
    model_type="llama",
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=4,
    vocab_size=32000,
)
SMALL = dict(MODEL, hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1000)  # fmt: skip
ARMS = [dict(b=4, t=1024, ckpt=False), dict(b=4, t=1024, ckpt=True), dict(b=16, t=512, ckpt=False)]


def planned(shape: dict, arm: dict, adamw: str) -> dict:
    arch = arch_from_config(shape)
    cfg = PlanConfig(
        model="random-llama",
        stage="sft",
        gpus=1,
        engine="ddp",
        weight_dtype="fp32",
        mixed_precision="bf16",
        overhead=0.0,
        micro_batch_size=arm["b"],
        prompt_length=arm["t"] // 2,
        response_length=arm["t"] - arm["t"] // 2,
        gradient_checkpointing=arm["ckpt"],
    )
    cfg.validate()
    est = estimate(cfg, arch, adamw=adamw)
    masks = (1 if arm["ckpt"] else arch.num_layers) * 2 * arm["b"] * arm["t"] * arch.hidden_size
    p = est.parts
    return {
        "params": arch.lm_params,
        "plan_states_gib": (p["weights"] + p["gradients"] + p["optimizer"]) / GIB,
        "plan_activations_gib": (p["activations"] - masks) / GIB,
        "plan_step_gib": est.step_bytes / GIB,
        # the activations' masks come off the total only where they are its largest transient
        "plan_total_gib": (est.total - max(0.0, min(masks, p["activations"] - est.step_bytes))) / GIB,
        # what autograd saves: the plan's activations less the loss's transients (16-bit logits, fp32 gradient)
        "plan_saved_gib": (p["activations"] - masks - arm["b"] * arm["t"] * arch.vocab_size * 6) / GIB,
    }


def table(result: dict) -> str:
    """The rows of a GPU run (``--out``), the plan's columns recomputed by the planner as it is now."""
    lines = [
        f"{result['device']}, torch {result['torch']}; GiB",
        "",
        "| arm | planned states | planned saved for backward | saved (measured) | planned step temporaries "
        "| planned total | peak allocated (measured) | peak / plan |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        arm = {k: r[k] for k in ("b", "t", "ckpt")}
        adamw = r.get("adamw", "foreach")  # rows recorded before --adamw stepped with torch's default
        p = planned(MODEL, arm, adamw)
        name = f"b{arm['b']} t{arm['t']}" + (" ckpt" if arm["ckpt"] else "") + f" ({adamw} AdamW)"
        lines.append(
            f"| {name} | {p['plan_states_gib']:.2f} | {p['plan_saved_gib']:.2f} | {r['saved_gib']:.2f} | "
            f"{p['plan_step_gib']:.2f} | {p['plan_total_gib']:.2f} | {r['peak_gib']:.2f} | "
            f"{r['peak_gib'] / p['plan_total_gib']:.2f} |"
        )
    return "\n".join(lines)


def saved_gib(model, ids, device) -> float:
    """What one forward keeps for its backward: the storages autograd saves (parameters aside)."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(device, dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids, use_cache=False)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params) / GIB


def measure(shape: dict, arm: dict, device: str, adamw: str) -> dict:
    cfg = LlamaConfig(**{k: v for k, v in shape.items() if k != "model_type"})
    torch.manual_seed(0)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated() if device == "cuda" else 0
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if arm["ckpt"]:  # the newer name first; older transformers only have gradient_checkpointing_enable
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    fused = fused_adamw(torch.device(device)) if adamw == "fused" else {}  # the stages' AdamW keyword
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **fused)
    ids = torch.randint(0, shape["vocab_size"], (arm["b"], arm["t"]), device=device)
    t0 = time.perf_counter()
    states = 0.0
    for _ in range(3):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        if device == "cuda":
            states = max(states, (torch.cuda.memory_allocated() - start) / GIB)
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    row = {"attn": model.config._attn_implementation, "seconds": time.perf_counter() - t0, "states_gib": states}
    if device == "cuda":
        row["peak_gib"] = (torch.cuda.max_memory_allocated() - start) / GIB
        row["reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    row["saved_gib"] = saved_gib(model, ids, device)
    del model, opt
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a small model, for checking the script")
    ap.add_argument("--adamw", choices=ADAMW, default="fused", help="AdamW's implementation (default: the stages')")
    ap.add_argument("--out", help="also write the rows to this JSON file")
    ap.add_argument("--table", metavar="ROWS.json", help="print the table of a saved run, run nothing")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = SMALL if args.small else MODEL
    arms = [dict(a, b=2, t=64) for a in ARMS[:2]] if args.small else ARMS
    rows = []
    for arm in arms:
        row = {**arm, "adamw": args.adamw, **planned(shape, arm, args.adamw), **measure(shape, arm, device, args.adamw)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                              "torch": torch.__version__, "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
