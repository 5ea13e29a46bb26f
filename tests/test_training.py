import logging

import torch


def test_checkpoint_of_a_tied_model_is_quiet_and_reloads_tied(tiny_model, tmp_path, caplog):
    """accelerate drops the tied lm_head from the saved state and warns about it on every save; our
    checkpoints hide that notice, and loading gives back the same, still tied, weights."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from instructrl.training.checkpoints import Checkpoints

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
    from instructrl.sft.config import SFTConfig
    from instructrl.training.accelerator import make_accelerator

    first = make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "a")
    assert first.mixed_precision == "no"
    second = make_accelerator(SFTConfig(mixed_precision="bf16", cpu=True), tmp_path / "b")
    assert second.mixed_precision == "bf16"
    third = make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "c")
    assert third.mixed_precision == "no" and third.device.type == "cpu"
    if torch.cuda.is_available():  # and from a GPU run to a CPU one (--cpu) in the same process
        assert make_accelerator(SFTConfig(mixed_precision="no"), tmp_path / "d").device.type == "cuda"
        assert make_accelerator(SFTConfig(mixed_precision="no", cpu=True), tmp_path / "e").device.type == "cpu"


def _prefer_token_trainer(tiny_model, out, **cfg_changes):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructrl.training.accelerator import make_accelerator
    from instructrl.training.checkpoints import prepare_output_dir
    from instructrl.training.config import TrainLoopConfig
    from instructrl.training.loop import Trainer, shuffled_plan

    class Prefer(Trainer):
        """A made-up stage written as the next one would be: only its loss (raise the probability of token 5
        after each sequence) on top of the shared loop."""

        def loss(self, items):
            ids = torch.tensor(items)  # (B, T)
            logits = self.model(input_ids=ids).logits[:, -1].float()  # (B, V)
            loss = -torch.log_softmax(logits, -1)[:, 5].sum()
            return loss, {"loss": loss.detach(), "tokens": torch.tensor(float(ids.numel()))}

        def step_metrics(self, sums, items, normalizer):
            return {"loss": sums["loss"] / normalizer, "tokens": int(sums["tokens"])}

    cfg = TrainLoopConfig(
        output_dir=str(out),
        cpu=True,
        mixed_precision="no",
        batch_size=4,
        micro_batch_size=2,
        learning_rate=1e-2,
        epochs=3,
        checkpoint_every=2,
        progress=False,
        **cfg_changes,
    )
    acc = make_accelerator(cfg, prepare_output_dir(str(out), cfg.resume, "prefer"))
    pool = [[1 + (i % 7), 2 + (i % 5), 3] for i in range(8)]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    return Prefer(
        cfg, acc, AutoModelForCausalLM.from_pretrained(tiny_model), tok, pool, shuffled_plan(8, 0), 8, out, "prefer"
    )


def test_a_stage_that_supplies_only_its_loss_trains_checkpoints_and_resumes(tiny_model, tmp_path):
    from instructrl.training.tracking import read_metrics

    first = _prefer_token_trainer(tiny_model, tmp_path / "a")
    result = first.train()
    losses = [r["prefer/loss"] for r in read_metrics(tmp_path / "a")]
    assert result.steps == 6 and losses[-1] < losses[0]  # 2 steps per epoch, 3 epochs; the loss goes down
    assert {"prefer/grad_norm", "prefer/lr", "prefer/tokens_per_s"} <= set(read_metrics(tmp_path / "a")[0])
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step-2", "step-4"]

    # as if killed after step 4: a resumed run ends with the same weights as the uninterrupted one
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-4", tmp_path / "b" / "checkpoints" / "step-4")
    resumed = _prefer_token_trainer(tiny_model, tmp_path / "b", resume=True)
    assert resumed.train().steps == 6
    for pa, pb in zip(first.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(pa, pb)


def test_a_non_finite_gradient_stops_before_the_weights_change(tiny_model, tmp_path):
    import pytest

    from instructrl.errors import InstructRLError

    trainer = _prefer_token_trainer(tiny_model, tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.loss = lambda items: (
        next(trainer.model.parameters()).sum() * float("nan"),
        {"loss": torch.tensor(0.0), "tokens": torch.tensor(1.0)},
    )
    with pytest.raises(
        InstructRLError,
        match=r"prefer: the gradient norm became nan \(model\) at step 1; "
        r"the run stopped before updating the weights.*none",
    ):
        trainer.train_step(0)
    for a, b in zip(before, trainer.model.parameters()):
        assert torch.equal(a, b)
