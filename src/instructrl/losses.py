"""Every loss and estimator of the pipeline, as pure functions of tensors.

The trainers only orchestrate (sample, batch, step the optimizer, log); the math they need lives here,
so that each piece can be checked by hand in ``tests/test_losses.py``.

Conventions shared by all functions
-----------------------------------
* Shapes: ``B`` rows (sequences), ``T`` token positions, ``V`` vocabulary, ``P`` prompts, ``K``
  completions per prompt, ``N`` comparison pairs.
* Masks are bool or 0/1 float tensors of the same shape as the data; ``True``/1 marks a real
  (response) token, ``False``/0 a padded one. Padded positions never change a result, whatever
  values they hold, and outputs hold 0 there.
* Token-level losses are the mean over all real tokens of the batch (not a mean of per-row means).
* Losses are to be *minimized*. Rewards, scores and advantages are "higher is better".
* KL sign: ``log pi(y_t) - log pi_ref(y_t)`` is positive where the policy puts more mass than the
  reference; the per-token reward is ``-beta * kl``.
* ``logits[:, t]`` must already be the distribution of ``labels[:, t]`` (the caller shifts by one:
  ``logits[:, :-1]`` against ``input_ids[:, 1:]``).
* Functions that return ``(loss, stats)`` give ``stats`` as a dict of detached tensors (0-d for
  scalars) with plain keys; the trainer adds the namespace (``rm/``, ``ppo/``) and calls ``.item()``
  when it logs, so no function forces a device synchronization.
* No function writes into its inputs, except :func:`ema_update`, whose whole job is to update the
  EMA copy in place (and only that copy).

Citations at the lines ("InstructGPT Eq. 1", "Huang et al. 2023 policy detail 9") and the list of
what instructrl follows or changes are in ``docs/implementation-details.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "ema_update",
    "entropy_from_logits",
    "eos_penalty",
    "gae",
    "group_advantages",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "normalization_bias",
    "normalization_gain_bias",
    "pairs_from_ranks",
    "pairwise_loss",
    "per_token_rewards",
    "policy_loss",
    "ptx_loss",
    "ranking_loss",
    "sequence_advantages",
    "value_loss",
]


# --------------------------------------------------------------------------------------------------
# Masked reductions
# --------------------------------------------------------------------------------------------------


def _as_weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A float mask of ``like``'s dtype and device (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones_like(like)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match data shape {tuple(like.shape)}")
    return mask.to(device=like.device, dtype=like.dtype)


def masked_sum(
    x: torch.Tensor, mask: torch.Tensor | None, dim: int | tuple[int, ...] | None = None, keepdim: bool = False
) -> torch.Tensor:
    """Sum of ``x`` over the positions where ``mask`` is set (over ``dim``, or everything)."""
    w = _as_weights(mask, x)
    # torch.where, not x * w: a NaN or inf at a padded position must not leak into the sum.
    xw = torch.where(w != 0, x * w, torch.zeros_like(x))
    return xw.sum() if dim is None else xw.sum(dim=dim, keepdim=keepdim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor | None, dim: int | tuple[int, ...] | None = None, keepdim: bool = False
) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set.

    ``dim=None`` reduces everything to a 0-d tensor; otherwise only ``dim``. Where a reduction sees no
    real position at all, the result is 0 (not NaN), and so is its gradient.
    """
    w = _as_weights(mask, x)
    total = masked_sum(x, w, dim, keepdim)
    count = w.sum() if dim is None else w.sum(dim=dim, keepdim=keepdim)
    safe = torch.where(count > 0, count, torch.ones_like(count))  # no 0/0 even in the unused branch
    return torch.where(count > 0, total / safe, torch.zeros_like(total))


