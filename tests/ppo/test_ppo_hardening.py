"""PPO's part of resume and completion: rows after the checkpoint are not repeated, the marker comes last."""

from __future__ import annotations

import json

import pytest
from ppo_helpers import quick_cfg

from instructrl.errors import ConfigError, ModelLoadError
from instructrl.ppo.api import run_ppo
from instructrl.training.tracking import read_metrics
from instructrl.training.validation import COMPLETE


def test_resume_writes_metrics_and_samples_once_and_marks_completion(ppo_world, tmp_path):
    out = tmp_path / "ppo"
    run_ppo(quick_cfg(ppo_world, out, checkpoint_every=2))  # 3 iterations, a checkpoint at 2
    assert (out / COMPLETE).exists()
    run_ppo(quick_cfg(ppo_world, out, checkpoint_every=2, resume=True))  # redoes iteration 3
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    samples = [json.loads(x)["iteration"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert samples == [1, 1, 2, 2, 3, 3]
    with pytest.raises(ConfigError, match="response_length: 8 -> 6"):
        run_ppo(quick_cfg(ppo_world, out, checkpoint_every=2, resume=True, response_length=6))
    (out / COMPLETE).unlink()
    with pytest.raises(ModelLoadError, match="unfinished PPOConfig run"):
        run_ppo(quick_cfg(ppo_world, tmp_path / "next", policy=str(out)))


def test_response_beyond_the_context_is_refused(ppo_world, tmp_path):
    with pytest.raises(
        ConfigError, match=r"--max-prompt-length \(\d+\) \+ --response-length \(250\) = \d+ tokens exceeds"
    ):
        run_ppo(quick_cfg(ppo_world, tmp_path / "ppo", response_length=250))
