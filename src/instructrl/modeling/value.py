"""The value model of stage 3: separate from the policy and initialized from the reward model.

InstructGPT §3.5: the value function is initialized from the RM. A :class:`ValueModel` applies the RM's
backbone and scalar head at every token, with the RM's gain and bias, so that at the start the value at
the last token is the RM's normalized score. It saves as an RM-format directory (gain/bias in ``config.json``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from instructrl.errors import ModelLoadError
from instructrl.modeling.loading import check_model_source, disable_dropout, fuse_activations
from instructrl.modeling.reward import read_normalization

HEAD_NAMES = ("score", "classifier", "v_head")


def _load_seq_cls(path: str):
    check_model_source(path, "reward model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    except Exception as e:
        raise ModelLoadError(
            f"could not load reward model '{path}' as a sequence classifier: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if getattr(model.config, "pad_token_id", None) is None:
        raise ModelLoadError(
            f"reward model '{path}': config.json has no pad_token_id, so the score position "
            f"(last non-PAD token) is undefined; set it to the tokenizer's PAD id"
        )
    fuse_activations(model)
    return model


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
    def from_reward_model(cls, path: str) -> ValueModel:
        vm = cls(_load_seq_cls(path))
        norm = read_normalization(path, vm.model.config)  # the RM's own gain and bias
        vm.gain, vm.bias = float(norm["gain"]), float(norm["bias"])
        disable_dropout(vm)
        return vm

    @property
    def config(self):
        return self.model.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, H)
        head = getattr(self.model, self.head_name)
        return self.gain * head(hidden).squeeze(-1) + self.bias  # (B, T)

    def save_pretrained(self, out_dir, **kwargs) -> None:
        self.model.save_pretrained(out_dir, **kwargs)  # an RM-format directory (gain/bias in config.json)