def masked_var(
    x: torch.Tensor, mask: torch.Tensor | None, dim: int | tuple[int, ...] | None = None, unbiased: bool = True
) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (over ``dim``, or everything).

    ``unbiased=True`` (default) applies Bessel's correction n / (n - 1), as ``torch.var`` and the
    PyTorch ports of lm-human-preferences do (TRL; Huang et al. 2023 policy detail 9). Note that the
    original TensorFlow lm-human-preferences uses ``tf.nn.moments``, the population variance: pass
    ``unbiased=False`` to reproduce it. With a single real position the variance is 0.
    """
    w = _as_weights(mask, x)
    mean = masked_mean(x, w, dim, keepdim=dim is not None)
    var = masked_mean((x - mean) ** 2, w, dim)
    if unbiased:
        n = w.sum() if dim is None else w.sum(dim=dim)
        var = var * n / (n - 1).clamp_min(1.0)  # Bessel's correction
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor | None, shift_mean: bool = True, unbiased: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalize ``x`` to mean 0 and variance 1 over all masked positions of the batch.

    ``(x - mean) / sqrt(var + eps)``; with ``shift_mean=False`` the mean is added back (only the scale
    changes), as lm-human-preferences does for rewards (Huang et al. 2023 policy detail 9). Statistics
    are taken over every real position of the whole tensor (per batch, not per row). Padded positions
    are 0 in the output. ``unbiased`` as in :func:`masked_var`.
    """
    w = _as_weights(mask, x)
    mean = masked_mean(x, w)  # ()
    var = masked_var(x, w, unbiased=unbiased)  # ()
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(w != 0, whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------------------------------
# Token log-probabilities and entropy
# --------------------------------------------------------------------------------------------------


def _scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # Half-precision logits are upcast: log_softmax over a large vocabulary loses too much in bf16.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits / temperature if temperature != 1.0 else logits


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each label token under ``softmax(logits / temperature)``.

    logits: (B, T, V) already aligned with labels (B, T). Returns (B, T) float. The logits are divided
    by the sampling temperature first, so that rollout and training score tokens under the very
    distribution they were sampled from (Huang et al. 2023 policy detail 1). Labels outside
    ``[0, V)`` (e.g. -100 at padding) give 0; mask them downstream as usual.
    """
    scaled = _scaled_logits(logits, temperature)  # (B, T, V)
    # cross_entropy = -log softmax gathered at the label, computed fused (no (B, T, V) log-prob copy).
    flat = labels.reshape(-1).long()  # (B*T,)
    flat = torch.where((flat >= 0) & (flat < scaled.shape[-1]), flat, torch.full_like(flat, -100))
    nll = F.cross_entropy(scaled.reshape(-1, scaled.shape[-1]), flat, reduction="none", ignore_index=-100)  # (B*T,)
    return -nll.reshape(labels.shape)  # (B, T)


def entropy_from_logits(
    logits: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` at each position.

    logits: (B, T, V) -> (B, T), 0 at padded positions. ``masked_mean(entropy, mask)`` gives the
    usual ``policy/entropy`` statistic. H = -sum p log p; classes with logit -inf (masked vocabulary)
    contribute 0 rather than NaN.
    """
    z = _scaled_logits(logits, temperature)  # (B, T, V)
    logp = torch.log_softmax(z, dim=-1)  # (B, T, V)
    p = logp.exp()  # (B, T, V)
    # sum p log p as a batched dot product: one pass over p and log p, no (B, T, V) product in memory
    ent = -torch.einsum("...v,...v->...", p, logp)  # (B, T)
    if not torch.isfinite(ent).all():  # a class at -inf: p = 0 there and 0 * -inf is NaN, so count it as 0
        safe_logp = torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))  # keeps gradients finite too
        ent = -(p * safe_logp).sum(dim=-1)  # (B, T)
    if mask is None:
        return ent
    return torch.where(_as_weights(mask, ent) != 0, ent, torch.zeros_like(ent))


# --------------------------------------------------------------------------------------------------
# Reward model
# --------------------------------------------------------------------------------------------------


def pairs_from_ranks(
    ranks: Sequence[int] | torch.Tensor, mask: Sequence[bool] | torch.Tensor | None = None
) -> list[tuple[int, int]]:
    """All comparison pairs ``(winner_idx, loser_idx)`` implied by one prompt's ranking.

    ``ranks[i]`` is the rank of completion ``i`` (1 = best). ``i`` wins over ``j`` when
    ``ranks[i] < ranks[j]``; equal ranks (ties) give no pair (InstructGPT §3.2 / App. A: the interface
    allows ties, training drops them). Positions with ``mask`` False are skipped. Pairs are ordered by
    winner index, then loser index; K completions without ties give C(K, 2) pairs. Used to build the
    shuffled-pairs dataset of the InstructGPT §3.5 ablation.
    """
    r = [int(v) for v in (ranks.tolist() if isinstance(ranks, torch.Tensor) else ranks)]
    if mask is None:
        valid = [True] * len(r)
    else:
        valid = [bool(v) for v in (mask.tolist() if isinstance(mask, torch.Tensor) else mask)]
        if len(valid) != len(r):
            raise ValueError(f"mask has {len(valid)} entries but ranks has {len(r)}")
    return [(i, j) for i in range(len(r)) for j in range(len(r)) if valid[i] and valid[j] and r[i] < r[j]]


