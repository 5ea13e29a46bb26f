"""Tiny PPO worlds built inside the tests: policy, reward model, prompts and pretraining text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from testkit import CPU_ONLY, ROOT, cli_env, free_port
from torch import nn


def make_reward_model(policy_dir: Path, out: Path, gain: float = 1.0, bias: float = 0.0, seed: int = 1) -> Path:
    """An RM-format directory: the policy's backbone with a fresh scalar head, pad id and gain/bias set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.config.instructrl_reward_gain = gain
    rm.config.instructrl_reward_bias = bias
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class TokenRewardScorer(nn.Module):
    """A hand-made reward: ``scale`` times the share of the row's tokens whose id is below ``below`` (a
    tenth of the vocabulary, say). Rewards answers made of those tokens; prompts are the same for all."""

    def __init__(self, below: int, scale: float = 5.0):
        super().__init__()
        self.below, self.scale = below, scale
        self.calls = 0

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        hits = ((input_ids < self.below) & attention_mask.bool()).float().sum(-1)  # (B,)
        return self.scale * hits / attention_mask.float().sum(-1)


def quick_cfg(world: dict[str, Path], out: Path, **kw):
    from instructrl.ppo.config import PPOConfig

    base = dict(
        policy=str(world["policy"]),
        reward_model=str(world["rm"]),
        prompts=str(world["prompts"]),
        output_dir=str(out),
        total_episodes=24,
        batch_size=8,
        mini_batch_size=4,
        ppo_epochs=1,
        response_length=8,
        learning_rate=1e-3,
        warmup_iterations=0,
        ema=False,
        progress=False,
        checkpoint_every=1,
        sample_every=1,
        num_samples=2,
        seed=0,
    )
    base.update(kw)
    return PPOConfig(**base)


def cli_args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """`instructrl ppo` arguments for a two-iteration run on ``world`` into ``out``, then ``extra``."""
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
        "--total-episodes",
        "16",
        "--batch-size",
        "8",
        "--mini-batch-size",
        "4",
        "--response-length",
        "6",
        "--no-ema",
        "--no-progress",
        *extra,
    ]


def ptx_args(world, out, *extra):
    """:func:`cli_args` for a three-iteration PPO-ptx run with a checkpoint after each iteration."""
    return cli_args(
        world,
        out,
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
    )


def run_two_processes(args: list[str], out: Path) -> dict:
    """``instructrl ARGS`` under torchrun with 2 CPU processes (gloo); returns the run's dist_sync.json."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    r = subprocess.run(
        [*cmd, "-m", "instructrl", *args],
        env={**cli_env(), **CPU_ONLY},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "dist_sync.json").read_text())
