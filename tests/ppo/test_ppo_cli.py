"""`instructrl ppo` through a subprocess: a whole run, bad inputs, the 2-process run."""

import json

import pytest
from ppo_helpers import cli_args, run_two_processes
from testkit import run_cli, run_cli_many, write_jsonl

from instructrl.ppo.config import PPOConfig


def test_defaults_are_the_papers_recipe():
    c = PPOConfig()
    assert (
        c.batch_size,
        c.mini_batch_size,
        c.ppo_epochs,
        c.kl_coef,
        c.cliprange,
        c.gamma,
        c.warmup_iterations,
        c.warmup_start,
        c.ema_decay,
        c.ptx_coef,
        c.ptx_per_episode,
        c.total_episodes,
        c.temperature,
    ) == (512, 64, 1, 0.02, 0.2, 1.0, 10, 0.1, 0.992, 27.8, 8.0, 256_000, 1.0)
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(PPOConfig))


def test_cli_ppo_ptx_run_writes_model_metrics_and_samples(ppo_world, tmp_path):
    out = tmp_path / "out"
    r = run_cli(
        cli_args(
            ppo_world,
            out,
            "--ptx-data",
            str(ppo_world["ptx"]),
            "--ptx-coef",
            "27.8",
            "--ptx-per-episode",
            "1",
            "--ptx-max-length",
            "16",
            "--config",
            "ppo-tiny",
            "--set",
            "sample_every=1",
            "--kl-estimator",
            "k3",
        )
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ppo: 2 iterations, 16 episodes" in r.stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[-1]["ppo/ptx_loss"] > 0 and rows[-1]["ppo/episodes"] == 16
    assert (out / "samples.jsonl").exists() and (out / "model.safetensors").exists()
    saved = (out / "config.yaml").read_text()
    # preset < --set < flags: checkpoint_every from ppo-tiny, sample_every from --set, batch_size from a flag
    assert "checkpoint_every: 20" in saved and "sample_every: 1" in saved and "batch_size: 8" in saved
    assert "kl_estimator: k3" in saved

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    AutoModelForCausalLM.from_pretrained(out)
    AutoModelForSequenceClassification.from_pretrained(out / "value_model")


def test_bad_prompt_files_give_clear_errors(ppo_world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "broken\n')
    cols = write_jsonl(tmp_path / "cols.jsonl", [{"question": "hi"}])
    r1, r2, r3, r4, r5 = run_cli_many(
        [
            cli_args({**ppo_world, "prompts": bad}, tmp_path / "o1"),
            cli_args({**ppo_world, "prompts": cols}, tmp_path / "o2"),
            cli_args({**ppo_world, "prompts": tmp_path / "missing.jsonl"}, tmp_path / "o3"),
            cli_args(ppo_world, tmp_path / "o4", "--max-prompt-length", "2"),
            cli_args(ppo_world, tmp_path / "o5", "--mini-batch-size", "3"),
        ]
    )
    assert r1.returncode == 2 and f"{bad}:2: malformed JSON" in r1.stderr and "Traceback" not in r1.stderr
    assert r2.returncode == 2 and "expected a 'prompt' or 'messages' column; columns found: question" in r2.stderr
    assert r3.returncode == 2 and "does not exist" in r3.stderr
    assert r4.returncode == 2 and "longer than max_prompt_length=2" in r4.stderr
    assert r5.returncode == 2 and "multiple of mini_batch_size=3" in r5.stderr


def test_two_process_run_keeps_ranks_in_sync(ppo_world, tmp_path):
    """torchrun, 2 CPU processes over gloo: each samples half the batch; DDP keeps the weights equal."""
    out = tmp_path / "dist"
    ptx = ["--ptx-data", str(ppo_world["ptx"]), "--ptx-per-episode", "1", "--ptx-max-length", "16"]
    sync = run_two_processes(cli_args(ppo_world, out, *ptx, "--total-episodes", "24"), out)
    assert sync["num_processes"] == 2 and "MULTI_CPU" in sync["distributed_type"]
    a, b = sync["param_checksums"]
    assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    va, vb = sync["value_param_checksums"]
    assert va == pytest.approx(vb, rel=1e-9, abs=1e-9)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["ppo/episodes"] == 24
