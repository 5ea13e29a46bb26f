"""Rollouts of the bandit environment (InstructGPT §3.5): prompt -> sampled response -> one RM score.

Layout of a batch of episodes, used everywhere in stage 3::

    | PAD PAD p p p p | r r r EOS PAD PAD |
      prompt, left-padded (P)   response (R), right-padded after the first EOS

* ``prompt_mask``/``response_mask`` mark real tokens; the EOS that ends a response is a real response
  token (it gets the RM score), everything after it is PAD (PAD differs from EOS: Huang et al. 2023).
* Position ids are recomputed from the attention mask, so a left-padded row is scored exactly as the same
  row without padding (Huang et al. 2023 general detail: "left padding ... position ids").
* The reward model sees each row right-aligned (prompt + response + EOS from column 0, PAD after), so it
  scores at the last non-PAD token whatever it does with positions.

The functions here are pure tensor functions (tested in ``tests/ppo/test_rollout.py``) plus a
KV-cached sampling loop that works with any Hugging Face causal LM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache, StaticCache

from instructrl.losses import entropy_from_logits, logprobs_from_logits
from instructrl.modeling.loading import cache_argument

log = logging.getLogger("instructrl.ppo")


# ----------------------------------------------------------------------------------------- pure helpers
def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, T) position ids counting real tokens from 0 (0 on left padding)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, T)


def response_mask_after_eos(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, R) sampled tokens -> (B, R) bool: True up to and including the first EOS of each row,
    False after it. A row without EOS is all True (it ran to the length limit)."""
    is_eos = (responses == eos_id).long()  # (B, R)
    eos_before = is_eos.cumsum(dim=-1) - is_eos  # (B, R) number of EOS strictly before t
    return eos_before == 0


def mask_after_eos(
    responses: torch.Tensor, eos_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace every token after the first EOS by PAD.

    Returns ``(responses, mask, has_eos)``: (B, R) tokens with PAD after EOS, (B, R) bool response mask,
    (B,) bool whether the row holds an EOS (responses without one get the EOS penalty)."""
    mask = response_mask_after_eos(responses, eos_id)  # (B, R)
    cleaned = torch.where(mask, responses, torch.full_like(responses, pad_id))  # (B, R)
    has_eos = (cleaned == eos_id).any(dim=-1)  # (B,)
    return cleaned, mask, has_eos


def right_align(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front (right padding), keeping their order.

    (B, T) ids and mask -> (B, T) ids and mask with the real tokens in columns 0..n_b-1 and PAD after.
    Real tokens must be contiguous in each row (left-padded prompt + response cut at EOS)."""
    mask = attention_mask.bool()
    first = torch.where(mask.any(dim=-1), mask.float().argmax(dim=-1), torch.zeros_like(mask[:, 0], dtype=torch.long))
    cols = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, T)
    src = (cols + first.unsqueeze(1)).clamp(max=input_ids.shape[1] - 1)  # (B, T)
    n_real = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    new_mask = cols < n_real  # (B, T)
    ids = torch.where(new_mask, input_ids.gather(1, src), torch.full_like(input_ids, pad_id))
    return ids, new_mask.long()


def trim_responses(responses: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing columns that are padding in every row (no row needs them)."""
    longest = int(mask.sum(dim=-1).max()) if mask.numel() else 0
    longest = max(longest, 1)
    return responses[:, :longest], mask[:, :longest]


def sample_categorical(
    probs: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """One index per row of (B, V) probabilities, drawn by inverting the cumulative distribution with one
    uniform number per row: the same distribution as ``torch.multinomial(probs, 1)`` at a third of its
    cost on a CPU (which draws V exponentials per row). The running sum is in float64: in float32 its
    rounding moves up to 1e-3 of probability mass between tokens at a 150k vocabulary. A
    zero-probability index is never drawn. ``uniform``: the (B, 1) float64 numbers in [0, 1) to use, already
    drawn (else drawn here from ``generator``)."""
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    if uniform is None:
        uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    u = uniform * total  # (B, 1)
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total mass
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # (B,)


# ----------------------------------------------------------------------------------------- the batch
@dataclass
class Episodes:
    """A batch of bandit episodes and everything PPO computes about it (all on one device)."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    responses: torch.Tensor  # (B, R) PAD after EOS
    response_mask: torch.Tensor  # (B, R) bool
    has_eos: torch.Tensor  # (B,) bool
    prompt_index: torch.Tensor  # (B,) index of each prompt in the prompt set

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.responses], dim=1)  # (B, P+R)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask.long(), self.response_mask.long()], dim=1)  # (B, P+R)

    def __len__(self) -> int:
        return self.responses.shape[0]


