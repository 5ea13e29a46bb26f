"""Dataset building and the `instructrl world` command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import run_cli_many

from instructrl.world.build import build, sizes

ROOT = Path(__file__).resolve().parents[2]


def _read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_sizes_follow_the_papers_proportions():
    n = sizes(1.0)
    assert n == {"sft": 1272, "rm": 3321, "ppo": 3114, "eval": 320}


def test_build_writes_every_dataset(tmp_path):
    meta = build(tmp_path / "a", seed=0, scale=0.05, pretrain_docs=200)
    sft = _read(tmp_path / "a" / "sft.jsonl")
    assert len(sft) == meta["counts"]["sft.jsonl"] and len(sft) >= 8
    assert {"prompt", "completion", "labeler", "user", "category", "task"} <= set(sft[0])
    rm, ppo, ev = (_read(tmp_path / "a" / f) for f in ("rm_prompts.jsonl", "ppo_prompts.jsonl", "eval_prompts.jsonl"))
    for rec in rm + ppo + ev:
        assert {"prompt", "user", "category", "task"} <= set(rec) and "completion" not in rec
    train_users = {r["user"] for r in sft + rm + ppo}
    assert not train_users & {r["user"] for r in ev}  # evaluation prompts come from held-out users
    assert {r["labeler"] for r in sft} <= set(meta["labelers"]["training"])
    assert all("text" in r for r in _read(tmp_path / "a" / "pretrain.jsonl"))
    tox = _read(tmp_path / "a" / "toxicity_prompts.jsonl")
    assert {r["instruction"] for r in tox} == {"none", "respectful", "biased"}
    tqa = _read(tmp_path / "a" / "truthfulqa.jsonl")
    assert {r["kind"] for r in tqa} == {"myth", "unknown"}
    assert {r["source"] for r in _read(tmp_path / "a" / "flan.jsonl")} == {"squad", "drop", "hellaswag", "wmt"}


def test_build_is_deterministic(tmp_path):
    build(tmp_path / "a", seed=1, scale=0.03, pretrain_docs=100)
    build(tmp_path / "b", seed=1, scale=0.03, pretrain_docs=100)
    for name in ("sft.jsonl", "rm_prompts.jsonl", "eval_prompts.jsonl", "pretrain.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_eval_prompts_override_keeps_the_training_data(tmp_path):
    a = build(tmp_path / "a", seed=0, scale=0.03, pretrain_docs=100)
    b = build(tmp_path / "b", seed=0, scale=0.03, pretrain_docs=100, eval_prompts=50)
    assert a["counts"]["eval_prompts.jsonl"] == 10 and b["counts"]["eval_prompts.jsonl"] == 50
    for name in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert {r["user"] for r in _read(tmp_path / "b" / "eval_prompts.jsonl")}.isdisjoint(
        {r["user"] for r in _read(tmp_path / "b" / "sft.jsonl")}
    )  # `world build --eval-prompts 0` is refused in test_cli_errors_are_clear


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "instructrl", "world", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory) -> Path:
    """A small world built through `instructrl world build`, shared by the tests below (they only read it)."""
    out = tmp_path_factory.mktemp("cli") / "w"
    r = _cli("build", "--out", str(out), "--scale", "0.02", "--pretrain-docs", "50")
    assert r.returncode == 0, r.stderr
    return out


def test_cli_build_and_label_with_the_synthetic_policy(cli_world, tmp_path):
    out = cli_world
    r = _cli(
        "label",
        "--policy",
        "synthetic",
        "--prompts",
        str(out / "rm_prompts.jsonl"),
        "--k",
        "4-9",
        "--out",
        str(tmp_path / "rankings.jsonl"),
    )
    assert r.returncode == 0, r.stderr
    rows = _read(tmp_path / "rankings.jsonl")
    assert rows and all(4 <= len(x["completions"]) == len(x["ranks"]) <= 9 for x in rows)
    assert all(min(x["ranks"]) == 1 for x in rows)
    assert all(x["labeler"].startswith("train-") for x in rows)


def test_cli_label_shares_k_samples_among_policies(cli_world, tmp_path):
    out = cli_world
    r = _cli(
        "label",
        "--policy",
        "tiny",
        "small",
        "--prompts",
        str(out / "rm_prompts.jsonl"),
        "--k",
        "3-5",
        "--limit",
        "4",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "round2.jsonl"),
    )
    assert r.returncode == 0, r.stderr
    rows = _read(tmp_path / "round2.jsonl")
    assert len(rows) == 4
    for x in rows:
        k = len(x["completions"])
        assert 3 <= k <= 5 and len(x["ranks"]) == k and x["sources"] == ["tiny", "small", "tiny", "small", "tiny"][:k]
    # a synthetic policy mixed with models is refused in test_cli_errors_are_clear


def test_cli_errors_are_clear(cli_world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    label = ["world", "label", "--policy", "synthetic", "--out", str(tmp_path / "x.jsonl"), "--prompts"]
    mixed = ["world", "label", "--policy", "synthetic", "tiny", "--prompts", str(cli_world / "rm_prompts.jsonl")]
    missing, no_task, bad_k, synthetic_and_model, no_eval_prompts = run_cli_many(
        [
            label + [str(tmp_path / "missing.jsonl")],
            label + [str(bad)],
            label + [str(bad), "--k", "x"],
            mixed + ["--out", str(tmp_path / "x.jsonl")],
            ["world", "build", "--out", str(tmp_path / "c"), "--scale", "0.03", "--eval-prompts", "0"],
        ],
        cwd=ROOT,
    )
    assert missing.returncode == 2 and "missing.jsonl' does not exist" in missing.stderr
    assert no_task.returncode == 2 and "bad.jsonl:1: missing 'task'" in no_task.stderr
    assert bad_k.returncode == 2
    assert synthetic_and_model.returncode == 2 and "synthetic cannot be mixed" in synthetic_and_model.stderr
    assert (
        no_eval_prompts.returncode == 2
        and "argument --eval-prompts: '0': give a whole number of at least 1" in no_eval_prompts.stderr
    )
