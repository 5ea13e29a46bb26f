"""The pipeline's Recipe: data sizes plus typed per-stage overrides, each reaching its stage config by one road."""

from __future__ import annotations

import pytest

import instructrl.experiments.pipeline as pipeline
from instructrl.errors import ConfigError
from instructrl.experiments.pipeline import MICRO, Recipe, run_ppo_stage, run_rm_stage, run_sft_stage


def test_defaults_hold_the_quick_demo_recipe():
    """The pipeline's defaults: `instructrl demo --quick` and `instructrl reproduce`."""
    r = Recipe()
    assert r.sft.as_dict() == {"epochs": 6, "pretrain_fraction": 0.1, "max_length": 192}
    assert r.rm.as_dict() == {"normalize": "demonstrations"}
    assert r.ppo.as_dict() == {"total_episodes": 2048, "ptx_coef": 27.8, "ptx_per_episode": 1.0}
    assert (r.scale, r.k, r.max_new_tokens) == (0.75, (4, 6), 40)
    assert (r.rank_labels, r.rank_scale, r.rm_size) == ("labelers", None, None)


def test_from_dict_merges_stage_tables_key_by_key_and_coerces_types():
    r = Recipe.from_dict(
        {
            "scale": "0.5",
            "rank_prompts": "1000",
            "eval_prompts": 150,  # of the 160 the world builds at scale 0.5
            "k": [4, 9],
            "ppo": {"kl_coef": "0.04", "total_episodes": 24000.0},
            "rm": {"learning_rate": 2e-4},
        }
    )
    assert r.scale == 0.5 and r.rank_prompts == 1000 and r.k == (4, 9)
    assert r.ppo.as_dict() == {"total_episodes": 24000, "ptx_coef": 27.8, "ptx_per_episode": 1.0, "kl_coef": 0.04}
    assert isinstance(r.ppo.as_dict()["total_episodes"], int)
    assert r.rm.as_dict() == {"normalize": "demonstrations", "learning_rate": 2e-4}
    again = r.with_overrides({"ppo": {"kl_coef": 0.1}})
    assert again.ppo.as_dict()["kl_coef"] == 0.1 and r.ppo.as_dict()["kl_coef"] == 0.04  # a copy; r unchanged
    micro = Recipe.from_dict(MICRO)
    assert micro.ppo.as_dict()["batch_size"] == 16 and micro.sft.as_dict()["epochs"] == 1


