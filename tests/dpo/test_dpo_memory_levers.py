"""DPO's memory levers: a bf16 reference and checkpointing give the run they give without them."""

import pytest
from dpo_helpers import flag_pairs
from testkit import write_jsonl

from instructrl.dpo.api import run_dpo
from instructrl.dpo.config import DPOConfig
from instructrl.training.tracking import read_metrics


def run(tiny_model, tmp_path, data, name, **kw):
    cfg = DPOConfig(
        model=str(tiny_model), data=str(data), output_dir=str(tmp_path / name), cpu=True, mixed_precision="no",
        progress=False, max_length=64, batch_size=8, learning_rate=1e-3, warmup_steps=0, eval_fraction=0.0,
        eval_kl_prompts=0, max_steps=2, seed=0, **kw,
    )  # fmt: skip
    run_dpo(cfg)
    return [row["dpo/loss"] for row in read_metrics(tmp_path / name) if "dpo/loss" in row]


def test_bf16_reference_and_checkpointing_give_the_dpo_run_without_them(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", flag_pairs(16))
    plain = run(tiny_model, tmp_path, data, "plain")
    ckpt = run(tiny_model, tmp_path, data, "ckpt", gradient_checkpointing=True)
    half = run(tiny_model, tmp_path, data, "bf16", frozen_dtype="bf16")
    assert len(plain) == 2
    assert ckpt == pytest.approx(plain, abs=1e-6)
    # the log-ratio against a bf16 reference carries its rounding: the loss within bf16 tolerance, not exactly
    assert half == pytest.approx(plain, abs=0.02)
    assert half != plain
