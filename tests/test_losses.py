"""Hand-computed checks of instructrl.losses. The arithmetic behind each expected value is in the comments."""

import math

import pytest
import torch
import torch.nn.functional as F

from instructrl import losses as L

LN2, LN3, LN4, LN5 = math.log(2), math.log(3), math.log(4), math.log(5)


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert torch.allclose(torch.as_tensor(actual).double(), expected, atol=atol), f"{actual} != {expected}"


# ---------------------------------------------------------------------------------------------- masked


def test_masked_mean_sum_and_empty_rows():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    close(L.masked_sum(x, mask), 7.0)  # 1 + 2 + 4
    close(L.masked_mean(x, mask), 7 / 3)  # (1 + 2 + 4) / 3
    close(L.masked_mean(x, mask, dim=1), [1.5, 4.0, 0.0])  # (1+2)/2, 4/1, empty row -> 0
    close(L.masked_mean(x, None), 5.0)


def test_masked_mean_ignores_nan_at_padding_and_gradient():
    x = torch.tensor([1.0, 3.0, float("nan")], requires_grad=True)
    mask = torch.tensor([True, True, False])
    m = L.masked_mean(x, mask)
    close(m, 2.0)
    m.backward()
    close(x.grad, [0.5, 0.5, 0.0])  # d mean / dx_i = 1/2 on the two real entries
    empty = torch.zeros(3, requires_grad=True)
    L.masked_mean(empty, torch.zeros(3, dtype=torch.bool)).backward()
    assert torch.isfinite(empty.grad).all()


def test_masked_var_biased_and_unbiased():
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, -7.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    # values 1, 2, 4: mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 = 42/9 = 14/3
    close(L.masked_var(x, mask, unbiased=False), 14 / 9)  # (14/3) / 3
    close(L.masked_var(x, mask), 7 / 3)  # (14/3) / 2
    # per row: row 0 values 1, 2 -> pop var 0.25, unbiased 0.5; row 1 one value -> 0
    close(L.masked_var(x, mask, dim=1), [0.5, 0.0])
    close(L.masked_var(x, mask, dim=1, unbiased=False), [0.25, 0.0])


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    # mean 2; unbiased var ((-1)^2 + 0 + 1^2) / 2 = 1 -> (x - 2) / 1; padding -> 0
    close(L.masked_whiten(x, mask), [[-1.0, 0.0, 1.0, 0.0]], atol=1e-6)
    # shift_mean=False adds the mean 2 back
    close(L.masked_whiten(x, mask, shift_mean=False), [[1.0, 2.0, 3.0, 0.0]], atol=1e-6)
    # population var 2/3 -> (x - 2) * sqrt(3/2) = +-1.2247449
    s = math.sqrt(1.5)
    close(L.masked_whiten(x, mask, unbiased=False), [[-s, 0.0, s, 0.0]], atol=1e-6)


# ----------------------------------------------------------------------------------- logprobs / entropy


def test_logprobs_temperature_and_ignored_labels():
    logits = torch.tensor([[[0.0, LN4], [0.0, LN4], [0.0, LN4]]])  # (1, 3, 2)
    labels = torch.tensor([[1, 0, -100]])
    # T = 1: softmax(0, ln 4) = (1/5, 4/5) -> log 4/5, log 1/5; label -100 -> 0
    close(L.logprobs_from_logits(logits, labels), [[math.log(0.8), math.log(0.2), 0.0]])
    # T = 2: logits / 2 = (0, ln 2) -> softmax (1/3, 2/3)
    close(L.logprobs_from_logits(logits, labels, temperature=2.0), [[math.log(2 / 3), math.log(1 / 3), 0.0]])
    with pytest.raises(ValueError):
        L.logprobs_from_logits(logits, labels, temperature=0.0)


def test_logprobs_bf16_upcast_matches_float():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)).bfloat16()
    labels = torch.tensor([[0, 1, 2], [3, 4, 6]])
    out = L.logprobs_from_logits(logits, labels)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1)
    close(out, ref, atol=1e-6)


