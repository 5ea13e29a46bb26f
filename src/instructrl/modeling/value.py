"""The value model of stage 3: separate from the policy and initialized from the reward model, or sharing the
policy's frozen base.

InstructGPT §3.5: the value function is initialized from the RM. A :class:`ValueModel` applies the RM's
backbone and scalar head at every token, with the RM's gain and bias, so that at the start the value at
the last token is the RM's normalized score. It saves as an RM-format directory (gain/bias in ``config.json``).
With :meth:`ValueModel.add_lora` its backbone is frozen and trains LoRA adapters (the head trains whole); it
still saves merged, as a plain RM-format directory.

A :class:`SharedBaseValueModel` holds no base of its own: it runs the LoRA policy's frozen base with a second
adapter (``"value"``) switched on, and a scalar head, so one base copy serves the policy (its ``"default"``
adapter), the reference (adapters off) and the value function. It starts from the policy's base, not from the
RM (a deviation from InstructGPT §3.5 that the memory saving costs), and saves as an RM-format directory too:
the base with the value adapter merged, the head as its ``score``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from instructrl.errors import ModelLoadError
from instructrl.modeling.loading import (
    apply_lora,
    check_model_source,
    disable_dropout,
    fuse_activations,
    merge_source,
    merged_from_state_dict,
)
from instructrl.modeling.memory import trained_weights_in_fp32
from instructrl.modeling.reward import BIAS_KEY, GAIN_KEY, read_normalization

HEAD_NAMES = ("score", "classifier", "v_head")
VALUE_ADAPTER = "value"  # the shared-base value model's adapter on the policy (whose own is peft's "default")


def _load_seq_cls(path: str, dtype: torch.dtype | None = None):
    check_model_source(path, "reward model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
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
    def from_reward_model(cls, path: str, dtype: torch.dtype | None = None) -> ValueModel:
        vm = cls(_load_seq_cls(path, dtype))
        norm = read_normalization(path, vm.model.config)  # the RM's own gain and bias
        vm.gain, vm.bias = float(norm["gain"]), float(norm["bias"])
        disable_dropout(vm)
        return vm

    def add_lora(self, r: int, alpha: int, target_modules: list[str] | None) -> ValueModel:
        """Freeze the backbone and train LoRA adapters on it (peft's sequence-classification task: the scalar
        head trains whole, in fp32 whatever the backbone's dtype)."""
        self.model = apply_lora(self.model, r, alpha, 0.0, target_modules, task_type="SEQ_CLS")
        trained_weights_in_fp32(self.model)
        return self

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
        return self.gain * scalar_head(head, hidden) + self.bias  # (B, T)

    def save_pretrained(self, out_dir, state_dict: dict[str, torch.Tensor] | None = None, **kwargs) -> None:
        """An RM-format directory (gain/bias in config.json). ``state_dict``: this module's weights gathered whole
        (a sharded value model: training.engines), written in place of the inner model's own."""
        model = self.model
        if state_dict is not None:
            inner = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
            if hasattr(model, "merge_and_unload"):  # LoRA, gathered: merged from the gathered weights
                model = merged_from_state_dict(model, inner)
            else:
                kwargs["state_dict"] = inner
        elif hasattr(model, "merge_and_unload"):  # LoRA: adapters merged in CPU memory, so plain transformers loads it
            model = merged_from_state_dict(model, merge_source(model))
        model.save_pretrained(out_dir, **kwargs)


def scalar_head(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(B, T) values from (B, T, H) hidden states: the head runs outside autocast, in its weights' dtype (fp32 as
    trained), so that a regression target's small differences are not rounded to bf16's 3 digits."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return head(hidden.to(head.weight.dtype)).squeeze(-1)


@contextmanager
def active_adapter(peft_model, name: str) -> Iterator[None]:
    """Run ``peft_model`` with its adapter ``name`` instead of the active one for a while. peft's ``set_adapter``
    also freezes every other adapter; the parameters that were trainable before are trainable again after."""
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    previous = peft_model.base_model.active_adapter
    peft_model.base_model.set_adapter(name)
    try:
        yield
    finally:
        peft_model.base_model.set_adapter(previous)
        for p in trainable:
            p.requires_grad_(True)


class SharedBaseValueModel(nn.Module):
    """V(s_t) from the LoRA policy's own frozen base with a value adapter on it and a scalar head (see the
    module docstring). ``forward(...) -> (B, T)``. Its parameters are the value adapter's (they live in the
    policy's layers, so ``policy.parameters()`` lists them too: exclude them from the policy's optimizer) and
    the head's; the base is the policy's, not registered here."""

    def __init__(self, policy, r: int, alpha: int):
        super().__init__()
        from peft import LoraConfig  # only LoRA runs pay for it: peft imports transformers' model classes

        if not hasattr(policy, "add_adapter") or VALUE_ADAPTER in policy.peft_config:
            raise ModelLoadError("a value model sharing the policy's base needs a LoRA policy without a value adapter")
        own = policy.peft_config[policy.active_adapter]
        targets = own.target_modules
        policy.add_adapter(
            VALUE_ADAPTER,
            LoraConfig(
                r=r,
                lora_alpha=alpha,
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
                target_modules=sorted(targets) if isinstance(targets, set) else targets,
            ),
        )
        names = [n for n, _ in policy.named_parameters() if f".{VALUE_ADAPTER}." in n]
        params = dict(policy.named_parameters())
        for n in names:  # peft adds the adapter frozen (not the active one)
            params[n].requires_grad_(True)
        self.adapter = nn.ParameterList([params[n] for n in names])  # the same tensors as in the policy
        self.adapter_names = names
        hidden = policy.get_base_model().config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1)
        # Huang et al. 2023 RM detail 2 (lm-human-preferences): a scalar head ~ N(0, 1/sqrt(d_model + 1)), bias 0
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        object.__setattr__(self, "policy", policy)  # not a submodule: the base belongs to the policy

    @property
    def config(self):
        return self.policy.get_base_model().config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        backbone = self.policy.get_base_model().base_model  # e.g. GPT2LMHeadModel.transformer: no LM head
        with active_adapter(self.policy, VALUE_ADAPTER):
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state  # (B, T, H)
        return scalar_head(self.head, hidden)  # (B, T)

    @torch.no_grad()
    def save_pretrained(self, out_dir, **kwargs) -> None:
        """An RM-format directory: a copy of the base with the value adapter merged, under a sequence-classification
        head holding this head's weight (its bias as the normalization bias): ValueModel.from_reward_model loads it
        and gives the same values."""
        merged = merged_from_state_dict(self.policy, merge_source(self.policy), adapter=VALUE_ADAPTER)
        config = copy.deepcopy(merged.config)
        config.num_labels, config.problem_type = 1, "regression"
        with torch.device("meta"):  # filled with the merged tensors themselves: no third copy of the base
            seq = AutoModelForSequenceClassification.from_config(config)
        seq.base_model.load_state_dict(merged.base_model.state_dict(), strict=True, assign=True)
        seq.to(torch.float32)  # saved in fp32 as the head trains (a no-op, no copy, for an fp32 base)
        head = next(getattr(seq, h) for h in HEAD_NAMES if isinstance(getattr(seq, h, None), nn.Module))
        head.weight = nn.Parameter(self.head.weight.detach().to("cpu", copy=True))
        bias = float(self.head.bias)
        if head.bias is not None:
            head.bias = nn.Parameter(self.head.bias.detach().to("cpu", copy=True))
            bias = 0.0
        left = [n for n, t in seq.state_dict().items() if t.is_meta]
        if left:
            raise ModelLoadError(f"saving the value model: no weights for {left}")
        setattr(seq.config, GAIN_KEY, 1.0)
        setattr(seq.config, BIAS_KEY, bias)
        seq.save_pretrained(Path(out_dir), **kwargs)
