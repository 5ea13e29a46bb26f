"""`instructrl plan --model M --stage ppo --gpus 8 --gpu-memory 80`: per-GPU memory by part, whether it fits,
and the cheapest setting that does."""

from __future__ import annotations

import json

from instructrl.config import add_config_arguments, resolve_config
from instructrl.plan.arch import Arch, load_arch
from instructrl.plan.config import PlanConfig
from instructrl.plan.estimate import (
    GIB,
    PART_NAMES,
    PARTS,
    SHARDS_WEIGHTS,
    Estimate,
    estimate,
    micro_batch,
    ppo_episodes_per_second,
    rollout_batch,
)
from instructrl.plan.search import Suggestion, cheapest_fit, flags

# how accelerate launch selects each engine: the shipped configs (instructrl engines)
LAUNCH_FLAGS = {
    name: f"--config_file $(instructrl engines --path {name})"
    for name in ("ddp", "fsdp2", "zero2", "zero3", "zero3-offload")
}
RUNNABLE_ENGINES = ("ddp", "fsdp2", "zero2", "zero3")  # the --engine choices (zero3-offload: its launch config)


def configure(parser) -> None:
    add_config_arguments(parser, PlanConfig)
    parser.epilog = (
        "Reads config.json only (no weights). Example: instructrl plan --model meta-llama/Llama-2-7b-hf "
        "--stage ppo --gpus 8 --gpu-memory 80"
    )


def main(args) -> int:
    cfg = resolve_config(PlanConfig, args)
    policy = load_arch(cfg.model)
    reward = load_arch(cfg.reward_config) if cfg.reward_config else policy
    value = load_arch(cfg.value_config) if cfg.value_config else reward
    plan = make_plan(cfg, policy, reward, value)
    print(json.dumps(plan, indent=2) if cfg.json else render(plan))
    return 0


def stage_flags(cfg: PlanConfig, policy: Arch) -> tuple[list[str], list[str]]:
    """The setting as flags of ``instructrl STAGE`` (models and data left to the user), and the levers the
    stages do not have as flags yet."""
    out = [f"--mixed-precision {cfg.mixed_precision}"]
    if cfg.gradient_checkpointing:
        out.append("--gradient-checkpointing")
    if cfg.lora_r:
        out.append(f"--lora-r {cfg.lora_r}")
        if cfg.lora_targets:  # the module names themselves ("all-linear" spelled out)
            names = dict.fromkeys(m.name for m in policy.lora_targets(cfg.lora_targets))
            out.append(f"--lora-target-modules {','.join(names)}")
        if cfg.lora_dropout is not None and cfg.stage in ("sft", "rm"):
            out.append(f"--lora-dropout {cfg.lora_dropout:g}")
        if cfg.weight_dtype != "fp32":
            out.append(f"--torch-dtype {cfg.weight_dtype}")  # the stages store only a frozen LoRA base in 16 bits
    if cfg.quantize_base != "none":
        out.append(f"--quantize-base {cfg.quantize_base}")
    if cfg.value_shares_base:
        out.append("--value-shares-policy-base")
    if cfg.stage in ("ppo", "dpo") and cfg.frozen_dtype != "auto":  # 'weights' is the planner's own: said as a dtype
        out.append(f"--frozen-dtype {cfg.weight_dtype if cfg.frozen_dtype == 'weights' else cfg.frozen_dtype}")
    mb = micro_batch(cfg)
    if cfg.stage == "ppo":
        out += [f"--batch-size {cfg.batch_size}", f"--mini-batch-size {mb * cfg.world}"]
        out += [f"--rollout-batch-size {rollout_batch(cfg)}", f"--ptx-micro-batch-size {cfg.ptx_micro_batch_size}"]
        out += [f"--max-prompt-length {cfg.prompt_length}", f"--response-length {cfg.response_length}"]
        if cfg.advantage != "gae":
            out.append(f"--advantage {cfg.advantage}")
    else:  # DPO's micro-batch counts pairs
        out += [f"--micro-batch-size {max(1, mb // 2) if cfg.stage == 'dpo' else mb}"]
        out.append(f"--max-length {cfg.prompt_length + cfg.response_length}")
    if cfg.engine in RUNNABLE_ENGINES and cfg.world > 1:
        out.append(f"--engine {cfg.engine}")
    if cfg.stage == "ppo" and cfg.engine in SHARDS_WEIGHTS and cfg.rollout_gather != "whole":
        out.append(f"--rollout-gather {cfg.rollout_gather}")
    if cfg.stage == "ppo" and cfg.frozen_placement != "auto":
        out.append(f"--frozen-placement {cfg.frozen_placement}")
    missing = [
        name
        for name, on in (
            (
                "frozen models in CPU memory outside PPO (frozen_placement=cpu)",
                cfg.frozen_placement == "cpu" and cfg.stage != "ppo",
            ),
            (
                "a quantized base under a sharding engine (the stages run --quantize-base on ddp)",
                cfg.quantize_base != "none" and cfg.engine != "ddp",
            ),
        )
        if on
    ]
    return out, missing


