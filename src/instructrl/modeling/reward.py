"""The reward model: a causal LM's backbone with a scalar head read at the last token of the response (EOS).

InstructGPT §3.5: the RM starts from the SFT model with its unembedding replaced by a projection to one
scalar. Checkpoints are plain ``transformers`` ``AutoModelForSequenceClassification`` models with
``num_labels=1`` (e.g. ``GPT2ForSequenceClassification``), ``config.pad_token_id`` set to the tokenizer's PAD
(so the score is read at the last non-PAD token), the tokenizer saved beside them, and the normalization
stored twice: ``reward_normalization.json`` (``{"gain", "bias", "method", ...stats}``) and
``config.json`` (``instructrl_reward_gain``, ``instructrl_reward_bias``). Normalized reward = gain * raw + bias.

Public API (the reward, PPO, SFT-selection and evaluation stages import these names)::

    from instructrl.modeling.reward import RewardModel, load_frozen_reward, load_reward_model

    rm = RewardModel.from_pretrained(path, device=None)   # or load_reward_model(path, device=None)
    rm = load_frozen_reward(path)                         # no gradients: PPO's reward, a judge
    rm.tokenizer                                          # PAD distinct from EOS
    rm(input_ids, attention_mask)      -> (B,) normalized rewards; left or right padding
    rm.raw(input_ids, attention_mask)  -> (B,) unnormalized rewards
    rm.score(prompts, responses, batch_size=32) -> torch.Tensor (N,) normalized, on the CPU
    rm.score_raw(prompts, responses, batch_size=32) -> torch.Tensor (N,) unnormalized
    rm.gain, rm.bias (0-d buffers), rm.normalization (dict), rm.model (the transformers module)

``prompts`` are prompt records (a string or a list of chat messages), rendered with the same template as SFT;
``responses`` are strings; each is scored as rendered prompt + response + EOS.

:class:`EnsembleReward` scores with several frozen reward models at once (mean, worst case, or
uncertainty-weighted).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, DynamicCache

from instructrl.data.formats import Prompt
from instructrl.data.template import encode_pair_text
from instructrl.data.tokenize import left_pad, right_pad
from instructrl.errors import ModelLoadError
from instructrl.modeling.loading import (
    _hub_error,
    cache_argument,
    check_model_source,
    disable_dropout,
    fuse_activations,
    load_causal_lm,
    load_tokenizer,
    save_pretrained_atomic,
)
from instructrl.modeling.memory import prepare_quantized_base

log = logging.getLogger("instructrl.reward")
NORMALIZATION_FILE = "reward_normalization.json"
GAIN_KEY, BIAS_KEY = "instructrl_reward_gain", "instructrl_reward_bias"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


# ----------------------------------------------------------------------------- building from a causal LM
def build_reward_model(
    name: str, tokenizer, *, no_dropout: bool = True, dtype: torch.dtype | None = None, quantization_config=None
) -> torch.nn.Module:
    """A fresh reward model: the causal LM ``name``'s backbone weights under a new scalar head.

    The causal LM is loaded (and its embeddings aligned with ``tokenizer``), then its backbone state is copied,
    strictly, into ``AutoModelForSequenceClassification`` with ``num_labels=1``; the LM head is dropped
    (InstructGPT §3.5: unembedding replaced by a scalar projection). With ``quantization_config`` (bitsandbytes,
    CUDA only) the sequence classifier is loaded quantized from ``name`` directly (its head unquantized)."""
    if quantization_config is not None:
        return _quantized_reward_model(name, tokenizer, dtype, quantization_config, no_dropout)
    causal = load_causal_lm(name, tokenizer, init_from_config=False, dtype=dtype)
    config = causal.config
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-PAD token
    config.problem_type = "regression"
    try:
        rm = AutoModelForSequenceClassification.from_config(config)
    except ValueError as e:
        raise ModelLoadError(
            f"'{name}': {type(config).__name__} has no sequence-classification head in "
            f"transformers, so it cannot become a reward model ({str(e).splitlines()[0]})"
        ) from None
    rm.to(next(causal.parameters()).dtype)
    backbone = causal.base_model.state_dict()
    rm.base_model.load_state_dict(backbone, strict=True)  # every backbone tensor, no more, no less
    target = rm.base_model.state_dict()
    if not all(torch.equal(backbone[k], target[k]) for k in backbone):
        raise ModelLoadError(f"'{name}': backbone weights did not carry over into the reward model")
    _init_head(rm)
    setattr(rm.config, GAIN_KEY, 1.0)
    setattr(rm.config, BIAS_KEY, 0.0)
    if no_dropout:
        disable_dropout(rm)
    log.info("reward model from %s: %d backbone tensors carried over, new scalar head", name, len(backbone))
    del causal
    return rm


def _init_head(rm: torch.nn.Module) -> None:
    head = getattr(rm, "score", None)
    if isinstance(head, torch.nn.Linear):
        # Huang et al. 2023 RM detail 2 (lm-human-preferences): head weights ~ N(0, std = 1/sqrt(d_model + 1)).
        torch.nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_features + 1))
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)


def _quantized_reward_model(name: str, tokenizer, dtype, quantization_config, no_dropout: bool) -> torch.nn.Module:
    """A reward model whose backbone layers load quantized (its embeddings must already hold the tokenizer's)."""
    try:
        rm = AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=1,
            dtype=dtype or torch.float32,
            quantization_config=quantization_config,
            device_map={"": torch.cuda.current_device()},
        )
    except Exception as e:
        raise ModelLoadError(f"could not load '{name}' quantized as a reward model: {type(e).__name__}: {e}") from None
    if len(tokenizer) > rm.get_input_embeddings().weight.shape[0]:
        raise ModelLoadError(f"'{name}': the tokenizer has more tokens than the model's embeddings; save it resized")
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.config.problem_type = "regression"
    _init_head(rm)
    setattr(rm.config, GAIN_KEY, 1.0)
    setattr(rm.config, BIAS_KEY, 0.0)
    if no_dropout:
        disable_dropout(rm)
    return prepare_quantized_base(rm)