def test_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, LN4, 0.0, 0.0], [0.0, LN4, 0.0, 0.0]]])
    logits[0, 1:, 2:] = -float("inf")  # positions 1, 2 have two classes left: (0, ln 4)
    logits.requires_grad_()
    mask = torch.tensor([[1, 1, 0]])
    # uniform over 4 -> ln 4; p = (1/5, 4/5) -> -(0.2 ln 0.2 + 0.8 ln 0.8) = ln 5 - 0.8 ln 4; padding -> 0
    close(L.entropy_from_logits(logits, mask), [[LN4, LN5 - 0.8 * LN4, 0.0]], atol=1e-6)
    # T = 2 on the uniform position changes nothing; on (0, ln 4) -> (0, ln 2): ln 3 - (2/3) ln 2
    close(L.entropy_from_logits(logits, temperature=2.0)[0, 1], LN3 - 2 / 3 * LN2, atol=1e-6)
    L.entropy_from_logits(logits, mask).sum().backward()
    assert torch.isfinite(logits.grad).all()  # masked (-inf) classes give no NaN gradient
    close(logits.grad[0, 0], [0.0] * 4)  # uniform distribution: entropy is at its maximum


# ---------------------------------------------------------------------------------------- reward model


def test_pairs_from_ranks_with_ties_and_mask():
    # ranks 2, 1, 2, 3: item 1 beats 0, 2, 3; items 0 and 2 tie (no pair) and both beat 3
    assert L.pairs_from_ranks([2, 1, 2, 3]) == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]
    assert L.pairs_from_ranks(torch.tensor([2, 1, 2, 3]), mask=[True, True, True, False]) == [(1, 0), (1, 2)]
    assert len(L.pairs_from_ranks(list(range(1, 10)))) == 36  # C(9, 2)
    assert L.pairs_from_ranks([1, 1, 1]) == []


