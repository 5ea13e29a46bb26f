"""Fixtures of the PPO tests: one thread per test process, and a tiny policy / reward model / prompt world."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ppo_helpers import make_reward_model
from testkit import fact_demos, write_jsonl


@pytest.fixture(autouse=True)
def one_thread():
    """The CI machine has 2 cores shared with other jobs: one thread per test process is faster there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ppo_world(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo_world")
    rm = make_reward_model(tiny_model, root / "rm", gain=2.0, bias=0.5)
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(40)])
    ptx = write_jsonl(
        root / "ptx.jsonl", [{"text": d["prompt"] + " " + d["completion"]} for d in fact_demos(120, seed=3)]
    )
    return {"policy": tiny_model, "rm": rm, "prompts": prompts, "ptx": ptx, "root": root}
