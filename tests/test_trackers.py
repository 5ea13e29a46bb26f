"""Experiment trackers: --report-to wandb logs training runs and evaluation results when wandb is installed
(offline here: nothing leaves the machine), and a run that asks for a tracker whose package is missing stops
with one line before it does anything."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from typing import ClassVar

import pytest
from testkit import fact_demos, write_jsonl

from instructrl.cli import main as cli
from instructrl.evaluate.config import EvalConfig
from instructrl.evaluate.report import flat_metrics
from instructrl.evaluate.runner import run_eval


class LongerWins:
    name = "longer-wins"

    def compare(self, prompts, responses, baselines):
        return [1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for a, b in zip(responses, baselines)]


def sft_args(model, data, out, *extra):
    return ["sft", "--model", str(model), "--data", str(data), "--out", str(out), "--max-steps", "2",
            "--batch-size", "2", "--max-length", "128", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard"])
def test_a_missing_tracker_stops_with_one_line(tracker, tiny_model, demos_file, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    out = tmp_path / "run"
    assert cli(sft_args(tiny_model, demos_file, out, "--report-to", tracker)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --report-to {tracker}: the {tracker} package is not installed "
        f"(pip install 'instructrl[{tracker}]'), or use --report-to none"
    )
    assert not out.exists()  # stopped before writing anything
    assert cli(["eval", "--models", str(tiny_model), "--prompts", str(demos_file), "--report-to", tracker,
                "--out", str(out)]) == 2  # fmt: skip
    assert "is not installed" in capsys.readouterr().err and not out.exists()
    assert cli(sft_args(tiny_model, demos_file, out, "--report-to", "wandbb")) == 2
    assert "--report-to): expected none or one of tensorboard, wandb" in capsys.readouterr().err


def test_eval_results_reach_wandb(tiny_model, tmp_path, monkeypatch):
    """What an evaluation hands to W&B (a stand-in module records the calls)."""
    calls: dict = {}

    class Run:
        summary: ClassVar[dict] = {}

        def finish(self):
            calls["finished"] = True

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.setdefault("init", kw) and Run()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    Run.summary = {}
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(4)])
    cfg = EvalConfig(models=[f"a={tiny_model}"], baseline=f"b={tiny_model}", prompts=str(prompts),
                     output_dir=str(tmp_path / "ev"), temperature=0, max_new_tokens=4, progress=False,
                     report_to="wandb")  # fmt: skip
    results = run_eval(cfg, judge=LongerWins())
    assert calls["finished"] and calls["init"]["job_type"] == "eval" and calls["init"]["config"]["report_to"] == "wandb"
    assert Run.summary["eval/a/win_rate"] == 0.5 and Run.summary["eval/a/win_rate_se"] == 0.0
    assert Run.summary == flat_metrics(results)


def test_flat_metrics():
    res = {"prompts": 3, "models": {"m": {"win_rate": {"mean": 0.5, "se": float("nan"), "n": 3}, "path": "x",
                                          "benchmarks": {"squad": 0.25}}}}  # fmt: skip
    assert flat_metrics(res) == {"eval/m/win_rate": 0.5, "eval/m/benchmarks/squad": 0.25, "eval/prompts": 3.0}


def test_wandb_logs_training_and_eval_offline(tiny_model, demos_file, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "sft"
    assert cli(sft_args(tiny_model, demos_file, out, "--report-to", "wandb")) == 0
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(3)])
    cfg = EvalConfig(models=[f"a={out}"], baseline=f"b={tiny_model}", prompts=str(prompts),
                     output_dir=str(tmp_path / "ev"), max_new_tokens=4, progress=False, report_to="wandb")  # fmt: skip
    run_eval(cfg, judge=LongerWins())
    assert len(list((tmp_path / "ev" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["models"]["a"]["win_rate"]["n"] == 3
