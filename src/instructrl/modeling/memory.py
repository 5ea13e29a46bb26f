"""Memory levers applied to a loaded model: activation (gradient) checkpointing and the dtype of its weights.

* **Checkpointing** keeps only each decoder layer's input in the forward and recomputes the layer in the
  backward (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"): activation memory falls from
  O(layers x per-layer activations) to O(layers x hidden states) for about one more forward of compute.
  transformers checkpoints a layer only when the layer is in training mode and gradients are on; the RL
  stages run their models with dropout off, so :func:`train_mode_without_dropout` puts a model in training
  mode with every dropout at 0, which computes exactly what evaluation mode computes.
* **Weight dtype**: a model being trained keeps fp32 weights (the fp32 "master" copy AdamW needs: a bf16 weight
  cannot hold an update smaller than 2^-8 of itself, so small steps would be lost) and low-precision compute
  comes from autocast (``--mixed-precision bf16``). Only frozen weights are stored in bf16/fp16: the
  reference and reward models, and the frozen base under LoRA adapters (the adapters stay fp32, as peft keeps
  them: ``autocast_adapter_dtype``). :func:`resolve_weight_dtype` states that rule in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import BitsAndBytesConfig

from instructrl.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# per-module float attributes that some architectures read as an attention-dropout probability in training mode
# (Llama, Qwen2, Mistral: `self.attention_dropout`), besides their nn.Dropout modules
DROPOUT_FLOAT_ATTRS = ("attention_dropout", "dropout", "attn_dropout_p")


def _transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def enable_gradient_checkpointing(model: torch.nn.Module, what: str = "model") -> torch.nn.Module:
    """Turn on activation checkpointing of every decoder layer (non-reentrant ``torch.utils.checkpoint``: it
    needs no input that requires grad, so a LoRA model with frozen embeddings is recomputed too). Takes a
    transformers model, a peft model around one, or a module whose ``.model`` is one (the value model)."""
    inner = _transformers_model(model)
    if not hasattr(inner, "supports_gradient_checkpointing") and isinstance(
        getattr(model, "model", None), torch.nn.Module
    ):
        inner = _transformers_model(model.model)
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"--gradient-checkpointing: the {what} ({type(inner).__name__}) does not support activation "
            f"checkpointing in transformers; drop --gradient-checkpointing"
        )
    kwargs = {"use_reentrant": False}  # the reentrant variant drops gradients of inputs that do not require grad
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.x name
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(model, "get_base_model"):
        # peft: gradients must flow from the frozen embeddings into the checkpointed layers' inputs
        inner.enable_input_require_grads()
    return model


def checkpointing_enabled(model: torch.nn.Module) -> bool:
    """Whether any layer of ``model`` recomputes its activations in the backward."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def train_mode_without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Training mode (so that transformers checkpoints the layers) with every dropout at 0: every
    ``nn.Dropout`` and every float attention-dropout attribute. Such a model computes what it computes in
    evaluation mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in DROPOUT_FLOAT_ATTRS:
            value = getattr(m, attr, None)
            if isinstance(value, float) and not isinstance(value, bool):
                setattr(m, attr, 0.0)
    return model.train()


def _inputs_to_fp32(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def trained_weights_in_fp32(model: torch.nn.Module) -> int:
    """Store every trained parameter in fp32 over a low-precision frozen base: a module with a trained bf16/fp16
    parameter (a head peft copies from a bf16 base to train it) is cast to fp32 and its inputs with it. LoRA
    adapters are fp32 already (peft's ``autocast_adapter_dtype``). Returns the number of modules cast."""
    cast = 0
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad and p.is_floating_point()]
        if any(p.dtype != torch.float32 for p in own):
            m.float()
            m.register_forward_pre_hook(_inputs_to_fp32)
            cast += 1
    return cast


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluation mode for a while (sampling): a checkpointing model in training mode drops its KV cache
    (GPT-2 and others skip the cache whenever checkpointing is on in training mode), which a decoding loop needs."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_quantize_base(kind: str, cpu: bool) -> None:
    """``--quantize-base 4bit|8bit`` needs a CUDA GPU and the bitsandbytes package: one line saying what to
    change otherwise (the stages call this before they write anything)."""
    if kind == "none":
        return
    if cpu:
        raise ConfigError(
            f"--quantize-base {kind} needs a CUDA GPU (bitsandbytes quantizes on CUDA) and this run is on the CPU: "
            f"drop --quantize-base (--torch-dtype bf16 stores the LoRA base in 16 bits) or run on a GPU"
        )
    try:
        import bitsandbytes  # noqa: F401  an optional extra: only quantized runs need it, so it is imported here
    except ImportError as e:
        raise ConfigError(
            f"--quantize-base {kind} needs the bitsandbytes package ({e}): pip install 'instructrl[bnb]', or drop "
            f"--quantize-base"
        ) from None


def prepare_quantized_base(model: torch.nn.Module) -> torch.nn.Module:
    """A quantized base made ready for LoRA training (peft: the layers that stay unquantized, norms and
    embeddings, in fp32; gradients into the first layer's input). Checkpointing is turned on separately."""
    from peft import prepare_model_for_kbit_training  # only LoRA runs pay for it: peft imports model classes

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the transformers model inside a peft wrapper) holds bitsandbytes-quantized layers."""
    inner = _transformers_model(model)
    return bool(getattr(inner, "is_loaded_in_4bit", False) or getattr(inner, "is_loaded_in_8bit", False)) or (
        getattr(inner, "hf_quantizer", None) is not None
    )


def quantization_config(kind: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """The transformers config that loads a frozen base in 8 bits (LLM.int8, Dettmers et al. 2022) or 4 bits
    (QLoRA: NF4 with double quantization of the block constants, Dettmers et al. 2023 §3); None for 'none'.
    The layers compute in ``compute_dtype``."""
    if kind == "none":
        return None
    # a reward model's scalar head is a Linear like the others: it stays unquantized, to be trained
    keep = ["score", "classifier", "lm_head"]
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        llm_int8_skip_modules=keep,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def resolve_weight_dtype(torch_dtype: str, *, frozen_base: bool, cuda: bool, mixed_precision: str) -> torch.dtype:
    """The dtype a trained model's weights are loaded in (see the module docstring).

    ``frozen_base``: only LoRA adapters (and heads) train, so the base weights are frozen and may be stored in
    bf16/fp16. Full fine-tuning keeps fp32 weights: ``bf16``/``fp16`` are refused there (the update of a
    low-precision weight loses what falls under its resolution), and ``auto`` is fp32. ``auto`` with a frozen
    base is bf16 on a CUDA GPU that computes in bf16 anyway (``mixed_precision`` resolved), else fp32."""
    if torch_dtype == "auto":
        return torch.bfloat16 if frozen_base and cuda and mixed_precision == "bf16" else torch.float32
    dtype = DTYPES[torch_dtype]
    if dtype != torch.float32 and not frozen_base:
        raise ConfigError(
            f"--torch-dtype {torch_dtype} with full fine-tuning: AdamW needs fp32 weights (an update below a "
            f"{torch_dtype} weight's resolution is lost); keep --torch-dtype fp32 and add --mixed-precision bf16 "
            f"for bf16 compute, or train LoRA adapters (--lora-r) on a {torch_dtype} base"
        )
    if dtype == torch.float16 and not cuda:
        raise ConfigError("--torch-dtype fp16 needs a CUDA GPU and this run is on the CPU: use bf16 or fp32")
    return dtype
