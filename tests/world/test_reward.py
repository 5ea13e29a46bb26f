"""The judge as a reward module: token rows -> the labeler's utility, and its calibration (a PPO run on it:
tests/ppo/test_judge_reward.py)."""

import random

import pytest
import torch
from transformers import AutoTokenizer

from instructrl.data.template import encode_prompt
from instructrl.errors import DataError
from instructrl.world.kb import get_kb
from instructrl.world.labelers import reference_judge
from instructrl.world.reward import JudgeReward, calibrate
from instructrl.world.synthetic import sample_responses
from instructrl.world.tasks import Style, demonstrate, make_prompt

KB = get_kb(0)


def _records(n=12, seed=3):
    rng = random.Random(seed)
    return [make_prompt(KB, rng) for _ in range(n)]


def _rows(tok, pairs):
    """Right-padded prompt + response + EOS rows, as PPO hands them to a reward model."""
    rows = [encode_prompt(tok, rec["prompt"]) + tok(resp)["input_ids"] + [tok.eos_token_id] for rec, resp in pairs]
    width = max(map(len, rows)) + 3
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def test_rows_score_the_reference_utility_of_their_response(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    records, judge = _records(), reference_judge(0)
    rng = random.Random(0)
    pairs = [
        (rec, resp)
        for rec in records
        for resp in [demonstrate(KB, rec, Style(), rng), *sample_responses(KB, rec, 2, rng)]
    ]
    reward = JudgeReward(tok, records, scale=2.0, shift=0.25)
    ids, mask = _rows(tok, pairs)
    got = reward(ids, mask)
    want = torch.tensor([2.0 * (judge.utility(rec, resp) - 0.25) for rec, resp in pairs])
    assert got.shape == (len(pairs),)
    torch.testing.assert_close(got, want)
    # demonstrations beat the synthetic policy's typical failures on average
    assert got[0::3].mean() > torch.cat([got[1::3], got[2::3]]).mean()


def test_unknown_prompt_and_records_without_task_are_clear_errors(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    records = _records(4)
    reward = JudgeReward(tok, records[:2])
    ids, mask = _rows(tok, [(records[3], "Hello there.")])
    with pytest.raises(DataError, match="no known prompt"):
        reward(ids, mask)
    with pytest.raises(DataError, match=r"record 1 .* no 'task'"):
        JudgeReward(tok, [{"prompt": "What is the capital of Portho?"}])
    with pytest.raises(DataError, match="no prompt records"):
        JudgeReward(tok, [])


def test_calibrate_matches_mean_and_spread():
    scale, shift = calibrate([0.0, 1.0], [-1.0, 1.0])
    assert (scale, shift) == (2.0, 0.5)  # rewards 2 * (u - 0.5): -1 and 1
    rng = random.Random(1)
    u = [rng.random() for _ in range(50)]
    s = [3 * x - 2 + rng.gauss(0, 0.1) for x in u]
    scale, shift = calibrate(u, s)
    r = torch.tensor([scale * (x - shift) for x in u], dtype=torch.float64)
    assert r.mean().item() == pytest.approx(sum(s) / len(s), abs=1e-9)
    assert r.std(unbiased=False).item() == pytest.approx(
        torch.tensor(s, dtype=torch.float64).std(unbiased=False).item(), rel=1e-6
    )
    with pytest.raises(ValueError):
        calibrate([0.5, 0.5], [0.0, 1.0])
