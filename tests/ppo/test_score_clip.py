"""--score-clip: the reward-model score is clipped to [-c, c] before the KL-penalized reward."""

from types import SimpleNamespace

import pytest
import torch
from ppo_helpers import TokenRewardScorer, quick_cfg

from instructrl.errors import ConfigError
from instructrl.losses import per_token_rewards
from instructrl.ppo.api import run_ppo
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.trainer import PPOTrainer
from instructrl.training.tracking import read_metrics


def advantages(cfg: PPOConfig, scores: torch.Tensor, has_eos: torch.Tensor, beta: float = 0.1) -> dict:
    """PPOTrainer.advantages on hand-made episodes (3 rows, 4 response tokens, row 1 one token shorter)."""
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    scored = {
        "scores": scores,
        "old_logprobs": -torch.rand(3, 4, generator=g),
        "ref_logprobs": -torch.rand(3, 4, generator=g),
        "old_values": torch.randn(3, 4, generator=g),
    }
    stub = SimpleNamespace(cfg=cfg, kl_ctl=SimpleNamespace(beta=beta))
    ep = SimpleNamespace(response_mask=mask, has_eos=has_eos)
    return PPOTrainer.advantages(stub, ep, scored)


def test_scores_are_clipped_before_the_kl_penalty():
    scores = torch.tensor([5.0, -0.3, -7.0])
    eos = torch.tensor([True, True, True])
    clipped = advantages(PPOConfig(score_clip=1.0, missing_eos_penalty=None), scores, eos)
    plain = advantages(PPOConfig(missing_eos_penalty=None), scores, eos)
    assert clipped["final_scores"].tolist() == pytest.approx([1.0, -0.3, -1.0])
    assert plain["final_scores"].tolist() == pytest.approx([5.0, -0.3, -7.0])  # off by default
    # the per-token rewards: -beta * KL on every token, plus the clipped score on the last real token
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected = per_token_rewards(torch.tensor([1.0, -0.3, -1.0]), clipped["kl"], 0.1, mask)
    torch.testing.assert_close(clipped["rewards"], expected)
    assert clipped["rewards"][0, 3] == pytest.approx(1.0 - 0.1 * float(clipped["kl"][0, 3]))
    torch.testing.assert_close(clipped["kl"], plain["kl"])  # the KL term is untouched


def test_the_missing_eos_penalty_is_applied_after_the_clip():
    scores = torch.tensor([5.0, 5.0, 5.0])
    eos = torch.tensor([True, False, True])
    out = advantages(PPOConfig(score_clip=2.0, missing_eos_penalty=-3.0), scores, eos)
    assert out["final_scores"].tolist() == pytest.approx([2.0, -3.0, 2.0])


def test_score_clip_must_be_positive():
    with pytest.raises(ConfigError, match="score_clip"):
        PPOConfig(score_clip=0.0).validate()
    assert PPOConfig().score_clip is None


def test_a_run_with_score_clip_trains_on_clipped_rewards(ppo_world, tmp_path):
    cfg = quick_cfg(
        ppo_world,
        tmp_path / "out",
        value_model=str(ppo_world["rm"]),
        reward_model=None,
        total_episodes=16,
        batch_size=8,
        missing_eos_penalty=None,
        score_clip=0.5,
    )
    run_ppo(cfg, reward_model=TokenRewardScorer(below=200, scale=20.0))  # raw scores well above 0.5
    rows = read_metrics(tmp_path / "out")
    assert len(rows) == 2
    assert all(r["ppo/score_mean"] > 0.5 and r["ppo/reward_mean"] <= 0.5 + 1e-6 for r in rows), rows
