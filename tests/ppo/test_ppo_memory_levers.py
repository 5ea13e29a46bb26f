"""PPO's memory levers give the run they give without them (within the precision they use)."""

from __future__ import annotations

import json

import pytest
from ppo_helpers import quick_cfg

from instructrl.modeling.memory import checkpointing_enabled
from instructrl.ppo.api import build_trainer


def count_mlp_calls(model) -> list[int]:
    """Count the calls of the first layer's MLP input projection (forward and any recompute in the backward)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    fc = inner.base_model.h[0].mlp.c_fc
    forward, calls = fc.forward, [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    fc.forward = counted
    return calls


def checksums(out) -> tuple[float, float]:
    sync = json.loads((out / "dist_sync.json").read_text())
    return sync["param_checksums"][0], sync["value_param_checksums"][0]


@pytest.mark.parametrize("fused", [True, False])
def test_ppo_with_gradient_checkpointing_recomputes_and_matches_ppo_without(ppo_world, tmp_path, fused):
    """The policy and value model run in training mode with dropout at 0, so transformers checkpoints their
    layers; the run (scores, KL, losses, final weights) is the run without checkpointing."""
    kw = dict(total_episodes=16, mini_batch_size=8 if fused else 4, checkpoint_every=10, sample_every=0)
    runs, calls = [], []
    for name, ckpt in (("plain", False), ("ckpt", True)):
        trainer = build_trainer(quick_cfg(ppo_world, tmp_path / name, gradient_checkpointing=ckpt, **kw))
        assert checkpointing_enabled(trainer.raw_policy) == ckpt
        assert trainer.raw_policy.training == ckpt  # training mode only where it makes layers recompute
        calls.append(count_mlp_calls(trainer.raw_policy))
        runs.append((trainer.train(), trainer.out))
    (plain, out_a), (ckpt, out_b) = runs
    assert calls[1][0] > calls[0][0]  # the layers ran again in the backward passes
    for a, b in zip(plain.history, ckpt.history):
        for key in ("ppo/score_mean", "ppo/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for x, y in zip(checksums(out_a), checksums(out_b)):
        assert x == pytest.approx(y, rel=1e-6)


def test_frozen_models_in_bf16_give_the_fp32_reference_log_probs_and_scores_within_bf16_rounding(ppo_world, tmp_path):
    import torch

    from instructrl.ppo.rollout import policy_forward, right_align

    kw = dict(total_episodes=8, checkpoint_every=10, sample_every=0)
    full = build_trainer(quick_cfg(ppo_world, tmp_path / "fp32", **kw))
    half = build_trainer(quick_cfg(ppo_world, tmp_path / "bf16", frozen_dtype="bf16", **kw))
    assert {p.dtype for p in half.ref.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.rm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in half.raw_policy.parameters()} == {torch.float32}  # trained models stay fp32
    assert {p.dtype for p in half.acc.unwrap_model(half.value).parameters()} == {torch.float32}
    ep = full.rollout(0)
    with torch.no_grad():
        lp32 = policy_forward(full.ref, ep.input_ids, ep.attention_mask, ep.responses.shape[1], 1.0)[0]
        lp16 = policy_forward(half.ref, ep.input_ids, ep.attention_mask, ep.responses.shape[1], 1.0)[0]
        ids, mask = right_align(ep.input_ids, ep.attention_mask, full.pad_id)
        s32, s16 = full.rm(input_ids=ids, attention_mask=mask), half.rm(input_ids=ids, attention_mask=mask)
    m = ep.response_mask
    assert lp16.dtype == torch.float32
    assert (lp16 - lp32)[m].abs().max() < 0.1 and (lp16 - lp32)[m].abs().mean() < 0.02
    torch.testing.assert_close(s16, s32, atol=0.05, rtol=0.02)
    result = half.train()
    assert abs(result.history[0]["ppo/kl"]) < 0.5  # the bf16 reference is close to the fp32 policy it copies
