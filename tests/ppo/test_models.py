"""Reward, value and reference models of stage 3."""

import pytest
import torch
from ppo_helpers import quick_cfg

from instructrl.data.tokenize import left_pad
from instructrl.errors import ModelLoadError
from instructrl.modeling.reward import EnsembleReward, load_frozen_reward
from instructrl.modeling.value import ValueModel
from instructrl.ppo.api import build_trainer
from instructrl.ppo.rollout import policy_forward, position_ids_from_mask, right_align


def _batch(tok):
    rows = [
        tok("The flag of Zor1 is red.")["input_ids"] + [tok.eos_token_id],
        tok("What color")["input_ids"] + [tok.eos_token_id],
    ]
    return left_pad(rows, tok.pad_token_id)


def test_reward_model_applies_gain_and_bias_and_value_model_starts_at_the_score(ppo_world):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ppo_world["rm"])
    ids, mask = _batch(tok)
    r_ids, r_mask = right_align(ids, mask, tok.pad_token_id)
    plain = AutoModelForSequenceClassification.from_pretrained(ppo_world["rm"]).eval()
    with torch.no_grad():
        raw = plain(input_ids=r_ids, attention_mask=r_mask).logits[:, 0]
        rm = load_frozen_reward(str(ppo_world["rm"]))
        scores = rm(input_ids=r_ids, attention_mask=r_mask)
        torch.testing.assert_close(scores, 2.0 * raw + 0.5)  # gain 2, bias 0.5 from config.json
        vm = ValueModel.from_reward_model(str(ppo_world["rm"]))
        values = vm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))  # (B, T)
    # InstructGPT §3.5: the value function starts as the RM; at the EOS token it is the RM's score
    torch.testing.assert_close(values[:, -1], scores, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in rm.parameters())


def test_reward_model_errors_are_clear(ppo_world, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_frozen_reward(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="not a reward model"):
        load_frozen_reward(str(ppo_world["policy"]))  # a causal LM


def _logprobs(model, tok):
    ids, mask = _batch(tok)
    with torch.no_grad():
        return policy_forward(model, ids, mask, 4, temperature=1.0)[0]


@pytest.mark.parametrize("lora", [False, True])
def test_reference_is_the_frozen_initial_policy(ppo_world, tmp_path, lora):
    kw = dict(lora_r=4, lora_target_modules=["c_attn"], learning_rate=1e-2) if lora else {}
    trainer = build_trainer(quick_cfg(ppo_world, tmp_path / "out", total_episodes=16, **kw))
    tok = trainer.tokenizer
    initial = _logprobs(trainer.raw_policy, tok)
    trainer.train()
    policy = trainer.raw_policy
    if lora:
        assert trainer.ref is None  # no second copy: adapters disabled
        with policy.disable_adapter():
            ref = _logprobs(policy, tok)
    else:
        ref = _logprobs(trainer.ref, tok)
        assert not any(p.requires_grad for p in trainer.ref.parameters())
    torch.testing.assert_close(ref, initial)
    assert not torch.allclose(_logprobs(policy, tok), initial, atol=1e-4)


class _Const(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, input_ids, attention_mask):
        return self.values[: input_ids.shape[0]]


def test_ensemble_reward_mean_min_and_uncertainty_weighted(ppo_world, tmp_path):
    members = [_Const([1.0, 0.0]), _Const([3.0, 0.0]), _Const([2.0, 3.0])]
    ids, mask = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    torch.testing.assert_close(EnsembleReward(members)(ids, mask), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(EnsembleReward(members, "min")(ids, mask), torch.tensor([1.0, 0.0]))
    spread = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 3.0]]).std(dim=1, unbiased=False)
    torch.testing.assert_close(
        EnsembleReward(members, "uwo", penalty=0.5)(ids, mask), torch.tensor([2.0, 1.0]) - 0.5 * spread
    )
    with pytest.raises(ValueError, match="mode must be one of"):
        EnsembleReward(members, "max")
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleReward(members[:1])
    # from RM directories: the mean of two copies of one RM is that RM
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ppo_world["rm"])
    r_ids, r_mask = right_align(*_batch(tok), tok.pad_token_id)
    ens = EnsembleReward.from_dirs([str(ppo_world["rm"]), str(ppo_world["rm"])])
    with torch.no_grad():
        torch.testing.assert_close(ens(r_ids, r_mask), load_frozen_reward(str(ppo_world["rm"]))(r_ids, r_mask))
