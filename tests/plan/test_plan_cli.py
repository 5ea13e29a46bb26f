"""`instructrl plan` through a subprocess: the table, --json, an instant --help, and one line per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from testkit import cli_env, run_cli

from instructrl.cli import build_parser
from instructrl.plan.arch import arch_from_config
from instructrl.plan.cli import stage_flags
from instructrl.plan.config import PlanConfig

LLAMA = {
    "model_type": "llama",
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_attention_heads": 8,
    "num_hidden_layers": 4,
    "vocab_size": 1000,
}


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA))
    return d


def test_table_and_json(model_dir):
    r = run_cli(["plan", "--model", str(model_dir), "--gpus", "2", "--gpu-memory", "24"])
    assert r.returncode == 0, r.stderr
    for part in ("weights", "gradients", "optimizer states", "activations", "rollout", "frozen models", "total"):
        assert part in r.stdout
    assert "fits" in r.stdout and "episodes/s" in r.stdout
    r = run_cli(
        [
            "plan",
            "--model",
            str(model_dir / "config.json"),
            "--stage",
            "sft",
            "--json",
            "--gpu-memory",
            "0.1",
            "--overhead",
            "0",
        ]
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["model"]["params"] == 4 * (4 * 512 * 512 + 3 * 512 * 1376 + 2 * 512) + 512 + 2 * 1000 * 512
    assert plan["fits"] is False and plan["suggestion"]["fits"] is True
    assert plan["suggestion"]["command"].startswith(f"instructrl plan --model {model_dir / 'config.json'} --stage sft")
    parts, transient = plan["parts_gib"], ("activations", "rollout")
    largest = max(parts["activations"], parts["rollout"], plan["detail_gib"]["optimizer_step"])
    held = sum(v for k, v in parts.items() if k not in transient)
    assert plan["total_gib"] == pytest.approx(held + largest, abs=0.01)


def test_help_is_instant_and_free_of_torch():
    code = (
        "import sys\nfrom instructrl.cli import main\n"
        "try:\n    main(['plan', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--gradient-checkpointing" in r.stdout and "--engine" in r.stdout
    assert r.stdout.strip().endswith("False False")


@pytest.mark.parametrize(
    "case",
    ["missing", "no-config", "unknown-type", "gpus", "memory", "hub", "no-model", "bad-targets"],
)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, model_dir):
    args = ["plan", "--model", str(model_dir)]
    expect = {
        "missing": "does not exist",
        "no-config": "no config.json",
        "unknown-type": "model_type 't5'",
        "gpus": "--gpus",
        "memory": "--gpu-memory",
        "hub": "could not fetch the config.json of 'nobody/no-such-model'",
        "no-model": "--model is required",
        "bad-targets": "lora_targets",
    }[case]
    if case == "missing":
        args[2] = str(tmp_path / "nowhere")
    elif case == "no-config":
        (tmp_path / "empty").mkdir()
        args[2] = str(tmp_path / "empty")
    elif case == "unknown-type":
        (model_dir / "config.json").write_text(json.dumps({"model_type": "t5"}))
    elif case == "gpus":
        args += ["--gpus", "0"]
    elif case == "memory":
        args += ["--gpu-memory", "0"]
    elif case == "hub":
        args[2] = "nobody/no-such-model"  # the tests run with HF_HUB_OFFLINE=1: fails at once
    elif case == "no-model":
        args = ["plan"]
    elif case == "bad-targets":
        args += ["--lora-r", "8", "--lora-targets", "c_attn"]
    r = run_cli(args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_the_launch_line_carries_flags_the_stage_accepts(stage):
    arch = arch_from_config(LLAMA)
    cfg = PlanConfig(
        model="m", stage=stage, gradient_checkpointing=True, lora_r=8, lora_targets=["all-linear"],
        weight_dtype="bf16", frozen_dtype="bf16",
    )  # fmt: skip
    cfg.validate()
    words, missing = stage_flags(cfg, arch)
    assert "--gradient-checkpointing" in words and "--lora-target-modules" in " ".join(words)
    parser, _ = build_parser(stage)
    args = parser.parse_args(" ".join(words).split())  # an unknown flag would exit
    assert args.gradient_checkpointing and int(args.lora_r) == 8 and missing == []  # flags parse as text


def test_a_cpu_plan_speaks_of_processes(model_dir):
    r = run_cli(["plan", "--model", str(model_dir), "--device", "cpu", "--gpus", "2", "--gpu-memory", "0.01"])
    assert r.returncode == 0, r.stderr
    assert "on 1 x 2 processes of 0.01 GiB" in r.stdout and "GiB/proc" in r.stdout
    assert "GiB per process" in r.stdout and "GPU" not in r.stdout.split("cheapest")[0].replace("--gpu", "")


def test_a_cpu_plan_launches_with_torchrun_and_the_engine_flag():
    from instructrl.plan.cli import launch_command

    arch = arch_from_config(LLAMA)
    for engine in ("ddp", "fsdp2", "zero3"):
        cfg = PlanConfig(model="m", stage="ppo", device="cpu", gpus=2, engine=engine, gradient_checkpointing=True)
        cfg.validate()
        line = launch_command(cfg, arch)
        assert line.startswith("torchrun --nproc_per_node 2 -m instructrl ppo ... ") and line.endswith(" --cpu")
        words = line.split(" ... ")[1].split()
        assert words[words.index("--engine") + 1] == engine and words.count("--engine") == 1
        parser, _ = build_parser("ppo")
        args = parser.parse_args(words)
        assert args.gradient_checkpointing and args.cpu


def test_a_cpu_plan_neither_suggests_nor_takes_a_quantized_base(model_dir):
    r = run_cli(["plan", "--model", str(model_dir), "--device", "cpu", "--gpu-memory", "0.001", "--json"])
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    tried = plan.get("suggestion") or plan["smallest"]
    assert "--quantize-base" not in tried["command"] and "episodes_per_second" not in plan
    r = run_cli(["plan", "--model", str(model_dir), "--device", "cpu", "--lora-r", "8", "--quantize-base", "4bit"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "need CUDA" in r.stderr and "Traceback" not in r.stderr