def test_ranking_loss_ties_padding_and_stats():
    nan = float("nan")
    rewards = torch.tensor(
        [
            [0.0, LN3, 0.0, -LN3],  # ranks 2, 1, 2, 3 (a tie between items 0 and 2)
            [0.0, LN3, nan, 1e9],  # K = 2, padded to 4; the better-ranked item scores lower
            [5.0, 1.0, 2.0, 3.0],  # all tied: no pair
        ],
        requires_grad=True,
    )
    ranks = torch.tensor([[2, 1, 2, 3], [1, 2, 0, 0], [1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    loss, stats = L.ranking_loss(rewards, ranks, mask)
    # prompt 0, pairs (w, l) and r_w - r_l: (0,3) ln3, (1,0) ln3, (1,2) ln3, (2,3) ln3, (1,3) 2 ln3
    #   sigmoid(ln 3) = 3/4, sigmoid(2 ln 3) = 9/10 -> loss_0 = (4 ln(4/3) + ln(10/9)) / 5
    loss0 = (4 * math.log(4 / 3) + math.log(10 / 9)) / 5
    # prompt 1: one pair (0, 1), r_0 - r_1 = -ln 3, sigmoid = 1/4 -> loss_1 = ln 4
    loss1 = LN4
    # prompt 2 has no pair and is left out of the mean over prompts
    close(loss, (loss0 + loss1) / 2)
    assert stats["num_pairs"].tolist() == [5, 1, 0]
    assert int(stats["total_pairs"]) == 6 and int(stats["num_prompts"]) == 2
    close(stats["per_prompt_loss"], [loss0, loss1, 0.0])
    close(stats["accuracy"], 5 / 6)  # 5 of the 6 pairs have r_w > r_l
    close(stats["log_loss"], (5 * loss0 + loss1) / 6)  # pair-weighted
    close(stats["margin"], (6 * LN3 - LN3) / 6)  # (ln3 * 4 + 2 ln3 - ln3) / 6
    loss.backward()
    assert torch.isfinite(rewards.grad).all()
    close(rewards.grad[1, 2:], [0.0, 0.0])  # padding gets no gradient
    close(rewards.grad[2], [0.0] * 4)  # all-tied prompt gets no gradient


def test_ranking_loss_gradient_sign_and_value():
    rewards = torch.zeros(1, 3, requires_grad=True)
    loss, _ = L.ranking_loss(rewards, torch.tensor([[1, 2, 3]]))
    close(loss, LN2)  # three pairs, each -log sigmoid(0) = ln 2, mean ln 2
    loss.backward()
    # d/dr of -log sigmoid(r_w - r_l) is -1/2 for the winner, +1/2 for the loser, at 0; / 3 pairs
    # item 0 wins twice: -1/3; item 1 wins once, loses once: 0; item 2 loses twice: +1/3
    close(rewards.grad, [[-1 / 3, 0.0, 1 / 3]])


def test_ranking_loss_k2_equals_pairwise_loss():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(6, 2, generator=g)
    ranks = torch.tensor([[1, 2], [2, 1], [1, 2], [2, 1], [2, 1], [1, 2]])
    loss, stats = L.ranking_loss(rewards, ranks)
    winner = (ranks == 1).long().argmax(1)
    chosen = rewards.gather(1, winner[:, None]).squeeze(1)
    rejected = rewards.gather(1, (1 - winner)[:, None]).squeeze(1)
    ploss, pstats = L.pairwise_loss(chosen, rejected)
    close(loss, ploss)
    close(stats["accuracy"], pstats["accuracy"])
    close(stats["log_loss"], pstats["log_loss"])


def test_ranking_loss_k9_against_double_loop():
    g = torch.Generator().manual_seed(2)
    P, K = 3, 9
    rewards = torch.randn(P, K, generator=g, dtype=torch.float64)
    ranks = torch.stack([torch.randperm(K, generator=g) + 1 for _ in range(P)])
    loss, stats = L.ranking_loss(rewards, ranks)
    per_prompt = []
    for p in range(P):
        total, n = 0.0, 0
        for i in range(K):
            for j in range(K):
                if ranks[p, i] < ranks[p, j]:
                    total += -math.log(1 / (1 + math.exp(-(rewards[p, i] - rewards[p, j]).item())))
                    n += 1
        assert n == 36  # C(9, 2)
        per_prompt.append(total / n)
    close(loss, sum(per_prompt) / P, atol=1e-12)
    assert stats["num_pairs"].tolist() == [36, 36, 36]


def test_ranking_loss_variable_k_equals_separate_prompts():
    g = torch.Generator().manual_seed(3)
    r4, r9 = torch.randn(1, 4, generator=g), torch.randn(1, 9, generator=g)
    k4, k9 = torch.tensor([[3, 1, 4, 2]]), (torch.randperm(9, generator=g) + 1)[None]
    l4, _ = L.ranking_loss(r4, k4)
    l9, _ = L.ranking_loss(r9, k9)
    padded = torch.cat([F.pad(r4, (0, 5), value=123.0), r9])
    ranks = torch.cat([F.pad(k4, (0, 5), value=1), k9])  # padded ranks would tie/win if not masked
    mask = torch.cat([torch.tensor([[1] * 4 + [0] * 5]), torch.ones(1, 9, dtype=torch.long)]).bool()
    loss, stats = L.ranking_loss(padded, ranks, mask)
    close(loss, (l4 + l9) / 2)  # per-prompt normalization: 1/6 for K=4, 1/36 for K=9
    assert stats["num_pairs"].tolist() == [6, 36]


def test_pairwise_loss_margin_and_mask():
    chosen = torch.tensor([LN3, 0.0, 7.0])
    rejected = torch.tensor([0.0, 0.0, -7.0])
    mask = torch.tensor([True, True, False])
    loss, stats = L.pairwise_loss(chosen, rejected, mask=mask)
    # -log sigmoid(ln 3) = ln(4/3); -log sigmoid(0) = ln 2; third pair masked
    close(loss, (math.log(4 / 3) + LN2) / 2)
    close(stats["accuracy"], 0.75)  # one right, one reward tie (counts 1/2)
    # margin ln 3 inside the sigmoid: sigmoid(ln3 - ln3) = 1/2, sigmoid(0 - ln 3) = 1/4
    loss_m, stats_m = L.pairwise_loss(chosen, rejected, margin=torch.tensor([LN3, LN3, 0.0]), mask=mask)
    close(loss_m, (LN2 + LN4) / 2)
    close(stats_m["log_loss"], (math.log(4 / 3) + LN2) / 2)  # log loss reported without the margin
    close(L.pairwise_loss(chosen[:1], rejected[:1], margin=LN3)[0], LN2)


def test_normalization_bias_and_gain():
    demo = torch.tensor([1.0, 2.0, 3.0, 6.0])
    b = L.normalization_bias(demo)
    close(b, -3.0)  # mean 3
    close((demo + b).mean(), 0.0)
    ref = torch.tensor([0.0, 4.0])
    g, b = L.normalization_gain_bias(ref)
    # mean 2, population std sqrt((4 + 4) / 2) = 2 -> gain 1/2, bias 0 - 2/2 = -1 -> rewards -1, 1
    close(g, 0.5)
    close(b, -1.0)
    close(g * ref + b, [-1.0, 1.0])
    g, b = L.normalization_gain_bias(ref, target_mean=1.0, target_std=2.0)
    close([g, b], [1.0, -1.0])  # gain 2/2 = 1, bias 1 - 1*2 = -1 -> rewards -1, 3 (mean 1, std 2)
    with pytest.raises(ValueError):
        L.normalization_gain_bias(torch.ones(3))


# ------------------------------------------------------------------------------------------------- PPO


def test_kl_estimators():
    logp = torch.tensor([[math.log(0.5), math.log(0.25), 0.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: pi = 1/2, pi_ref = 1/4: k1 = ln 2, r = 1/2, k3 = (1/2 - 1) - ln(1/2) = ln 2 - 1/2
    # token 1: pi = 1/4, pi_ref = 1/2: k1 = -ln 2, r = 2, k3 = (2 - 1) - ln 2 = 1 - ln 2
    close(L.kl_penalty(logp, ref, "k1", mask=mask), [[LN2, -LN2, 0.0]])
    close(L.kl_penalty(logp, ref, "k3", mask=mask), [[LN2 - 0.5, 1 - LN2, 0.0]])
    close(L.kl_penalty(logp, ref, "abs", mask=mask), [[LN2, LN2, 0.0]])
    close(L.kl_penalty(logp, ref, "mse", mask=mask), [[0.5 * LN2**2, 0.5 * LN2**2, 0.0]])
    close(L.kl_penalty(logp, ref, "k1", clamp_min=0.0, mask=mask), [[LN2, 0.0, 0.0]])
    with pytest.raises(ValueError):
        L.kl_penalty(logp, ref, "k2")


def test_k3_nonnegative():
    g = torch.Generator().manual_seed(4)
    logp, ref = 3 * torch.randn(200, generator=g), 3 * torch.randn(200, generator=g)
    assert (L.kl_penalty(logp, ref, "k3") >= 0).all()
    close(L.kl_penalty(logp, logp, "k3"), torch.zeros(200))


def test_per_token_rewards():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.3]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    scores = torch.tensor([1.0, 2.0, 3.0])
    out = L.per_token_rewards(scores, kl, 0.1, mask)
    # row 0: -0.1 * kl on 3 tokens, score on token 2: [-0.01, -0.02, -0.03 + 1, 0]
    # row 1: one token: [-0.05 + 2, 0, 0, 0]; row 2: no response token -> all 0, score dropped
    close(out, [[-0.01, -0.02, 0.97, 0.0], [1.95, 0.0, 0.0, 0.0], [0.0] * 4])
    per_row = L.per_token_rewards(scores, kl, torch.tensor([0.1, 1.0, 0.0]), mask)
    close(per_row[1], [1.5, 0.0, 0.0, 0.0])  # 2 - 1.0 * 0.5


def test_per_token_rewards_left_padded_mask():
    kl = torch.zeros(1, 4)
    out = L.per_token_rewards(torch.tensor([2.0]), kl, 0.02, torch.tensor([[0, 1, 1, 0]]))
    close(out, [[0.0, 0.0, 2.0, 0.0]])  # score at the last real token, index 2


def test_gae_three_tokens_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    adv, ret = L.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # t=2: delta = 1 + 0 (terminal) - 0.7 = 0.3;            A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1;  A1 = 0.1 + 0.95 * 0.3   = 0.385
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1;  A0 = 0.1 + 0.95 * 0.385 = 0.46575
    close(adv, [[0.46575, 0.385, 0.3]])
    close(ret, [[0.96575, 0.985, 1.0]])  # A + V
    adv_d, _ = L.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # t=2: 0.3; t=1: delta = 0.5*0.7 - 0.6 = -0.25, A1 = -0.25 + 0.5*0.3 = -0.1
    # t=0: delta = 0.5*0.6 - 0.5 = -0.2, A0 = -0.2 + 0.5*(-0.1) = -0.25
    close(adv_d, [[-0.25, -0.1, 0.3]])


def test_gae_padding_anywhere_is_skipped():
    h = [0.46575, 0.385, 0.3]
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0], [5.0, 0.0, 0.0, 1.0], [0.0, 5.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0], [9.0, 0.5, 0.6, 0.7], [0.5, 9.0, 0.6, 0.7]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]])
    adv, ret = L.gae(rewards, values, mask)
    # the same 3-token episode, padded right, left and in the middle: padding is 0 and changes nothing
    close(adv, [[*h, 0.0], [0.0, *h], [h[0], 0.0, h[1], h[2]]])
    close(ret[0], [0.96575, 0.985, 1.0, 0.0])
    assert not adv.requires_grad


def test_policy_loss_inside_and_outside_clip():
    ratio = [1.1, 1.5, 0.9, 0.5, 0.5, 1.5, 3.0]
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    logp = torch.log(torch.tensor([ratio])).requires_grad_()
    old = torch.zeros(1, 7)
    loss, stats = L.policy_loss(logp, old, adv, mask, clip=0.2)
    # per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   A=1  r=1.1: max(-1.1, -1.1) = -1.1         inside the range
    #   A=1  r=1.5: max(-1.5, -1.2) = -1.2         clipped (active)
    #   A=-1 r=0.9: max( 0.9,  0.9) =  0.9         inside
    #   A=-1 r=0.5: max( 0.5,  0.8) =  0.8         clipped (active)
    #   A=1  r=0.5: max(-0.5, -0.8) = -0.5         outside but unclipped (pessimistic side)
    #   A=-1 r=1.5: max( 1.5,  1.2) =  1.5         outside but unclipped
    # mean over 6 real tokens: (-1.1 - 1.2 + 0.9 + 0.8 - 0.5 + 1.5) / 6 = 0.4 / 6
    close(loss, 0.4 / 6)
    close(stats["clipfrac"], 2 / 6)
    lr = [math.log(r) for r in ratio[:6]]
    close(stats["approx_kl"], sum(0.5 * x * x for x in lr) / 6)
    close(stats["approx_kl_k3"], sum((r - 1) - math.log(r) for r in ratio[:6]) / 6)
    close(stats["ratio_max"], 1.5)
    loss.backward()
    # d/dlogp of -A r is -A r / 6 where unclipped, 0 where the clipped term is active
    close(logp.grad, [[-1.1 / 6, 0.0, 0.9 / 6, 0.0, -0.5 / 6, 1.5 / 6, 0.0]], atol=1e-6)


def test_value_loss_inside_and_outside_clip():
    values = torch.tensor([[0.1, 0.5, -0.5, 7.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    returns = torch.ones(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = L.value_loss(values, old, returns, mask, clip=0.2)
    # v=0.1:  (0.1-1)^2 = 0.81, clipped v 0.1 -> 0.81            max 0.81 (inside the range)
    # v=0.5:  (0.5-1)^2 = 0.25, clipped v 0.2 -> 0.64            max 0.64 (clipped active)
    # v=-0.5: (-0.5-1)^2 = 2.25, clipped v -0.2 -> 1.44          max 2.25 (outside, unclipped)
    # loss = 0.5 * (0.81 + 0.64 + 2.25) / 3 = 0.5 * 3.7 / 3
    close(loss, 0.5 * 3.7 / 3)
    close(stats["clipfrac"], 1 / 3)
    close(stats["mse"], (0.81 + 0.25 + 2.25) / 3)
    loss.backward()
    # d/dv 0.5 (v - R)^2 / 3 = (v - R) / 3 where unclipped; 0 where the clipped error wins
    close(values.grad, [[-0.9 / 3, 0.0, -1.5 / 3, 0.0]])


def test_eos_penalty():
    scores = torch.tensor([0.3, 0.7, -2.0])
    has_eos = torch.tensor([True, False, False])
    close(L.eos_penalty(scores, has_eos), [0.3, -1.0, -1.0])
    close(L.eos_penalty(scores, has_eos, penalty=-5.0), [0.3, -5.0, -5.0])
    close(scores, [0.3, 0.7, -2.0])  # input untouched


def test_adaptive_kl_controller_up_down_and_clamped():
    c = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 6.6: error 6.6/6 - 1 = 0.1 -> beta 0.1 * (1 + 0.1 * 256 / 10000) = 0.1 * 1.00256
    close(c.update(6.6, 256), 0.100256)
    c = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 5.4: error -0.1 -> 0.1 * (1 - 0.1 * 256 / 10000) = 0.099744
    close(c.update(torch.tensor(5.4), 256), 0.099744)
    c = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 60: error 9 clipped to 0.2 -> 0.1 * (1 + 0.2 * 256 / 10000) = 0.100512
    close(c.update(60.0, 256), 0.100512)
    c = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 0: error -1 clipped to -0.2 -> 0.1 * (1 - 0.2 * 256 / 10000) = 0.099488
    close(c.update(0.0, 256), 0.099488)
    f = L.FixedKLController(0.02)
    assert f.update(100.0, 512) == 0.02 and f.beta == 0.02


def test_kl_controller_state_dict_resumes():
    a = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    for kl in (9.0, 7.0, 2.0):
        a.update(kl, 512)
    b = L.AdaptiveKLController(0.5, target=1.0, horizon=5)
    b.load_state_dict(a.state_dict())
    assert b.beta == a.beta and b.target == 6.0 and b.horizon == 10000
    assert a.update(8.0, 512) == b.update(8.0, 512)
    f = L.FixedKLController(1.0)
    f.load_state_dict(L.FixedKLController(0.02).state_dict())
    assert f.beta == 0.02


def test_ema_update_tensors_and_modules():
    ema, param = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 2.0])]
    L.ema_update(ema, param, decay=0.992)
    close(ema[0], [1.016, 2.0])  # 0.992 * 1 + 0.008 * 3
    L.ema_update(ema, param, decay=0.992)
    close(ema[0], [1.031872, 2.0])  # 0.992 * 1.016 + 0.008 * 3 = 1.007872 + 0.024
    close(param[0], [3.0, 2.0])  # source untouched

    class Net(torch.nn.Module):
        def __init__(self, fill):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            torch.nn.init.constant_(self.lin.weight, fill)
            torch.nn.init.constant_(self.lin.bias, fill)
            self.register_buffer("steps", torch.tensor(int(fill)))

    ema_net, net = Net(0.0), Net(1.0)
    L.ema_update(ema_net, net)
    close(ema_net.lin.weight, torch.full((2, 2), 0.008))  # 0.992 * 0 + 0.008 * 1
    assert int(ema_net.steps) == 1  # integer buffers are copied
    with pytest.raises(ValueError):
        L.ema_update([torch.zeros(2)], [torch.zeros(3)])


def test_ptx_loss():
    logits = torch.tensor([[[0.0, LN4], [0.0, LN4], [3.0, -3.0]]], requires_grad=True)
    labels = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[1, 1, 0]])
    # softmax (1/5, 4/5): NLL of label 1 = ln(5/4), of label 0 = ln 5; third token padded
    loss = L.ptx_loss(logits, labels, mask)
    close(loss, (math.log(5 / 4) + LN5) / 2)
    loss.backward()
    close(logits.grad[0, 2], [0.0, 0.0])


