"""The planner's arithmetic against hand-computed cases, and its search."""

from __future__ import annotations

import dataclasses

import pytest

from instructrl.cli import build_parser
from instructrl.config import resolve_config
from instructrl.errors import ConfigError
from instructrl.plan.arch import arch_from_config
from instructrl.plan.config import PlanConfig
from instructrl.plan.estimate import (
    GIB,
    Model,
    activation_bytes,
    estimate,
    kv_cache_bytes,
    layer_activation_bytes,
    ppo_episodes_per_second,
)
from instructrl.plan.search import candidates, cheapest_fit, flags

LLAMA_7B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}
LLAMA_7B = arch_from_config(LLAMA_7B_CONFIG)
LLAMA_70B = arch_from_config(
    {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_attention_heads": 64,
        "num_hidden_layers": 80,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    }
)


def plan(**kw) -> PlanConfig:
    cfg = PlanConfig(model="llama-7b", **kw)
    cfg.validate()
    return cfg


def states(est) -> float:
    return est.parts["weights"] + est.parts["gradients"] + est.parts["optimizer"]


def test_llama_7b_has_its_published_size():
    assert LLAMA_7B.lm_params == 6_738_415_616  # Llama 2 7B, counted by transformers
    assert LLAMA_70B.lm_params == 68_976_648_192  # Llama 2 70B


@pytest.mark.parametrize("weight_dtype", ["fp32", "bf16"])
def test_full_fine_tune_with_adamw_is_16_bytes_per_parameter(weight_dtype):
    # fp32: 4 weights + 4 grads + 8 moments; bf16: 2 + 2 + 4 master + 8 moments (Rajbhandari et al. 2020 §3.1)
    est = estimate(plan(stage="sft", gpus=1, weight_dtype=weight_dtype), LLAMA_7B)
    n = LLAMA_7B.lm_params
    assert states(est) == 16 * n
    assert est.parts["frozen"] == 0 and est.parts["rollout"] == 0


def test_ddp_on_several_gpus_keeps_a_second_gradient_copy():
    n = LLAMA_7B.lm_params
    est = estimate(plan(stage="sft", gpus=8), LLAMA_7B)
    assert est.parts["gradients"] == 2 * 4 * n and states(est) == 20 * n


def test_zero2_shards_gradients_and_optimizer_zero3_everything():
    n, g = LLAMA_7B.lm_params, 8
    z2 = estimate(plan(stage="sft", gpus=g, engine="zero2", weight_dtype="bf16"), LLAMA_7B)
    bucket = LLAMA_7B.hidden_size**2 * 2  # DeepSpeed's gradient bucket, hidden² 16-bit elements
    assert states(z2) == pytest.approx(2 * n + 14 * n / g + bucket)  # ZeRO paper: 2 + 14/N bytes per parameter
    z3 = estimate(plan(stage="sft", gpus=g, engine="zero3", weight_dtype="bf16"), LLAMA_7B)
    gathered = 2 * max(LLAMA_7B.layer_params, LLAMA_7B.embedding_params) * 2  # two 16-bit units in flight
    assert states(z3) == pytest.approx(16 * n / g + gathered + bucket)
    fsdp = estimate(plan(stage="sft", gpus=4, nodes=2, engine="fsdp2", weight_dtype="bf16"), LLAMA_7B)
    assert states(fsdp) == pytest.approx(states(z3) - bucket)  # sharding spans the nodes: 4 x 2 = 8 GPUs


def test_offload_moves_the_optimizer_states_to_cpu():
    n = LLAMA_7B.lm_params
    est = estimate(plan(stage="sft", gpus=8, engine="zero3-offload"), LLAMA_7B)
    assert est.parts["optimizer"] == 0
    # DeepSpeed in bf16: 16-bit weights and gradients on the GPUs, fp32 master + moments in CPU memory
    assert est.cpu_bytes == pytest.approx(12 * n / 8)
    assert est.parts["gradients"] == pytest.approx(2 * n / 8 + 2 * LLAMA_7B.hidden_size**2)  # + the bucket


