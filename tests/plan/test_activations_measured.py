"""The activation formula against what autograd really keeps: the storages a forward saves for its backward
(``saved_tensors_hooks``), parameters aside, for tiny random models on the CPU."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from instructrl.modeling.loading import fuse_activations
from instructrl.plan.arch import arch_from_config
from instructrl.plan.estimate import Model, activation_bytes, layer_activation_bytes


def saved_bytes(model, ids, autocast: bool) -> int:
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids, labels=ids, use_cache=False)  # as the trainers call it
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def tiny_gpt2() -> GPT2Config:
    """A 3-layer GPT-2 of width 128 without dropout."""
    return GPT2Config(
        n_embd=128, n_layer=3, n_head=4, n_positions=64, vocab_size=97, attn_pdrop=0.0, resid_pdrop=0.0,
        embd_pdrop=0.0,
    )  # fmt: skip


@pytest.mark.parametrize("checkpointing", [False, True])
def test_llama_under_autocast_over_fp32_weights(tmp_path, checkpointing):
    config = LlamaConfig(
        hidden_size=128, intermediate_size=352, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=97,
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    arch = arch_from_config(config.to_dict())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    if checkpointing:
        model.activation_checkpointing_enable()
    b, s = 2, 48
    saved = saved_bytes(model, torch.randint(0, 97, (b, s)), autocast=True)
    planned = activation_bytes(
        Model("policy", arch, True), b, s, 2, 4, checkpointing=checkpointing, dropout=False, weight_casts=True
    )
    # the plan also counts two transients at the loss (the bf16 logits and the fp32 gradient), never saved;
    # with checkpointing it counts the one layer recomputed during the backward
    planned -= b * s * arch.vocab_size * (2 + 4)
    if checkpointing:
        planned -= layer_activation_bytes(arch, b, s, 2, 4, dropout=False)
        planned -= 2 * sum(m.d_in * m.d_out for m in arch.linears)
    assert planned == pytest.approx(saved, rel=0.05)


def test_gpt2_in_fp32_as_instructrl_loads_it():
    config = tiny_gpt2()
    arch = arch_from_config(config.to_dict())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    fuse_activations(model)  # as load_causal_lm does: PyTorch's fused tanh GELU
    b, s = 2, 48
    saved = saved_bytes(model, torch.randint(0, 97, (b, s)), autocast=False)
    planned = activation_bytes(Model("policy", arch, True), b, s, 4, 4, checkpointing=False, dropout=False)
    planned -= b * s * arch.vocab_size * (4 + 4)
    assert planned == pytest.approx(saved, rel=0.05)


def lora_saved_and_planned(
    dtype, lora_dropout: float, resid_pdrop: float, autocast: bool = False, llama: bool = False
) -> tuple[float, float, dict]:
    """A tiny GPT-2 (or Llama) with LoRA on every linear, its base in ``dtype``, as instructrl loads it: what one
    forward saves, what the CPU plan counts (the loss's transients taken out), and the plan's arguments."""
    from instructrl.modeling.loading import apply_lora
    from instructrl.modeling.memory import trained_weights_in_fp32

    if llama:
        config = LlamaConfig(
            hidden_size=128, intermediate_size=352, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=97,
        )  # fmt: skip
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    else:
        config = tiny_gpt2()
        config.resid_pdrop = resid_pdrop
        targets = ["c_attn", "c_proj", "c_fc"]
    arch = arch_from_config(config.to_dict())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype)
    fuse_activations(model)
    model = apply_lora(model, 8, 16, lora_dropout, targets).train()
    trained_weights_in_fp32(model)
    b, s = 2, 48
    saved = saved_bytes(model, torch.randint(0, 97, (b, s)), autocast=autocast)
    width = 4 if dtype == torch.float32 else 2
    act = 2 if autocast else width
    kw = dict(
        model=Model("policy", arch, True), b=b, s=s, act_bytes=act, stream_bytes=width, checkpointing=False,
        dropout=resid_pdrop > 0, trained=frozenset(m.name for m in arch.lora_targets(targets)),
        adapter_input_bytes=4.0 if width == 2 and not autocast else None, lora_dropout=lora_dropout > 0,
        weight_casts=autocast,
    )  # fmt: skip
    transients = b * s * arch.vocab_size * (act + 4)  # the loss's (logits, their gradient), never saved
    return saved, activation_bytes(**kw, cpu=True) - transients, kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpt2_lora_keeps_an_fp32_copy_of_each_adapted_input_over_a_bf16_base(dtype):
    """Without autocast peft casts each adapted linear's input to the adapters' fp32, and the adapter keeps that copy:
    over a bf16 base the plan counts 4 bytes per adapted input element, not the base's 2."""
    saved, planned, _ = lora_saved_and_planned(dtype, lora_dropout=0.0, resid_pdrop=0.0)
    assert planned == pytest.approx(saved, rel=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpt2_lora_dropout_and_residual_dropout_on_the_cpu(dtype):
    """SFT's setting: LoRA dropout and residual dropout. Each adapter keeps its own dropped-out input, and on the CPU
    every dropout keeps its noise tensor in its input's dtype (not CUDA's one-byte mask)."""
    saved, planned, kw = lora_saved_and_planned(dtype, lora_dropout=0.1, resid_pdrop=0.2)
    assert planned == pytest.approx(saved, rel=0.05)
    assert activation_bytes(**kw) < activation_bytes(**kw, cpu=True)  # CUDA's one-byte masks


@pytest.mark.parametrize("llama", [False, True])
@pytest.mark.parametrize("lora_dropout", [0.0, 0.1])
def test_lora_under_autocast(llama, lora_dropout):
    """LoRA over fp32 weights under bf16 autocast: each adapter keeps its own 16-bit cast of its input (peft casts it to
    fp32 and autocast back), the frozen norms keep no normalized output, and a dropout's noise is over the fp32 cast."""
    saved, planned, _ = lora_saved_and_planned(torch.float32, lora_dropout, 0.0, autocast=True, llama=llama)
    assert planned == pytest.approx(saved, rel=0.05)