def test_no_function_writes_into_its_inputs():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    logits = torch.randn(3, 4, 5, generator=g)
    labels = torch.randint(0, 5, (3, 4), generator=g)
    ranks = torch.tensor([[1, 2, 2, 3], [2, 1, 0, 0], [4, 3, 2, 1]])
    inputs = [x, mask, logits, labels, ranks]
    before = [t.clone() for t in inputs]
    L.masked_whiten(x, mask, shift_mean=False)
    L.masked_var(x, mask, dim=1)
    L.logprobs_from_logits(logits, labels, temperature=0.7)
    L.entropy_from_logits(logits, mask, temperature=0.7)
    L.ranking_loss(x, ranks, mask.bool())
    L.kl_penalty(x, x.flip(0), "k3", clamp_min=0.0, mask=mask)
    L.per_token_rewards(x[:, 0], x, 0.1, mask)
    L.gae(x, x.flip(1), mask)
    L.policy_loss(x, x.flip(0), x, mask)
    L.value_loss(x, x.flip(0), x.flip(1), mask)
    L.ptx_loss(logits, labels, mask)
    for t, b in zip(inputs, before):
        assert torch.equal(t, b)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_on_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    d = torch.device(device)
    mask = torch.tensor([[1, 1, 1, 0]], device=d)
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]], device=d)
    adv, ret = L.gae(rewards, torch.tensor([[0.5, 0.6, 0.7, 9.0]], device=d), mask)
    close(adv.cpu(), [[0.46575, 0.385, 0.3, 0.0]])
    loss, _ = L.ranking_loss(torch.zeros(1, 3, device=d), torch.tensor([[1, 2, 3]], device=d))
    close(loss.cpu(), LN2)
    r = L.per_token_rewards(torch.tensor([1.0], device=d), torch.zeros(1, 4, device=d), 0.1, mask)
    close(r.cpu(), [[0.0, 0.0, 1.0, 0.0]])
    pl, _ = L.policy_loss(torch.zeros(1, 4, device=d), torch.zeros(1, 4, device=d), adv, mask)
    vl, _ = L.value_loss(torch.zeros(1, 4, device=d), torch.zeros(1, 4, device=d), ret, mask)
    assert pl.device.type == vl.device.type == d.type
    ema = [torch.zeros(2, device=d)]
    L.ema_update(ema, [torch.ones(2)])
    close(ema[0].cpu(), [0.008, 0.008])