# ----------------------------------------------------------------------------------------- model passes
def _base_model(model):
    """The transformers model itself (a peft model's base model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# finished rows leave the sampling batch once they are this share of the rows still in it (sample_responses)
COMPACT_AT = 0.25


def every_row_done(done: torch.Tensor) -> bool:
    return bool(done.all())


@torch.no_grad()
def sample_responses(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    all_done: Callable[[torch.Tensor], bool] = every_row_done,
    compact_at: float = COMPACT_AT,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per left-padded prompt with a KV cache; stop early once every row has EOS
    (``all_done``: under a sharded policy whose forwards are collectives, once every process's rows have).

    Sampling is from softmax(logits / temperature) (InstructGPT App. C.4: temperature 1), or with ``top_k``
    from the ``top_k`` likeliest tokens alone (ties at the k-th logit kept; PPO's rollouts never set it: their
    log-probabilities are the whole distribution's). Returns ``(responses, mask, has_eos)`` as
    :func:`mask_after_eos`, trimmed to the longest response.

    Rows that have ended leave the batch (their cache rows dropped) once they are ``compact_at`` of the rows
    still decoding (> 1: never), so that a few long responses do not carry every finished row to the end.
    The random numbers are drawn for every row at every step, as without compaction, so the samples are the
    same (up to float rounding) either way."""
    if temperature <= 0:
        raise ValueError("PPO samples from the policy: temperature must be > 0")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None: the whole distribution), got {top_k}")
    cache_kw = cache_argument(model)
    cache = DynamicCache(config=_base_model(model).config)
    attn = prompt_mask.long()  # (B, P)
    pos = position_ids_from_mask(attn)  # (B, P)
    out = model(
        input_ids=prompt_ids,
        attention_mask=attn,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    B, dev = prompt_ids.shape[0], prompt_ids.device
    next_pos = pos[:, -1:] + 1  # (b, 1): b rows still in the batch
    rows = torch.arange(B, device=dev)  # (b,) their indices in the full batch
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # (b,)
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)  # (B, R)
    for t in range(max_new_tokens):
        uniform = torch.rand(B, 1, generator=generator, device=dev, dtype=torch.float64)  # (B, 1) every row
        tok, real, done = _draw(out.logits[:, -1], done, temperature, None, eos_id, pad_id, uniform[rows], top_k)
        tokens[rows, t] = tok
        if t == max_new_tokens - 1 or all_done(done):
            break
        attn = torch.cat([attn, real.long().unsqueeze(1)], dim=1)  # (b, P+t+1)
        ended = float(done.float().mean())  # share of the rows still in the batch that have ended
        if 0 < ended < 1 and ended >= compact_at:  # never all: a process waiting on others keeps forwarding its rows
            keep = (~done).nonzero().squeeze(1)  # (b',)
            cache.reorder_cache(keep)
            attn, next_pos, rows, done, tok = attn[keep], next_pos[keep], rows[keep], done[keep], tok[keep]
        out = model(
            input_ids=tok.unsqueeze(1), attention_mask=attn, position_ids=next_pos, use_cache=True, **{cache_kw: cache}
        )
        next_pos = next_pos + 1
    return _finish(tokens[:, : t + 1], eos_id, pad_id)


