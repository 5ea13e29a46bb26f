"""PPO-ptx under FSDP2 with two CPU processes: the policy and the value model both sharded, the same run as DDP,
whole models saved, resume from sharded checkpoints, and what sharding does not take yet refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from ppo_helpers import cli_args, ptx_args
from safetensors.torch import load_file
from testkit import cut_after_checkpoint, torchrun

KEYS = ("ppo/score_mean", "ppo/policy_loss", "ppo/value_loss", "ppo/ptx_loss", "ppo/kl", "ppo/policy_grad_norm")


def metrics(out) -> list[list[float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [[r[k] for k in KEYS] for r in rows]


@pytest.fixture(scope="module")
def ppo_runs(ppo_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_engines")
    outs = {}
    for engine in ("ddp", "fsdp2"):
        outs[engine] = root / engine
        r = torchrun(ptx_args(ppo_world, outs[engine], "--engine", engine, "--ema"))
        assert r.returncode == 0, r.stderr[-3000:]
    return outs


def test_fsdp2_ppo_ptx_is_the_ddp_run_with_both_trained_models_sharded(ppo_runs):
    ddp, fsdp = metrics(ppo_runs["ddp"]), metrics(ppo_runs["fsdp2"])
    assert len(fsdp) == 3  # 24 episodes / 8 per iteration
    for a, b in zip(ddp, fsdp):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-5)
    sync = json.loads((ppo_runs["fsdp2"] / "dist_sync.json").read_text())
    assert "FSDP" in sync["distributed_type"]
    assert sync["frozen_placement"] == "sharded"  # auto under FSDP2: the reference and RM sharded too
    for key in ("parameters_held", "value_parameters_held", "reference_parameters_held", "reward_parameters_held"):
        (held0, total), (held1, _) = sync[key]
        assert held0 + held1 == total and abs(held0 - total / 2) <= 0.05 * total, (key, sync[key])


def test_fsdp2_ppo_saves_whole_policy_its_average_and_value_model(ppo_runs):
    """The output is the EMA of the policy (InstructGPT App. C.4), kept as each process's shards under FSDP2 and
    gathered at the end; last_policy is the policy itself."""
    from transformers import AutoModelForCausalLM

    from instructrl.modeling.reward import RewardModel

    for name in ("model.safetensors", "last_policy/model.safetensors"):
        a, b = load_file(ppo_runs["ddp"] / name), load_file(ppo_runs["fsdp2"] / name)
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name
    average, last = (
        load_file(ppo_runs["fsdp2"] / "model.safetensors"),
        load_file(ppo_runs["fsdp2"] / "last_policy" / "model.safetensors"),
    )
    assert any(not torch.equal(average[k], last[k]) for k in average)  # the average is not the last policy
    AutoModelForCausalLM.from_pretrained(ppo_runs["fsdp2"])
    va = load_file(ppo_runs["ddp"] / "value_model" / "model.safetensors")
    vb = load_file(ppo_runs["fsdp2"] / "value_model" / "model.safetensors")
    assert set(va) == set(vb) and all(torch.allclose(va[k], vb[k], atol=1e-5) for k in va)
    RewardModel.from_pretrained(ppo_runs["fsdp2"] / "value_model")  # the value model saves in the RM format


def test_fsdp2_ppo_resumes_from_sharded_checkpoints(ppo_world, ppo_runs, tmp_path):
    out = tmp_path / "resumed"
    cut_after_checkpoint(ppo_runs["fsdp2"], out, "step-2")  # as a kill after iteration 1's checkpoint leaves it
    r = torchrun(ptx_args(ppo_world, out, "--engine", "fsdp2", "--ema", "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    flat = [v for row in metrics(out) for v in row]
    assert flat == pytest.approx([v for row in metrics(ppo_runs["fsdp2"]) for v in row], rel=1e-5, abs=1e-7)
    for name in ("model.safetensors", "last_policy/model.safetensors"):  # the average resumed from its shards too
        a, b = load_file(ppo_runs["fsdp2"] / name), load_file(out / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_lora_ppo_ptx_under_fsdp2_is_the_ddp_run_saved_merged(ppo_world, tmp_path):
    """A LoRA policy (its reference: the same weights with the adapters off) and a LoRA value model, both sharded;
    the average, the last policy and the value model saved merged, as under DDP."""
    outs = {}
    for engine in ("ddp", "fsdp2"):
        outs[engine] = tmp_path / engine
        lora = ["--engine", engine, "--ema", "--lora-r", "4", "--value-lora-r", "4"]
        r = torchrun(ptx_args(ppo_world, outs[engine], *lora))
        assert r.returncode == 0, r.stderr[-3000:]
    for a, b in zip(metrics(outs["ddp"]), metrics(outs["fsdp2"])):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-5)
    for name in ("model.safetensors", "last_policy/model.safetensors", "value_model/model.safetensors"):
        a, b = load_file(outs["ddp"] / name), load_file(outs["fsdp2"] / name)
        assert set(a) == set(b) and not any("lora" in k for k in b), name
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name


def test_what_sharding_does_not_take_yet_is_refused_in_one_line(ppo_world, tmp_path):
    out = tmp_path / "shared"
    r = torchrun(ptx_args(ppo_world, out, "--engine", "fsdp2", "--lora-r", "4", "--value-shares-policy-base"))
    assert r.returncode != 0  # torchrun reports its workers' exit code 2 with a traceback of its own
    assert "error: --value-shares-policy-base with a sharding engine" in r.stderr and "ConfigError" not in r.stderr
    assert not (out / "checkpoints").exists()


def test_sampling_through_layer_by_layer_gathers_is_the_same_run(ppo_world, ppo_runs, tmp_path):
    """--rollout-gather layer: each decoding forward gathers one layer at a time (every process samples until all
    are done) instead of the whole policy once; the same samples, so the same run."""
    out = tmp_path / "layer"
    r = torchrun(ptx_args(ppo_world, out, "--engine", "fsdp2", "--rollout-gather", "layer"))
    assert r.returncode == 0, r.stderr[-3000:]
    for a, b in zip(metrics(ppo_runs["fsdp2"]), metrics(out)):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7)


def test_a_frozen_placement_the_engine_cannot_give_is_refused_before_anything_is_written(ppo_world, tmp_path):
    from testkit import run_cli

    for placement, message in (
        ("sharded", "needs --engine fsdp2 or zero3 on two or more"),
        ("cpu", "FSDP2 or ZeRO-3 keep the frozen models in CPU memory and stream their layers, so it needs --engine"),
    ):
        out = tmp_path / placement
        r = run_cli(cli_args(ppo_world, out, "--frozen-placement", placement))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
