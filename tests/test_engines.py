"""Engines through accelerate on the CPU: FSDP2 with two processes against DDP (same losses, half of the weights on
each process, one gathered checkpoint that transformers loads, resume from sharded checkpoints), a two-node launch
simulated on this machine, and the engine choices a launch cannot honour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import CPU_ONLY, ROOT, cli_env, cut_after_checkpoint, fact_demos, run_cli_many, write_jsonl
from testkit import free_port as port

from instructrl.errors import ConfigError
from instructrl.training import engines

SFT_ARGS = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--learning-rate",
    "3e-3",
    "--max-length",
    "48",
    "--checkpoint-every",
    "3",
    "--select-by",
    "last",
    "--no-progress",
]
STEPS = 10  # 40 demonstrations / 8 = 5 steps per epoch, 2 epochs


def torchrun(args: list[str], port: int, nodes: int = 1, node_rank: int = 0) -> list[str]:
    per_node = 2 // nodes
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", str(per_node)]
    if nodes > 1:
        launch += ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1"]
    return [*launch, "--master_port", str(port), "-m", "instructrl", *args]


def run(cmd: list[str]) -> str:
    """Run ``cmd`` on the CPU; its stderr (the log), after asserting that it succeeded."""
    r = subprocess.run(cmd, env={**cli_env(), **CPU_ONLY}, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


def sft_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["sft", "--model", str(model), "--data", str(data), "--out", str(out), *SFT_ARGS, *extra]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["sft/loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_runs(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """SFT of the tiny model with two processes under DDP and under FSDP2."""
    root = tmp_path_factory.mktemp("engines")
    data = write_jsonl(root / "demos.jsonl", fact_demos(40))
    outs = {"data": data, "ddp": root / "ddp", "fsdp2": root / "fsdp2"}
    for engine in ("ddp", "fsdp2"):
        run(torchrun(sft_args(tiny_model, data, outs[engine], "--engine", engine), port()))
    return outs


def test_fsdp2_sft_gives_ddp_losses_with_half_the_weights_per_process(sft_runs):
    ddp, fsdp = sft_runs["ddp"], sft_runs["fsdp2"]
    assert len(losses(fsdp)) == STEPS
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=1e-4, abs=1e-5)
    sync = json.loads((fsdp / "dist_sync.json").read_text())
    assert "FSDP" in sync["distributed_type"] and sync["num_processes"] == 2
    (held0, total), (held1, _) = sync["parameters_held"]
    assert held0 + held1 == total and abs(held0 - total / 2) <= 0.05 * total  # about half each
    ddp_sync = json.loads((ddp / "dist_sync.json").read_text())
    assert "MULTI_CPU" in ddp_sync["distributed_type"]
    assert all(h == t for h, t in ddp_sync["parameters_held"])  # DDP: every process holds the whole model


def test_fsdp2_saves_one_gathered_checkpoint_that_transformers_loads(sft_runs):
    from transformers import AutoModelForCausalLM

    ddp, fsdp = load_file(sft_runs["ddp"] / "model.safetensors"), load_file(sft_runs["fsdp2"] / "model.safetensors")
    assert set(ddp) == set(fsdp)  # the same files and names as an unsharded run: no shards, tied weights once
    assert all(torch.allclose(ddp[k], fsdp[k], atol=1e-5) for k in ddp)
    model = AutoModelForCausalLM.from_pretrained(sft_runs["fsdp2"])
    assert (
        sum(p.numel() for p in model.parameters())
        == json.loads((sft_runs["fsdp2"] / "dist_sync.json").read_text())["parameters_held"][0][1]
    )
    # the training checkpoints stay sharded: one file of each process's shards
    ckpt = sorted((sft_runs["fsdp2"] / "checkpoints").glob("step-*"))[-1]
    assert len(list((ckpt / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2


def test_fsdp2_sft_resumes_from_a_sharded_checkpoint(tiny_model, sft_runs, tmp_path):
    """A run cut after step 6 (its later checkpoint and outputs gone, as a kill leaves it) resumes from the sharded
    step-6 checkpoint and ends where the uninterrupted run ended."""
    out = tmp_path / "resumed"
    cut_after_checkpoint(sft_runs["fsdp2"], out, "step-9")
    assert (out / "checkpoints" / "step-6").exists()
    run(torchrun(sft_args(tiny_model, sft_runs["data"], out, "--engine", "fsdp2", "--resume"), port()))
    a, b = load_file(sft_runs["fsdp2"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert losses(out) == pytest.approx(losses(sft_runs["fsdp2"]), rel=1e-6)


def test_two_nodes_on_one_machine_match_one_node_with_two_processes(tiny_model, sft_runs, tmp_path):
    """torchrun --nnodes 2 with a localhost rendezvous, one process per node, sharing one output folder."""
    out, p = tmp_path / "two-nodes", port()
    args = sft_args(tiny_model, sft_runs["data"], out, "--engine", "fsdp2")
    procs = [
        subprocess.Popen(
            torchrun(args, p, nodes=2, node_rank=rank),
            env={**cli_env(), **CPU_ONLY},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert losses(out) == pytest.approx(losses(sft_runs["fsdp2"]), rel=1e-6)
    a, b = load_file(sft_runs["fsdp2"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_fsdp2_reward_model_trains_sharded_and_saves_whole(tiny_model, tmp_path):
    from instructrl.modeling.reward import RewardModel

    rows = []
    for d in fact_demos(24):
        good = d["completion"]
        rows.append({"prompt": d["prompt"], "completions": [good, "No idea.", good.upper()], "ranks": [1, 3, 2]})
    data = write_jsonl(tmp_path / "rankings.jsonl", rows)
    out, shared, plain = tmp_path / "rm", tmp_path / "rm-ddp", tmp_path / "rm-ddp-plain"

    def args(folder: Path, *extra: str) -> list[str]:
        return ["rm", "--model", str(tiny_model), "--data", str(data), "--out", str(folder), "--batch-size", "4",
                "--max-length", "64", "--epochs", "1", "--no-progress", *extra]  # fmt: skip

    def launch(folder: Path, *extra: str) -> str:
        return run(torchrun(args(folder, *extra), port()))

    # FSDP2 frees each layer's gathered weights after its backward: the prompt is not shared there
    assert "share_prompt off: FSDP2 re-shards" in launch(out, "--engine", "fsdp2")
    sync = json.loads((out / "dist_sync.json").read_text())
    (held0, total), (held1, _) = sync["parameters_held"]
    assert "FSDP" in sync["distributed_type"] and held0 + held1 == total and held0 < 0.6 * total
    rm = RewardModel.from_pretrained(out)
    assert sum(p.numel() for p in rm.model.parameters()) == total
    # the same losses as two DDP processes, with each prompt forwarded once per ranking (the default) and with the
    # plain forward (each completion with its own copy of the prompt)
    assert "share_prompt: each prompt forwarded once per ranking" in launch(shared)
    assert "share_prompt" not in launch(plain, "--no-share-prompt")

    def rm_losses(folder: Path) -> list[float]:
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r["rm/loss"] for r in rows if "rm/loss" in r]

    assert len(rm_losses(out)) >= 5
    assert rm_losses(out) == pytest.approx(rm_losses(plain), rel=1e-4)
    assert rm_losses(shared) == pytest.approx(rm_losses(plain), rel=1e-4)


# ---------------------------------------------------------------------- choices a launch cannot honour
def test_layer_classes_names_the_model_that_has_none():
    with pytest.raises(ConfigError, match="FSDP auto-wrap found no transformer layer class in Sequential"):
        engines.layer_classes(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_layer_classes_finds_the_blocks_inside_a_wrapper(tiny_model):
    from transformers import AutoModelForCausalLM

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = AutoModelForCausalLM.from_pretrained(tiny_model)

    assert engines.layer_classes(Wrapper()) == ["GPT2Block"]


def test_zero_buffer_sizes_follow_each_model_and_keep_what_the_config_sets(tiny_model):
    """DeepSpeed's defaults (a 5e8-element gradient bucket, 1e9 live parameters) are replaced by sizes from each
    model; a size the launch config sets stays; the second model sharing the config gets its own sizes."""
    from transformers import AutoModelForCausalLM, GPT2Config

    small = AutoModelForCausalLM.from_pretrained(tiny_model)
    hidden = small.config.hidden_size
    wider = AutoModelForCausalLM.from_config(GPT2Config(n_embd=2 * hidden, n_layer=1, n_head=2, vocab_size=64))
    owner = type("Plugin", (), {})()
    zero = {"stage": 3, "stage3_max_live_parameters": 123, "reduce_bucket_size": "auto"}
    engines._size_zero(zero, small, owner)
    block = sum(p.numel() for p in small.transformer.h[0].parameters())
    embedding = small.transformer.wte.weight.numel()
    assert zero["reduce_bucket_size"] == hidden * hidden
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * hidden * hidden)
    assert zero["stage3_param_persistence_threshold"] == 10 * hidden
    assert zero["stage3_max_reuse_distance"] == 2 * max(block, embedding)
    assert zero["stage3_max_live_parameters"] == 123  # the config's own
    engines._size_zero(zero, wider, owner)
    assert zero["reduce_bucket_size"] == 4 * hidden * hidden
    assert zero["stage3_max_reuse_distance"] == 2 * max(
        sum(p.numel() for p in wider.transformer.h[0].parameters()), wider.transformer.wte.weight.numel()
    )
    assert zero["stage3_max_live_parameters"] == 123
    frozen = {"stage": 3, "stage3_param_persistence_threshold": 0}
    engines._size_zero(frozen, small)  # an inference engine keeps nothing whole
    assert frozen["stage3_param_persistence_threshold"] == 0 and frozen["reduce_bucket_size"] == hidden * hidden
    stage2 = {"stage": 2}
    engines._size_zero(stage2, small)
    assert stage2 == {"stage": 2, "reduce_bucket_size": hidden * hidden}


def test_engines_command_lists_and_locates_the_shipped_configs():
    import yaml

    names = (("ddp", "MULTI_GPU"), ("fsdp2", "FSDP"), ("fsdp2-offload", "FSDP"))
    names += (("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"), ("zero3-offload", "DEEPSPEED"))
    listing, *paths, unknown = run_cli_many(
        [["engines"], *(["engines", "--path", n] for n, _ in names), ["engines", "--path", "zero4"]]
    )
    assert listing.returncode == 0
    for (name, kind), found in zip(names, paths):
        assert name in listing.stdout
        config = yaml.safe_load(Path(found.stdout.strip()).read_text())
        assert config["distributed_type"] == kind
        if kind == "FSDP":
            assert config["fsdp_config"]["fsdp_version"] == 2
            assert config["fsdp_config"]["fsdp_offload_params"] == name.endswith("offload")
        if kind == "DEEPSPEED":
            ds = config["deepspeed_config"]
            assert ds["zero_stage"] == int(name[4]) and ds["zero3_save_16bit_model"] is True
            assert (ds["offload_optimizer_device"], ds["offload_param_device"]) == (
                ("cpu", "none") if name.endswith("offload") else ("none", "none")
            )
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "choose one of" in unknown.stderr


# `python -m instructrl` as on a machine without the deepspeed extra, whether or not this one has it
WITHOUT_DEEPSPEED = "import runpy, sys; sys.modules['deepspeed'] = None; sys.argv[0] = 'instructrl'; "
WITHOUT_DEEPSPEED += "runpy.run_module('instructrl', run_name='__main__')"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"ACCELERATE_USE_DEEPSPEED": "true"},
            [],
            "the launcher's accelerate config (DeepSpeed) needs DeepSpeed, which",
        ),
        ({}, ["--engine", "zero3"], "--engine zero3 needs DeepSpeed, which is not installed: pip install 'instructrl["),
        ({"ACCELERATE_USE_FSDP": "true"}, ["--engine", "ddp"], "--engine ddp but the launcher's accelerate config"),
        ({"ACCELERATE_USE_FSDP": "true"}, ["--engine", "zero2"], "--engine zero2 but the launcher's accelerate config"),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
            ["--engine", "zero3"],
            "--engine zero3 but the launcher's DeepSpeed config has ZeRO stage 2",
        ),
    ],
)
def test_an_engine_the_launch_cannot_honour_is_one_line_and_writes_nothing(tiny_model, tmp_path, env, flags, message):
    out = tmp_path / "out"
    data = write_jsonl(tmp_path / "demos.jsonl", fact_demos(8))
    launch = [sys.executable, "-c", WITHOUT_DEEPSPEED]  # a mismatch is refused before DeepSpeed is looked for
    r = subprocess.run(
        [*launch, *sft_args(tiny_model, data, out, *flags)],
        env={**cli_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (out / "checkpoints").exists() and not (out / "model.safetensors").exists()


def test_frozen_placement_follows_the_engine():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def acc(kind, world, device="cuda"):
        return SimpleNamespace(distributed_type=kind, num_processes=world, device=torch.device(device))

    fsdp, ddp = DistributedType.FSDP, DistributedType.MULTI_GPU
    assert engines.frozen_placement(acc(fsdp, 2), "auto") == "sharded"
    assert engines.frozen_placement(acc(ddp, 2), "auto") == "replicated"
    assert engines.frozen_placement(acc(fsdp, 2), "cpu") == "cpu"  # layers streamed from CPU memory to the GPU
    assert engines.frozen_placement(acc(fsdp, 2, "cpu"), "cpu") == "replicated"  # already in CPU memory
    with pytest.raises(ConfigError, match="sharded: the frozen models are sharded by FSDP2 or ZeRO-3, so it needs"):
        engines.frozen_placement(acc(ddp, 2), "sharded")
    with pytest.raises(ConfigError, match="cpu: FSDP2 or ZeRO-3 keep the frozen models in CPU memory and stream"):
        engines.frozen_placement(acc(ddp, 1), "cpu")

    def zero(stage, world=2):
        plugin = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage))
        return SimpleNamespace(
            distributed_type=DistributedType.DEEPSPEED, num_processes=world, state=plugin, device=torch.device("cuda")
        )

    assert engines.frozen_placement(zero(3), "auto") == "sharded"  # ZeRO-3 inference engines
    assert engines.frozen_placement(zero(2), "auto") == "replicated"  # ZeRO-2 keeps whole weights everywhere
    assert engines.frozen_placement(zero(3, world=1), "auto") == "replicated"
    with pytest.raises(ConfigError, match="sharded by FSDP2 or ZeRO-3"):
        engines.frozen_placement(zero(2), "sharded")
    assert engines.frozen_placement(zero(3), "cpu") == "cpu"  # DeepSpeed's offload_param for the frozen engines
    with pytest.raises(ConfigError, match="cpu: FSDP2 or ZeRO-3 keep"):
        engines.frozen_placement(zero(2), "cpu")


def test_a_quantized_base_under_a_sharding_engine_is_refused_before_anything_is_prepared():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    lora = torch.nn.Linear(2, 2)
    lora.peft_config = {"default": None}  # what peft models carry
    lora.is_loaded_in_4bit = True  # what a bitsandbytes base carries
    plugin = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2))
    acc = SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2, state=plugin)
    with pytest.raises(ConfigError, match=r"--quantize-base under FSDP2: a quantized base is not sharded here"):
        engines.prepare(acc, lora, torch.optim.AdamW(lora.parameters()))


def test_lora_sft_under_fsdp2_is_the_ddp_run_saved_merged(tiny_model, sft_runs, tmp_path):
    """LoRA's adapters train sharded with the frozen base; the gathered weights are merged by peft on the main
    process, so the output is the same plain transformers checkpoint DDP's LoRA run writes."""
    outs = {}
    for engine in ("ddp", "fsdp2"):
        outs[engine] = tmp_path / engine
        lora = ["--engine", engine, "--lora-r", "4", "--lora-dropout", "0", "--residual-dropout", "0"]
        run(torchrun(sft_args(tiny_model, sft_runs["data"], outs[engine], *lora), port()))
    assert losses(outs["fsdp2"]) == pytest.approx(losses(outs["ddp"]), rel=1e-4, abs=1e-5)
    a, b = load_file(outs["ddp"] / "model.safetensors"), load_file(outs["fsdp2"] / "model.safetensors")
    assert set(a) == set(b) and not any("lora" in k for k in b)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not (outs["fsdp2"] / "adapter_config.json").exists()
