"""The best-of-n arm of `instructrl eval`: NAME=PATH+best-of-N@RM_PATH."""

import json

import pytest
from testkit import fact_demos, run_cli, save_tiny_reward_model, write_jsonl

from instructrl.errors import ConfigError
from instructrl.evaluate.config import EvalConfig
from instructrl.evaluate.runner import parse_model_spec, run_eval


@pytest.fixture(scope="module")
def tiny_rm(tiny_model, tmp_path_factory):
    return save_tiny_reward_model(tiny_model, tmp_path_factory.mktemp("eval_bon") / "rm")


def test_best_of_n_model_specs(tmp_path):
    s = parse_model_spec("BoN4=runs/sft+best-of-4@runs/rm")
    assert (s.name, s.path, s.few_shot, s.best_of, s.reward_model) == ("BoN4", "runs/sft", False, 4, "runs/rm")
    s = parse_model_spec("base/small+fewshot+best-of-2@r/m")
    assert (s.name, s.path, s.few_shot, s.best_of, s.reward_model) == (
        "small-fewshot-bo2",
        "base/small",
        True,
        2,
        "r/m",
    )
    assert parse_model_spec("runs/sft").best_of == 1 and parse_model_spec("runs/sft").reward_model is None
    for bad in ("x=runs/sft+best-of-0@rm", "x=runs/sft+best-of-4", "x=runs/sft+best-of-four@rm", "x=a+best-of-2@"):
        with pytest.raises(ConfigError, match="best-of-N@RM_PATH"):
            parse_model_spec(bad)


def test_eval_answers_with_the_best_of_n(tiny_model, tiny_rm, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(4)])
    cfg = EvalConfig(
        models=[f"BoN3={tiny_model}+best-of-3@{tiny_rm}"],
        baseline=f"b={tiny_model}",
        prompts=str(prompts),
        output_dir=str(tmp_path / "ev"),
        judge=f"rm:{tiny_rm}",
        max_new_tokens=6,
        progress=False,
    )
    res = run_eval(cfg)
    assert res["models"]["BoN3"]["best_of"] == 3 and res["models"]["BoN3"]["reward_model"] == str(tiny_rm)
    assert res["models"]["BoN3"]["win_rate"]["n"] == 4
    rows = [json.loads(x) for x in (tmp_path / "ev" / "responses.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["BoN3"] * 4


def test_eval_help_documents_the_best_of_n_spec_and_a_policy_as_rm_is_refused(tiny_model, tmp_path):
    r = run_cli(["eval", "--help"])
    assert r.returncode == 0 and "+best-of-N@RM_PATH" in r.stdout
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    r = run_cli(
        ["eval", "--models", f"x={tiny_model}+best-of-2@{tiny_model}", "--prompts", str(prompts)]
        + ["--suites", "likert", "--out", str(tmp_path / "o")]
    )
    assert r.returncode == 2 and "is not a reward model" in r.stderr and "Traceback" not in r.stderr
