"""Critic-free estimators in the PPO trainer (``--advantage grpo|rloo|reinforce``): the math by hand, whole runs
without a value model, the KL as a loss term, PPO-ptx with each, groups across two processes, and bad input."""

import pytest
import torch
from ppo_helpers import TokenRewardScorer, cli_args, quick_cfg, run_two_processes
from testkit import run_cli, run_cli_many

from instructrl.losses import group_advantages, sequence_advantages
from instructrl.modeling import value as value_module
from instructrl.ppo.api import build_trainer, run_ppo


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 6.0]])  # (G=3, n=2)
    adv = group_advantages(rewards, "grpo", eps=1e-12)
    # group 0: mean 2, population std 1 -> (-1, +1); group 1: all equal -> 0; group 2: mean 3, std 3 -> (-1, +1)
    assert adv.flatten().tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0, -1.0, 1.0], abs=1e-6)


def test_rloo_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 6.0]])  # (G=1, n=3)
    adv = group_advantages(rewards, "rloo")
    # leave-one-out: 1 - (2+6)/2 = -3; 2 - (1+6)/2 = -1.5; 6 - (1+2)/2 = 4.5
    assert adv.flatten().tolist() == pytest.approx([-3.0, -1.5, 4.5])
    assert float(adv.sum()) == pytest.approx(0.0, abs=1e-6)


def test_group_advantages_refuse_a_group_of_one_and_unknown_kinds():
    with pytest.raises(ValueError, match="at least 2 samples"):
        group_advantages(torch.ones(4, 1), "grpo")
    with pytest.raises(ValueError, match="unknown group advantage"):
        group_advantages(torch.ones(2, 2), "gae")


def test_sequence_advantages_fill_response_tokens_only():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert sequence_advantages(adv, mask).tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]


def _cfg(world, out, advantage, n, **kw):
    base = dict(
        reward_model=None,
        total_episodes=16 * 14,
        batch_size=16,
        mini_batch_size=4,
        learning_rate=1e-2,
        kl_coef=0.05,
        missing_eos_penalty=None,
        checkpoint_every=100,
        advantage=advantage,
        samples_per_prompt=n,
    )
    return quick_cfg(world, out, **{**base, **kw})


@pytest.mark.parametrize(("advantage", "n"), [("grpo", 4), ("rloo", 4), ("reinforce", 1)])
def test_critic_free_run_learns_without_a_value_model(ppo_world, tmp_path, monkeypatch, advantage, n):
    def no_value_model(*a, **k):
        raise AssertionError("a critic-free run must not load a value model")

    monkeypatch.setattr(value_module.ValueModel, "from_reward_model", no_value_model)
    out = tmp_path / "out"
    result = run_ppo(_cfg(ppo_world, out, advantage, n), reward_model=TokenRewardScorer(below=32, scale=20.0))
    scores = [h["ppo/score_mean"] for h in result.history]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.5, scores
    last = result.history[-1]
    assert not any("value" in k or "return_mean" in k for k in last), sorted(last)
    assert ("ppo/group_score_std" in last) == (n > 1)
    assert not (out / "value_model").exists()
    assert (out / "model.safetensors").exists() and (out / ".complete").exists()
    assert "advantage: " + advantage in (out / "config.yaml").read_text()


def test_group_rows_are_adjacent_copies_of_one_prompt(ppo_world, tmp_path):
    trainer = build_trainer(
        _cfg(ppo_world, tmp_path / "out", "grpo", 4, total_episodes=32), reward_model=TokenRewardScorer(32)
    )
    assert trainer.value is None and trainer.val_opt is None
    for it in range(3):
        idx = trainer.prompt_indices(it)
        assert len(idx) == 16
        groups = idx.reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # each group is one prompt, 4 times
        assert len(set(groups[:, 0].tolist())) == 4  # 4 different prompts per iteration
    ep = trainer.rollout(0)
    assert ep.prompt_index.view(4, 4).eq(ep.prompt_index.view(4, 4)[:, :1]).all()


def test_kl_as_a_loss_term_leaves_the_reward_and_holds_the_policy_back(ppo_world, tmp_path):
    scorer = TokenRewardScorer(below=32, scale=20.0)
    free = run_ppo(_cfg(ppo_world, tmp_path / "a", "grpo", 4, kl_in="loss", kl_coef=0.0, total_episodes=16 * 8), scorer)
    held = run_ppo(_cfg(ppo_world, tmp_path / "b", "grpo", 4, kl_in="loss", kl_coef=2.0, total_episodes=16 * 8), scorer)
    assert "ppo/kl_loss" in held.history[-1]
    # the reward is the score alone: no KL part in it
    assert all(abs(h["ppo/non_score_reward"]) < 1e-6 for h in held.history)
    assert held.history[-1]["ppo/kl"] < free.history[-1]["ppo/kl"]
    assert "kl_estimator: auto" in (tmp_path / "b" / "config.yaml").read_text()


def test_ppo_ptx_with_a_critic_free_estimator(ppo_world, tmp_path):
    cfg = _cfg(
        ppo_world,
        tmp_path / "out",
        "rloo",
        2,
        total_episodes=16,
        ptx_data=str(ppo_world["ptx"]),
        ptx_per_episode=1.0,
        ptx_max_length=16,
    )
    result = run_ppo(cfg, reward_model=TokenRewardScorer(below=32))
    assert result.history[-1]["ppo/ptx_loss"] > 0


BAD_ESTIMATOR_SETTINGS = [
    (["--advantage", "grpo"], "advantage=grpo needs samples_per_prompt >= 2, got 1"),
    (["--advantage", "rloo", "--samples-per-prompt", "3"], "multiple of samples_per_prompt=3"),
    (["--advantage", "grpo", "--samples-per-prompt", "2", "--kl-in", "loss", "--kl-estimator", "k1"], "k1"),
    (["--advantage", "reinforce", "--value-model", "VM"], "value_model is set but advantage=reinforce"),
    (["--advantage", "a2c"], "--advantage"),
]


def test_bad_estimator_settings_get_one_line(ppo_world, tmp_path):
    calls = [
        cli_args(ppo_world, tmp_path / f"o{i}", *[str(ppo_world["rm"]) if x == "VM" else x for x in extra])
        for i, (extra, _) in enumerate(BAD_ESTIMATOR_SETTINGS)
    ]
    for i, ((extra, message), r) in enumerate(zip(BAD_ESTIMATOR_SETTINGS, run_cli_many(calls), strict=True)):
        assert r.returncode == 2, (extra, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, extra
        assert not (tmp_path / f"o{i}" / "config.yaml").exists()


def test_two_processes_keep_each_group_on_one_process(ppo_world, tmp_path):
    """torchrun, 2 CPU processes: 2 prompts x 4 responses per iteration, one group per process, weights in sync."""
    out = tmp_path / "dist"
    sync = run_two_processes(cli_args(ppo_world, out, "--advantage", "grpo", "--samples-per-prompt", "4"), out)
    assert sync["num_processes"] == 2
    a, b = sync["param_checksums"]
    assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    assert not (out / "value_model").exists()
    r = run_cli(cli_args(ppo_world, tmp_path / "odd", "--advantage", "grpo", "--samples-per-prompt", "8"))
    assert r.returncode == 0, r.stderr  # one process: one group of 8 per iteration is fine