# ---------------------------------------------------------------------------------------------- DPO


def test_dpo_cdpo_and_ipo_losses_at_known_logratios():
    # h_w = ln 3, h_l = -ln 3, beta = 1/2: z = beta * (h_w - h_l) = ln 3, sigmoid(z) = 3/4, sigmoid(-z) = 1/4
    h_w = torch.tensor([LN3, 0.0], requires_grad=True)
    h_l = torch.tensor([-LN3, 0.0])
    loss = L.dpo_loss(h_w, h_l, beta=0.5)
    close(loss, [math.log(4 / 3), LN2])  # -log 3/4; equal log-ratios: -log 1/2
    loss.sum().backward()
    close(h_w.grad, [-0.5 * 0.25, -0.5 * 0.5])  # d/dh_w -log sigmoid(beta (h_w - h_l)) = -beta sigmoid(-z)
    # cDPO with eps = 1/4: 3/4 * (-log 3/4) + 1/4 * (-log 1/4)
    close(L.dpo_loss(h_w, h_l, beta=0.5, label_smoothing=0.25), [0.75 * math.log(4 / 3) + 0.25 * LN4, LN2])
    # IPO with tau = beta = 1/2: target margin 1 / (2 beta) = 1; (2 ln 3 - 1)^2 and (0 - 1)^2
    close(L.ipo_loss(h_w, h_l, beta=0.5), [(2 * LN3 - 1) ** 2, 1.0])
    # cDPO's optimum is at a finite margin: sigmoid(z) = 1 - eps, i.e. z = ln 3 for eps = 1/4 (gradient 0)
    z = torch.tensor(LN3, requires_grad=True)
    L.dpo_loss(z, torch.tensor(0.0), beta=1.0, label_smoothing=0.25).backward()
    close(z.grad, 0.0)