def _comparison_stats(diff: torch.Tensor, nll: torch.Tensor, pair_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pair-weighted accuracy / log loss / margin; reward ties count as half right."""
    with torch.no_grad():
        correct = (diff > 0).to(diff.dtype) + 0.5 * (diff == 0).to(diff.dtype)
        return {
            "accuracy": masked_mean(correct, pair_w),
            "log_loss": masked_mean(nll.detach(), pair_w),
            "margin": masked_mean(diff.detach(), pair_w),
        }


def ranking_loss(
    rewards: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K-way ranking loss of the reward model (InstructGPT Eq. 1), one batch element per prompt.

    rewards: (P, K) scalar rewards r(x, y_k) of the K completions of each prompt.
    ranks:   (P, K) integers, 1 = best; equal ranks are ties and form no pair.
    mask:    (P, K) marks real completions when prompts have different K (padding is ignored).

    For each prompt, over every pair (w, l) with ranks[w] < ranks[l]:
        loss_p = -1/n_p * sum log sigmoid(r_w - r_l),
    where n_p is the number of *valid* pairs of that prompt: C(K, 2) without ties or padding, fewer
    otherwise. The loss is the mean of loss_p over the prompts that have at least one pair (prompts
    where everything is tied contribute nothing).

    Returns ``(loss, stats)``; stats holds
      ``num_pairs`` (P,) long, ``total_pairs`` (), ``num_prompts`` () prompts with a pair,
      ``per_prompt_loss`` (P,) (0 where no pair),
      ``accuracy`` () share of pairs with r_w > r_l (an exact tie counts 1/2), pair-weighted,
      ``log_loss`` () mean of -log sigmoid(r_w - r_l) over all pairs (pair-weighted, the paper's
      validation log loss), ``margin`` () mean r_w - r_l over all pairs.
    """
    if rewards.dim() != 2 or ranks.shape != rewards.shape:
        raise ValueError(f"rewards and ranks must both be (P, K); got {tuple(rewards.shape)} and {tuple(ranks.shape)}")
    if mask is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)  # (P, K)
    else:
        valid = mask.to(rewards.device).bool()  # (P, K)
    ranks = ranks.to(rewards.device)
    r = rewards.masked_fill(~valid, 0.0)  # (P, K) padded rewards may be garbage; keep them out of grads

    # InstructGPT Eq. 1: all C(K,2) comparisons of a prompt, from K forward passes (§3.5).
    wins = ranks.unsqueeze(2) < ranks.unsqueeze(1)  # (P, K, K) [p, w, l]: w ranked above l; ties -> no pair
    pair = wins & valid.unsqueeze(2) & valid.unsqueeze(1)  # (P, K, K)
    diff = r.unsqueeze(2) - r.unsqueeze(1)  # (P, K, K) r_w - r_l
    nll = -F.logsigmoid(diff)  # (P, K, K)
    pair_w = pair.to(r.dtype)  # (P, K, K)

    num_pairs = pair.sum(dim=(1, 2))  # (P,)
    # InstructGPT Eq. 1 divides by C(K,2); we divide by n_p, the number of valid (untied, unpadded) pairs.
    per_prompt = masked_sum(nll, pair_w, dim=(1, 2)) / num_pairs.clamp_min(1).to(r.dtype)  # (P,)
    has_pair = num_pairs > 0  # (P,)
    num_prompts = has_pair.sum()
    loss = per_prompt.sum() / num_prompts.clamp_min(1).to(r.dtype)  # mean over prompts with a pair

    stats = {
        "num_pairs": num_pairs.detach(),
        "total_pairs": num_pairs.sum().detach(),
        "num_prompts": num_prompts.detach(),
        "per_prompt_loss": per_prompt.detach(),
        **_comparison_stats(diff, nll, pair_w),
    }
    return loss, stats


def pairwise_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss on independent (chosen, rejected) pairs: mean of -log sigmoid(r_c - r_r - margin).

    chosen, rejected: (N,) rewards. margin: (N,) or a float, subtracted inside the sigmoid (Llama 2
    margin loss, Touvron et al. 2023 §3.2.2); None means 0. mask: (N,) marks real pairs.
    This is the shuffled-pairs ablation of InstructGPT §3.5 and the loss for chosen/rejected datasets;
    with one pair per prompt it equals :func:`ranking_loss` with K = 2.

    Returns ``(loss, stats)``; stats: ``total_pairs``, ``accuracy`` (r_c > r_r, a tie counts 1/2),
    ``log_loss`` (mean -log sigmoid(r_c - r_r), *without* the margin, comparable with
    :func:`ranking_loss`), ``margin`` (mean r_c - r_r).
    """
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} differ in shape")
    w = _as_weights(mask, chosen)  # (N,)
    diff = chosen - rejected  # (N,)
    shifted = diff if margin is None else diff - margin  # (N,) Llama 2 margin inside the sigmoid
    loss = masked_mean(-F.logsigmoid(shifted), w)
    stats = {"total_pairs": w.sum().detach(), **_comparison_stats(diff, -F.logsigmoid(diff), w)}
    return loss, stats


def normalization_bias(demo_rewards: torch.Tensor) -> torch.Tensor:
    """Bias ``b`` such that ``r + b`` has mean 0 on labeler demonstrations (InstructGPT §3.5).

    demo_rewards: rewards of the demonstration completions, any shape. Returns a 0-d tensor.
    """
    if demo_rewards.numel() == 0:
        raise ValueError("normalization_bias needs at least one demonstration reward")
    return -demo_rewards.detach().float().mean()  # InstructGPT §3.5: demonstrations get mean reward 0


def normalization_gain_bias(
    ref_rewards: torch.Tensor, target_mean: float = 0.0, target_std: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain ``g`` and bias ``b`` such that ``g * r + b`` has the target mean and std on samples of the
    reference policy (lm-human-preferences; Ziegler et al. 2019; Huang et al. 2023 RM detail 3).

    g = target_std / std(r), b = target_mean - g * mean(r), with the population std
    sqrt(E[r^2] - E[r]^2), as lm-human-preferences computes it. Returns two 0-d tensors.
    """
    r = ref_rewards.detach().float().reshape(-1)  # (N,)
    if r.numel() == 0:
        raise ValueError("normalization_gain_bias needs at least one reference reward")
    mean = r.mean()
    std = r.var(unbiased=False).sqrt()
    if float(std) == 0.0:
        raise ValueError("all reference rewards are equal: their std is 0, so no gain can normalize them")
    gain = target_std / std  # Huang et al. 2023 RM detail 3: g = sigma_T / sigma_D
    bias = target_mean - gain * mean  # b = mu_T - g * mu_D
    return gain, bias