def launch_command(cfg: PlanConfig, policy: Arch) -> str:
    """An ``accelerate launch`` line for node 0 of the setting (each node runs it with its own rank); on CPUs a
    ``torchrun`` line (accelerate picks FSDP and DeepSpeed only on GPUs; the stage's ``--engine`` does it there)."""
    if cfg.device == "cpu":
        nodes = f" --nnodes {cfg.nodes} --node_rank 0 --master_addr NODE0 --master_port 29500" if cfg.nodes > 1 else ""
        flags, _ = stage_flags(cfg, policy)
        engine = [] if "--engine" in " ".join(flags).split() else ["--engine", cfg.engine]
        return f"torchrun --nproc_per_node {cfg.gpus}{nodes} -m instructrl {cfg.stage} ... " + " ".join(
            [*flags, *engine, "--cpu"]
        )
    machines = f" --num_machines {cfg.nodes} --machine_rank 0 --main_process_ip NODE0 --main_process_port 29500"
    mp = "no" if cfg.mixed_precision == "no" else cfg.mixed_precision
    return (
        f"accelerate launch {LAUNCH_FLAGS[cfg.engine]} --num_processes {cfg.world}"
        + (machines if cfg.nodes > 1 else "")
        + f" --mixed_precision {mp} -m instructrl {cfg.stage} ... "
        + " ".join(stage_flags(cfg, policy)[0])
    )


def _summary(cfg: PlanConfig, est: Estimate, policy: Arch) -> dict:
    total = est.total
    limit = cfg.gpu_memory * GIB
    out = {
        "setting": {
            **{k: v for k, v in vars(cfg).items() if k not in ("json", "search")},
            "overhead": cfg.effective_overhead,  # the defaults resolved: the device's, the stage's
            "lora_dropout": cfg.effective_lora_dropout if cfg.lora_r else cfg.lora_dropout,
        },
        "parts_gib": {k: round(est.parts[k] / GIB, 3) for k in PARTS},
        "notes": est.notes,
        "total_gib": round(total / GIB, 3),
        "gpu_memory_gib": cfg.gpu_memory,
        "fits": total <= limit,
        "headroom_gib": round((limit - total) / GIB, 3),
        "cpu_gib_per_node": round(est.cpu_bytes * cfg.gpus / GIB, 3),
        "detail_gib": {k: round(v / GIB, 3) for k, v in est.detail.items()},
        "launch": launch_command(cfg, policy),
        "not_stage_flags_yet": stage_flags(cfg, policy)[1],
    }
    if cfg.stage == "ppo" and cfg.device == "gpu":  # the speed model is a GPU's (FLOPs, HBM and link bandwidths)
        out["episodes_per_second"] = round(ppo_episodes_per_second(cfg, est, policy), 4)
    return out


