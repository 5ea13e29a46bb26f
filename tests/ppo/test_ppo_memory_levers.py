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


# ---------------------------------------------------------------------------------------------- the value model
def _values(vm, ep):
    import torch

    from instructrl.ppo.rollout import value_forward

    with torch.no_grad():
        return value_forward(vm, ep.input_ids, ep.attention_mask, ep.responses.shape[1])


def test_lora_value_model_trains_adapters_and_its_head_and_saves_merged(ppo_world, tmp_path):
    from instructrl.modeling.value import ValueModel

    cfg = quick_cfg(
        ppo_world, tmp_path / "out", total_episodes=16, value_lora_r=4, lora_target_modules=["c_attn"],
        checkpoint_every=10, sample_every=0,
    )  # fmt: skip
    trainer = build_trainer(cfg)
    value = trainer.acc.unwrap_model(trainer.value)
    trained = [n for n, p in value.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or "score" in n for n in trained)
    assert any("score" in n for n in trained)  # the head trains whole
    frozen_before = {n: p.detach().clone() for n, p in value.named_parameters() if not p.requires_grad}
    trainer.train()
    assert all(p.equal(frozen_before[n]) for n, p in value.named_parameters() if not p.requires_grad)
    saved = ValueModel.from_reward_model(str(tmp_path / "out" / "value_model"))  # a plain RM-format directory
    ep = trainer.rollout(0)
    import torch

    torch.testing.assert_close(_values(saved, ep), _values(value, ep), atol=1e-5, rtol=1e-5)


def test_value_model_sharing_the_policy_base_holds_no_second_base_and_ppo_runs_with_it(ppo_world, tmp_path):
    import torch

    from instructrl.modeling.loading import save_pretrained_atomic
    from instructrl.modeling.value import ValueModel

    cfg = quick_cfg(
        ppo_world, tmp_path / "out", total_episodes=16, lora_r=4, lora_target_modules=["c_attn"],
        value_shares_policy_base=True, learning_rate=1e-2, checkpoint_every=10, sample_every=0,
    )  # fmt: skip
    trainer = build_trainer(cfg)
    policy, value = trainer.raw_policy, trainer.acc.unwrap_model(trainer.value)
    assert trainer.ref is None  # the reference is the policy with its adapters off
    storages = {p.untyped_storage().data_ptr() for p in policy.parameters()}
    own = [p for p in value.parameters() if p.untyped_storage().data_ptr() not in storages]
    hidden = policy.get_base_model().config.n_embd
    assert sum(p.numel() for p in own) == hidden + 1  # the head: no base weight of its own
    assert all(p.requires_grad for p in value.parameters())  # only its adapter and head
    pol_ids = {id(p) for g in trainer.pol_opt.param_groups for p in g["params"]}
    val_ids = {id(p) for g in trainer.val_opt.param_groups for p in g["params"]}
    assert pol_ids and val_ids and not pol_ids & val_ids  # each trains its own adapter
    base_before = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    ep = trainer.rollout(0)
    values_before = _values(value, ep)
    result = trainer.train()
    assert result.iterations == 2 and all(torch.isfinite(torch.tensor(h["ppo/value_loss"])) for h in result.history)
    assert all(p.equal(base_before[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert not torch.allclose(_values(value, ep), values_before)  # the value function trained
    # the saved policy is the policy adapter alone; the saved value model gives the shared module's values
    from transformers import AutoModelForCausalLM

    from instructrl.ppo.rollout import policy_forward

    out = tmp_path / "out"
    saved_policy = AutoModelForCausalLM.from_pretrained(out).eval()
    save_pretrained_atomic(policy, None, tmp_path / "expected")
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "expected").eval()
    with torch.no_grad():
        a = policy_forward(saved_policy, ep.input_ids, ep.attention_mask, ep.responses.shape[1], 1.0)[0]
        b = policy_forward(policy, ep.input_ids, ep.attention_mask, ep.responses.shape[1], 1.0)[0]
        c = policy_forward(expected, ep.input_ids, ep.attention_mask, ep.responses.shape[1], 1.0)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-5)
    saved_value = ValueModel.from_reward_model(str(out / "value_model"))
    torch.testing.assert_close(_values(saved_value, ep), _values(value, ep), atol=1e-5, rtol=1e-5)


def test_value_levers_refuse_what_they_cannot_do_in_one_line(ppo_world, tmp_path):
    from testkit import run_cli_many

    base = ["ppo", "--policy", str(ppo_world["policy"]), "--reward-model", str(ppo_world["rm"]), "--prompts",
            str(ppo_world["prompts"]), "--batch-size", "4", "--mini-batch-size", "4", "--total-episodes", "4"]  # fmt: skip
    cases = [
        (["--value-shares-policy-base"], "needs a LoRA policy"),
        (["--value-shares-policy-base", "--lora-r", "4", "--gradient-checkpointing"], "drop one of them"),
        (["--value-lora-r", "4", "--advantage", "reinforce"], "--advantage gae"),
    ]
    results = run_cli_many([[*base, "--out", str(tmp_path / f"o{i}"), *extra] for i, (extra, _) in enumerate(cases)])
    for i, ((_, message), r) in enumerate(zip(cases, results, strict=True)):
        out = tmp_path / f"o{i}"
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
        assert not out.exists()


def test_shared_base_value_model_under_ddp_keeps_ranks_in_sync(ppo_world, tmp_path):
    """torchrun, 2 CPU processes, PPO-ptx, 2 minibatches: the value adapter inside the policy's layers is left out
    of the policy's DDP and all-reduced with the value model's; weights stay equal on both ranks."""
    import subprocess
    import sys

    from testkit import CPU_ONLY, ROOT, cli_env, free_port

    out = tmp_path / "dist"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "instructrl", "ppo", "--policy", str(ppo_world["policy"]), "--reward-model", str(ppo_world["rm"]),
        "--prompts", str(ppo_world["prompts"]), "--out", str(out), "--batch-size", "8", "--mini-batch-size", "4",
        "--total-episodes", "16", "--response-length", "8", "--learning-rate", "1e-3", "--warmup-iterations", "0",
        "--no-ema", "--no-progress", "--lora-r", "4", "--lora-target-modules", "c_attn", "--value-shares-policy-base",
        "--ptx-data", str(ppo_world["ptx"]), "--ptx-per-episode", "1", "--ptx-max-length", "16",
    ]  # fmt: skip
    r = subprocess.run(cmd, env={**cli_env(), **CPU_ONLY}, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    sync = json.loads((out / "dist_sync.json").read_text())
    assert sync["num_processes"] == 2
    assert sync["param_checksums"][0] == pytest.approx(sync["param_checksums"][1], rel=1e-9, abs=1e-9)
    assert sync["value_param_checksums"][0] == pytest.approx(sync["value_param_checksums"][1], rel=1e-9, abs=1e-9)