def test_a_gpt_layer_reduces_to_korthikanti_et_al():
    # GPT layer, 16-bit activations and stream, eager attention with dropout: 34·sbh + 5·a·s²·b bytes
    gpt = arch_from_config({"model_type": "gpt2", "n_embd": 256, "n_layer": 2, "n_head": 8, "vocab_size": 100})
    b, s, h, a = 3, 64, 256, 8
    got = layer_activation_bytes(gpt, b, s, 2, 2, dropout=True, flash=False)
    assert got == 34 * s * b * h + 5 * a * s * s * b
    # with SDPA the s x s term becomes a 4-byte log-sum-exp per head and row
    assert layer_activation_bytes(gpt, b, s, 2, 2, dropout=True) == 34 * s * b * h + 4 * a * s * b


def test_checkpointing_keeps_each_layers_input_and_one_layer():
    cfg = plan(stage="sft", gpus=1, micro_batch_size=2)
    full = estimate(cfg, LLAMA_7B).parts["activations"]
    ck = estimate(dataclasses.replace(cfg, gradient_checkpointing=True), LLAMA_7B).parts["activations"]
    b, T, h, L = 2, 384, 4096, 32
    layer = layer_activation_bytes(LLAMA_7B, b, T, 2, 4, dropout=True)
    # and autocast's 16-bit weight copies: every layer's without checkpointing, one layer's with it
    casts = 2 * (L - 1) * sum(m.d_in * m.d_out for m in LLAMA_7B.linears)
    assert full - ck == pytest.approx((L - 1) * layer - L * b * T * h * 4 + casts)


def test_kv_cache_by_hand():
    # Llama 2 70B: 80 layers, 8 KV heads of 128; 4 sequences of 1000 tokens in bf16
    assert kv_cache_bytes(LLAMA_70B, 4, 1000, 2) == 2 * 80 * 8 * 128 * 1000 * 4 * 2


def test_ppo_holds_two_trained_and_two_frozen_models():
    n = LLAMA_7B.lm_params
    head = LLAMA_7B.hidden_size
    v = LLAMA_7B.backbone_params + head
    est = estimate(plan(gpus=1, frozen_dtype="bf16"), LLAMA_7B)
    assert states(est) == 16 * (n + v)
    assert est.parts["frozen"] == 2 * (n + v)  # reference (an LM) + reward model (backbone + scalar head)
    assert est.sizes == {"policy": n, "value": v, "reference": n, "reward": v}


def test_ppo_lora_reference_is_free_and_a_shared_value_adds_adapter_and_head():
    n, h = LLAMA_7B.lm_params, LLAMA_7B.hidden_size
    r = 8
    adapters = 32 * r * (4096 + 4096) * 2  # q_proj and v_proj (peft's default for Llama) in 32 layers
    assert LLAMA_7B.lora_params(r, []) == adapters
    cfg = plan(gpus=1, lora_r=r, weight_dtype="bf16", frozen_dtype="bf16", value_shares_base=True)
    est = estimate(cfg, LLAMA_7B)
    # the policy's base once (bf16), the policy's and the value's adapters + the value head in fp32
    assert est.parts["weights"] == 2 * n + 4 * (adapters + adapters + h)
    assert est.parts["gradients"] == 4 * (2 * adapters + h)
    assert est.parts["optimizer"] == 8 * (2 * adapters + h)
    assert est.parts["frozen"] == 2 * (LLAMA_7B.backbone_params + h)  # the reward model only
    qlora = estimate(dataclasses.replace(cfg, quantize_base="4bit"), LLAMA_7B)
    assert qlora.parts["weights"] < est.parts["weights"] / 3