def make_plan(cfg: PlanConfig, policy: Arch, reward: Arch, value: Arch) -> dict:
    est = estimate(cfg, policy, reward, value)
    plan = {
        "model": {
            "source": cfg.model,
            "model_type": policy.model_type,
            "params": policy.lm_params,
            "layers": policy.num_layers,
            "hidden": policy.hidden_size,
            "heads": policy.num_heads,
            "kv_heads": policy.num_kv_heads,
            "vocab": policy.vocab_size,
        },
        "params_by_role": est.sizes,
        **_summary(cfg, est, policy),
    }
    if cfg.search:
        found, smallest = cheapest_fit(cfg, policy, reward, value)
        plan["suggestion"] = _suggestion(found, policy) if found else None
        if not found:
            plan["smallest"] = _suggestion(smallest, policy)
    return plan


def _suggestion(s: Suggestion, policy: Arch) -> dict:
    return {"step": s.steps[0], "command": flags(s.cfg), **_summary(s.cfg, s.estimate, policy)}


def render(plan: dict) -> str:
    """The plan as a table for a terminal."""
    m, s = plan["model"], plan["setting"]
    unit = _unit(s)
    devices = f"{s['gpus']} {'processes' if unit == 'process' else 'GPUs'}"
    lines = [
        f"{s['stage']} of {m['model_type']} ({m['params'] / 1e9:.2f}B parameters, {m['layers']} layers) on "
        f"{s['nodes']} x {devices} of {s['gpu_memory']:g} GiB, engine {s['engine']}",
        "",
        f"{'part':<28}{'GiB/' + ('proc' if unit == 'process' else 'GPU'):>9}  note",
    ]
    for k in PARTS:
        lines.append(f"{PART_NAMES[k]:<28}{plan['parts_gib'][k]:>9.2f}  {plan['notes'].get(k, '')}".rstrip())
    lines.append(f"{'total (peak)':<28}{plan['total_gib']:>9.2f}  activations, rollout, optimizer step: the largest")
    lines.append("")
    lines.append(_verdict(plan))
    if plan.get("cpu_gib_per_node"):
        lines.append(f"CPU memory per node: {plan['cpu_gib_per_node']:.1f} GiB")
    if "episodes_per_second" in plan:
        lines.append(
            f"expected: {plan['episodes_per_second']:.2f} episodes/s (assumed: --mfu, --gpu-tflops, bandwidths)"
        )
    if "suggestion" in plan:
        lines.append("")
        sug = plan["suggestion"]
        if sug:
            lines.append(f"cheapest setting that fits ({sug['step']}): {_verdict(sug)}")
            lines.append(f"  {sug['command']}")
            lines.append(f"  launch: {sug['launch']}")
            if sug["not_stage_flags_yet"]:
                lines.append(f"  not yet a flag of instructrl {s['stage']}: {'; '.join(sug['not_stage_flags_yet'])}")
            if sug["cpu_gib_per_node"]:
                lines.append(f"  CPU memory per node: {sug['cpu_gib_per_node']:.1f} GiB")
            if "episodes_per_second" in sug:
                lines.append(f"  expected: {sug['episodes_per_second']:.2f} episodes/s")
        else:
            small = plan["smallest"]
            lines.append(
                f"no setting fits in {s['gpu_memory']:g} GiB per {unit}: the smallest found needs "
                f"{small['total_gib']:.1f} GiB per {unit} ({small['step']}); add {unit}es or nodes, or plan a smaller "
                "model"
            )
            lines.append(f"  {small['command']}")
    return "\n".join(lines)


def _unit(setting: dict) -> str:
    return "process" if setting.get("device") == "cpu" else "GPU"


def _verdict(p: dict) -> str:
    if p["fits"]:
        return f"fits: {p['total_gib']:.1f} of {p['gpu_memory_gib']:g} GiB, headroom {p['headroom_gib']:.1f} GiB"
    return (
        f"does not fit: needs {p['total_gib']:.1f} GiB per {_unit(p['setting'])}, {-p['headroom_gib']:.1f} GiB over "
        f"{p['gpu_memory_gib']:g}"
    )
