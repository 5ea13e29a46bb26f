"""Helpers shared by the tests (imported as `testkit`): paths, tiny datasets, running the CLI."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "instructgpt-samples"

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]


def fact_demos(n: int = 80, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = rng.choice(COLORS)
        rows.append({"prompt": f"What color is the flag of Zor{i}?", "completion": f"The flag of Zor{i} is {c}."})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    """Environment for running `python -m instructrl` in a subprocess against this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(args: list[str], cwd: Path | None = None, timeout: int = 300):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "instructrl", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def length_reward_model(tokenizer):
    """A :class:`~instructrl.modeling.reward.RewardModel` whose raw score is the number of real tokens of the
    row (rendered prompt + response + EOS): it prefers the longest response, so its choices are known."""
    from types import SimpleNamespace

    import torch

    from instructrl.modeling.reward import RewardModel

    class Length(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device for the scoring loop
            self.config = SimpleNamespace()  # no context limit

        def forward(self, input_ids, attention_mask, position_ids=None):
            return SimpleNamespace(logits=attention_mask.float().sum(-1, keepdim=True))  # (B, 1)

    return RewardModel(Length(), tokenizer, {"gain": 1.0, "bias": 0.0, "method": "none"})


def save_tiny_reward_model(policy_dir: Path, out: Path, seed: int = 0) -> Path:
    """An RM-format folder: the tiny policy's backbone under a fresh (random) scalar head, with its tokenizer."""
    import torch

    from instructrl.modeling.loading import load_tokenizer, save_pretrained_atomic
    from instructrl.modeling.reward import build_reward_model

    tok = load_tokenizer(str(policy_dir))
    torch.manual_seed(seed)
    return save_pretrained_atomic(build_reward_model(str(policy_dir), tok), tok, out)