def test_search_returns_the_first_candidate_that_fits():
    cfg = plan(gpus=8, gpu_memory=80)
    found, _ = cheapest_fit(cfg, LLAMA_7B)
    assert found is not None and found.estimate.total <= 80 * GIB
    for step, c in candidates(cfg):  # every cheaper candidate does not fit
        if c == found.cfg:
            break
        assert estimate(c, LLAMA_7B).total > 80 * GIB, step
    assert found.cfg.engine != "ddp"  # 7B PPO-ptx in full needs sharding on 80 GB GPUs
    assert "--engine" in flags(found.cfg)


def test_search_keeps_the_setting_as_asked_when_it_fits():
    cfg = plan(stage="sft", gpus=1, gpu_memory=1000)
    found, _ = cheapest_fit(cfg, LLAMA_7B)
    assert found.cfg == dataclasses.replace(cfg, engine="ddp")


def test_search_says_none_when_nothing_fits():
    cfg = plan(gpus=1, gpu_memory=8)
    found, smallest = cheapest_fit(cfg, LLAMA_70B)
    assert found is None
    assert smallest.estimate.total > 8 * GIB
    assert smallest.cfg.quantize_base == "4bit"  # the last resort was tried


def test_70b_fits_on_four_nodes_of_eight_80gb_gpus():
    found, _ = cheapest_fit(plan(gpus=8, nodes=4, gpu_memory=80), LLAMA_70B)
    assert found is not None and found.cfg.engine in ("fsdp2", "zero3", "zero3-offload")


def test_models_are_counted_like_their_heads():
    assert Model("reward", LLAMA_7B, False).params == LLAMA_7B.backbone_params + 4096
    assert Model("policy", LLAMA_7B, True).params == LLAMA_7B.lm_params


def test_episodes_per_second_from_flops_when_bandwidth_is_no_limit():
    # every pass at the assumed utilization: 2N per token forward, 6N forward + backward (Kaplan et al. 2020)
    cfg = plan(gpus=8, ptx_micro_batch_size=0, hbm_bandwidth=1e12, link_bandwidth=1e12, frozen_dtype="bf16")
    est = estimate(cfg, LLAMA_7B)
    n, v = LLAMA_7B.lm_params, LLAMA_7B.backbone_params + 4096
    P, R = 256, 128
    flops = 2 * n * P + 2 * n * R + 2 * (P + R) * (n + n + v + v) + 6 * (P + R) * (n + v)
    expected = 8 * 989e12 * 0.35 / flops
    assert ppo_episodes_per_second(cfg, est, LLAMA_7B) == pytest.approx(expected, rel=1e-9)


def test_sampling_a_policy_sharded_across_nodes_waits_on_the_network():
    one = plan(gpus=8, engine="fsdp2", rollout_gather="layer")  # a gather per layer per sampled token
    four = dataclasses.replace(one, gpus=2, nodes=4)  # the same 8 GPUs, in four nodes
    fast = ppo_episodes_per_second(one, estimate(one, LLAMA_7B), LLAMA_7B)
    slow = ppo_episodes_per_second(four, estimate(four, LLAMA_7B), LLAMA_7B)
    assert slow < 0.6 * fast
    # gathered whole once per rollout, the network costs one gather, not one per token
    whole = dataclasses.replace(four, rollout_gather="whole")
    assert ppo_episodes_per_second(whole, estimate(whole, LLAMA_7B), LLAMA_7B) > 0.9 * fast


def test_a_lora_setting_that_fits_is_suggested_as_asked():
    cfg = plan(gpus=8, nodes=4, lora_r=16, weight_dtype="bf16", gradient_checkpointing=True)
    found, _ = cheapest_fit(cfg, LLAMA_70B)
    # a 70B policy gathered whole for sampling (140 GB in bf16) fits no GPU: sampling gathers layer by layer
    assert found.steps == ["as asked, engine fsdp2, the policy gathered layer by layer for sampling"]
    assert found.cfg == dataclasses.replace(cfg, engine="fsdp2", rollout_gather="layer")
    whole = estimate(dataclasses.replace(cfg, engine="fsdp2"), LLAMA_70B)
    assert whole.parts["rollout"] - found.estimate.parts["rollout"] == pytest.approx(LLAMA_70B.lm_params * 2)


