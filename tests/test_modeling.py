import pytest
from transformers import AutoTokenizer, GPT2Config

from instructrl.errors import ModelLoadError
from instructrl.modeling.loading import PAD_TOKEN, ensure_special_tokens, load_causal_lm, load_tokenizer


def test_pad_equal_to_eos_gets_dedicated_pad_and_resized_embeddings(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.pad_token = tok.eos_token  # the common (wrong) setup
    tok.save_pretrained(tmp_path / "m")
    GPT2Config.from_pretrained(tiny_model).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    tok2 = load_tokenizer(str(tmp_path / "m"))
    assert tok2.pad_token == PAD_TOKEN and tok2.pad_token_id != tok2.eos_token_id
    model = load_causal_lm(str(tmp_path / "m"), tok2)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok2)
    assert model.config.pad_token_id == tok2.pad_token_id != model.config.eos_token_id


def test_missing_pad_is_added(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.pad_token = None
    assert ensure_special_tokens(tok) is True
    assert tok.pad_token == PAD_TOKEN


def test_residual_dropout_applied(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), tok, residual_dropout=0.2)
    assert model.config.resid_pdrop == 0.2
    assert model.transformer.h[0].mlp.dropout.p == 0.2


def test_unknown_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model path '\./no/such/model' does not exist"):
        load_causal_lm("./no/such/model", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="could not load tokenizer 'no-such-org/no-such-model-xyz'"):
        load_tokenizer("no-such-org/no-such-model-xyz")