@pytest.mark.parametrize(
    "values, match",
    [
        ({"ppo": {"kl_coeff": 0.1}}, "ppo.kl_coeff"),  # a typo: not a PPOConfig field
        ({"sft_epochs": 3}, "sft_epochs"),  # an old flat name: now sft.epochs
        ({"ppo": {"response_length": 64}}, "set by the pipeline"),  # one road: max_new_tokens
        ({"rm": {"data": "x.jsonl"}}, "set by the pipeline"),
        ({"ppo": {"total_episodes": "many"}}, "total_episodes"),  # wrong type, named
        ({"sft": 3}, "table"),
        ({"rank_top_k": 0}, "rank_top_k"),
    ],
)
def test_unknown_owned_or_mistyped_keys_are_refused_by_name(values, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(values)


@pytest.mark.parametrize(
    "values, match",
    [
        # each of these used to pass, then failed (or was silently cut) only when its stage ran
        ({"ppo": {"total_episodes": 10}}, r"stage 'ppo' .*total_episodes=10 is less than one batch \(64\)"),
        ({"ppo": {"batch_size": 60, "mini_batch_size": 8}}, r"stage 'ppo' .*multiple of mini_batch_size"),
        ({"sft": {"epochs": 0}}, r"stage 'sft' .*epochs=0"),
        ({"rm": {"learning_rate": -1}}, r"stage 'rm' .*learning_rate"),
        ({"rank_prompts": 0}, "rank_prompts must be at least 1"),
        ({"rank_eval_prompts": 1}, "rank_eval_prompts must be at least 2"),
        ({"eval_prompts": 0}, "eval_prompts must be at least 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"k": [1, 4]}, "2 <= low <= high"),
        ({"k": [6, 4]}, "2 <= low <= high"),
        ({"scale": 0}, "scale must be a positive number"),
        ({"scale": float("nan")}, "scale must be a positive number"),
        # the world at scale 0.75 builds 240 evaluation prompts: 800 would have evaluated 240 and reported 800
        ({"eval_prompts": 800}, "eval_prompts 800 is more than the 240 evaluation prompts"),
    ],
)
def test_values_a_stage_would_refuse_fail_when_the_recipe_is_made(values, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(values)


def test_recipe_checks_accept_what_the_pipeline_sets_itself():
    """The stage checks stand in for the paths the pipeline sets, and leave the value model unset, so a
    critic-free arm (which must have none) and more evaluation prompts built on purpose are accepted."""
    r = Recipe.from_dict({"ppo": {"advantage": "grpo", "samples_per_prompt": 4}, "max_new_tokens": 24})
    assert r.ppo.as_dict()["advantage"] == "grpo"
    assert Recipe.from_dict({"eval_prompts": 800, "world_eval_prompts": 800}).eval_prompts == 800


@pytest.fixture
def captured(monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "run_sft", lambda cfg: seen.setdefault("sft", cfg))
    monkeypatch.setattr(pipeline, "run_rm", lambda cfg: seen.setdefault("rm", cfg))
    monkeypatch.setattr(pipeline, "build_trainer", lambda cfg, reward_model=None: _Recorder(seen, cfg))
    return seen


class _Recorder:
    """Stands in for the PPO trainer: records the config it was built with when asked to train."""

    def __init__(self, seen: dict, cfg):
        self.seen, self.cfg = seen, cfg

    def train(self, callbacks=None):
        self.seen.setdefault("ppo", self.cfg)


def test_stage_configs_are_preset_then_pipeline_then_recipe(tmp_path, captured):
    (tmp_path / "ranks").mkdir()
    r = Recipe.from_dict({"max_new_tokens": 24, "rm": {"epochs": 1, "seed": 3}, "ppo": {"kl_coef": 0.04}})
    run_sft_stage(tmp_path / "sft", "BASE", tmp_path / "world", r, 7)
    run_rm_stage(tmp_path / "rm", "SFT_DIR", tmp_path / "ranks", tmp_path / "world", r, 0)
    run_ppo_stage(tmp_path / "ppo", "SFT_DIR", "RM_DIR", tmp_path / "world", r, 0, ptx=True)
    sft, rm, ppo = captured["sft"], captured["rm"], captured["ppo"]
    assert (sft.model, sft.epochs, sft.max_length, sft.seed, sft.learning_rate) == ("BASE", 6, 192, 7, 1e-3)
    assert sft.pretrain_data == str(tmp_path / "world" / "pretrain.jsonl") and sft.pretrain_fraction == 0.1
    assert (rm.epochs, rm.seed, rm.learning_rate, rm.normalize) == (1, 3, 1e-3, "demonstrations")
    assert rm.data == str(tmp_path / "ranks" / "rankings.jsonl") and rm.model == "SFT_DIR"
    assert (ppo.kl_coef, ppo.response_length, ppo.total_episodes, ppo.ptx_coef) == (0.04, 24, 2048, 27.8)
    assert ppo.use_ptx and ppo.reward_model == "RM_DIR" and ppo.batch_size == 64  # ppo-tiny preset


def test_plain_ppo_arm_has_no_pretraining_data(tmp_path, captured):
    run_ppo_stage(tmp_path / "ppo", "SFT_DIR", "RM_DIR", tmp_path / "world", Recipe(), 0, ptx=False)
    assert captured["ppo"].ptx_data is None and not captured["ppo"].use_ptx


def test_stage_overrides_apply_last_and_a_critic_free_arm_gets_no_value_model(tmp_path, captured):
    judge = object()  # a programmatic reward: the value model would start from the RM directory under GAE
    run_ppo_stage(
        tmp_path / "ppo",
        "SFT_DIR",
        "RM_DIR",
        tmp_path / "world",
        Recipe(),
        0,
        ptx=False,
        reward_fn=judge,
        overrides={"advantage": "grpo", "samples_per_prompt": 4},
    )
    ppo = captured["ppo"]
    assert (ppo.advantage, ppo.samples_per_prompt, ppo.value_model, ppo.reward_model) == ("grpo", 4, None, None)