# --------------------------------------------------------------------------------------------------
# PPO: rewards, advantages, losses
# --------------------------------------------------------------------------------------------------


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kind: str = "k1",
    clamp_min: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the log-probs of the sampled tokens.

    logprobs, ref_logprobs: (B, T). Returns (B, T), 0 at padded positions.
      ``k1``  = log pi - log pi_ref (unbiased, can be negative; the InstructGPT Eq. 2 term);
      ``k3``  = (r - 1) - log r with r = pi_ref / pi (unbiased, lower variance, always >= 0);
      ``abs`` = |k1|;  ``mse`` = 0.5 * k1^2 (Schulman 2020, "Approximating KL Divergence").
    ``clamp_min`` clamps each token's estimate from below (AlpacaFarm uses 0 with k1).
    """
    log_ratio = logprobs - ref_logprobs  # (B, T) log pi/pi_ref
    if kind == "k1":
        kl = log_ratio  # InstructGPT Eq. 2: beta * log(pi_RL / pi_SFT)
    elif kind == "k3":
        log_r = -log_ratio  # log(pi_ref / pi)
        kl = torch.expm1(log_r) - log_r  # Schulman 2020 k3: (r - 1) - log r >= 0; expm1 is exact near r = 1
    elif kind == "abs":
        kl = log_ratio.abs()
    elif kind == "mse":
        kl = 0.5 * log_ratio.square()
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of 'k1', 'k3', 'abs', 'mse'")
    if clamp_min is not None:
        kl = kl.clamp(min=clamp_min)  # AlpacaFarm: per-token KL clamped at 0 from below
    if mask is None:
        return kl
    return torch.where(_as_weights(mask, kl) != 0, kl, torch.zeros_like(kl))


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) index of the last real position of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)  # (B, T)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).amax(dim=-1)  # (B,)


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, beta: float | torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token rewards of the bandit episode: -beta * KL_t on every response token, plus the RM score
    on the last real token of each row (InstructGPT Eq. 2; Ziegler et al. 2019; Huang et al. 2023
    policy detail 8).

    scores: (B,) RM scores (after any EOS penalty and normalization). kl: (B, T) per-token KL from
    :func:`kl_penalty`. beta: float or (B,). mask: (B, T) response tokens. Returns (B, T), 0 at
    padding. A row with no response token gets no score.
    """
    w = _as_weights(mask, kl)  # (B, T)
    beta_t = torch.as_tensor(beta, dtype=kl.dtype, device=kl.device)
    if beta_t.dim() == 1:
        beta_t = beta_t.unsqueeze(1)  # (B, 1)
    non_score = -beta_t * kl  # (B, T) Huang et al. 2023 policy detail 8: per-token KL penalty
    rewards = torch.where(w != 0, non_score, torch.zeros_like(non_score))  # (B, T)
    last = _last_index(w)  # (B,)
    has_token = w.sum(dim=-1) > 0  # (B,)
    at_last = F.one_hot(last, num_classes=kl.shape[-1]).bool() & has_token.unsqueeze(1)  # (B, T)
    score = scores.to(kl.dtype).unsqueeze(1).expand_as(rewards)  # (B, T)
    return rewards + torch.where(at_last, score, torch.zeros_like(score))  # RM score at the final token


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the response tokens (Schulman et al. 2016).

    rewards, values, mask: (B, T). Returns ``(advantages, returns)``, both (B, T), 0 at padding, with
    no gradient. Padded positions are skipped, wherever they are: the "next" step of a token is the
    next *real* token of its row, and the episode ends after the last real token (bootstrap value 0,
    the bandit setting of InstructGPT §3.5). gamma = 1 by default: InstructGPT App. C.4 and
    lm-human-preferences use no discount (Huang et al. 2023 policy detail 6).

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},   R_t = A_t + V_t

    Advantages are not whitened here; the trainer calls :func:`masked_whiten`.
    """
    with torch.no_grad():
        w = _as_weights(mask, values) != 0  # (B, T) bool
        r = torch.where(w, rewards.to(values.dtype), torch.zeros_like(values))  # (B, T)
        v = torch.where(w, values, torch.zeros_like(values))  # (B, T)
        next_value = torch.zeros_like(v[:, 0])  # (B,) V after the last real token: terminal, 0
        next_adv = torch.zeros_like(v[:, 0])  # (B,)
        advs = []
        for t in reversed(range(v.shape[1])):
            delta = r[:, t] + gamma * next_value - v[:, t]  # (B,)
            adv = delta + gamma * lam * next_adv  # (B,)
            real = w[:, t]  # (B,)
            advs.append(torch.where(real, adv, torch.zeros_like(adv)))
            # a padded step passes its successor's value and advantage through unchanged
            next_value = torch.where(real, v[:, t], next_value)
            next_adv = torch.where(real, adv, next_adv)
        advantages = torch.stack(advs[::-1], dim=1)  # (B, T)
        returns = torch.where(w, advantages + v, torch.zeros_like(v))  # (B, T)
    return advantages, returns


def group_advantages(rewards: torch.Tensor, kind: str, eps: float = 1e-6) -> torch.Tensor:
    """Critic-free advantages of n responses sampled for each of G prompts, from their sequence rewards.

    rewards: (G, n), row g holding the n responses to prompt g. Returns (G, n), no gradient.
      ``grpo``: (r_i - mean_g) / (std_g + eps), the group-relative advantage of GRPO (Shao et al. 2024,
              DeepSeekMath §4.1.2, outcome supervision); std is the population std of the group;
      ``rloo``: r_i - mean of the other n - 1 rewards of the group, the leave-one-out baseline of RLOO
              (Kool et al. 2019; Ahmadian et al. 2024 Eq. 4), unbiased because the baseline of a sample
              does not depend on the sample itself.
    A group whose rewards are all equal gets advantage 0 everywhere: it carries no learning signal.
    """
    if rewards.dim() != 2:
        raise ValueError(f"group advantages need (groups, samples) rewards, got shape {tuple(rewards.shape)}")
    n = rewards.shape[1]
    if n < 2:
        raise ValueError("a group baseline needs at least 2 samples per prompt")
    with torch.no_grad():
        r = rewards.float()  # (G, n)
        mean = r.mean(dim=1, keepdim=True)  # (G, 1)
        if kind == "grpo":
            std = r.std(dim=1, unbiased=False, keepdim=True)  # (G, 1)
            return (r - mean) / (std + eps)  # Shao et al. 2024 §4.1.2: normalized by the group's mean and std
        if kind == "rloo":
            return (r - mean) * (n / (n - 1))  # = r_i - (sum_j r_j - r_i) / (n - 1), Ahmadian et al. 2024 Eq. 4
    raise ValueError(f"unknown group advantage {kind!r}; choose 'grpo' or 'rloo'")


def sequence_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T): the same advantage on every response token of a row (every action
    of the bandit episode shares the outcome's credit, as in GRPO / RLOO), 0 at padding."""
    w = _as_weights(mask, advantages.unsqueeze(1).expand(-1, mask.shape[1]))  # (B, T)
    adv = advantages.unsqueeze(1).expand_as(w)  # (B, T)
    return torch.where(w != 0, adv, torch.zeros_like(adv))


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, negated to be minimized (Schulman et al. 2017, Eq. 7).

    logprobs: (B, T) under the current policy (with grad); old_logprobs: (B, T) at rollout time;
    advantages: (B, T) (whitened by the caller); mask: (B, T) response tokens.
    loss = mean over tokens of max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)).

    Returns ``(loss, stats)``; stats (over real tokens):
      ``clipfrac``     share of tokens where the clipped term was the larger (active) one;
      ``approx_kl``    mean of 0.5 * (log ratio)^2, the estimator lm-human-preferences logs;
      ``approx_kl_k3`` mean of (ratio - 1) - log ratio (Schulman 2020 k3, >= 0, used by CleanRL);
      ``ratio_mean``, ``ratio_max``.
    Both KL estimators measure KL(pi_old || pi) for early stopping / monitoring, not the KL penalty.
    """
    w = _as_weights(mask, logprobs)  # (B, T)
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach()  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)  # (B, T) PPO clip, InstructGPT App. C.4: 0.2
    loss = masked_mean(torch.maximum(unclipped, clipped), w)
    with torch.no_grad():
        lr = log_ratio.detach()
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(w.dtype), w),
            "approx_kl": masked_mean(0.5 * lr.square(), w),
            "approx_kl_k3": masked_mean(torch.expm1(lr) - lr, w),
            "ratio_mean": masked_mean(ratio.detach(), w),
            "ratio_max": torch.where(w != 0, ratio.detach(), torch.zeros_like(lr)).max(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss as in PPO2 (OpenAI baselines; Huang et al. 2023 policy detail 10).

    values: (B, T) current predictions (with grad); old_values: (B, T) at rollout time; returns:
    (B, T) GAE targets; mask: (B, T). The prediction may move at most ``clip`` away from the old one:
        V_clip = old + clip(V - old, -clip, clip),
        loss = 0.5 * mean over tokens of max((V - R)^2, (V_clip - R)^2).
    The 0.5 factor is lm-human-preferences'; the trainer multiplies by its value-loss coefficient.

    Returns ``(loss, stats)``; stats: ``clipfrac`` (share of tokens where the clipped error was the
    larger), ``mse`` (mean unclipped squared error), ``value_mean``.
    """
    w = _as_weights(mask, values)  # (B, T)
    old = old_values.detach()  # (B, T)
    target = returns.detach()  # (B, T)
    v_clipped = old + torch.clamp(values - old, -clip, clip)  # (B, T) PPO2 value clipping
    err = (values - target).square()  # (B, T)
    err_clipped = (v_clipped - target).square()  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), w)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((err_clipped > err).to(w.dtype), w),
            "mse": masked_mean(err.detach(), w),
            "value_mean": masked_mean(values.detach(), w),
        }
    return loss, stats


def eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float = -1.0) -> torch.Tensor:
    """Replace the score of responses that did not end with EOS within the length limit by a fixed
    value (Ziegler et al. 2019 rejection trick; Huang et al. 2023 policy detail 5).

    scores: (B,), has_eos: (B,) bool. Returns (B,), a new tensor.
    """
    return torch.where(has_eos.to(scores.device).bool(), scores, torch.full_like(scores, penalty))


class FixedKLController:
    """A constant KL coefficient (InstructGPT App. C.4: beta = 0.02). ``update`` does nothing."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        return self.beta

    def state_dict(self) -> dict[str, float | str]:
        return {"kind": "fixed", "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019; Huang et al. 2023 policy detail 11).

    After each batch, with ``current_kl`` the batch mean of the per-sequence KL (sum over the tokens of
    a response) and ``n_steps`` the number of episodes in the batch:
        error = clip(current_kl / target - 1, -0.2, 0.2),  beta <- beta * (1 + error * n_steps / horizon).
    """

    def __init__(self, init_beta: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.beta = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        kl = float(current_kl)
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)  # Ziegler et al. 2019 adaptive KL: clipped
        self.beta *= 1.0 + error * n_steps / self.horizon  # Ziegler et al. 2019 adaptive KL: update
        return self.beta

    def state_dict(self) -> dict[str, float | str]:
        return {"kind": "adaptive", "beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))


@torch.no_grad()
def ema_update(
    ema_params: Iterable[torch.Tensor] | torch.nn.Module,
    params: Iterable[torch.Tensor] | torch.nn.Module,
    decay: float = 0.992,
) -> None:
    """Exponential moving average of policy weights, in place on ``ema_params`` (InstructGPT App. C.4:
    decay 0.992):  ema <- decay * ema + (1 - decay) * param.

    Pass two ``nn.Module`` of the same architecture (all of their state, buffers included, is
    averaged; integer buffers are copied) or two matching iterables of tensors. ``params`` is never
    modified.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if isinstance(ema_params, torch.nn.Module):
        ema_params = ema_params.state_dict().values()
    if isinstance(params, torch.nn.Module):
        params = params.state_dict().values()
    ema_list, src_list = list(ema_params), list(params)
    if len(ema_list) != len(src_list):
        raise ValueError(f"EMA has {len(ema_list)} tensors but the model has {len(src_list)}")
    for e, p in zip(ema_list, src_list):
        if e.shape != p.shape:
            raise ValueError(f"EMA tensor shape {tuple(e.shape)} does not match {tuple(p.shape)}")
        if e.is_floating_point():
            e.lerp_(p.to(device=e.device, dtype=e.dtype), 1.0 - decay)  # e + (1-decay)(p - e)
        else:
            e.copy_(p)


def ptx_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pretraining LM loss of PPO-ptx: mean next-token NLL over the real tokens of the batch.

    logits: (B, T, V) aligned with labels (B, T); mask: (B, T). This is -E_pretrain[log pi_RL(x)] of
    InstructGPT Eq. 2, unscaled: the trainer multiplies it by gamma (27.8 in App. C.4) and accumulates
    its gradient with the PPO gradient before one optimizer step. Temperature is 1 (plain LM loss).
    """
    nll = -logprobs_from_logits(logits, labels)  # (B, T)
    return masked_mean(nll, mask.to(nll.dtype))  # InstructGPT Eq. 2: gamma * E[log pi_RL(x)] term


# ----------------------------------------------------------------------------- next-token loss (SFT, pretraining)
def next_token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, int]:
    """Sum of the next-token negative log-likelihood over the labelled tokens, and their count.

    logits: (B, T, V) of the whole sequence; labels: (B, T), ``ignore_index`` where no loss is taken (the
    prompt in SFT: InstructGPT §3.5 trains on the response). Position t predicts label t+1. The sum, not the
    mean: the trainer divides by the token count of the whole batch, so every token weighs the same
    whatever the split into micro-batches and processes."""
    targets = labels[:, 1:]  # (B, T-1)
    nll = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index, reduction="sum"
    )
    return nll, int((targets != ignore_index).sum())


