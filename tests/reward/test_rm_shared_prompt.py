"""Each prompt forwarded once for its K completions: the same rewards and gradients as the plain forward, for
every architecture family, in fewer tokens; the trainer checks it on the first batch and falls back otherwise."""

import pytest
import torch
from tiny_archs import FAMILIES, load_family

from instructrl.data.tokenize import left_pad
from instructrl.modeling.loading import load_tokenizer, save_pretrained_atomic
from instructrl.modeling.reward import build_reward_model, prompt_shared_rewards, sequence_rewards, shared_prefix


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


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompt_rewards_and_gradients_match_the_plain_forward(tiny_model, tmp_path, family):
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

    shared = prompt_shared_rewards(rm, groups, tok.pad_token_id, "cpu")
    assert shared is not None and shared.shape == plain.shape
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
