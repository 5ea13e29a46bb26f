import logging

import torch


def test_checkpoint_of_a_tied_model_is_quiet_and_reloads_tied(tiny_model, tmp_path, caplog):
    """accelerate drops the tied lm_head from the saved state and warns about it on every save; our
    checkpoints hide that notice, and loading gives back the same, still tied, weights."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from instructrl.runtime import Checkpoints

    acc = Accelerator(cpu=True)
    model = acc.prepare(AutoModelForCausalLM.from_pretrained(tiny_model))
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)  # something a fresh load would not have
    expected = model.lm_head.weight.detach().clone()
    ckpts = Checkpoints(tmp_path, acc)
    with caplog.at_level(logging.WARNING):
        path = ckpts.save(3, {"step": 3})
    assert not [r for r in caplog.records if "shared tensor" in r.getMessage()]

    acc2 = Accelerator(cpu=True)
    fresh = acc2.prepare(AutoModelForCausalLM.from_pretrained(tiny_model))
    state = Checkpoints(tmp_path, acc2).load(path)
    assert state == {"step": 3}
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    torch.testing.assert_close(fresh.lm_head.weight, expected)


def test_runs_with_different_precisions_in_one_process(tmp_path):
    """A second run in the same Python process may use another mixed precision (accelerate alone refuses)."""
    from instructrl.runtime import make_accelerator
    from instructrl.sft.config import SFTConfig

    first = make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "a")
    assert first.mixed_precision == "no"
    second = make_accelerator(SFTConfig(mixed_precision="bf16", cpu=True), tmp_path / "b")
    assert second.mixed_precision == "bf16"
    third = make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "c")
    assert third.mixed_precision == "no" and third.device.type == "cpu"
    if torch.cuda.is_available():  # and from a GPU run to a CPU one (--cpu) in the same process
        assert make_accelerator(SFTConfig(mixed_precision="no"), tmp_path / "d").device.type == "cuda"
        assert make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "e").device.type == "cpu"
