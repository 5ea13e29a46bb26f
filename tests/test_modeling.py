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