# ----------------------------------------------------------------------------- scoring
def sequence_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Raw scalar rewards (B,) of padded sequences (B, T), read at each row's last non-PAD token (EOS).

    Position ids are recomputed from the mask, so left and right padding give the same rewards
    (Huang et al. 2023: recompute position ids when scoring padded sequences)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T)
    # a transformers decoder would fill a key-value cache otherwise (copies of every layer's keys and values); a
    # model without one (a user's own module, an encoder) takes no such argument
    no_cache = {"use_cache": False} if getattr(getattr(model, "config", None), "use_cache", None) is not None else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **no_cache)
    return out.logits[:, 0].float()  # (B, 1) -> (B,)


def shared_prefix(seqs: list[list[int]]) -> int:
    """Tokens every one of ``seqs`` starts with (the rendered prompt, and any common start of the responses),
    at most the shortest length minus one, so that each sequence keeps a token of its own to be scored at."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


# a forward's fixed cost, in padded tokens' worth: a length bucket is split off only where it saves more than this
PER_FORWARD_TOKENS = 64


def length_buckets(lengths: list[int], max_buckets: int, per_forward: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` in at most ``max_buckets`` groups of similar length (runs of the lengths sorted), each
    to be padded to its own longest: the split that minimizes the padded tokens plus ``per_forward`` tokens' worth
    of fixed cost per group (default :data:`PER_FORWARD_TOKENS`), so a group is split off only where it saves
    more than a forward's overhead. Groups end only where the length changes (at most 64 candidate ends)."""
    per_forward = PER_FORWARD_TOKENS if per_forward is None else per_forward
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sl = [lengths[i] for i in order]
    ends = [j for j in range(1, len(sl)) if sl[j] != sl[j - 1]]
    if len(ends) > 63:
        ends = [ends[round(k * (len(ends) - 1) / 62)] for k in range(63)]
    ends = [0, *ends, len(sl)]  # candidate group boundaries, positions in the sorted order
    m, inf = len(ends), float("inf")
    # best[b][j]: the cheapest split of the first ends[j] lengths into b groups; cut[b][j]: where its last begins
    best = [[inf] * m for _ in range(max_buckets + 1)]
    cut = [[0] * m for _ in range(max_buckets + 1)]
    best[0][0] = 0.0
    for b in range(1, max_buckets + 1):
        for j in range(1, m):
            for i in range(j):
                cost = best[b - 1][i] + (ends[j] - ends[i]) * sl[ends[j] - 1] + per_forward
                if cost < best[b][j]:
                    best[b][j], cut[b][j] = cost, i
    b = min(range(1, max_buckets + 1), key=lambda k: best[k][m - 1])
    groups, j = [], m - 1
    while b > 0:
        i = cut[b][j]
        groups.append(order[ends[i] : ends[j]])
        j, b = i, b - 1
    return groups[::-1]