# --------------------------------------------------------------------------------------------------
# Direct preference optimization: DPO, cDPO, IPO, Plackett-Luce DPO
# --------------------------------------------------------------------------------------------------
# The policy is its own reward model: r(x, y) = beta * log pi(y|x) / pi_ref(y|x) (Rafailov et al. 2023 §5,
# the implicit reward). These functions take the per-sequence log-ratios h = log pi(y|x) - log pi_ref(y|x),
# each the sum over the completion's tokens only (the prompt is given, not generated), and beta.


def dpo_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """DPO loss of each pair (Rafailov et al. 2023, Eq. 7), not reduced: -log sigmoid(beta * (h_w - h_l)).

    chosen_logratios, rejected_logratios: the same shape, e.g. (N,) or (P, K, K); returns that shape.
    ``label_smoothing`` eps > 0 gives conservative DPO (cDPO; Mitchell 2023, "A note on DPO with noisy
    preferences", Eq. 3): each label is taken to be flipped with probability eps,
        -(1 - eps) log sigmoid(z) - eps log sigmoid(-z),   z = beta * (h_w - h_l),
    whose minimum is at a finite margin (sigmoid(z) = 1 - eps), so the implicit rewards stop drifting apart.
    """
    z = beta * (chosen_logratios - rejected_logratios)  # (...) implicit-reward margin r_w - r_l
    loss = -F.logsigmoid(z)  # Rafailov et al. 2023 Eq. 7
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)  # cDPO: Mitchell 2023 Eq. 3
    return loss


