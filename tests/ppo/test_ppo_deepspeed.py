"""PPO-ptx under DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes: the policy and the value model are two DeepSpeed
engines, the run is DDP's run, ZeRO-3 partitions all four models (the reference and reward model as inference
engines), and resume restores the run with its average. Runs where the deepspeed extra is installed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ppo_helpers import ptx_args
from safetensors.torch import load_file
from testkit import ROOT, about_half, cli_env, cut_after_checkpoint, free_port, torchrun
from testkit import metric_column as column
from testkit import succeeded as ok

pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")

pytestmark = pytest.mark.deepspeed

PPO_KEYS = ("ppo/score_mean", "ppo/policy_loss", "ppo/value_loss", "ppo/ptx_loss", "ppo/kl")


@pytest.fixture(scope="module")
def ppo_runs(ppo_world, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepspeed_ppo")
    outs = {}
    for engine in ("ddp", "zero2", "zero3"):
        outs[engine] = root / engine
        ok(torchrun(ptx_args(ppo_world, outs[engine], "--engine", engine, "--ema")))
    return outs


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_zero_ppo_ptx_is_the_ddp_run(ppo_runs, engine):
    """Policy and value model are two DeepSpeed engines, each with its own backward and step; the pretraining
    backward accumulates into the policy's PPO gradient before its step."""
    for key in PPO_KEYS:
        assert column(ppo_runs[engine], key) == pytest.approx(column(ppo_runs["ddp"], key), rel=1e-3, abs=1e-5), key
    for name in ("model.safetensors", "last_policy/model.safetensors", "value_model/model.safetensors"):
        a, b = load_file(ppo_runs["ddp"] / name), load_file(ppo_runs[engine] / name)
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name


def test_zero3_ppo_partitions_all_four_models(ppo_runs):
    sync = json.loads((ppo_runs["zero3"] / "dist_sync.json").read_text())
    assert sync["frozen_placement"] == "sharded"  # the reference and RM as ZeRO-3 inference engines
    for key in ("parameters_held", "value_parameters_held", "reference_parameters_held", "reward_parameters_held"):
        assert about_half(sync[key]), (key, sync[key])
    zero2 = json.loads((ppo_runs["zero2"] / "dist_sync.json").read_text())
    assert zero2["frozen_placement"] == "replicated"


def test_zero3_ppo_resumes_with_its_average(ppo_world, ppo_runs, tmp_path):
    out = tmp_path / "resumed"
    cut_after_checkpoint(ppo_runs["zero3"], out, "step-2")
    r = ok(torchrun(ptx_args(ppo_world, out, "--engine", "zero3", "--ema", "--resume")))
    assert "resumed from" in r.stderr
    for key in PPO_KEYS:
        assert column(out, key) == pytest.approx(column(ppo_runs["zero3"], key), rel=1e-5, abs=1e-7), key
    for name in ("model.safetensors", "last_policy/model.safetensors"):
        a, b = load_file(ppo_runs["zero3"] / name), load_file(out / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_zero3_ppo_ptx_runs_on_one_gpu_in_bf16(ppo_world, tmp_path):
    """DeepSpeed's CUDA path: one process on one GPU (nothing to partition, but the engine's bf16 mode and its
    CUDA kernels), as scripts/gpu_checks.sh runs it."""
    out = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port())]
    args = ptx_args(ppo_world, out, "--engine", "zero3", "--mixed-precision", "bf16")
    ok(subprocess.run([*cmd, "-m", "instructrl", *args], env=cli_env(), capture_output=True, text=True, cwd=ROOT))
    sync = json.loads((out / "dist_sync.json").read_text())
    assert "DEEPSPEED" in sync["distributed_type"] and sync["num_processes"] == 1
    assert all(map(math.isfinite, column(out, "ppo/policy_loss")))
