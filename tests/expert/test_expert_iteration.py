"""Expert iteration: rounds of best-of-n samples -> the RM's best kept -> SFT, its outputs, resume and errors."""

import json

import pytest
import torch
import yaml
from test_cli import one_line_error
from testkit import fact_demos, run_cli, run_cli_many, save_tiny_reward_model, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

import instructrl.expert.api as expert_api
from instructrl.errors import ConfigError, InstructRLError
from instructrl.expert.api import run_expert_iteration, select
from instructrl.expert.config import ExpertConfig


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("expert")
    rm = save_tiny_reward_model(tiny_model, root / "rm")
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(6)])
    return {"policy": tiny_model, "rm": rm, "prompts": prompts}


def quick_cfg(world, out, **kw) -> ExpertConfig:
    base = dict(
        policy=str(world["policy"]),
        reward_model=str(world["rm"]),
        prompts=str(world["prompts"]),
        output_dir=str(out),
        rounds=2,
        num_samples=3,
        max_new_tokens=8,
        max_length=64,
        batch_size=4,
        learning_rate=1e-3,
        progress=False,
    )
    return ExpertConfig(**{**base, **kw})


def test_select_by_hand():
    scores = [[0.1, 0.9, 0.5], [2.0, 1.0, 3.0], [5.0, 0.0, 0.0], [-1.0, -2.0, -0.5]]
    texts = [["a", "b", "c"], ["a", "b", " "], ["", "", ""], ["a", "b", "c"]]
    best, kept = select(scores, texts, None, 1.0)
    assert best == [1, 0, None, 2]  # row 1: the empty response scored 3.0 is never chosen; row 2: all empty
    assert kept == [True, True, False, True]
    best, kept = select(scores, texts, 0.0, 1.0)  # row 3's best (-0.5) is below min_score
    assert kept == [True, True, False, False]
    best, kept = select(scores, texts, None, 0.5)  # ceil(0.5 * 3) = 2 of the 3 eligible, the highest best scores
    assert kept == [True, True, False, False]


def test_two_rounds_end_to_end_from_the_command_line(world, tmp_path):
    out = tmp_path / "ei"
    cfg = quick_cfg(world, out)
    args = ["expert-iteration", "--policy", cfg.policy, "--reward-model", cfg.reward_model, "--prompts", cfg.prompts]
    args += ["--out", str(out), "--rounds", "2", "--num-samples", "3", "--max-new-tokens", "8", "--max-length", "64"]
    args += ["--batch-size", "4", "--learning-rate", "1e-3", "--no-progress"]
    r = run_cli(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "expert-iteration: 2 rounds" in r.stdout
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers loads the final model
    AutoTokenizer.from_pretrained(out)
    final = model.state_dict()
    round2 = AutoModelForCausalLM.from_pretrained(out / "round_2").state_dict()
    assert all(torch.equal(final[k], round2[k]) for k in round2)  # the final model is round 2's
    assert (out / ".complete").exists() and (out / "round_1" / ".complete").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for row in rows:
        assert row["expert/score_mean_kept"] >= row["expert/score_mean_all"]
        assert row["expert/prompts"] == 6 and row["expert/kept"] == 6
    samples = [json.loads(x) for x in (out / "round_1" / "samples.jsonl").read_text().splitlines()]
    kept = [json.loads(x) for x in (out / "round_1" / "kept.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(len(s["responses"]) == 3 for s in samples)
    for s, k in zip(samples, kept):
        assert s["scores"][s["best"]] == max(sc for sc, t in zip(s["scores"], s["responses"]) if t.strip())
        assert k == {"prompt": s["prompt"], "completion": s["responses"][s["best"]]}
    # the second round started from the first round's model
    assert yaml.safe_load((out / "round_2" / "config.yaml").read_text())["model"] == str(out / "round_1")


def test_resume_after_round_one(world, tmp_path, monkeypatch):
    out = tmp_path / "ei"
    real_sft, real_sample = expert_api.run_sft, expert_api.sample_round

    def killed_in_round_2(sft_cfg):
        if sft_cfg.output_dir.endswith("round_2"):
            raise KeyboardInterrupt  # killed after round 2's samples were written
        return real_sft(sft_cfg)

    monkeypatch.setattr(expert_api, "run_sft", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_expert_iteration(quick_cfg(world, out))
    assert (out / "round_1" / ".complete").exists() and (out / "round_2" / "samples.jsonl").exists()
    assert not (out / ".complete").exists()
    round1 = (out / "round_1" / "model.safetensors").read_bytes()
    samples2 = (out / "round_2" / "samples.jsonl").read_text()
    with pytest.raises(InstructRLError, match="pass --resume"):
        run_expert_iteration(quick_cfg(world, out))
    with pytest.raises(ConfigError, match="num_samples: 3 -> 4"):  # a resume continues the same run
        run_expert_iteration(quick_cfg(world, out, resume=True, num_samples=4))

    sampled, trained = [], []
    monkeypatch.setattr(expert_api, "run_sft", lambda c: trained.append(c.output_dir) or real_sft(c))
    monkeypatch.setattr(expert_api, "sample_round", lambda *a: sampled.append(a[1]) or real_sample(*a))
    result = run_expert_iteration(quick_cfg(world, out, resume=True))
    assert sampled == [] and trained == [str(out / "round_2")]  # round 1 kept, round 2's samples reused
    assert (out / "round_1" / "model.safetensors").read_bytes() == round1
    assert (out / "round_2" / "samples.jsonl").read_text() == samples2
    assert [r["round"] for r in result.rounds] == [1, 2] and (out / ".complete").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_bad_input_is_one_line(world, tmp_path):
    base = ["expert-iteration", "--policy", str(world["policy"]), "--reward-model", str(world["rm"])]
    base += ["--out", str(tmp_path / "o"), "--no-progress"]
    good = base + ["--prompts", str(world["prompts"])]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": oops}\n')
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "a"}])
    policy_as_rm = ["expert-iteration", "--policy", str(world["policy"]), "--reward-model", str(world["policy"])]
    cases = [
        (good + ["--rounds", "0"], ("rounds=0", ">= 1")),
        (good + ["--num-samples", "0"], ("num_samples=0", ">= 1")),
        (base + ["--prompts", str(tmp_path / "none.jsonl")], ("none.jsonl", "does not exist")),
        (base + ["--prompts", str(bad)], ("bad.jsonl:2", "malformed JSON")),
        (base + ["--prompts", str(wrong)], ("wrong.jsonl:1", "'prompt'")),
        (
            ["expert-iteration", "--policy", str(world["policy"]), "--prompts", str(world["prompts"])],
            ("--reward-model is required",),
        ),
        (policy_as_rm + ["--prompts", str(world["prompts"]), "--out", str(tmp_path / "p")], ("is not a reward model",)),
    ]
    for (_, needles), r in zip(cases, run_cli_many([args for args, _ in cases]), strict=True):
        one_line_error(r, *needles)
