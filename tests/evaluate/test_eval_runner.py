"""`instructrl eval` on real (non-world) prompts with a pluggable judge, and the judge interface."""

import json

import pytest
from testkit import fact_demos, run_cli_many, write_jsonl

from instructrl.errors import ConfigError
from instructrl.evaluate.config import EvalConfig
from instructrl.evaluate.judges import load_judge
from instructrl.evaluate.runner import few_shot_prompt, parse_model_spec, run_eval


class LongerWins:
    """A toy judge: the longer response wins; equal lengths tie."""

    name = "longer-wins"

    def compare(self, prompts, responses, baselines):
        return [1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for a, b in zip(responses, baselines)]


def test_model_specs():
    assert parse_model_spec("runs/sft") == parse_model_spec("sft=runs/sft")
    s = parse_model_spec("gpt=base/small+fewshot")
    assert (s.name, s.path, s.few_shot) == ("gpt", "base/small", True)
    assert parse_model_spec("base/small+fewshot").name == "small-fewshot"


def test_few_shot_prompt_puts_demonstrations_first():
    msgs = few_shot_prompt("Q3", [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}])
    assert [m["content"] for m in msgs] == ["Q1", "A1", "Q2", "A2", "Q3"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]


def test_judge_plugins():
    j = load_judge("python:test_eval_runner:LongerWins")
    assert j.compare([{}], ["aa"], ["a"]) == [1.0]
    with pytest.raises(ConfigError, match="expected rm:PATH"):
        load_judge("magic")
    with pytest.raises(ConfigError, match="cannot load it"):
        load_judge("python:no_such_module_xyz:Judge")


def test_self_comparison_is_a_tie_and_results_are_written(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(6)])
    cfg = EvalConfig(
        models=[f"a={tiny_model}"],
        baseline=f"b={tiny_model}",
        prompts=str(prompts),
        output_dir=str(tmp_path / "ev"),
        temperature=0,
        max_new_tokens=6,
        progress=False,
    )
    res = run_eval(cfg, judge=LongerWins())
    # greedy decoding of the same model: identical responses, every comparison a tie
    assert res["models"]["a"]["win_rate"] == {"mean": 0.5, "se": 0.0, "n": 6}
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["baseline"] == "b"
    assert "| a |" in (tmp_path / "ev" / "summary.md").read_text()
    assert len((tmp_path / "ev" / "responses.jsonl").read_text().splitlines()) == 6