def _draw(
    logits: torch.Tensor,
    done: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    eos_id: int,
    pad_id: int,
    uniform: torch.Tensor | None = None,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from softmax(logits / temperature) (B, V), restricted to each row's ``top_k`` likeliest
    tokens when given, PAD for rows already done. Returns the (B,) tokens, whether each is part of its response
    (EOS included), and the updated done flags."""
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    tok = sample_categorical(torch.softmax(logits / temperature, dim=-1), generator, uniform)  # (B,)
    tok = torch.where(done, torch.full_like(tok, pad_id), tok)  # PAD after EOS
    return tok, ~done, done | (tok == eos_id)


def _finish(responses: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, R') sampled tokens -> ``(responses, mask, has_eos)`` as :func:`mask_after_eos`, trimmed to the longest."""
    responses, mask, has_eos = mask_after_eos(responses, eos_id, pad_id)
    responses, mask = trim_responses(responses, mask)
    return responses, mask, has_eos


class _StaticUnsupported(Exception):
    """The model cannot decode with a static cache and a prepared 4-D mask (its attention kernel needs
    another mask format): sample eagerly instead."""


def _mask_values(allowed: torch.Tensor, attn_implementation: str) -> torch.Tensor:
    """A boolean (B, 1, Q, L) "may attend" mask in the form the model's attention kernel reads: boolean
    for SDPA, additive float (0 or the most negative float) for the eager kernel."""
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        zero = torch.zeros((), dtype=torch.float32, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(torch.float32).min)
    raise _StaticUnsupported(f"attention implementation '{attn_implementation}'")


@torch.no_grad()
def sample_responses_static(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    cuda_graph: bool = False,
    all_done: Callable[[torch.Tensor], bool] = every_row_done,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_responses` with a static KV cache of P + max_new_tokens positions and a prepared 4-D
    attention mask, so that every decoding step has the same shapes and reads and writes the same
    memory. With ``cuda_graph`` (model on a GPU) the decoding step is captured once as a CUDA graph and
    replayed: at RLHF's small per-step work the eager step is bound by kernel launches, not by the GPU.

    The first decoding step runs eagerly (on a side stream when capturing: the graph's warm-up); the
    second is captured and every later one replays it. Sampling stays outside the graph, with the same
    draws as :func:`sample_responses`. Same outputs, up to float rounding, as :func:`sample_responses`."""
    if temperature <= 0:
        raise ValueError("PPO samples from the policy: temperature must be > 0")
    base = _base_model(model)
    impl = getattr(base.config, "_attn_implementation", None) or "eager"
    B, P = prompt_ids.shape
    L, dev = P + max_new_tokens, prompt_ids.device
    cache_kw = cache_argument(model)
    cache = StaticCache(config=base.config, max_cache_len=L)

    # prefill: each prompt token sees the real prompt tokens up to itself (and itself, so no row of the
    # mask is empty, which would give NaN on left padding); columns P.. are not written yet
    seen = torch.zeros(B, L, dtype=torch.bool, device=dev)  # (B, L) real tokens so far
    seen[:, :P] = prompt_mask.bool()
    cols, rows = torch.arange(L, device=dev), torch.arange(P, device=dev)
    causal = cols.unsqueeze(0) <= rows.unsqueeze(1)  # (P, L)
    allowed = (causal.unsqueeze(0) & seen.unsqueeze(1)) | (cols.unsqueeze(0) == rows.unsqueeze(1)).unsqueeze(0)
    pos = position_ids_from_mask(prompt_mask.long())  # (B, P)
    out = model(
        input_ids=prompt_ids,
        attention_mask=_mask_values(allowed.unsqueeze(1), impl),
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    logits = out.logits[:, -1]  # (B, V)

    # the decoding step's inputs live in fixed buffers, updated in place before each step
    step_ids = torch.full((B, 1), pad_id, dtype=prompt_ids.dtype, device=dev)  # (B, 1)
    step_pos = pos[:, -1:] + 1  # (B, 1) position of response token 0
    step_mask = _mask_values(seen[:, None, None, :], impl).clone()  # (B, 1, 1, L)

    def step() -> torch.Tensor:
        return model(
            input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos, use_cache=True, **{cache_kw: cache}
        ).logits

    graph = graph_logits = None
    autocast = nullcontext()
    if cuda_graph and torch.is_autocast_enabled("cuda"):  # casts inside a graph must not be cached
        autocast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # (B,)
    tokens = []
    for t in range(max_new_tokens):
        tok, real, done = _draw(logits, done, temperature, generator, eos_id, pad_id)
        tokens.append(tok)
        if t == max_new_tokens - 1 or all_done(done):
            break
        step_ids.copy_(tok.unsqueeze(1))
        step_mask[:, 0, 0, P + t] = _mask_values(real, impl)  # token t is seen from now on if it is real
        if t > 0:
            step_pos.add_(1)
        if not cuda_graph:
            logits = step()[:, -1]
        elif t == 0:  # warm-up before capture, on a side stream (as CUDA graph capture requires)
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side), autocast:
                logits = step()[:, -1]
            torch.cuda.current_stream(dev).wait_stream(side)
        else:
            if graph is None:  # capturing records the step without running it
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), autocast:
                    graph_logits = step()
            graph.replay()
            logits = graph_logits[:, -1]
    return _finish(torch.stack(tokens, dim=1), eos_id, pad_id)


NO_CUDA_GRAPH = "_instructrl_no_cuda_graph"  # set on a model whose static-cache sampling failed once


def sample_fast(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, cuda_graph: bool, **kw):
    """The rollout's sampler: on a GPU with ``cuda_graph``, :func:`sample_responses_static` with a CUDA
    graph; if the model cannot decode that way (an attention kernel or cache it does not support), a
    warning and :func:`sample_responses` from then on. On a CPU, :func:`sample_responses`."""
    if cuda_graph and prompt_ids.device.type == "cuda" and not getattr(model, NO_CUDA_GRAPH, False):
        try:
            return sample_responses_static(model, prompt_ids, prompt_mask, cuda_graph=True, **kw)
        except Exception as e:
            setattr(model, NO_CUDA_GRAPH, True)
            log.warning(
                "CUDA-graph sampling is not available for %s (%s: %s); sampling without it",
                type(model).__name__,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )
    return sample_responses(model, prompt_ids, prompt_mask, **kw)


def policy_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of the response tokens under ``model`` at the sampling temperature (Huang et al.
    2023 policy detail 1), and optionally their per-token entropy (B, R), no grad. Only the R positions
    that predict response tokens go through the LM head (``logits_to_keep``)."""
    pos = position_ids_from_mask(attention_mask)  # (B, T)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=pos,
        use_cache=False,
        logits_to_keep=response_len + 1,
    )
    # (B, R+1, V): position P-1+t predicts response token t, the last one nothing. Its label is ignored (-100)
    # instead of slicing it off: the backward of a slice would fill a zero (B, R+1, V) gradient and copy into it
    logits = out.logits
    labels = F.pad(input_ids[:, -response_len:], (0, 1), value=-100)  # (B, R+1)
    logprobs = logprobs_from_logits(logits, labels, temperature)[:, :-1]  # (B, R)
    entropy = None
    if with_entropy:
        with torch.no_grad():  # over all R+1 positions (a slice would be copied first), the last one dropped
            mask = F.pad(attention_mask[:, -response_len:], (0, 1))  # (B, R+1)
            entropy = entropy_from_logits(logits.detach(), mask, temperature)[:, :-1]  # (B, R)
    return logprobs, entropy


def value_forward(
    value_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int
) -> torch.Tensor:
    """Values (B, R): V_t is read at the position just before response token t (the state the action
    is taken in), from the value model applied at every token."""
    pos = position_ids_from_mask(attention_mask)
    values = value_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)  # (B, T)
    return values[:, -response_len - 1 : -1].float()  # (B, R)
