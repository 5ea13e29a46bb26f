"""PPO against the miniature world's judge (a programmatic reward module) instead of a reward model."""

import json
import random

import pytest
from ppo_helpers import quick_cfg
from testkit import write_jsonl
from transformers import AutoTokenizer

from instructrl.data.template import encode_prompt
from instructrl.ppo.api import run_ppo
from instructrl.world.kb import get_kb
from instructrl.world.labelers import reference_judge
from instructrl.world.reward import JudgeReward
from instructrl.world.tasks import make_prompt


def test_ppo_runs_against_the_judge_and_logs_its_scores(tiny_model, ppo_world, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rng = random.Random(9)
    records = [make_prompt(get_kb(0), rng) for _ in range(16)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", records)
    reward = JudgeReward(tok, records, scale=3.0, shift=0.5)
    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        prompts=str(prompts),
        reward_model=None,
        value_model=str(ppo_world["rm"]),
        total_episodes=16,
        batch_size=8,
        num_samples=4,
    )
    result = run_ppo(cfg, reward_model=reward)
    assert reward.calls >= 2 and len(result.history) == 2
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    judge = reference_judge(0)
    for s in samples:  # every logged score is the judge's utility of that sample's response, rescaled
        rec = next(r for r in records if s["prompt"].endswith(tok.decode(encode_prompt(tok, r["prompt"]))))
        assert s["score"] == pytest.approx(3.0 * (judge.utility(rec, s["response"]) - 0.5), abs=1e-5)