def test_dpo_ranking_loss_over_all_pairs_of_a_prompt_with_ties_and_padding():
    # prompt 0: K = 3, ranks [1, 2, 3], h = [ln 3, 0, -ln 3], beta = 1: pairs (0,1) (0,2) (1,2) with margins
    #   ln 3, 2 ln 3, ln 3 -> losses ln(4/3), ln(1 + 1/9) = ln(10/9), ln(4/3); mean over its 3 pairs
    # prompt 1: ranks [1, 1, 2] (a tie), h = [ln 3, 0, 0]: pairs (0,2) margin ln 3, (1,2) margin 0 -> ln(4/3), ln 2
    # prompt 2: K = 2 padded to 3, ranks [2, 1, pad], h = [0, ln 3, 99]: one pair (1, 0), margin ln 3 -> ln(4/3)
    h = torch.tensor([[LN3, 0.0, -LN3], [LN3, 0.0, 0.0], [0.0, LN3, 99.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2, 3], [1, 1, 2], [2, 1, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]])
    loss, stats = L.dpo_ranking_loss(h, ranks, mask, beta=1.0)
    p0 = (2 * math.log(4 / 3) + math.log(10 / 9)) / 3
    p1 = (math.log(4 / 3) + LN2) / 2
    p2 = math.log(4 / 3)
    close(stats["per_prompt_loss"], [p0, p1, p2])
    close(loss, (p0 + p1 + p2) / 3)
    assert stats["num_pairs"].tolist() == [3, 2, 1] and int(stats["total_pairs"]) == 6
    close(stats["accuracy"], 5.5 / 6)  # the margin-0 pair of prompt 1 counts 1/2
    close(stats["margin"], (4 * LN3 + LN3 + 0 + LN3) / 6)  # ln 3 + 2 ln 3 + ln 3, ln 3, 0, ln 3
    close(stats["chosen_reward"], (LN3 + LN3 + 0 + LN3 + 0 + LN3) / 6)  # winners of the six pairs
    close(stats["rejected_reward"], (0 - LN3 - LN3 + 0 + 0 + 0) / 6)  # losers of the six pairs
    loss.backward()
    assert h.grad[2, 2] == 0  # padding has no gradient
    # beta scales the implicit rewards in the stats and the margin inside the sigmoid
    _, half = L.dpo_ranking_loss(h, ranks, mask, beta=0.5)
    close(half["margin"], 0.5 * stats["margin"])
    # IPO over the pairs of prompt 0 (beta = 1/2, target 1): (ln 3 - 1)^2, (2 ln 3 - 1)^2, (ln 3 - 1)^2
    ipo, _ = L.dpo_ranking_loss(h[:1], ranks[:1], beta=0.5, loss_type="ipo")
    close(ipo, (2 * (LN3 - 1) ** 2 + (2 * LN3 - 1) ** 2) / 3)
    with pytest.raises(ValueError, match="unknown DPO loss"):
        L.dpo_ranking_loss(h, ranks, mask, loss_type="hinge")