def test_a_shared_value_base_with_checkpointing_is_refused_as_the_stage_refuses_it():
    with pytest.raises(ConfigError, match="value_shares_base with gradient_checkpointing"):
        plan(gpus=1, lora_r=16, value_shares_base=True, gradient_checkpointing=True)
    for _, c in candidates(plan(gpus=1, gpu_memory=1)):
        assert not (c.value_shares_base and c.gradient_checkpointing)


def test_a_critic_free_estimator_trains_no_value_model():
    gae = estimate(plan(gpus=1), LLAMA_7B)
    grpo = estimate(plan(gpus=1, advantage="grpo"), LLAMA_7B)
    v = LLAMA_7B.backbone_params + LLAMA_7B.hidden_size
    assert states(gae) - states(grpo) == 16 * v
    assert "value" not in grpo.sizes and grpo.parts["frozen"] == gae.parts["frozen"]
    found, _ = cheapest_fit(plan(gpus=1, gpu_memory=40, advantage="rloo"), LLAMA_7B)
    assert found is not None and not found.cfg.value_shares_base


def test_fused_adamw_steps_in_place_zero_flattens_gradients_offloaded_cpu_adam_none():
    """The stages' fused AdamW allocates nothing in its step; DeepSpeed ZeRO-2/3 first copy the partition's gradients
    into a flat fp32 tensor; torch's foreach AdamW (its GPU default) holds one more fp32 temporary per parameter."""
    n = LLAMA_7B.lm_params
    ddp = estimate(plan(stage="sft", gpus=1, micro_batch_size=1, gradient_checkpointing=True), LLAMA_7B)
    assert ddp.step_bytes == 0
    assert ddp.total == pytest.approx(
        sum(ddp.parts[k] for k in ("weights", "gradients", "optimizer", "frozen", "overhead", "activations"))
    )
    foreach = estimate(
        plan(stage="sft", gpus=1, micro_batch_size=1, gradient_checkpointing=True), LLAMA_7B, adamw="foreach"
    )
    assert foreach.step_bytes == 4 * n
    assert foreach.step_bytes > foreach.parts["activations"]  # here the step is the peak
    assert foreach.total == pytest.approx(ddp.total - ddp.parts["activations"] + 4 * n)
    assert estimate(plan(stage="sft", gpus=8, engine="fsdp2"), LLAMA_7B).step_bytes == 0
    assert estimate(plan(stage="sft", gpus=8, engine="fsdp2"), LLAMA_7B, adamw="foreach").step_bytes == 4 * n / 8
    for engine in ("zero2", "zero3"):
        assert estimate(plan(stage="sft", gpus=8, engine=engine), LLAMA_7B).step_bytes == 4 * n / 8
        assert estimate(plan(stage="sft", gpus=8, engine=engine), LLAMA_7B, adamw="foreach").step_bytes == 8 * n / 8
    assert estimate(plan(stage="sft", gpus=8, engine="zero3-offload"), LLAMA_7B, adamw="foreach").step_bytes == 0
    with pytest.raises(ValueError, match="adamw must be one of"):
        estimate(plan(stage="sft", gpus=1), LLAMA_7B, adamw="sgd")


def test_suggested_flags_parse_back_to_the_same_setting():
    found, _ = cheapest_fit(plan(gpus=8, nodes=4, gpu_memory=80, reward_config="rm.json"), LLAMA_70B)
    words = flags(found.cfg).split()[2:]  # after "instructrl plan"
    parser, _ = build_parser("plan")
    again = resolve_config(PlanConfig, parser.parse_args(words))
    assert again == found.cfg


