"""`instructrl eval --benchmarks lm-eval:TASKS`: real benchmarks through lm-evaluation-harness for the
alignment tax. Nothing is downloaded: a small task definition of our own (a local JSON file) on tiny models."""

from __future__ import annotations

import json
import sys

import pytest
from testkit import fact_demos, write_jsonl

from instructrl.cli import main as cli
from instructrl.evaluate.lm_harness import parse_benchmarks, primary, relative_drop
from instructrl.modeling.tiny import make_tiny_model

TASK_YAML = """task: zor_flags
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_specs_and_arithmetic():
    assert parse_benchmarks("lm-eval:squadv2, drop,hellaswag") == ["squadv2", "drop", "hellaswag"]
    for bad in ("hellaswag", "lm-eval:", "lm-eval: ,"):
        with pytest.raises(Exception, match="lm-eval"):
            parse_benchmarks(bad)
    assert primary({"exact": 0.2, "f1": 0.4}) == ("f1", 0.4) and primary({"acc": 0.5, "acc_norm": 0.6}) == (
        "acc_norm",
        0.6,
    )
    assert relative_drop(0.45, 0.5) == pytest.approx(0.1) and relative_drop(0.6, 0.5) == pytest.approx(-0.2)
    assert relative_drop(0.1, 0.0) is None


def _args(model, baseline, tmp_path, *extra):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(2)])
    return ["eval", "--models", f"A={model}", "--baseline", f"BASE={baseline}", "--prompts", str(prompts),
            "--suites", "benchmarks", "--max-new-tokens", "4", "--no-progress", "--out", str(tmp_path / "ev"), *extra]  # fmt: skip


def test_without_lm_eval_it_is_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    assert cli(_args(tiny_model, tiny_model, tmp_path, "--benchmarks", "lm-eval:hellaswag")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --benchmarks lm-eval:hellaswag: lm-eval is not installed (pip install 'instructrl[lm-eval]')"
    assert not (tmp_path / "ev").exists()
    assert cli(_args(tiny_model, tiny_model, tmp_path, "--benchmarks", "hellaswag")) == 2
    assert "expected lm-eval:TASK[,TASK...]" in capsys.readouterr().err


def test_local_task_scores_and_drop_against_the_baseline(tiny_model, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    rows = [
        {"question": d["prompt"], "choices": ["red", "blue", "green"], "answer": i % 3}
        for i, d in enumerate(fact_demos(6))
    ]
    data = write_jsonl(tmp_path / "zor.jsonl", rows)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "zor.yaml").write_text(TASK_YAML.format(data=data))
    texts = [f"{r['question']} {r['choices'][r['answer']]}" for r in rows] * 3
    other = make_tiny_model(tmp_path / "other", texts, seed=1, vocab_size=200, n_layer=1, n_embd=32)

    args = _args(tiny_model, other, tmp_path, "--benchmarks", "lm-eval:zor_flags", "--lm-eval-include", str(tasks))
    args.insert(args.index("--baseline"), f"SAME={other}")  # the baseline's checkpoint as a model: no tax
    assert cli(args) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    score = res["models"]["A"]["lm_eval"]["zor_flags"]["acc"]
    base = res["baseline_scores"]["lm_eval"]["zor_flags"]["acc"]
    assert 0 <= score <= 1 and 0 <= base <= 1 and score * 6 == pytest.approx(round(score * 6))  # a share of 6 items
    drop = res["models"]["A"]["benchmark_drop"]["zor_flags acc"]
    assert drop == (pytest.approx((base - score) / base) if base else None)
    assert res["models"]["SAME"]["lm_eval"] == res["baseline_scores"]["lm_eval"]
    assert res["models"]["SAME"]["benchmark_drop"]["zor_flags acc"] in (0.0, None)
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "| model | zor_flags acc |" in summary and f"| BASE (baseline) | {base:.3f} |" in summary
    assert f"| A | {score:.3f}" in summary

    capsys.readouterr()
    bad = _args(
        tiny_model,
        other,
        tmp_path,
        "--benchmarks",
        "lm-eval:zor_flags,no_such_task_xyz",
        "--lm-eval-include",
        str(tasks),
    )
    bad[bad.index("--out") + 1] = str(tmp_path / "ev2")
    assert cli(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown lm-eval task(s) no_such_task_xyz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ev2").exists()