def test_every_policy_samples_with_the_baselines_random_stream(tiny_model, tmp_path):
    """Sampled (temperature 1) answers: the baseline's own model ties it exactly wherever it stands in --models."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(8)])
    cfg = EvalConfig(
        models=[f"first={tiny_model}", f"second={tiny_model}"],
        baseline=f"b={tiny_model}",
        prompts=str(prompts),
        output_dir=str(tmp_path / "ev"),
        temperature=1.0,
        max_new_tokens=8,
        progress=False,
    )
    res = run_eval(cfg, judge=LongerWins())
    for name in ("first", "second"):
        assert res["models"][name]["win_rate"] == {"mean": 0.5, "se": 0.0, "n": 8}, name


def test_non_world_prompts_need_an_explicit_judge(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "hi"}])
    r, bad_column = run_cli_many(
        [
            ["eval", "--models", tiny_model, "--baseline", tiny_model, "--prompts", prompts, "--out", tmp_path / "o"],
            ["eval", "--models", str(tiny_model), "--prompts", str(bad), "--out", str(tmp_path / "o")],
        ]
    )
    assert r.returncode == 2 and "choose a judge with --judge rm:PATH" in r.stderr
    r = bad_column
    assert r.returncode == 2 and "bad.jsonl:1: expected a 'prompt' column; columns found: question" in r.stderr


def test_few_shot_prompts_keep_the_last_demonstrations_that_fit_the_context(tiny_model, tmp_path):
    """A few-shot prefix longer than the model's context (256 positions) drops its first demonstrations instead of
    indexing past the position embeddings; a prompt that alone leaves no room for the response is refused."""
    from instructrl.evaluate.runner import Policy

    long_demo = {"prompt": "Describe Zor1.", "completion": " ".join(["The flag of Zor1 is red."] * 60)}
    shots = [long_demo, *fact_demos(2)]
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(4, seed=3)])
    cfg = EvalConfig(
        models=[f"few={tiny_model}+fewshot"],
        baseline=f"b={tiny_model}",
        prompts=str(prompts),
        output_dir=str(tmp_path / "ev"),
        few_shot_data=str(write_jsonl(tmp_path / "shots.jsonl", shots)),
        max_new_tokens=8,
        progress=False,
    )
    policy = Policy(parse_model_spec(cfg.models[0]), cfg, shots)
    fitted = policy.fit("What color is the flag of Zor7?")
    assert [m["content"] for m in fitted] == [
        shots[1]["prompt"],
        shots[1]["completion"],
        shots[2]["prompt"],
        shots[2]["completion"],
        "What color is the flag of Zor7?",
    ]
    short_cfg = EvalConfig(**{**cfg.__dict__, "models": [f"plain={tiny_model}"]})
    plain = Policy(parse_model_spec(short_cfg.models[0]), short_cfg, shots)
    assert plain.fit("Q?") == "Q?"  # no few-shot prefix: the prompt as given
    with pytest.raises(ConfigError, match=r"exceeds plain's context of 256 tokens: shorten it or lower"):
        plain.fit(long_demo["completion"])
    res = run_eval(cfg, judge=LongerWins())  # before: IndexError in the position embedding
    assert res["models"]["few"]["win_rate"]["n"] == 4


def test_head_to_head_compares_two_evaluated_policies_directly(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(5)])
    common = dict(prompts=str(prompts), temperature=0, progress=False)
    cfg = EvalConfig(
        models=[f"a={tiny_model}", f"short={tiny_model}"],
        baseline=f"b={tiny_model}",
        head_to_head=["a:short", "a:b"],
        output_dir=str(tmp_path / "ev"),
        max_new_tokens=6,
        **common,
    )
    res = run_eval(cfg, judge=LongerWins())
    # greedy decoding of one model: every response equal, every direct comparison a tie
    assert res["head_to_head"] == {
        "a vs short": {"mean": 0.5, "se": 0.0, "n": 5},
        "a vs b": {"mean": 0.5, "se": 0.0, "n": 5},
    }
    assert "| a vs short | 0.500" in (tmp_path / "ev" / "summary.md").read_text()
    # different responses (a few-shot prefix): "A vs B" is A's win rate, as the win rate against a baseline is
    shots = write_jsonl(tmp_path / "shots.jsonl", fact_demos(2, seed=5))
    cfg = EvalConfig(
        models=[f"few={tiny_model}+fewshot"],
        baseline=f"b={tiny_model}",
        head_to_head=["few:b", "b:few"],
        few_shot_data=str(shots),
        output_dir=str(tmp_path / "ev2"),
        max_new_tokens=12,
        **{**common, "temperature": 1.0},
    )
    res = run_eval(cfg, judge=LongerWins())
    assert res["head_to_head"]["few vs b"] == res["models"]["few"]["win_rate"] != {"mean": 0.5, "se": 0.0, "n": 5}
    assert res["head_to_head"]["b vs few"]["mean"] == pytest.approx(1 - res["models"]["few"]["win_rate"]["mean"])
    with pytest.raises(ConfigError, match=r"--head-to-head 'a:nobody': no policy named 'nobody'; evaluated: a, b"):
        run_eval(
            EvalConfig(models=[f"a={tiny_model}"], baseline=f"b={tiny_model}", head_to_head=["a:nobody"], **common)
        )
    for pair, message in (("a", "expected two policy names as A:B"), ("a:b:c", "expected two policy names")):
        with pytest.raises(ConfigError, match=message):
            EvalConfig(models=[f"a={tiny_model}"], head_to_head=[pair], **common).validate()
    with pytest.raises(ConfigError, match="keep 'winrate' in --suites"):
        EvalConfig(models=[f"a={tiny_model}"], head_to_head=["a:a"], suites=["likert"], **common).validate()
