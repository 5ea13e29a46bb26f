"""`instructrl rm` through a subprocess, evaluation-only mode with the judge ceiling, and SFT selection by RM score."""

import json

from rm_helpers import color_rankings
from testkit import fact_demos, run_cli, write_jsonl

from instructrl import cli
from instructrl.modeling.loading import load_tokenizer, save_pretrained_atomic
from instructrl.modeling.reward import build_reward_model
from instructrl.sft.api import run_sft
from instructrl.sft.config import SFTConfig
from instructrl.training.tracking import read_metrics


def test_cli_trains_then_evaluates_with_groups_and_judge_ceiling(tiny_model, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", color_rankings(24))
    out = tmp_path / "rm"
    r = run_cli(
        [
            "rm",
            "--config",
            "rm-tiny",
            "--model",
            str(tiny_model),
            "--data",
            str(train),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--max-length",
            "64",
            "--no-progress",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "completion forward passes" in r.stdout and "normalization none" in r.stdout
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists() and (out / "config.yaml").exists()
    assert json.loads((out / "reward_normalization.json").read_text())["method"] == "none"

    rows = color_rankings(12, seed=5)
    for i, row in enumerate(rows):  # a noiseless judge, and labels flipped on a third of the records
        row["reference_ranks"] = list(row["ranks"])
        row["labeler_group"] = "heldout" if i % 2 else "train"
        if i % 3 == 0:
            row["ranks"] = [max(row["ranks"]) + 1 - x for x in row["ranks"]]
    held = write_jsonl(tmp_path / "held.jsonl", rows)
    ev = tmp_path / "ev"
    assert (
        cli.main(
            ["rm", "--eval-only", "--model", str(out), "--eval-data", str(held), "--out", str(ev), "--max-length", "64"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "judge ceiling" in printed and "heldout_labelers" in printed
    report = json.loads((ev / "eval_results.json").read_text())
    groups = report["groups"]
    assert set(groups) == {"all", "train_labelers", "heldout_labelers"}
    assert groups["all"]["pairs"] == 72 and abs(groups["all"]["judge_accuracy"] - 8 / 12) < 1e-9
    assert all(k in groups["heldout_labelers"] for k in ("accuracy_se", "log_loss", "log_loss_se", "judge_accuracy_se"))
    assert (
        "train_minus_heldout_accuracy" in report["gaps"] and "judge_minus_heldout_labelers_accuracy" in report["gaps"]
    )
    assert "rm/eval/heldout_labelers/judge_accuracy" in read_metrics(ev)[-1]


def test_cli_bad_input_is_one_clear_line(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "Q", "completions": ["a", "b"], "ranks": [1, 2]})
        + "\n"
        + json.dumps({"prompt": "Q", "completions": ["a", "b", "c"], "ranks": [1, 2]})
        + "\n"
    )
    r = run_cli(["rm", "--model", str(tiny_model), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{bad}:2: 'ranks' has 2 entries but there are 3 completions" in r.stderr
    assert cli.main(["rm", "--eval-only", "--model", str(tiny_model), "--eval-data", str(bad)]) == 2
    assert "is not a reward model" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "rm",
                "--model",
                str(tiny_model),
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "o"),
                "--normalize",
                "reference",
            ]
        )
        == 2
    )
    assert "needs --reference-policy MODEL and --normalize-prompts FILE" in capsys.readouterr().err


def test_sft_selects_checkpoints_by_reward(tiny_model, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    rm_dir = save_pretrained_atomic(build_reward_model(str(tiny_model), tok), tok, tmp_path / "rm")
    demos = write_jsonl(tmp_path / "demos.jsonl", fact_demos(40))
    out = tmp_path / "sft"
    result = run_sft(
        SFTConfig(
            model=str(tiny_model),
            data=str(demos),
            output_dir=str(out),
            epochs=2,
            batch_size=8,
            learning_rate=3e-3,
            max_length=64,
            residual_dropout=0.0,
            progress=False,
            eval_fraction=0.1,
            select_by="reward",
            reward_model=str(rm_dir),
            select_prompts=4,
            select_max_new_tokens=8,
        )
    )
    evals = [row for row in read_metrics(out) if "sft/eval_reward" in row]
    assert len(evals) == 2 and all(isinstance(row["sft/eval_reward"], float) for row in evals)
    selection = json.loads((out / "selection.json").read_text())
    assert selection["select_by"] == "reward" and selection["best_step"] == result.best_step
    best = max(evals, key=lambda row: row["sft/eval_reward"])
    assert best["step"] == result.best_step and selection["best_metric"] == -best["sft/eval_reward"]