def test_half_precision_checkpoint_loads_in_float32(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    half = AutoModelForCausalLM.from_pretrained(tiny_model).to(torch.float16)
    half.save_pretrained(tmp_path / "half")
    tok = load_tokenizer(str(tiny_model))
    tok.save_pretrained(tmp_path / "half")
    model = load_causal_lm(str(tmp_path / "half"), tok)
    assert next(model.parameters()).dtype == torch.float32


def test_gelu_new_runs_as_the_fused_kernel_with_the_same_outputs_and_config(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    tok = load_tokenizer(str(tiny_model))
    plain = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert plain.config.activation_function == "gelu_new"
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    fused = load_causal_lm(str(tiny_model), tok).eval()
    acts = [m for m in fused.modules() if isinstance(m, torch.nn.GELU)]
    assert len(acts) == fused.config.n_layer and all(a.approximate == "tanh" for a in acts)
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    ids = torch.randint(2, len(tok), (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    fused.save_pretrained(tmp_path / "saved")  # the checkpoint still names the original activation
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "saved").config.activation_function == "gelu_new"


@pytest.mark.parametrize(
    ("family", "how"),
    [
        ("gpt2", "config: resid_pdrop=0.2"),
        ("gpt_neox", "config: hidden_dropout=0.2"),
        ("llama", "added: Dropout(0.2) on the attention and MLP outputs of 2 layers"),
        ("qwen2", "added: Dropout(0.2) on the attention and MLP outputs of 2 layers"),
    ],
)
def test_residual_dropout_on_every_family(family, how, tiny_model, tmp_path):
    """The SFT preset's 0.2 reaches the residual stream of each family, and the model says how."""
    import torch
    from tiny_archs import load_family

    from instructrl.modeling.loading import disable_dropout, residual_dropout_report

    model, tok = load_family(tiny_model, tmp_path / family, family, residual_dropout=0.2)
    report = residual_dropout_report(model)
    assert report["requested"] == 0.2 and report["applied"] and report["how"].startswith(how)
    if family == "gpt2":
        assert model.config.resid_pdrop == 0.2 and model.config.attn_pdrop == 0.1  # only the residual one
    if family == "gpt_neox":
        assert model.config.hidden_dropout == 0.2 and model.gpt_neox.layers[0].post_mlp_dropout.p == 0.2
    if family in ("llama", "qwen2"):
        layer = model.model.layers[0]
        assert layer.self_attn.instructrl_residual_dropout.p == layer.mlp.instructrl_residual_dropout.p == 0.2
        assert model.config.attention_dropout == 0.0  # attention weights: left as the checkpoint has it
    ids = torch.randint(3, len(tok), (2, 12))
    with torch.no_grad():
        model.train()
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
        model.eval()
        c, d = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.allclose(a, b)  # dropout in training
    torch.testing.assert_close(c, d)  # none in evaluation
    plain, _ = load_family(tiny_model, tmp_path / f"{family}-plain", family, residual_dropout=None)
    assert residual_dropout_report(plain)["how"] == "the model's own setting"
    assert set(plain.state_dict()) == set(model.state_dict())  # nothing added to the weights or checkpoint
    disable_dropout(model)  # PPO: every dropout off, the added ones included
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, c)


def test_zero_residual_dropout_adds_nothing(tiny_model, tmp_path):
    from tiny_archs import load_family

    from instructrl.modeling.loading import residual_dropout_report

    model, _ = load_family(tiny_model, tmp_path / "llama", "llama", residual_dropout=0.0)
    assert residual_dropout_report(model)["how"] == "nothing to set: LlamaConfig has no residual dropout"
    assert not any(n.endswith("instructrl_residual_dropout") for n, _ in model.named_modules())


def test_the_sft_output_states_the_residual_dropout(tiny_model, demos_file, tmp_path):
    import json

    from tiny_archs import make_family_dir

    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig

    model_dir = make_family_dir(tiny_model, tmp_path / "qwen2", "qwen2")
    cfg = SFTConfig(
        model=str(model_dir),
        data=str(demos_file),
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        batch_size=8,
        max_length=64,
        eval_fraction=0.0,
        select_by="last",
        progress=False,
    )
    run_sft(cfg)  # the preset's residual_dropout=0.2
    stated = json.loads((tmp_path / "out" / "data_report.json").read_text())["residual_dropout"]
    assert stated["requested"] == 0.2 and stated["applied"]
    assert "Dropout(0.2) on the attention and MLP outputs" in stated["how"]


def _randomized_lora(tiny_model, adapters=("default",)):
    """A LoRA GPT-2 whose adapters are not the identity (B random), with each adapter in ``adapters``."""
    import torch
    from peft import LoraConfig

    from instructrl.modeling.loading import apply_lora

    torch.manual_seed(0)
    model = apply_lora(
        load_causal_lm(str(tiny_model), load_tokenizer(str(tiny_model))), r=4, alpha=8, dropout=0.0, target_modules=None
    )
    for name in adapters[1:]:
        model.add_adapter(name, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model.eval()


def test_a_lora_save_merges_in_cpu_memory_without_copying_the_model_or_touching_it(tiny_model, tmp_path):
    """The saved model is peft's merge of the adapter; the live model keeps its own weights (a merge writes into the
    copies of the adapted layers' base weights only), and every tensor no adapter touches is the live one itself."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from instructrl.modeling.loading import merge_source, merged_from_state_dict, save_pretrained_atomic

    model = _randomized_lora(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[5, 9, 17, 33, 2, 71]])
    expected = copy.deepcopy(model).merge_and_unload()  # peft's own merge, on a copy

    merged = merged_from_state_dict(model, merge_source(model))
    live = {t.data_ptr() for t in model.state_dict().values()}
    shared = [n for n, t in merged.state_dict().items() if t.data_ptr() in live]
    assert "transformer.wte.weight" in shared and "transformer.ln_f.weight" in shared
    assert not any(n.endswith("attn.c_attn.weight") for n in shared)  # adapted: merged into a copy
    save_pretrained_atomic(model, None, tmp_path / "saved")

    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, expected(ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(merged(ids).logits, expected(ids).logits, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():
            assert not torch.allclose(expected(ids).logits, model(ids).logits, atol=1e-3)  # the adapter does something


def test_merging_one_of_two_adapters_merges_that_one_alone(tiny_model):
    """A value adapter on the policy's base (SharedBaseValueModel) is merged by name, the policy's adapter left out."""
    import copy

    import torch

    from instructrl.modeling.loading import merge_source, merged_from_state_dict

    model = _randomized_lora(tiny_model, adapters=("default", "value"))
    ids = torch.tensor([[5, 9, 17, 33, 2, 71]])
    expected = copy.deepcopy(model).merge_and_unload(adapter_names=["value"])
    merged = merged_from_state_dict(model, merge_source(model), adapter="value")
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, expected(ids).logits, rtol=1e-5, atol=1e-5)
        default = copy.deepcopy(model).merge_and_unload(adapter_names=["default"])
        assert not torch.allclose(merged(ids).logits, default(ids).logits, atol=1e-3)
