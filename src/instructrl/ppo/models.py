"""The four models of stage 3: policy, reference, reward model and value model.

* **Reference**: a frozen copy of the initial policy (the KL anchor of InstructGPT Eq. 2), or, when the
  policy trains LoRA adapters, the same model with its adapters disabled (no second copy in memory).
* **Reward model**: a directory that plain ``AutoModelForSequenceClassification`` loads (``num_labels=1``,
  ``config.pad_token_id`` set), scoring prompt + response + EOS at the last non-PAD token; the normalized
  reward is ``gain * raw + bias`` with ``instructrl_reward_gain`` / ``instructrl_reward_bias`` from its
  ``config.json`` (1 and 0 when absent), loaded by ``instructrl.reward.model.RewardModel``.
* **Value model**: separate from the policy and initialized from the RM (InstructGPT §3.5): the RM's
  backbone and scalar head applied at every token, with the same gain and bias, so that at the start
  the value at the last token is the RM's normalized score.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from instructrl.errors import ModelLoadError
from instructrl.modeling.loading import check_model_source, disable_dropout, fuse_activations

log = logging.getLogger("instructrl.ppo")

HEAD_NAMES = ("score", "classifier", "v_head")


def _load_seq_cls(path: str):
    from transformers import AutoModelForSequenceClassification

    check_model_source(path, "reward model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    except Exception as e:
        raise ModelLoadError(f"could not load reward model '{path}' as a sequence classifier: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if getattr(model.config, "pad_token_id", None) is None:
        raise ModelLoadError(f"reward model '{path}': config.json has no pad_token_id, so the score position "
                             f"(last non-PAD token) is undefined; set it to the tokenizer's PAD id")
    fuse_activations(model)
    return model


def load_reward_model(path: str) -> nn.Module:
    """The stage-2 :class:`RewardModel`, frozen and dropout-free: ``forward(input_ids, attention_mask) -> (B,)``
    normalized rewards."""
    from instructrl.reward.model import RewardModel

    rm = RewardModel.from_pretrained(path)
    disable_dropout(rm)
    rm.eval().requires_grad_(False)
    return rm


class EnsembleReward(nn.Module):
    """Several reward models scored together (Coste et al. 2023, reward-model ensembles against
    over-optimization): ``mode="mean"`` averages their normalized rewards, ``"min"`` takes the worst
    case, ``"uwo"`` the mean minus ``penalty`` times their spread (uncertainty-weighted). Each member is
    a module ``forward(input_ids, attention_mask) -> (B,)`` on the same token ids (e.g. stage-2
    :class:`RewardModel` directories loaded with :func:`load_reward_model`)."""

    MODES = ("mean", "min", "uwo")

    def __init__(self, members: list[nn.Module], mode: str = "mean", penalty: float = 1.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"ensemble mode must be one of {self.MODES}, got {mode!r}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 reward models, got {len(members)}")
        self.members, self.mode, self.penalty = nn.ModuleList(members), mode, penalty

    @classmethod
    def from_dirs(cls, paths: list[str], mode: str = "mean", penalty: float = 1.0) -> "EnsembleReward":
        return cls([load_reward_model(p) for p in paths], mode, penalty)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = torch.stack([m(input_ids=input_ids, attention_mask=attention_mask).float() for m in self.members])  # (M, B)
        if self.mode == "min":
            return scores.min(dim=0).values
        if self.mode == "uwo":
            return scores.mean(dim=0) - self.penalty * scores.std(dim=0, unbiased=False)
        return scores.mean(dim=0)  # (B,)


class ValueModel(nn.Module):
    """V(s_t) at every position: the RM's backbone and scalar head applied at every token (InstructGPT
    §3.5: value function initialized from the RM). ``forward(...) -> (B, T)``."""

    def __init__(self, seq_cls_model):
        super().__init__()
        self.model = seq_cls_model  # the only registered module: one state-dict entry per tensor
        self.gain, self.bias = 1.0, 0.0
        self.head_name = next((h for h in HEAD_NAMES if isinstance(getattr(seq_cls_model, h, None), nn.Module)), None)
        if self.head_name is None:
            raise ModelLoadError(f"{type(seq_cls_model).__name__} has no scalar head named one of {HEAD_NAMES}")

    @classmethod
    def from_reward_model(cls, path: str) -> "ValueModel":
        from instructrl.reward.model import read_normalization

        vm = cls(_load_seq_cls(path))
        norm = read_normalization(path, vm.model.config)  # the RM's own gain and bias
        vm.gain, vm.bias = float(norm["gain"]), float(norm["bias"])
        disable_dropout(vm)
        return vm

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state  # (B, T, H)
        head = getattr(self.model, self.head_name)
        return self.gain * head(hidden).squeeze(-1) + self.bias  # (B, T)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        self.model.save_pretrained(out_dir, **kwargs)  # an RM-format directory (gain/bias in config.json)


def make_reference(policy) -> nn.Module | None:
    """A frozen copy of the initial policy, or None for a LoRA policy (use its adapters-disabled self)."""
    if hasattr(policy, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy)
    disable_dropout(ref)
    return ref.eval().requires_grad_(False)


def check_same_vocab(tokenizer, path: str, what: str, vocab_rows: int) -> None:
    """The RM and value model read the policy's token ids: they must share its tokenizer."""
    p = Path(path)
    if (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists():
        from instructrl.modeling.loading import load_tokenizer

        other = load_tokenizer(path)
        if other.get_vocab() != tokenizer.get_vocab():
            raise ModelLoadError(f"{what} '{path}' uses a different tokenizer than the policy; PPO scores the "
                                 f"policy's token ids, so train the {what} from the same model family/tokenizer")
    if vocab_rows < len(tokenizer):
        raise ModelLoadError(f"{what} '{path}' has {vocab_rows} embedding rows but the policy's tokenizer has "
                             f"{len(tokenizer)} tokens")
