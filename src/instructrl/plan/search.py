"""The cheapest setting that fits: levers tried in order of what they cost, the first that fits wins.

Cost order, cheapest first (each step keeps the ones before it):

1. the setting as asked, on the engines ddp < fsdp2 (a DeepSpeed engine asked for is tried too: ZeRO-3 keeps
   16-bit weights over its own fp32 copy); PPO on fsdp2 or zero3 first samples on the policy gathered whole,
   then layer by layer (slower, two layers' memory);
2. frozen models (reference, reward) in bf16: no training change, scores in 16 bits;
3. gradient checkpointing: about a third more compute per step; then the micro-batch halved down to 1
   (more, smaller passes: the same batch, slower; PPO: the pretraining micro-batch), then PPO's rollout
   chunk (a smaller KV cache, slower sampling);
4. the optimizer states offloaded to CPU (zero3-offload, DeepSpeed's CPU Adam), then the frozen models in CPU
   memory too;
5. LoRA (rank 16 unless asked, bf16 base; PPO: the value model on the policy's base): fewer trained
   weights, a different model of the update;
6. LoRA on a 4-bit base (QLoRA): the base itself quantized.

Steps 5 and 6 walk checkpointing and the halvings again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from instructrl.plan.arch import Arch
from instructrl.plan.config import PlanConfig
from instructrl.plan.estimate import SHARDS_WEIGHTS, Estimate, estimate, micro_batch, rollout_batch

ENGINE_ORDER = ("ddp", "fsdp2")  # DeepSpeed engines (which the stages run too) are tried when asked for
# flags that describe the question, not the setting: never part of a suggestion's changes
NOT_LEVERS = ("search", "json", "gpu_tflops", "mfu", "hbm_bandwidth", "link_bandwidth", "network_bandwidth")


@dataclass
class Suggestion:
    cfg: PlanConfig
    estimate: Estimate
    steps: list[str]  # what changed from the asked setting, in words


def halvings(cfg: PlanConfig) -> Iterator[PlanConfig]:
    """``cfg``, then its micro-batch halved until 1 (the same batch in more, smaller passes); for PPO the
    pretraining micro-batch and then the rollout chunk instead: its minibatch share is one forward, and
    halving it would change the PPO update (more, smaller optimizer steps)."""
    yield cfg
    if cfg.stage != "ppo":
        mb = micro_batch(cfg)
        while mb > 1:
            mb //= 2
            yield dataclasses.replace(cfg, micro_batch_size=mb)
        return
    pmb = cfg.ptx_micro_batch_size
    while pmb > 1:
        pmb //= 2
        cfg = dataclasses.replace(cfg, ptx_micro_batch_size=pmb)
        yield cfg
    rb = rollout_batch(cfg)
    while rb > 1:
        rb //= 2
        yield dataclasses.replace(cfg, rollout_batch_size=rb)


def on_engines(cfg: PlanConfig, engines: tuple[str, ...] = ENGINE_ORDER) -> Iterator[PlanConfig]:
    """``cfg`` on each engine; PPO on fsdp2 (or zero3) also with the policy gathered layer by layer for sampling (slower:
    a collective per layer per token) after the faster whole gather."""
    for engine in engines:
        c = dataclasses.replace(cfg, engine=engine)
        yield c
        if engine in SHARDS_WEIGHTS and cfg.stage == "ppo" and cfg.rollout_gather == "whole":
            yield dataclasses.replace(c, rollout_gather="layer")


def candidates(cfg: PlanConfig) -> Iterator[tuple[str, PlanConfig]]:
    """(step, setting) in cost order (see the module docstring)."""
    replace = dataclasses.replace
    asked_engines = ENGINE_ORDER if cfg.engine in ENGINE_ORDER else (*ENGINE_ORDER, cfg.engine)
    for c in on_engines(cfg, asked_engines):
        yield "as asked", c
    if cfg.lora_r == 0:
        bf16 = replace(cfg, frozen_dtype="bf16")
        for c in on_engines(bf16):
            yield "frozen models in bf16", c
        ckpt = replace(bf16, gradient_checkpointing=True)
        for h in halvings(ckpt):
            for c in on_engines(h):
                yield "gradient checkpointing", c
        for placement in ("auto", "cpu"):
            for h in halvings(replace(ckpt, engine="zero3-offload", frozen_placement=placement)):
                for c in on_engines(h, ("zero3-offload",)):  # sampling on the policy whole, then layer by layer
                    yield "optimizer offloaded to CPU", c
    lora = replace(
        cfg,
        lora_r=cfg.lora_r or 16,
        weight_dtype="bf16",
        frozen_dtype="bf16",
        value_shares_base=cfg.stage == "ppo" and cfg.advantage == "gae",
        gradient_checkpointing=False,
    )
    # bitsandbytes' 4-bit layers need CUDA: a CPU plan never suggests them
    quants = ("4bit",) if cfg.quantize_base == "4bit" else ("none",) if cfg.device == "cpu" else ("none", "4bit")
    for quant in quants:
        step = "LoRA" if quant == "none" else "LoRA on a 4-bit base (QLoRA)"
        q = replace(lora, quantize_base=quant)
        for c in on_engines(q):
            yield step, c
        # the stages refuse a shared-base value model with checkpointing (the backward would recompute the value
        # layers with the policy's adapter on): checkpointed LoRA settings keep a value model of their own
        for h in halvings(replace(q, gradient_checkpointing=True, value_shares_base=False)):
            for c in on_engines(h):
                yield step + " + gradient checkpointing", c


def cheapest_fit(
    cfg: PlanConfig, policy: Arch, reward: Arch | None = None, value: Arch | None = None
) -> tuple[Suggestion | None, Suggestion]:
    """(the first setting in cost order that fits, or None; the smallest setting seen)."""
    limit = cfg.gpu_memory * 2**30
    smallest: Suggestion | None = None
    for step, c in candidates(cfg):
        est = estimate(c, policy, reward, value)
        layer = ", the policy gathered layer by layer for sampling" if c.rollout_gather != cfg.rollout_gather else ""
        found = Suggestion(c, est, [f"{step}, engine {c.engine}{layer}"])
        if est.total <= limit:
            return found, found
        if smallest is None or est.total < smallest.estimate.total:
            smallest = found
    assert smallest is not None
    return None, smallest


def flags(cfg: PlanConfig) -> str:
    """The ``instructrl plan`` command line of ``cfg``: the model and every lever that is not a default."""
    defaults = PlanConfig()
    out = [f"--model {cfg.model}"]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("model", *NOT_LEVERS) or value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{f.name.replace('_', '-')}")
        elif isinstance(value, list):
            out.append(f"{flag} {','.join(value)}")
        else:
            out.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return "instructrl plan " + " ".join(out)