def test_the_optimizer_step_is_counted_alike_on_a_cpu_and_a_gpu():
    """Both devices run the same fused AdamW: a CPU plan differs from a GPU's in no part but the runtime's
    overhead, LoRA included."""
    gpt2 = arch_from_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257})
    for kw in (dict(engine="ddp"), dict(engine="fsdp2"), dict(engine="zero3"), dict(engine="ddp", lora_r=8)):
        gpu = estimate(plan(stage="ppo", gpus=2, mixed_precision="no", overhead=1.0, **kw), gpt2)
        cpu = estimate(plan(stage="ppo", gpus=2, mixed_precision="no", device="cpu", overhead=1.0, **kw), gpt2)
        assert cpu.step_bytes == gpu.step_bytes and cpu.parts == gpu.parts, kw


def test_a_sharding_engine_counts_the_largest_unit_gradient_being_reduced():
    """FSDP2 holds a unit's whole gradient and the reduce-scatter input copied from it; DeepSpeed the parameter's
    whole gradient beside its bucket: the largest unit (here a decoder layer) sets that moment of the backward."""
    unit = LLAMA_7B.layer_params
    assert unit > LLAMA_7B.embedding_params
    ddp = estimate(plan(stage="sft", gpus=8, engine="ddp"), LLAMA_7B)
    fsdp = estimate(plan(stage="sft", gpus=8, engine="fsdp2"), LLAMA_7B)
    zero3 = estimate(plan(stage="sft", gpus=8, engine="zero3"), LLAMA_7B)
    assert "gradient_reduce" not in ddp.detail
    assert fsdp.detail["gradient_reduce"] == 2 * unit * 2  # bf16 gradients of a bf16-gathered unit
    assert zero3.detail["gradient_reduce"] == unit * 2
    lora = estimate(plan(stage="sft", gpus=8, engine="fsdp2", lora_r=8), LLAMA_7B)
    assert "gradient_reduce" not in lora.detail


def test_fsdp2_ppo_holds_each_trained_model_root_unit_and_reduces_both():
    """FSDP2 keeps each model's root unit (embedding and head) gathered from its forward to its backward, and PPO
    backwards policy and value model together: one more gathered unit and two units' gradients being reduced."""
    gpt2 = arch_from_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257})
    unit = gpt2.embedding_params
    assert unit > gpt2.layer_params
    kw = dict(gpus=2, engine="fsdp2", mixed_precision="no", device="cpu")
    sft = estimate(plan(stage="sft", **kw), gpt2)
    ppo = estimate(plan(stage="ppo", **kw), gpt2)
    n = gpt2.lm_params
    assert sft.parts["weights"] == pytest.approx(4 * n / 2 + 2 * 4 * unit)  # a unit and the next, prefetched
    two = ppo.sizes["policy"] + ppo.sizes["value"]
    assert ppo.parts["weights"] == pytest.approx(4 * two / 2 + 3 * 4 * unit)  # + the value model's root
    assert sft.detail["gradient_reduce"] == 2 * 4 * unit
    assert ppo.detail["gradient_reduce"] == 2 * 2 * 4 * unit


def test_lora_keeps_no_input_for_a_frozen_linear_or_head():
    """With LoRA on c_attn only, a GPT-2 layer keeps neither the MLP's input nor the MLP projection's input (the
    frozen c_fc and c_proj need only their weights in the backward); SDPA keeps the attention output anyway. The
    frozen LM head keeps no input either; a trained scalar head does."""
    gpt = arch_from_config({"model_type": "gpt2", "n_embd": 256, "n_layer": 2, "n_head": 8, "vocab_size": 100})
    b, s, h, inter = 2, 16, 256, 1024
    full = layer_activation_bytes(gpt, b, s, 4, 4, dropout=False)
    lora = layer_activation_bytes(gpt, b, s, 4, 4, dropout=False, trained=frozenset({"c_attn"}))
    assert full - lora == b * s * (h + inter) * 4
    every = frozenset(m.name for m in gpt.linears)
    assert layer_activation_bytes(gpt, b, s, 4, 4, dropout=False, trained=every) == full
    policy, reward = Model("policy", gpt, True), Model("reward", gpt, False)
    kw = dict(checkpointing=False, dropout=False)
    head = b * s * h * 4
    assert (
        activation_bytes(policy, b, s, 4, 4, **kw)
        - activation_bytes(policy, b, s, 4, 4, trained=frozenset({"c_attn"}), **kw)
        == gpt.num_layers * (full - lora) + head
    )
    assert activation_bytes(reward, b, s, 4, 4, **kw) - activation_bytes(
        reward, b, s, 4, 4, trained=frozenset({"c_attn"}), **kw
    ) == gpt.num_layers * (full - lora)


