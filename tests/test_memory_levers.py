"""Memory levers (modeling/memory.py and the stages' flags): each gives the result it gives without it."""

from __future__ import annotations

import pytest
import torch
from testkit import run_cli, run_cli_many
from transformers import GPT2Config, GPT2LMHeadModel

from instructrl.modeling.loading import apply_lora
from instructrl.modeling.memory import (
    checkpointing_enabled,
    enable_gradient_checkpointing,
    train_mode_without_dropout,
)


def random_gpt2(n_layer: int = 3, n_embd: int = 64, seed: int = 0, dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=97, n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=4,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def loss_grads_and_saved_bytes(model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, int]:
    """(loss, gradients, bytes autograd kept for the backward, forward calls of the first layer's MLP)."""
    saved = [0]
    calls = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    # counted in the module's forward itself: module hooks do not fire when the checkpoint replays a layer
    fc = (model.get_base_model() if hasattr(model, "get_base_model") else model).transformer.h[0].mlp.c_fc
    forward = fc.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    fc.forward = counted
    model.zero_grad(set_to_none=True)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
    finally:
        del fc.forward  # the class's forward again
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved[0], calls[0]


def test_checkpointing_gives_the_same_loss_and_gradients_and_keeps_fewer_activations():
    ids = torch.randint(0, 97, (4, 48), generator=torch.Generator().manual_seed(1))
    plain = random_gpt2().train()
    ckpt = random_gpt2().train()
    enable_gradient_checkpointing(ckpt)
    assert checkpointing_enabled(ckpt) and not checkpointing_enabled(plain)
    loss_a, grads_a, saved_a, calls_a = loss_grads_and_saved_bytes(plain, ids)
    loss_b, grads_b, saved_b, calls_b = loss_grads_and_saved_bytes(ckpt, ids)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-7, msg=name)
    assert (calls_a, calls_b) == (1, 2)  # the layer ran again in the backward: its activations were recomputed
    assert saved_b < saved_a / 2  # what the forward kept for the backward (the activation memory)


def test_checkpointing_with_dropout_replays_the_same_masks():
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(2))
    plain, ckpt = random_gpt2(dropout=0.2).train(), random_gpt2(dropout=0.2).train()
    enable_gradient_checkpointing(ckpt)
    torch.manual_seed(5)
    loss_a, grads_a, *_ = loss_grads_and_saved_bytes(plain, ids)
    torch.manual_seed(5)
    loss_b, grads_b, *_ = loss_grads_and_saved_bytes(ckpt, ids)
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-7, msg=name)


def test_evaluation_mode_does_not_checkpoint_and_train_mode_without_dropout_does_the_same_math():
    """The RL stages run their models without dropout: transformers skips checkpointing in evaluation mode, so
    they use training mode with every dropout at 0, which must compute exactly what evaluation mode computes."""
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(3))
    reference = random_gpt2(dropout=0.3).eval()
    model = random_gpt2(dropout=0.3)
    enable_gradient_checkpointing(model)
    _, _, _, calls_eval = loss_grads_and_saved_bytes(model.eval(), ids)
    assert calls_eval == 1  # evaluation mode: nothing recomputed
    train_mode_without_dropout(model)
    assert model.training and all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    loss, grads, _, calls = loss_grads_and_saved_bytes(model, ids)
    loss_ref, grads_ref, _, _ = loss_grads_and_saved_bytes(reference, ids)
    assert calls == 2
    assert torch.equal(loss, loss_ref)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=0, atol=1e-7, msg=name)


def test_checkpointing_a_lora_model_recomputes_and_trains_the_adapters():
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(4))
    plain = apply_lora(random_gpt2(), 4, 16, 0.0, ["c_attn"]).train()
    ckpt = apply_lora(random_gpt2(), 4, 16, 0.0, ["c_attn"]).train()
    ckpt.load_state_dict(plain.state_dict())  # the same adapter initialization
    enable_gradient_checkpointing(ckpt)
    loss_a, grads_a, saved_a, _ = loss_grads_and_saved_bytes(plain, ids)
    loss_b, grads_b, saved_b, calls = loss_grads_and_saved_bytes(ckpt, ids)
    assert calls == 2 and saved_b < saved_a
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and all("lora_" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-7, msg=name)


def test_sft_with_gradient_checkpointing_matches_sft_without(tiny_model, demos_file, tmp_path):
    from instructrl.sft.api import run_sft
    from instructrl.sft.config import SFTConfig

    def run(out, **kw):
        cfg = SFTConfig(
            model=str(tiny_model), data=str(demos_file), output_dir=str(out), max_steps=2, batch_size=8,
            micro_batch_size=4, learning_rate=1e-3, eval_fraction=0, select_by="last", progress=False,
            residual_dropout=0.1, seed=3, max_length=128, **kw,
        )  # fmt: skip
        return run_sft(cfg)

    a, b = run(tmp_path / "a"), run(tmp_path / "b", gradient_checkpointing=True)
    assert a.final_train_loss == pytest.approx(b.final_train_loss, abs=1e-6)
    import json

    checks = [json.loads((r.out_dir / "dist_sync.json").read_text())["param_checksums"][0] for r in (a, b)]
    assert checks[0] == pytest.approx(checks[1], rel=1e-6)