def test_plackett_luce_dpo_loss_by_hand():
    # beta = 1, r = [ln 3, 0, -ln 3], exp r = [3, 1, 1/3], ranks [1, 2, 3]:
    #   -log 3 / (3 + 1 + 1/3) - log 1 / (1 + 1/3) - log 1 = ln(13/9) + ln(4/3)
    r = torch.tensor([[LN3, 0.0, -LN3]])
    loss, stats = L.plackett_luce_dpo_loss(r, torch.tensor([[1, 2, 3]]), beta=1.0)
    close(loss, math.log(13 / 9) + math.log(4 / 3))
    assert int(stats["total_pairs"]) == 3
    # the ranking's order, not the completions' positions: the same ranking listed backwards
    back, _ = L.plackett_luce_dpo_loss(r.flip(1), torch.tensor([[3, 2, 1]]), beta=1.0)
    close(back, loss)
    # a tie [1, 1, 2]: each of the tied pair chooses among itself and the last: ln(10/9) + ln(4/3)
    tied, _ = L.plackett_luce_dpo_loss(r, torch.tensor([[1, 1, 2]]), beta=1.0)
    close(tied, math.log(10 / 9) + math.log(4 / 3))
    # beta = 1/2 halves the rewards: exp r = [sqrt 3, 1, 1/sqrt 3]
    s3 = math.sqrt(3)
    half, _ = L.plackett_luce_dpo_loss(r, torch.tensor([[1, 2, 3]]), beta=0.5)
    close(half, math.log((s3 + 1 + 1 / s3) / s3) + math.log(1 + 1 / s3))
    # all tied: no pair, no loss; a padded completion neither competes nor gets a gradient
    h = torch.tensor([[LN3, 0.0, 7.0], [1.0, 1.0, 1.0]], requires_grad=True)
    loss, stats = L.plackett_luce_dpo_loss(
        h, torch.tensor([[1, 2, 0], [1, 1, 1]]), torch.tensor([[1, 1, 0], [1, 1, 1]]), beta=1.0
    )
    close(stats["per_prompt_loss"], [math.log(4 / 3), 0.0])
    close(loss, math.log(4 / 3))  # the mean over the one prompt that has a pair
    loss.backward()
    assert torch.isfinite(h.grad).all() and h.grad[0, 2] == 0 and h.grad[1].abs().sum() == 0