def test_frozen_auto_counts_the_reward_model_as_saved_and_the_reference_as_the_policy():
    """'auto' is instructrl ppo's default: the reward model loads in its checkpoint's dtype (config.json's torch_dtype),
    the reference is the policy's copy; 'weights' puts both in the trained weights' dtype."""
    from instructrl.plan.cli import stage_flags

    n, v = LLAMA_7B.lm_params, LLAMA_7B.backbone_params + LLAMA_7B.hidden_size
    fp16_rm = dataclasses.replace(LLAMA_7B, saved_dtype="fp16")
    assert LLAMA_7B.saved_dtype == "fp32"  # its config names no dtype
    assert arch_from_config({**LLAMA_7B_CONFIG, "torch_dtype": "bfloat16"}).saved_dtype == "bf16"
    assert arch_from_config({**LLAMA_7B_CONFIG, "dtype": "float16"}).saved_dtype == "fp16"
    auto = estimate(plan(gpus=1), LLAMA_7B, fp16_rm)
    assert auto.parts["frozen"] == 4 * n + 2 * v  # fp32 reference, the reward model in its saved fp16
    assert estimate(plan(gpus=1, frozen_dtype="weights"), LLAMA_7B, fp16_rm).parts["frozen"] == 4 * (n + v)
    # the command the plan prints loads what was planned: ppo has no 'weights', so the dtype is spelled out
    assert "--frozen-dtype fp32" in stage_flags(plan(gpus=1, frozen_dtype="weights"), LLAMA_7B)[0]
    assert not any("--frozen-dtype" in f for f in stage_flags(plan(gpus=1), LLAMA_7B)[0])


def test_lora_dropout_defaults_follow_the_stages():
    from instructrl.reward.config import RMConfig
    from instructrl.sft.config import SFTConfig

    sft_default = next(f.default for f in dataclasses.fields(SFTConfig) if f.name == "lora_dropout")
    assert sft_default > 0
    rm_default = next(f.default for f in dataclasses.fields(RMConfig) if f.name == "lora_dropout")
    assert PlanConfig(model="m", stage="sft").effective_lora_dropout == sft_default
    assert PlanConfig(model="m", stage="rm").effective_lora_dropout == rm_default
    assert PlanConfig(model="m", stage="ppo").effective_lora_dropout == 0.0
    with pytest.raises(ConfigError, match="trains its adapters without dropout"):
        PlanConfig(model="m", stage="ppo", lora_r=8, lora_dropout=0.1).validate()


def test_lora_dropout_costs_each_adapter_a_copy_of_its_input():
    base = dict(model="m", stage="sft", lora_r=16, mixed_precision="no", device="cpu", gpus=1, overhead=0.0)
    gpt2 = arch_from_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257})
    with_dropout = estimate(PlanConfig(**base), gpt2)  # SFT's default 0.05
    without = estimate(PlanConfig(**base, lora_dropout=0.0), gpt2)
    assert with_dropout.parts["activations"] > without.parts["activations"]
    assert with_dropout.parts["weights"] == without.parts["weights"]


def test_overhead_defaults_to_the_device_s_runtime():
    gpu, cpu = PlanConfig(model="m"), PlanConfig(model="m", device="cpu")
    assert (gpu.effective_overhead, cpu.effective_overhead) == (2.0, 0.5)
    assert PlanConfig(model="m", device="cpu", overhead=0.0).effective_overhead == 0.0
    est = estimate(plan(stage="sft", device="cpu", gpus=1), LLAMA_7B)
    assert est.parts["overhead"] == 0.5 * GIB