def test_gradient_checkpointing_flag_exists_for_every_training_stage():
    for stage in ("sft", "rm", "ppo", "dpo"):
        out = run_cli([stage, "--help"], timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--gradient-checkpointing" in out.stdout, stage


# ---------------------------------------------------------------------------------------------- weight dtypes
def test_low_precision_weights_of_a_fully_trained_model_are_refused():
    from instructrl.errors import ConfigError
    from instructrl.sft.config import SFTConfig

    for dtype in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="AdamW needs fp32 weights"):
            SFTConfig(model="m", data="d", torch_dtype=dtype).validate()
    SFTConfig(model="m", data="d", torch_dtype="bf16", lora_r=4).validate()  # a frozen LoRA base may be bf16


def test_cli_refuses_bf16_weights_without_lora_in_one_line_and_writes_nothing(tiny_model, demos_file, tmp_path):
    out = tmp_path / "out"
    r = run_cli(
        ["sft", "--model", str(tiny_model), "--data", str(demos_file), "--out", str(out), "--torch-dtype", "bf16"]
    )
    assert r.returncode == 2
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "--torch-dtype bf16" in lines[0] and "--lora-r" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_lora_on_a_bf16_base_keeps_adapters_in_fp32_and_matches_the_fp32_base(tiny_model, demos_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from instructrl.sft.api import _load_model, run_sft
    from instructrl.sft.config import SFTConfig
    from instructrl.training.accelerator import make_accelerator

    def cfg(out, dtype):
        return SFTConfig(
            model=str(tiny_model), data=str(demos_file), output_dir=str(out), max_steps=2, batch_size=8,
            learning_rate=1e-3, eval_fraction=0, select_by="last", progress=False, max_length=128, seed=1,
            lora_r=4, lora_target_modules=["c_attn"], torch_dtype=dtype, residual_dropout=0.0,
        )  # fmt: skip

    model, _ = _load_model(cfg(tmp_path / "x", "bf16"), make_accelerator(cfg(tmp_path / "x", "bf16"), tmp_path))
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    fp32, bf16 = run_sft(cfg(tmp_path / "fp32", "fp32")), run_sft(cfg(tmp_path / "bf16", "bf16"))
    # the same run within bf16 rounding of the base's weights and activations
    assert bf16.final_train_loss == pytest.approx(fp32.final_train_loss, rel=2e-2)
    saved = AutoModelForCausalLM.from_pretrained(bf16.out_dir)  # merged: plain transformers loads it
    assert not any("lora" in n for n, _ in saved.named_parameters())


# ---------------------------------------------------------------------------------------------- quantized bases
def _one_error_line(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_quantized_base_on_a_cpu_or_without_lora_is_one_line_and_writes_nothing(tiny_model, demos_file, tmp_path):
    out = tmp_path / "out"
    common = ["--model", str(tiny_model), "--data", str(demos_file), "--out", str(out), "--cpu"]
    sft_4bit, rm_8bit, no_lora = run_cli_many(
        [
            ["sft", *common, "--lora-r", "4", "--quantize-base", "4bit"],
            ["rm", *common, "--lora-r", "4", "--quantize-base", "8bit"],
            ["sft", *common, "--quantize-base", "4bit"],
        ]
    )
    line = _one_error_line(sft_4bit)
    assert "--quantize-base 4bit needs a CUDA GPU" in line and "drop --quantize-base" in line
    line = _one_error_line(rm_8bit)
    assert "--quantize-base 8bit needs a CUDA GPU" in line
    line = _one_error_line(no_lora)
    assert "needs LoRA (--lora-r > 0)" in line
    assert not out.exists()


def test_quantized_base_without_bitsandbytes_says_how_to_install_it(monkeypatch):
    import sys

    from instructrl.errors import ConfigError
    from instructrl.modeling.memory import check_quantize_base

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'instructrl\[bnb\]'"):
        check_quantize_base("4bit", cpu=False)
    check_quantize_base("none", cpu=True)  # no lever, no requirement


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.skipif(not torch.cuda.is_available() or not _has_bitsandbytes(), reason="needs CUDA and bitsandbytes")
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_sft_on_cuda_trains_adapters_on_a_quantized_base(tiny_model, demos_file, tmp_path, bits):
    from transformers import AutoModelForCausalLM

    from instructrl.sft.api import _load_model, run_sft
    from instructrl.sft.config import SFTConfig
    from instructrl.training.accelerator import make_accelerator

    cfg = SFTConfig(
        model=str(tiny_model), data=str(demos_file), output_dir=str(tmp_path / "out"), max_steps=2, batch_size=8,
        learning_rate=1e-3, eval_fraction=0, select_by="last", progress=False, max_length=128, lora_r=4,
        lora_target_modules=["c_attn"], quantize_base=bits, gradient_checkpointing=True,
    )  # fmt: skip
    model, _ = _load_model(cfg, make_accelerator(cfg, tmp_path))
    names = {type(m).__name__ for m in model.modules()}
    assert {"Linear4bit", "Linear8bitLt"} & names
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    result = run_sft(cfg)
    assert torch.isfinite(torch.tensor(result.final_train_loss))
    saved = AutoModelForCausalLM.from_pretrained(result.out_dir)  # the adapter with its base (peft installed)
    assert saved is not None