def _cache_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding the rows ``rows`` of ``cache`` (an index_select that gradients flow back through)."""
    return DynamicCache(
        ddp_cache_data=[(k.index_select(0, rows), v.index_select(0, rows), *rest) for k, v, *rest in cache]
    )


def prompt_shared_rewards(
    model: torch.nn.Module,
    groups: list[list[list[int]]],
    pad_id: int,
    device: torch.device | str,
    max_buckets: int = 1,
) -> torch.Tensor | None:
    """Raw rewards (N,) of the sequences of ``groups`` (N = all sequences, in order), each group's common prefix
    (its prompt) forwarded once: the prefixes go through the model as one left-padded batch (P, Tp) that fills
    a key-value cache, the cache is gathered to one row per sequence (differentiably: gradients of every
    sequence's loss reach its prompt's tokens), and the remainders (N, Ts), right-padded, are forwarded on it,
    with positions continuing the prompt's. A causal decoder gives the plain forward's rewards (up to rounding)
    for fewer tokens: the K completions of a ranking share the prompt (InstructGPT §3.5's K passes, each
    without the prompt's share). With ``max_buckets`` > 1 the remainders go through in up to that many forwards
    of similar length (:func:`length_buckets`), each on its own rows of the prompts' cache, so that a short
    completion is not padded to the longest of the micro-batch. None when some group shares no prefix, or the
    model returns no cache."""
    cuts = [shared_prefix(seqs) for seqs in groups]
    if min(cuts) == 0:
        return None
    owner = torch.tensor([g for g, seqs in enumerate(groups) for _ in seqs], device=device)  # (N,)
    p_ids, p_mask = left_pad([seqs[0][:n] for seqs, n in zip(groups, cuts)], pad_id)  # (P, Tp)
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    out = model(
        input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp_min(0), use_cache=True
    )
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "reorder_cache"):
        return None
    rests = [s[n:] for seqs, n in zip(groups, cuts) for s in seqs]
    buckets = length_buckets([len(r) for r in rests], max_buckets) if type(cache) is DynamicCache else []
    if len(buckets) <= 1:
        cache.reorder_cache(owner)  # (P, ...) -> (N, ...), an index_select that gradients flow back through
        return _remainder_rewards(model, cache, rests, owner, p_mask, pad_id, device)
    parts = []
    for idx in buckets:
        rows = owner[torch.tensor(idx, device=device)]  # (n_b,): each remainder's prompt
        part_cache = _cache_rows(cache, rows)
        parts.append(_remainder_rewards(model, part_cache, [rests[i] for i in idx], rows, p_mask, pad_id, device))
    order = torch.tensor([i for idx in buckets for i in idx], device=device)  # (N,): bucket order -> input order
    return torch.cat(parts).index_select(0, torch.argsort(order))


def _remainder_rewards(model, cache, rests: list[list[int]], owner: torch.Tensor, p_mask, pad_id: int, device):
    """Rewards (n,) of the remainders ``rests`` forwarded on ``cache`` (one row per remainder, that of its prompt
    ``owner``), right-padded, with positions continuing the prompt's."""
    s_ids, s_mask = right_pad(rests, pad_id)  # (n, Ts)
    s_ids, s_mask = s_ids.to(device), s_mask.to(device)
    start = p_mask.sum(-1)[owner]  # (n,): each prompt's true length
    positions = start[:, None] + torch.arange(s_ids.shape[1], device=device)[None, :]  # (n, Ts)
    out = model(
        input_ids=s_ids,
        attention_mask=torch.cat([p_mask[owner], s_mask], dim=-1),  # (n, Tp + Ts)
        position_ids=positions,
        use_cache=True,
        **{cache_argument(model): cache},
    )
    return out.logits[:, 0].float()  # read at each row's last non-PAD token: the end of its own remainder


@torch.no_grad()
def score_sequences(model: torch.nn.Module, seqs: list[list[int]], pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """Raw rewards (N,) of token sequences, on the CPU, in the given order (batched by similar length)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = left_pad([seqs[i] for i in idx], pad_id)  # (b, T)
        out[idx] = sequence_rewards(model, ids.to(device), mask.to(device)).cpu()
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- normalization on disk
def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_normalization(directory: str | os.PathLike, normalization: dict[str, Any]) -> None:
    """Store gain/bias in ``reward_normalization.json`` and in ``config.json`` of a saved reward model."""
    d = Path(directory)
    _write_json_atomic(d / NORMALIZATION_FILE, normalization)
    config = json.loads((d / "config.json").read_text())
    config[GAIN_KEY], config[BIAS_KEY] = float(normalization["gain"]), float(normalization["bias"])
    _write_json_atomic(d / "config.json", config)


def read_normalization(directory: str | os.PathLike, config=None) -> dict[str, Any]:
    path = Path(directory) / NORMALIZATION_FILE
    if path.exists():
        norm = json.loads(path.read_text())
        if "gain" not in norm or "bias" not in norm:
            raise ModelLoadError(f"{path}: expected 'gain' and 'bias'")
        return norm
    if config is not None and getattr(config, GAIN_KEY, None) is not None:
        return {
            "gain": float(getattr(config, GAIN_KEY)),
            "bias": float(getattr(config, BIAS_KEY, 0.0)),
            "method": "config",
        }
    log.warning("%s has no reward normalization: rewards are raw (gain 1, bias 0)", directory)
    return {"gain": 1.0, "bias": 0.0, "method": "none"}


# ----------------------------------------------------------------------------- the public module
class RewardModel(torch.nn.Module):
    """A trained reward model with its tokenizer and normalization; see the module docstring."""

    def __init__(self, model: torch.nn.Module, tokenizer, normalization: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.normalization = dict(normalization or {"gain": 1.0, "bias": 0.0, "method": "none"})
        self.register_buffer("gain", torch.tensor(float(self.normalization["gain"])))
        self.register_buffer("bias", torch.tensor(float(self.normalization["bias"])))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> RewardModel:
        name = str(path)
        check_model_source(name, "reward model")
        local = Path(os.path.expanduser(name))
        if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
            raise ModelLoadError(
                f"reward model '{name}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                f"save the tokenizer beside the model (tokenizer.save_pretrained)"
            )
        try:
            config = AutoConfig.from_pretrained(name)
        except Exception as e:  # OSError / ValueError / Hub errors: one line naming the reward model
            raise _hub_error(name, "reward model", e) from None
        if getattr(config, "num_labels", None) != 1:
            raise ModelLoadError(
                f"'{name}' is not a reward model: its config has num_labels="
                f"{getattr(config, 'num_labels', None)} (a causal LM? train one with `instructrl rm`)"
            )
        tokenizer = load_tokenizer(name, padding_side="left")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(name, dtype=dtype)
        except Exception as e:
            raise ModelLoadError(
                f"could not load reward model '{name}': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            raise ModelLoadError(
                f"'{name}': its tokenizer has {len(tokenizer)} tokens but the model only "
                f"{model.get_input_embeddings().weight.shape[0]} embeddings (it lacks a PAD token?)"
            )
        model.config.pad_token_id = tokenizer.pad_token_id
        disable_dropout(model)
        fuse_activations(model)
        model.eval()
        rm = cls(model, tokenizer, read_normalization(local if local.is_dir() else name, model.config))
        return rm.to(device) if device is not None else rm

    @property
    def device(self) -> torch.device:
        return self.gain.device

    def raw(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unnormalized rewards (B,) of (B, T) sequences."""
        return sequence_rewards(self.model, input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalized rewards gain * raw + bias, (B,)."""
        return self.gain * self.raw(input_ids, attention_mask) + self.bias  # (B,)

    def encode(self, prompts: list[Prompt], responses: list[str]) -> list[list[int]]:
        """Token ids of rendered prompt + response + EOS, cut to the model's context from the left."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        limit = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", None
        )
        seqs = []
        for p, r in zip(prompts, responses):
            p_ids, c_ids = encode_pair_text(self.tokenizer, p, r)
            ids = p_ids + c_ids
            seqs.append(ids[-limit:] if limit else ids)  # keep the response's end: the score is read at EOS
        return seqs

    def score_raw(self, prompts: list[Prompt], responses: list[str], batch_size: int = 32) -> torch.Tensor:
        """Unnormalized rewards (N,) of each (prompt, response), on the CPU."""
        return score_sequences(self.model, self.encode(prompts, responses), self.tokenizer.pad_token_id, batch_size)

    def score(self, prompts: list[Prompt], responses: list[str], batch_size: int = 32) -> torch.Tensor:
        """Normalized rewards (N,) of each (prompt, response), on the CPU."""
        return self.gain.cpu() * self.score_raw(prompts, responses, batch_size) + self.bias.cpu()  # (N,)

    def set_normalization(self, normalization: dict[str, Any]) -> None:
        self.normalization = dict(normalization)
        self.gain.fill_(float(normalization["gain"]))
        self.bias.fill_(float(normalization["bias"]))
        setattr(self.model.config, GAIN_KEY, float(normalization["gain"]))
        setattr(self.model.config, BIAS_KEY, float(normalization["bias"]))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        self.set_normalization(self.normalization)  # config attributes in step with the buffers
        out = save_pretrained_atomic(self.model, self.tokenizer, directory)
        write_normalization(out, self.normalization)
        return out


def load_reward_model(path: str | os.PathLike, device: str | torch.device | None = None) -> RewardModel:
    """Shorthand for :meth:`RewardModel.from_pretrained`: a reward model that can go on training."""
    return RewardModel.from_pretrained(path, device=device)


def load_frozen_reward(path: str | os.PathLike, dtype: torch.dtype | None = None) -> RewardModel:
    """The stage-2 :class:`RewardModel`, frozen and dropout-free: ``forward(input_ids, attention_mask) -> (B,)``
    normalized rewards, no gradients (PPO's reward, a judge). ``dtype``: its weights' dtype (default: as saved;
    bf16 halves its memory)."""
    rm = RewardModel.from_pretrained(path, dtype=dtype)
    disable_dropout(rm)
    rm.eval().requires_grad_(False)
    return rm


class EnsembleReward(nn.Module):
    """Several reward models scored together (Coste et al. 2023, reward-model ensembles against
    over-optimization): ``mode="mean"`` averages their normalized rewards, ``"min"`` takes the worst
    case, ``"uwo"`` the mean minus ``penalty`` times their spread (uncertainty-weighted). Each member is
    a module ``forward(input_ids, attention_mask) -> (B,)`` on the same token ids (e.g. stage-2
    :class:`RewardModel` directories loaded with :func:`load_frozen_reward`)."""

    MODES = ("mean", "min", "uwo")

    def __init__(self, members: list[nn.Module], mode: str = "mean", penalty: float = 1.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"ensemble mode must be one of {self.MODES}, got {mode!r}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 reward models, got {len(members)}")
        self.members, self.mode, self.penalty = nn.ModuleList(members), mode, penalty

    @classmethod
    def from_dirs(cls, paths: list[str], mode: str = "mean", penalty: float = 1.0) -> EnsembleReward:
        return cls([load_frozen_reward(p) for p in paths], mode, penalty)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = torch.stack(
            [m(input_ids=input_ids, attention_mask=attention_mask).float() for m in self.members]
        )  # (M, B)
        if self.mode == "min":
            return scores.min(dim=0).values
        if self.mode == "uwo":
            return scores.mean(dim=0) - self.penalty * scores.std(dim=0, unbiased=False)
        return scores.mean(dim=0)  # (B,)
