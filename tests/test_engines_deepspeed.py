"""DeepSpeed ZeRO through accelerate, on the CPU with two processes (DeepSpeed's CPU accelerator over gloo): SFT and
PPO-ptx under ZeRO-2 and ZeRO-3 give DDP's run, ZeRO-3 holds about half of each model per process (the frozen
reference and reward model too), the gathered checkpoint loads in transformers, and resume continues the run.

DeepSpeed is an optional extra: these tests run where it is installed (``pip install -e '.[deepspeed]'``) and skip
elsewhere. The refusal when it is missing is checked in ``test_engines.py``, which always runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import ROOT, cli_env, fact_demos, write_jsonl
from testkit import free_port as port

pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")

pytestmark = pytest.mark.deepspeed

SFT = ["--epochs", "2", "--batch-size", "8", "--learning-rate", "3e-3", "--max-length", "48"]
# residual dropout off: ZeRO-3's partitioning draws random numbers, so with dropout its masks would differ from DDP's
SFT += ["--checkpoint-every", "3", "--select-by", "last", "--no-progress", "--residual-dropout", "0"]
PPO_KEYS = ("ppo/score_mean", "ppo/policy_loss", "ppo/value_loss", "ppo/ptx_loss", "ppo/kl")


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port())]
    return subprocess.run(
        [*cmd, "-m", "instructrl", *args], env=cli_env(), capture_output=True, text=True, timeout=600, cwd=ROOT
    )


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def column(out: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (out / "metrics.jsonl").read_text().splitlines()]


def about_half(pairs: list[list[int]]) -> bool:
    """(held, total) per process: together about the whole (ZeRO-3 pads each partition), each about half."""
    (h0, total), (h1, _) = pairs
    return total <= h0 + h1 <= 1.02 * total and abs(h0 - total / 2) <= 0.05 * total


def strip_to_checkpoints(src: Path, dst: Path, drop: str) -> None:
    """``dst``: ``src`` as a kill after an earlier checkpoint leaves it (outputs and checkpoint ``drop`` gone)."""
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        if p.name not in ("checkpoints", "config.yaml", "metrics.jsonl", "samples.jsonl", "data_report.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(dst / "checkpoints" / drop)


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
    strip_to_checkpoints(sft_runs["zero3"], out, "step-9")
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
    outs = {}
    for engine in ("ddp", "zero3"):
        outs[engine] = tmp_path / engine
        args = ["rm", "--model", str(tiny_model), "--data", str(data), "--out", str(outs[engine]), "--epochs", "1"]
        ok(torchrun([*args, "--batch-size", "4", "--max-length", "64", "--no-progress", "--engine", engine]))
    assert column(outs["zero3"], "rm/loss") == pytest.approx(column(outs["ddp"], "rm/loss"), rel=1e-4, abs=1e-5)
    assert about_half(json.loads((outs["zero3"] / "dist_sync.json").read_text())["parameters_held"])
    RewardModel.from_pretrained(outs["zero3"])


@pytest.fixture(scope="module")
def ppo_runs(ppo_world_for_engines, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepspeed_ppo")
    outs = {}
    for engine in ("ddp", "zero2", "zero3"):
        outs[engine] = root / engine
        ok(torchrun(ppo_args(ppo_world_for_engines, outs[engine], "--engine", engine, "--ema")))
    return outs


def ppo_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "ppo",
        "--policy",
        str(world["policy"]),
        "--reward-model",
        str(world["rm"]),
        "--prompts",
        str(world["prompts"]),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--mini-batch-size",
        "4",
        "--no-progress",
        "--ptx-data",
        str(world["ptx"]),
        "--ptx-coef",
        "0.5",
        "--total-episodes",
        "24",
        "--checkpoint-every",
        "1",
        "--response-length",
        "5",
        *extra,
    ]


@pytest.fixture(scope="module")
def ppo_world_for_engines(tiny_model, tmp_path_factory) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).parent / "ppo"))
    from ppo_helpers import make_reward_model

    root = tmp_path_factory.mktemp("deepspeed_ppo_world")
    return {
        "policy": tiny_model,
        "rm": make_reward_model(tiny_model, root / "rm", gain=2.0, bias=0.5),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(40)]),
        "ptx": write_jsonl(
            root / "ptx.jsonl", [{"text": d["prompt"] + " " + d["completion"]} for d in fact_demos(120, seed=3)]
        ),
    }


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


def test_zero3_ppo_resumes_with_its_average(ppo_world_for_engines, ppo_runs, tmp_path):
    out = tmp_path / "resumed"
    strip_to_checkpoints(ppo_runs["zero3"], out, "step-2")
    r = ok(torchrun(ppo_args(ppo_world_for_engines, out, "--engine", "zero3", "--ema", "--resume")))
    assert "resumed from" in r.stderr
    for key in PPO_KEYS:
        assert column(out, key) == pytest.approx(column(ppo_runs["zero3"], key), rel=1e-5, abs=1e-7), key
    for name in ("model.safetensors", "last_policy/model.safetensors"):
        a, b = load_file(ppo_runs["zero3"] / name), load_file(out / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_a_deepspeed_launch_config_is_followed_with_engine_auto(tiny_model, sft_runs, tmp_path):
    """What ``accelerate launch --config_file $(instructrl engines --path zero3)`` sets in each process's environment
    (here under torchrun, as accelerate launch does on a GPU machine): --engine auto runs ZeRO-3."""
    import os

    env = {**cli_env(), "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    env.update(ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL="true", ACCELERATE_DEEPSPEED_ZERO3_INIT="false")
    out = tmp_path / "launched"
    args = ["sft", "--model", str(tiny_model), "--data", str(sft_runs["data"]), "--out", str(out), *SFT]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port())]
    r = subprocess.run(
        [*cmd, "-m", "instructrl", *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    ok(r)
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