def ipo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO loss of each pair (Azar et al. 2023, arXiv 2310.12036v2, Eq. 17, with tau = beta), not reduced:
    (h_w - h_l - 1 / (2 beta))^2.

    It regresses the log-ratio margin to 1/(2 beta) instead of pushing it without bound, as the DPO loss does
    when a preference is deterministic. Shapes as :func:`dpo_loss`. The paper's h are sums over the sequence;
    TRL averages them over tokens instead."""
    h = chosen_logratios - rejected_logratios  # (...) h_pi(y_w, y_l, x)
    return (h - 1.0 / (2.0 * beta)).square()  # Azar et al. 2023 Eq. 17


def _ranked_pairs(
    ranks: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid (P, K) bool, pair (P, K, K) bool with pair[p, w, l]: w ranked strictly above l, both real)."""
    if like.dim() != 2 or ranks.shape != like.shape:
        raise ValueError(f"logratios and ranks must both be (P, K); got {tuple(like.shape)} and {tuple(ranks.shape)}")
    valid = torch.ones_like(like, dtype=torch.bool) if mask is None else mask.to(like.device).bool()  # (P, K)
    ranks = ranks.to(like.device)
    pair = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)  # (P, K, K) no ties
    return valid, pair


def _preference_stats(rewards: torch.Tensor, pair: torch.Tensor, per_prompt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pair-weighted statistics of implicit rewards (P, K): accuracy (r_w > r_l, a tie counts 1/2), log_loss (mean
    -log sigmoid(r_w - r_l), comparable across losses), margin, chosen_reward (mean r_w), rejected_reward (mean r_l)."""
    with torch.no_grad():
        r = rewards.detach()
        pair_w = pair.to(r.dtype)  # (P, K, K)
        winner, loser = r.unsqueeze(2).expand_as(pair_w), r.unsqueeze(1).expand_as(pair_w)  # (P, K, K) r_w, r_l
        diff = winner - loser  # (P, K, K)
        num_pairs = pair.sum(dim=(1, 2))  # (P,)
        return {
            "num_pairs": num_pairs,
            "total_pairs": num_pairs.sum(),
            "num_prompts": (num_pairs > 0).sum(),
            "per_prompt_loss": per_prompt.detach(),
            **_comparison_stats(diff, -F.logsigmoid(diff), pair_w),
            "chosen_reward": masked_mean(winner, pair_w),
            "rejected_reward": masked_mean(loser, pair_w),
        }


def dpo_ranking_loss(
    logratios: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (or cDPO, IPO) on K-way rankings: all C(K, 2) pairs of a prompt in one batch element, each completion
    forwarded once (the batching of InstructGPT §3.5 with the implicit reward in place of the RM's).

    logratios: (P, K) per-sequence log pi(y_k|x) - log pi_ref(y_k|x). ranks: (P, K), 1 = best; equal ranks are
    ties and form no pair. mask: (P, K) marks real completions when prompts have different K.
    loss_type: 'sigmoid' (:func:`dpo_loss`, with ``label_smoothing`` for cDPO) or 'ipo' (:func:`ipo_loss`).

    Each prompt's loss is the mean over its n_p valid pairs (as :func:`ranking_loss`); the loss is the mean over
    the prompts that have a pair. With K = 2 it is the plain pairwise loss. Returns ``(loss, stats)``: stats as
    :func:`ranking_loss` (``num_pairs``, ``total_pairs``, ``num_prompts``, ``per_prompt_loss``, ``accuracy``,
    ``log_loss``, ``margin``) on the implicit rewards beta * logratios, plus ``chosen_reward`` and
    ``rejected_reward`` (mean implicit reward of the winners and of the losers over all pairs).
    """
    valid, pair = _ranked_pairs(ranks, mask, logratios)
    h = logratios.masked_fill(~valid, 0.0)  # (P, K) padded values may be garbage; keep them out of grads
    h_w, h_l = h.unsqueeze(2).expand(*pair.shape), h.unsqueeze(1).expand(*pair.shape)  # (P, K, K)
    if loss_type == "sigmoid":
        losses = dpo_loss(h_w, h_l, beta, label_smoothing)  # (P, K, K)
    elif loss_type == "ipo":
        losses = ipo_loss(h_w, h_l, beta)  # (P, K, K)
    else:
        raise ValueError(f"unknown DPO loss {loss_type!r}; choose 'sigmoid' or 'ipo'")
    pair_w = pair.to(h.dtype)  # (P, K, K)
    num_pairs = pair.sum(dim=(1, 2))  # (P,)
    per_prompt = masked_sum(losses, pair_w, dim=(1, 2)) / num_pairs.clamp_min(1).to(h.dtype)  # (P,)
    loss = per_prompt.sum() / (num_pairs > 0).sum().clamp_min(1).to(h.dtype)  # mean over prompts with a pair
    return loss, _preference_stats(beta * h, pair, per_prompt)


def plackett_luce_dpo_loss(
    logratios: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor | None = None, beta: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO under the Plackett-Luce model (Rafailov et al. 2023, App. A.3): the negative log-likelihood of each
    whole ranking under the implicit rewards r = beta * logratios,
        loss_p = -sum_k log( exp r_tau(k) / sum_{j >= k} exp r_tau(j) ),   tau = the ranking, best first.

    Shapes as :func:`dpo_ranking_loss`. With K = 2 it equals the pairwise DPO loss. Ties (which the paper's
    model has no notion of): a completion competes with itself and the completions ranked strictly below it, so
    tied completions are not ordered against each other, as they form no pair; without ties this is exactly
    the Plackett-Luce likelihood. Each prompt's loss is the sum over its positions (the likelihood of the
    ranking), not a mean; the loss is the mean over prompts that have a pair. Returns ``(loss, stats)`` with
    the stats of :func:`dpo_ranking_loss`.
    """
    valid, pair = _ranked_pairs(ranks, mask, logratios)
    r = beta * logratios.masked_fill(~valid, 0.0)  # (P, K) implicit rewards; padding kept out of grads
    eye = torch.eye(r.shape[1], dtype=torch.bool, device=r.device)  # (K, K)
    competes = pair | eye  # (P, K, K) [p, k, j]: j is in the choice set of k (k itself always, so no row is empty)
    logits = r.unsqueeze(1).expand(*pair.shape).masked_fill(~competes, float("-inf"))  # (P, K, K) r_j
    # Rafailov et al. 2023 App. A.3: -log softmax of r_tau(k) over tau(k..K); a padded k chooses from {k}: 0
    per_position = torch.logsumexp(logits, dim=2) - r  # (P, K); 0 where k has nothing below it
    per_prompt = torch.where(valid, per_position, torch.zeros_like(per_position)).sum(dim=1)  # (P,)
    has_pair = pair.any(dim=2).any(dim=1)  # (P,)
    loss = per_prompt.sum() / has_pair.sum().clamp_min(1).to(r.dtype)  # mean over prompts with a pair
    return loss, _preference_stats(r, pair, per_prompt)


__all__ += ["dpo_loss", "dpo_ranking_loss", "ipo_loss", "plackett_luce_dpo_loss"]
