"""`instructrl dpo` through a subprocess, and bad input: one clear line and exit code 2."""

import json

import pytest
from dpo_helpers import flag_pairs, flag_rankings
from testkit import run_cli, write_jsonl

from instructrl import cli
from instructrl.training.tracking import read_metrics


def test_cli_trains_on_rankings_and_writes_a_checkpoint(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", flag_rankings(12, k=3, tie_every=4) + flag_pairs(4, seed=2))
    out = tmp_path / "dpo"
    r = run_cli(
        ["dpo", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--max-steps", "2"]
        + ["--batch-size", "4", "--learning-rate", "1e-3", "--warmup-steps", "0", "--max-length", "64", "--cpu"]
        + ["--beta", "0.2", "--ranking-loss", "plackett-luce", "--eval-fraction", "0.25", "--eval-kl-prompts", "2"]
        + ["--eval-max-new-tokens", "4", "--no-progress"]
    )
    assert r.returncode == 0, r.stderr
    assert "dpo: 2 steps" in r.stdout and f"model saved to {out}" in r.stdout
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert "ranking_loss: plackett-luce" in (out / "config.yaml").read_text()
    last = read_metrics(out)[-1]
    assert {"dpo/loss", "dpo/accuracy", "dpo/margin", "dpo/eval_accuracy", "dpo/eval_kl"} <= set(last)
    assert json.loads((out / "data_report.json").read_text())["load"]["records"] == 16


def test_cli_help_lists_the_stage_and_its_loss_options():
    assert "dpo" in run_cli(["--help"]).stdout
    r = run_cli(["dpo", "--help"])
    assert r.returncode == 0 and all(f in r.stdout for f in ("--beta", "--ranking-loss", "--loss-type", "--ptx-coef"))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_data_where_every_completion_ties_is_one_line_and_exit_2(tiny_model, tmp_path, capsys):
    tied = write_jsonl(
        tmp_path / "tied.jsonl",
        [{"prompt": f"Q{i}?", "completions": ["a", "b", "c"], "ranks": [1, 1, 1]} for i in range(3)],
    )
    assert cli.main(["dpo", "--model", str(tiny_model), "--data", str(tied), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and error_lines(err) == [
        f"error: {tied}: none of its 3 rankings has two different ranks, so there is no comparison to learn from"
    ]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "Q", "chosen": "a"}, ":2: missing column 'rejected'; columns found: chosen, prompt"),
        ({"prompt": "Q", "completions": ["a", "b"]}, ":2: expected columns 'prompt', 'completions' and 'ranks'"),
        ({"question": "Q", "answer": "a"}, ":2: expected 'prompt', 'completions' and 'ranks'"),
    ],
)
def test_missing_fields_are_one_line_naming_file_and_line(tiny_model, tmp_path, capsys, row, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", [flag_pairs(1)[0], row])
    assert cli.main(["dpo", "--model", str(tiny_model), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {bad}{message}")


@pytest.mark.parametrize("beta", ["0", "-0.1"])
def test_beta_must_be_positive(tiny_model, tmp_path, capsys, beta):
    data = write_jsonl(tmp_path / "p.jsonl", flag_pairs(4))
    argv = ["dpo", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "o"), "--beta", beta]
    assert cli.main(argv) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "beta" in line and "must be > 0" in line
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_incompatible_loss_options_are_refused(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", flag_pairs(4))
    base = ["dpo", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "o")]
    assert cli.main(base + ["--ranking-loss", "plackett-luce", "--loss-type", "ipo"]) == 2
    assert cli.main(base + ["--loss-type", "ipo", "--label-smoothing", "0.1"]) == 2
    assert cli.main(base + ["--label-smoothing", "0.5"]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 3 and "plackett-luce" in errors[0] and "IPO has none" in errors[1]
    assert "label_smoothing" in errors[2]


def test_an_unfinished_run_or_a_length_past_the_context_is_refused(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", flag_pairs(4))
    run = tmp_path / "sft-run"  # an instructrl run folder without its completion marker
    run.mkdir()
    (run / "config.yaml").write_text("stage: SFTConfig\nseed: 0\n")
    (run / "config.json").write_text("{}")
    assert cli.main(["dpo", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    argv = ["dpo", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "o2")]
    assert cli.main(argv + ["--max-length", "100000"]) == 2
    unfinished, too_long = error_lines(capsys.readouterr().err)
    assert "is an unfinished SFTConfig run" in unfinished
    assert "--max-length = 100000 tokens exceeds the model's context" in too_long
