"""Each prompt forwarded once for its K completions: the same rewards and gradients as the plain forward, for
every architecture family, in fewer tokens; the trainer checks it on the first batch and falls back otherwise."""

import pytest
import torch
from tiny_archs import FAMILIES, load_family

import instructrl.modeling.reward as reward_module
from instructrl.data.tokenize import left_pad
from instructrl.modeling.loading import load_tokenizer, save_pretrained_atomic
from instructrl.modeling.reward import (
    build_reward_model,
    length_buckets,
    prompt_shared_rewards,
    sequence_rewards,
    shared_prefix,
)


def groups_of(tok, rng: torch.Generator) -> list[list[list[int]]]:
    """Three rankings: prompts of different lengths, 2-4 completions of different lengths, each ending in EOS."""
    vocab = [i for i in range(len(tok)) if i not in (tok.pad_token_id, tok.eos_token_id)]
    pick = lambda n: [vocab[int(j)] for j in torch.randint(len(vocab), (n,), generator=rng)]  # noqa: E731
    out = []
    for p_len, k in ((7, 3), (12, 2), (4, 4)):
        prompt = pick(p_len)
        out.append(
            [prompt + pick(int(torch.randint(1, 9, (1,), generator=rng))) + [tok.eos_token_id] for _ in range(k)]
        )
    return out


def test_shared_prefix_is_the_common_start_and_leaves_each_sequence_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[9, 2], [1, 2]]) == 0


def test_length_buckets_split_sorted_runs_where_padding_costs_more_than_a_forward():
    lengths = [40, 1, 2, 41, 1]
    assert length_buckets(lengths, 2, per_forward=0) == [[1, 4, 2], [0, 3]]
    assert length_buckets(lengths, 2, per_forward=1000) == [[1, 4, 2, 0, 3]]  # not worth a second forward
    assert length_buckets(lengths, 1, per_forward=0) == [[1, 4, 2, 0, 3]]
    many = length_buckets(list(range(1, 30)) * 2, 4, per_forward=0)
    assert len(many) == 4 and sorted(i for g in many for i in g) == list(range(58))


@pytest.mark.parametrize("buckets", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_rewards_and_gradients_match_the_plain_forward(
    tiny_model, tmp_path, family, buckets, monkeypatch
):
    causal, tok = load_family(tiny_model, tmp_path / family, family)
    path = save_pretrained_atomic(causal, tok, tmp_path / f"{family}-weights")
    torch.manual_seed(0)
    rm = build_reward_model(str(path), tok)
    groups = groups_of(tok, torch.Generator().manual_seed(1))
    flat = [s for seqs in groups for s in seqs]
    weights = torch.randn(len(flat), generator=torch.Generator().manual_seed(2))

    ids, mask = left_pad(flat, tok.pad_token_id)
    plain = sequence_rewards(rm, ids, mask)
    (plain * weights).sum().backward()
    plain_grads = {n: p.grad.clone() for n, p in rm.named_parameters()}
    rm.zero_grad()

    monkeypatch.setattr(reward_module, "PER_FORWARD_TOKENS", 0)  # split wherever padding is saved
    calls = []
    hook = rm.register_forward_pre_hook(lambda *_: calls.append(1))
    shared = prompt_shared_rewards(rm, groups, tok.pad_token_id, "cpu", max_buckets=buckets)
    hook.remove()
    assert shared is not None and shared.shape == plain.shape
    assert len(calls) == 1 + buckets  # the prompts, then each length bucket of the remainders
    assert torch.allclose(shared, plain, atol=1e-5), (shared - plain).abs().max()
    (shared * weights).sum().backward()
    for name, p in rm.named_parameters():  # the prompt's tokens get every completion's gradient
        assert torch.allclose(p.grad, plain_grads[name], atol=1e-5, rtol=1e-4), name
    # fewer tokens forwarded: each prompt once instead of once per completion
    cuts = [shared_prefix(seqs) for seqs in groups]
    assert sum(cuts) + sum(len(s) - c for seqs, c in zip(groups, cuts) for s in seqs) < sum(map(len, flat))


def test_a_ranking_without_a_common_prefix_falls_back(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    rm = build_reward_model(str(tiny_model), tok)
    assert prompt_shared_rewards(rm, [[[5, 6, 7], [8, 6, 7]]], tok.pad_token_id, "cpu") is None