def test_plackett_luce_equals_pairwise_dpo_at_k2():
    g = torch.Generator().manual_seed(3)
    h = (3 * torch.randn(16, 2, generator=g)).requires_grad_(True)
    ranks = torch.tensor([[1, 2], [2, 1]]).repeat(8, 1)
    pl, pl_stats = L.plackett_luce_dpo_loss(h, ranks, beta=0.3)
    (pl_grad,) = torch.autograd.grad(pl, h)
    pairs, pair_stats = L.dpo_ranking_loss(h, ranks, beta=0.3)
    (pairs_grad,) = torch.autograd.grad(pairs, h)
    chosen = torch.where(ranks[:, 0] == 1, h[:, 0], h[:, 1])
    rejected = torch.where(ranks[:, 0] == 1, h[:, 1], h[:, 0])
    close(pl, L.dpo_loss(chosen, rejected, beta=0.3).mean(), atol=1e-5)
    close(pl, pairs, atol=1e-5)
    close(pl_grad, pairs_grad, atol=1e-6)
    for k in ("accuracy", "margin", "chosen_reward", "rejected_reward", "per_prompt_loss"):
        close(pl_stats[k], pair_stats[k], atol=1e-5)


def test_dpo_losses_write_nothing_into_their_inputs():
    g = torch.Generator().manual_seed(5)
    h = torch.randn(3, 4, generator=g)
    ranks = torch.tensor([[1, 2, 2, 3], [2, 1, 0, 0], [4, 3, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    before = [t.clone() for t in (h, ranks, mask)]
    L.dpo_ranking_loss(h, ranks, mask, beta=0.1, label_smoothing=0.1)
    L.dpo_ranking_loss(h, ranks, mask, beta=0.1, loss_type="ipo")
    L.plackett_luce_dpo_loss(h, ranks, mask, beta=0.1)
    L.dpo_loss(h[0], h[1], 0.1, 0.2)
    L.ipo_loss(h[0], h[1], 0.1)
    for t, b in zip((h, ranks, mask), before):
        assert torch.equal(t, b)
