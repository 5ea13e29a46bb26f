"""Parameter counts read from a config alone equal the exact count of a randomly initialised model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Qwen2Config,
    Qwen3Config,
)

from instructrl.errors import ConfigError
from instructrl.plan.arch import load_arch

TINY = dict(vocab_size=97)
CONFIGS = {
    "llama": LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, **TINY),
    "llama-gqa-tied-bias": LlamaConfig(
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        attention_bias=True,
        mlp_bias=True,
        **TINY,
    ),
    "llama-head-dim": LlamaConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, head_dim=16, **TINY
    ),
    "mistral": MistralConfig(
        hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, **TINY
    ),
    "qwen2": Qwen2Config(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **TINY
    ),
    "qwen2-tied": Qwen2Config(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        tie_word_embeddings=True,
        **TINY,
    ),
    "qwen3": Qwen3Config(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        **TINY,
    ),
    "gpt2": GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **TINY),
    "gpt2-inner": GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=40, n_inner=80, **TINY),
    "gpt_neox": GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **TINY),
    "gpt_neox-tied-nobias": GPTNeoXConfig(
        hidden_size=32,
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=4,
        tie_word_embeddings=True,
        attention_bias=False,
        **TINY,
    ),
    "opt": OPTConfig(
        hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=50, **TINY
    ),
    "opt-proj": OPTConfig(
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=50,
        word_embed_proj_dim=16,
        **TINY,
    ),
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_counts_equal_a_random_model(name, tmp_path):
    config = CONFIGS[name]
    config.save_pretrained(tmp_path)  # the planner reads the saved config.json, whose defaults are left out
    arch = load_arch(str(tmp_path))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config)
    assert arch.lm_params == count(lm)
    config.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(config)
    assert arch.backbone_params + arch.scalar_head_params == count(rm)


def test_lora_params_equal_peft(tmp_path):
    peft = pytest.importorskip("peft")
    config = CONFIGS["llama-gqa-tied-bias"]
    config.save_pretrained(tmp_path)
    arch = load_arch(str(tmp_path / "config.json"))  # a config.json file works like its folder
    for targets in (["q_proj", "v_proj"], ["all-linear"]):
        lm = AutoModelForCausalLM.from_config(config)
        wrapped = peft.get_peft_model(
            lm, peft.LoraConfig(r=4, target_modules=targets[0] if targets == ["all-linear"] else targets)
        )
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        assert arch.lora_params(4, targets) == trainable


def test_quantizable_params_are_the_layers_linear_weights(tmp_path):
    config = CONFIGS["qwen2"]
    config.save_pretrained(tmp_path)
    arch = load_arch(str(tmp_path))
    lm = AutoModelForCausalLM.from_config(config)
    weights = sum(m.weight.numel() for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n)
    assert arch.quantizable_params == weights


def test_unreadable_models_raise_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_arch(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_arch(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    with pytest.raises(ConfigError, match="model_type 't5'"):
        load_arch(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        load_arch(str(tmp_path))
