"""DeepSpeed ZeRO through accelerate, on the CPU with two processes (DeepSpeed's CPU accelerator over gloo): SFT, the
reward model and DPO under ZeRO-2 and ZeRO-3 give DDP's run, ZeRO-3 holds about half of the model per process, the
gathered checkpoint loads in transformers, resume continues the run, and a DeepSpeed launch config is followed.
PPO-ptx under DeepSpeed: tests/ppo/test_ppo_deepspeed.py.

DeepSpeed is an optional extra: these tests run where it is installed (``pip install -e '.[deepspeed]'``) and skip
elsewhere. The refusal when it is missing is checked in ``test_engines.py``, which always runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import about_half, cli_env, cut_after_checkpoint, fact_demos, torchrun, write_jsonl
from testkit import metric_column as column
from testkit import succeeded as ok

pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")

pytestmark = pytest.mark.deepspeed

SFT = ["--epochs", "2", "--batch-size", "8", "--learning-rate", "3e-3", "--max-length", "48"]
# residual dropout off: ZeRO-3's partitioning draws random numbers, so with dropout its masks would differ from DDP's
SFT += ["--checkpoint-every", "3", "--select-by", "last", "--no-progress", "--residual-dropout", "0"]


@pytest.fixture(scope="module")
def sft_runs(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepspeed_sft")
    data = write_jsonl(root / "demos.jsonl", fact_demos(40))
    outs = {"data": data}
    for engine in ("ddp", "zero2", "zero3"):
        outs[engine] = root / engine
        args = ["sft", "--model", str(tiny_model), "--data", str(data), "--out", str(outs[engine]), *SFT]
        ok(torchrun([*args, "--engine", engine]))
    return outs


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_zero_sft_gives_ddp_losses_and_weights(sft_runs, engine):
    ddp, zero = sft_runs["ddp"], sft_runs[engine]
    assert column(zero, "sft/loss") == pytest.approx(column(ddp, "sft/loss"), rel=1e-4, abs=1e-5)
    a, b = load_file(ddp / "model.safetensors"), load_file(zero / "model.safetensors")
    assert set(a) == set(b)  # one whole checkpoint, tied weights once, as DDP saves it
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    sync = json.loads((zero / "dist_sync.json").read_text())
    assert "DEEPSPEED" in sync["distributed_type"] and sync["num_processes"] == 2
    if engine == "zero3":  # the weights themselves are partitioned
        assert about_half(sync["parameters_held"])
    else:  # ZeRO-2 partitions gradients and optimizer states; every process keeps the whole weights
        assert all(h == t for h, t in sync["parameters_held"])


def test_zero3_checkpoint_loads_in_transformers_and_the_run_resumes(tiny_model, sft_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(sft_runs["zero3"])
    ckpt = sorted((sft_runs["zero3"] / "checkpoints").glob("step-*"))[-1]
    assert list(ckpt.rglob("*optim_states.pt"))  # DeepSpeed's own partitioned checkpoint
    out = tmp_path / "resumed"
    cut_after_checkpoint(sft_runs["zero3"], out, "step-9")
    args = ["sft", "--model", str(tiny_model), "--data", str(sft_runs["data"]), "--out", str(out), *SFT]
    r = ok(torchrun([*args, "--engine", "zero3", "--resume"]))
    assert "resumed from" in r.stderr
    a, b = load_file(sft_runs["zero3"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_zero3_reward_model_trains_sharded_and_saves_whole(tiny_model, tmp_path):
    from instructrl.modeling.reward import RewardModel

    rows = []
    for d in fact_demos(24):
        good = d["completion"]
        rows.append({"prompt": d["prompt"], "completions": [good, "No idea.", good.upper()], "ranks": [1, 3, 2]})
    data = write_jsonl(tmp_path / "rankings.jsonl", rows)
    outs, logs = {}, {}
    for engine in ("ddp", "zero2", "zero3"):
        outs[engine] = tmp_path / engine
        args = ["rm", "--model", str(tiny_model), "--data", str(data), "--out", str(outs[engine]), "--epochs", "1"]
        r = ok(torchrun([*args, "--batch-size", "4", "--max-length", "64", "--no-progress", "--engine", engine]))
        logs[engine] = r.stderr
    # each prompt forwarded once per ranking under DDP and ZeRO-2; ZeRO-3 re-shards weights and keeps the plain forward
    assert "share_prompt: each prompt forwarded once" in logs["ddp"] and "share_prompt: each" in logs["zero2"]
    assert "share_prompt off: DeepSpeed ZeRO-3 re-shards" in logs["zero3"]
    for engine in ("zero2", "zero3"):
        assert column(outs[engine], "rm/loss") == pytest.approx(column(outs["ddp"], "rm/loss"), rel=1e-4, abs=1e-5)
    assert about_half(json.loads((outs["zero3"] / "dist_sync.json").read_text())["parameters_held"])
    RewardModel.from_pretrained(outs["zero3"])


def test_a_deepspeed_launch_config_is_followed_with_engine_auto(tiny_model, sft_runs, tmp_path):
    """What ``accelerate launch --config_file $(instructrl engines --path zero3)`` sets in each process's environment
    (here under torchrun, as accelerate launch does on a GPU machine): --engine auto runs ZeRO-3."""
    import os

    env = {**cli_env(), "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    env.update(ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL="true", ACCELERATE_DEEPSPEED_ZERO3_INIT="false")
    out = tmp_path / "launched"
    args = ["sft", "--model", str(tiny_model), "--data", str(sft_runs["data"]), "--out", str(out), *SFT]
    r = ok(torchrun(args, env=env))
    assert "engine: DeepSpeed ZeRO-3 on 2 process(es)" in r.stderr
    assert column(out, "sft/loss") == pytest.approx(column(sft_runs["zero3"], "sft/loss"), rel=1e-6)
    assert os.path.exists(out / "model.safetensors")


def test_zero3_dpo_gives_ddp_losses_with_the_policy_partitioned(tiny_model, tmp_path):
    rows = [{"prompt": d["prompt"], "chosen": d["completion"], "rejected": "No idea."} for d in fact_demos(32)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    outs = {}
    for engine in ("ddp", "zero3"):
        outs[engine] = tmp_path / engine
        args = ["dpo", "--model", str(tiny_model), "--data", str(data), "--out", str(outs[engine]), "--epochs", "1"]
        ok(
            torchrun(
                [
                    *args,
                    "--batch-size",
                    "8",
                    "--max-length",
                    "64",
                    "--learning-rate",
                    "1e-3",
                    "--warmup-steps",
                    "0",
                    "--no-progress",
                    "--engine",
                    engine,
                ]
            )
        )
    assert column(outs["zero3"], "dpo/loss") == pytest.approx(column(outs["ddp"], "dpo/loss"), rel=1e-5)
    assert about_half(json.loads((outs["zero3"] / "dist_sync.json").read_text())["parameters_held"])


def test_lora_sft_under_zero3_is_the_ddp_run_saved_merged(tiny_model, sft_runs, tmp_path):
    outs = {}
    for engine in ("ddp", "zero3"):
        outs[engine] = tmp_path / engine
        args = ["sft", "--model", str(tiny_model), "--data", str(sft_runs["data"]), "--out", str(outs[engine]), *SFT]
        ok(torchrun([*args, "--engine", engine, "--lora-r", "4", "--lora-dropout", "0"]))
    assert column(outs["zero3"], "sft/loss") == pytest.approx(column(outs["ddp"], "sft/loss"), rel=1e-4, abs=1e-5)
    a, b = load_file(outs["ddp"] / "model.safetensors"), load_file(outs["zero3"] / "model.safetensors")
    assert set(a) == set(b) and not any("lora" in k for k in b)  # merged: a plain transformers checkpoint
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
