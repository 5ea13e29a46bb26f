"""Best-of-n: samples per prompt, RM scores, the best of the first k, the analytic KL bound."""

import math

import pytest
import torch
from testkit import fact_demos, length_reward_model

from instructrl.modeling.best_of_n import best_of_n_kl, pick_best, sample_n, score
from instructrl.modeling.loading import load_causal_lm, load_tokenizer


def test_pick_best_is_the_best_of_the_first_k_by_hand():
    scores = torch.tensor([[1.0, 3.0, 2.0, 5.0], [4.0, 4.0, 0.0, 1.0], [-1.0, -3.0, 7.0, -2.0]])
    assert pick_best(scores, 1).tolist() == [0, 0, 0]  # best-of-1 is the first sample
    assert pick_best(scores, 2).tolist() == [1, 0, 0]  # row 2: a tie goes to the earlier sample
    assert pick_best(scores, 3).tolist() == [1, 0, 2]
    assert pick_best(scores, 4).tolist() == [3, 0, 2]
    assert pick_best(scores).tolist() == [3, 0, 2]  # k=None: all n
    for k in (0, 5):
        with pytest.raises(ValueError, match="k must be in"):
            pick_best(scores, k)
    with pytest.raises(ValueError, match="prompts, samples"):
        pick_best(scores[0], 1)


def test_best_of_n_kl_by_hand():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(0.693147 - 0.5, abs=1e-6)  # log 2 - 1/2
    assert best_of_n_kl(4) == pytest.approx(1.386294 - 0.75, abs=1e-6)  # log 4 - 3/4
    assert best_of_n_kl(16) == pytest.approx(2.772589 - 0.9375, abs=1e-6)  # log 16 - 15/16
    assert all(best_of_n_kl(2 * n) > best_of_n_kl(n) for n in (1, 2, 4, 8))  # more samples, further from the base
    with pytest.raises(ValueError):
        best_of_n_kl(0)


@pytest.fixture(scope="module")
def policy(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    return load_causal_lm(str(tiny_model), tok, init_from_config=False), tok


def test_sample_n_gives_n_samples_per_prompt_in_order(policy):
    model, tok = policy
    prompts = [d["prompt"] for d in fact_demos(3)]
    torch.manual_seed(0)
    gens = sample_n(model, tok, prompts, 4, max_new_tokens=6, batch_size=5)
    assert [len(row) for row in gens] == [4, 4, 4]
    assert all(len(g.token_ids) <= 6 for row in gens for g in row)
    greedy = sample_n(model, tok, prompts, 3, max_new_tokens=6, temperature=0)
    assert all(len({g.text for g in row}) == 1 for row in greedy)  # greedy: n copies of the same answer
    with pytest.raises(ValueError, match="n >= 1"):
        sample_n(model, tok, prompts, 0, max_new_tokens=6)


def test_best_of_n_picks_the_sample_the_reward_model_scores_highest(policy):
    model, tok = policy
    rm = length_reward_model(tok)  # prefers the response with the most tokens
    prompts = [d["prompt"] for d in fact_demos(4)]
    n = 6
    torch.manual_seed(1)
    gens = sample_n(model, tok, prompts, n, max_new_tokens=12)
    flat_prompts = [p for p in prompts for _ in range(n)]
    scores = score(rm, None, flat_prompts, [g.text for row in gens for g in row], batch_size=5).view(len(prompts), n)
    expected = torch.tensor(
        [[len(rm.encode([p], [g.text])[0]) for g in row] for p, row in zip(prompts, gens)], dtype=torch.float
    )
    assert torch.equal(scores, expected)  # the score is the row's token count, as the fake RM says
    best = pick_best(scores, n)
    for i, row in enumerate(gens):
        assert scores[i, best[i]] == scores[i].max()
        assert len(rm.encode([prompts[i]], [row[best[i]].text])[0]) == max(
            len(rm.encode([prompts[i]], [g.text])[0]) for g in row
        )
    assert all(scores[i, pick_best(scores, k)[i]] <= scores[i, best[i]] for k in (1, 2, 4) for i in range(4))
    assert math.isclose(float(scores.max(1).values.mean()), float(scores[torch.arange(4), best].mean()))


def test_score_checks_its_inputs(policy):
    _, tok = policy
    rm = length_reward_model(tok)
    assert score(rm, rm.tokenizer, ["Hi"], ["there"]).shape == (1,)
    with pytest.raises(ValueError, match="own tokenizer"):
        score(rm, object(), ["Hi"], ["there"])
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        score(rm, None, ["Hi"], ["a", "b"])
