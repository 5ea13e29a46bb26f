"""The reward model: built from a causal LM, saved for plain transformers, scored with any padding, normalized."""

import json
import shutil

import pytest
import torch
from testkit import fact_demos, write_jsonl

from instructrl.data.tokenize import left_pad
from instructrl.errors import ModelLoadError
from instructrl.losses import normalization_bias
from instructrl.modeling.generation import generate
from instructrl.modeling.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic
from instructrl.modeling.reward import RewardModel, build_reward_model, load_reward_model, write_normalization
from instructrl.modeling.value import ValueModel
from instructrl.reward.normalize import demonstration_normalization, reference_normalization


@pytest.fixture(scope="module")
def saved_rm(tiny_model, tmp_path_factory):
    tok = load_tokenizer(str(tiny_model))
    torch.manual_seed(0)
    model = build_reward_model(str(tiny_model), tok)
    out = save_pretrained_atomic(model, tok, tmp_path_factory.mktemp("rm") / "rm")
    write_normalization(out, {"gain": 2.0, "bias": -1.0, "method": "none"})
    return out


def test_backbone_weights_carry_over_under_a_fresh_scalar_head(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    causal = load_causal_lm(str(tiny_model), tok)
    rm = build_reward_model(str(tiny_model), tok)
    assert type(rm).__name__ == "GPT2ForSequenceClassification" and rm.config.num_labels == 1
    assert rm.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    backbone = causal.transformer.state_dict()
    assert backbone.keys() == rm.transformer.state_dict().keys()
    assert all(torch.equal(v, rm.transformer.state_dict()[k]) for k, v in backbone.items())
    assert rm.score.weight.shape == (1, causal.config.n_embd) and not hasattr(rm, "lm_head")


def test_left_and_right_padding_give_the_same_rewards(saved_rm):
    rm = RewardModel.from_pretrained(saved_rm)
    seqs = rm.encode(["What color is the flag of Zor1?", "Hi"], ["The flag of Zor1 is red.", "Hello there, friend."])
    assert all(s[-1] == rm.tokenizer.eos_token_id for s in seqs)
    alone = torch.stack([rm.raw(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
    left_ids, left_mask = left_pad(seqs, rm.tokenizer.pad_token_id)
    width = max(map(len, seqs))
    right_ids = torch.tensor([s + [rm.tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    right_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        assert torch.allclose(rm.raw(left_ids, left_mask), alone, atol=1e-5)
        assert torch.allclose(rm.raw(right_ids, right_mask), alone, atol=1e-5)
        assert torch.allclose(rm(left_ids, left_mask), 2.0 * alone - 1.0, atol=1e-5)  # gain * raw + bias
    assert torch.allclose(
        rm.score(["What color is the flag of Zor1?", "Hi"], ["The flag of Zor1 is red.", "Hello there, friend."]),
        2.0 * alone - 1.0,
        atol=1e-5,
    )


def test_saved_model_loads_with_plain_transformers(saved_rm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(saved_rm).eval()
    tok = AutoTokenizer.from_pretrained(saved_rm)
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert (hf.config.instructrl_reward_gain, hf.config.instructrl_reward_bias) == (2.0, -1.0)
    assert json.loads((saved_rm / "reward_normalization.json").read_text())["gain"] == 2.0
    rm = load_reward_model(saved_rm)
    seqs = rm.encode(["Q?", "What color is the flag of Zor2?"], ["A short one.", "The flag of Zor2 is blue."])
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])  # right padding, no mask
    with torch.no_grad():
        plain = hf(input_ids=ids).logits[:, 0]  # read at the last non-PAD token
    assert torch.allclose(
        plain,
        rm.score_raw(["Q?", "What color is the flag of Zor2?"], ["A short one.", "The flag of Zor2 is blue."]),
        atol=1e-5,
    )

    # equal although ours runs gelu_new as the fused kernel (reward and value models alike)
    def gelu_kinds(model):
        return {type(m).__name__ for m in model.modules() if "GELU" in type(m).__name__}

    assert gelu_kinds(hf) == {"NewGELUActivation"}
    assert gelu_kinds(rm) == gelu_kinds(ValueModel.from_reward_model(str(saved_rm))) == {"GELU"}


def test_load_errors_are_clear(saved_rm, tiny_model, tmp_path):
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(saved_rm / f, bare / f)
    with pytest.raises(ModelLoadError, match=r"'.*no_tokenizer' has no tokenizer .*save the tokenizer beside"):
        RewardModel.from_pretrained(bare)
    with pytest.raises(ModelLoadError, match="is not a reward model: its config has num_labels=2"):
        RewardModel.from_pretrained(tiny_model)
    with pytest.raises(ModelLoadError, match="does not exist"):
        RewardModel.from_pretrained(tmp_path / "missing")


def test_demonstration_normalization_gives_mean_zero(saved_rm, tmp_path):
    demos = write_jsonl(tmp_path / "demos.jsonl", fact_demos(12))
    rm = RewardModel.from_pretrained(saved_rm)
    norm = demonstration_normalization(rm, str(demos))
    assert norm["method"] == "demonstrations" and norm["gain"] == 1.0 and norm["count"] == 12
    rows = fact_demos(12)
    raw = rm.score_raw([r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert norm["bias"] == pytest.approx(float(normalization_bias(raw)), abs=1e-6)
    rm.set_normalization(norm)
    assert abs(float(rm.score([r["prompt"] for r in rows], [r["completion"] for r in rows]).mean())) < 1e-5


def test_reference_normalization_gives_mean_zero_std_one(saved_rm, tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in fact_demos(16)])
    rm = RewardModel.from_pretrained(saved_rm)
    norm = reference_normalization(rm, str(tiny_model), str(prompts), max_new_tokens=6, seed=3)
    again = reference_normalization(rm, str(tiny_model), str(prompts), max_new_tokens=6, seed=3)
    assert norm["method"] == "reference" and norm["count"] == 16 and norm == again  # seeded samples
    # the same samples, scored with the normalization applied
    tok = load_tokenizer(str(tiny_model), padding_side="left")
    policy = load_causal_lm(str(tiny_model), tok)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        texts = [g.text for g in generate(policy, tok, [r["prompt"] for r in fact_demos(16)], max_new_tokens=6)]
    rm.set_normalization(norm)
    scores = rm.score([r["prompt"] for r in fact_demos(16)], texts)
    assert float(scores.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(scores.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    out = tmp_path / "copy"
    rm.save_pretrained(out)
    assert RewardModel.from_pretrained(out).normalization["method"] == "reference"


def test_scoring_builds_no_key_value_cache(tiny_model):
    """A decoder RM scores without a cache (which would copy every layer's keys and values, and keep the copies for
    the backward in training); a scorer without a config takes no such argument and still scores."""
    from instructrl.modeling.reward import sequence_rewards

    tok = load_tokenizer(str(tiny_model))
    rm = build_reward_model(str(tiny_model), tok)
    seen = []
    rm.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("use_cache")), with_kwargs=True)
    ids = torch.randint(0, len(tok), (2, 6))
    mask = torch.ones_like(ids)
    sequence_rewards(rm, ids, mask)
    assert seen == [False]

    class Length(torch.nn.Module):
        def forward(self, input_ids, attention_mask, position_ids):
            return type("Out", (), {"logits": attention_mask.sum(-1, keepdim=True).float()})()

    assert sequence_rewards(Length(), ids, mask).tolist() == [6.0, 6.0]
