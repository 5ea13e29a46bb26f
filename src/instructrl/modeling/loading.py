"""Loading any Hugging Face causal LM and its tokenizer, by local path or Hub id; the frozen reference model.

* PAD must differ from EOS (otherwise EOS is masked out with the padding and the policy never learns to
  stop; Huang et al. 2023). A tokenizer without a pad token, or whose pad token is its EOS, gets a
  dedicated ``<|pad|>`` token and the model's embeddings are resized.
* A directory holding a ``config.json`` but no weights is initialized randomly from that config
  (how ``instructrl pretrain`` starts a base model).
* Residual dropout (InstructGPT App. C.1: 0.2 in SFT) is set through the config key the architecture uses
  (GPT-2 ``resid_pdrop``, GPT-NeoX ``hidden_dropout``, ...); an architecture whose residual stream has no
  dropout of its own (Llama, Qwen2, Mistral: only ``attention_dropout``, a dropout of attention weights)
  gets a dropout module on the output of each layer's attention and MLP, where GPT-2 has its own. What was
  done is returned by :func:`residual_dropout_report` and stated in the run's outputs.
* Outputs are saved with ``save_pretrained`` (LoRA adapters merged), so plain transformers loads them.
* The reference model of RL (the KL anchor of InstructGPT Eq. 2) is a frozen copy of the initial policy,
  or, for a LoRA policy, the policy itself with its adapters disabled (no second copy in memory).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.activations import FastGELUActivation, NewGELUActivation

from instructrl.errors import ModelLoadError, first_line_of
from instructrl.modeling.memory import is_quantized, prepare_quantized_base

log = logging.getLogger("instructrl.modeling")
PAD_TOKEN = "<|pad|>"
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
# config attributes that hold residual / hidden dropout in common architectures
RESIDUAL_DROPOUT_ATTRS = ("resid_pdrop", "hidden_dropout", "hidden_dropout_prob", "dropout", "residual_dropout")


def looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.path.exists(name) or name.count("/") > 1


def check_model_source(name: str, what: str = "model") -> None:
    """Fail early, clearly, for a local path that does not exist."""
    path = Path(os.path.expanduser(name))
    if looks_local(name) and not path.exists():
        raise ModelLoadError(f"{what} path '{name}' does not exist")
    if path.is_dir() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise ModelLoadError(f"{what} directory '{name}' has no config.json: not a Hugging Face checkpoint")


def _hub_error(name: str, what: str, err: Exception) -> ModelLoadError:
    first = first_line_of(err)
    if Path(os.path.expanduser(name)).is_dir():  # a local folder transformers could not read
        return ModelLoadError(f"could not load {what} '{name}' ({type(err).__name__}: {first})")
    return ModelLoadError(
        f"could not load {what} '{name}': no local directory of that name, and loading it as a Hugging Face "
        f"Hub id failed ({first}). Pass a local checkpoint directory, or check the id and your network."
    )


def load_tokenizer(name: str, *, padding_side: str = "right"):
    """Load a tokenizer and make sure it has an EOS and a PAD distinct from EOS."""
    check_model_source(name, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except Exception as e:  # OSError / ValueError / HF hub errors
        if Path(name).is_dir():
            raise ModelLoadError(
                f"'{name}' has no usable tokenizer files ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        raise _hub_error(name, "tokenizer", e) from None
    if not tok("a b").input_ids:  # transformers builds an empty tokenizer for a folder holding only config.json
        raise ModelLoadError(f"'{name}' has no usable tokenizer files: its tokenizer encodes text to no tokens")
    ensure_special_tokens(tok)
    tok.padding_side = padding_side
    return tok


def ensure_special_tokens(tok) -> bool:
    """Add an EOS if missing and a dedicated PAD if missing or equal to EOS. Returns True if tokens were added."""
    added = False
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": "<|endoftext|>"})
        added = True
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # never reuse EOS as PAD (Huang et al. 2023, detail: "pad and eos must differ")
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
        added = True
    return added


def has_weights(path: Path) -> bool:
    return any((path / f).exists() for f in WEIGHT_FILES)


def load_causal_lm(
    name: str,
    tokenizer,
    *,
    residual_dropout: float | None = None,
    dtype: torch.dtype | None = None,
    init_from_config: bool = True,
    quantization_config=None,
):
    """Load a causal LM (or initialize it from a weight-less config dir) and align it with the tokenizer.

    Weights are loaded in ``dtype``, float32 by default whatever the checkpoint stores (a checkpoint
    saved in float16 would otherwise train in float16 and overflow); mixed precision comes from the
    accelerator's autocast. ``quantization_config`` (bitsandbytes, CUDA only; see modeling/memory.py) loads the
    layers quantized, on the current CUDA device."""
    check_model_source(name)
    local = Path(os.path.expanduser(name))
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else name)
    except Exception as e:
        raise _hub_error(name, "model", e) from None
    changed = set_residual_dropout(config, residual_dropout) if residual_dropout is not None else []
    try:
        if local.is_dir() and not has_weights(local) and init_from_config:
            log.info("%s has a config but no weights: initializing a new model from the config", name)
            model = AutoModelForCausalLM.from_config(config)
            if dtype is not None:
                model.to(dtype)
        else:
            quantized = {}
            if quantization_config is not None:
                quantized = {
                    "quantization_config": quantization_config,
                    "device_map": {"": torch.cuda.current_device()},
                }
            model = AutoModelForCausalLM.from_pretrained(
                str(local) if local.exists() else name, config=config, dtype=dtype or torch.float32, **quantized
            )
    except ModelLoadError:
        raise
    except Exception as e:
        if local.exists():
            raise ModelLoadError(
                f"could not load model from '{name}': {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from None
        raise _hub_error(name, "model", e) from None
    if quantization_config is not None:
        model = prepare_quantized_base(model)
    align_with_tokenizer(model, tokenizer)
    fuse_activations(model)
    if residual_dropout is not None:
        apply_residual_dropout(model, residual_dropout, changed)
    return model


def set_residual_dropout(config, p: float) -> list[str]:
    """Set residual dropout on whatever config attribute the architecture uses (GPT-2: resid_pdrop; GPT-NeoX:
    hidden_dropout); returns the attributes set (none for Llama-style configs: see :func:`add_residual_dropout`)."""
    changed = [a for a in RESIDUAL_DROPOUT_ATTRS if isinstance(getattr(config, a, None), (int, float))]
    for attr in changed:
        setattr(config, attr, p)
    return changed


RESIDUAL_DROPOUT_MODULE = "instructrl_residual_dropout"


def _drop_branch_output(module: torch.nn.Module, args, output):
    drop = getattr(module, RESIDUAL_DROPOUT_MODULE)
    if isinstance(output, tuple):  # attention: (hidden states, attention weights, ...)
        return (drop(output[0]), *output[1:])
    return drop(output)


def add_residual_dropout(model: torch.nn.Module, p: float) -> int:
    """Residual dropout for architectures without a setting for it: a ``Dropout(p)`` on the output of the
    ``self_attn`` and the ``mlp`` of every decoder layer (Llama, Qwen2, Mistral, Gemma, ...), just before
    each is added to the residual stream, where GPT-2 applies ``resid_pdrop``. The dropout is a child of the
    branch (it follows ``train()`` / ``eval()``, and :func:`disable_dropout` finds it); the weights and the
    saved checkpoint are unchanged. Returns the number of layers given one."""
    layers = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "self_attn", None), torch.nn.Module)
        and isinstance(getattr(m, "mlp", None), torch.nn.Module)
    ]
    for layer in layers:
        for branch in (layer.self_attn, layer.mlp):
            if hasattr(branch, RESIDUAL_DROPOUT_MODULE):
                getattr(branch, RESIDUAL_DROPOUT_MODULE).p = p
                continue
            branch.add_module(RESIDUAL_DROPOUT_MODULE, torch.nn.Dropout(p))
            branch.register_forward_hook(_drop_branch_output)
    return len(layers)


def apply_residual_dropout(model: torch.nn.Module, p: float, config_keys: list[str]) -> dict:
    """Complete the residual dropout of a loaded model whose config got ``config_keys`` (see
    :func:`set_residual_dropout`), and record what was done (:func:`residual_dropout_report`)."""
    arch = type(model.config).__name__
    if config_keys:
        report = {"requested": p, "applied": True, "how": f"config: {', '.join(f'{k}={p}' for k in config_keys)}"}
    elif p == 0:
        report = {"requested": p, "applied": True, "how": f"nothing to set: {arch} has no residual dropout"}
    else:
        n = add_residual_dropout(model, p)
        if n:
            report = {
                "requested": p,
                "applied": True,
                "how": f"added: Dropout({p}) on the attention and MLP outputs of {n} layers ({arch} has no "
                "residual-dropout setting; its attention_dropout, if any, is left as is)",
            }
        else:
            report = {
                "requested": p,
                "applied": False,
                "how": f"NOT applied: {arch} has no residual-dropout setting and no self_attn/mlp layers to add one "
                "to; the model trains with its own dropout",
            }
            log.warning("residual dropout %s %s", p, report["how"])
    model.instructrl_residual_dropout = report
    return report


def residual_dropout_report(model: torch.nn.Module) -> dict:
    """What :func:`load_causal_lm` did with ``residual_dropout`` (requested, applied, how); the model's
    own setting when none was requested."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model
    return getattr(base, "instructrl_residual_dropout", None) or {
        "requested": None,
        "applied": False,
        "how": "the model's own setting",
    }


def align_with_tokenizer(model, tokenizer) -> None:
    """Resize embeddings for added tokens and record pad/eos ids in the model's configs."""
    emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > emb:
        model.resize_token_embeddings(len(tokenizer))
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id = tokenizer.pad_token_id
            cfg.eos_token_id = tokenizer.eos_token_id


def fuse_activations(model: torch.nn.Module) -> int:
    """Swap the tanh-approximated GELU that transformers writes out in Python (``gelu_new`` of GPT-2,
    GPT-J, Phi; ``gelu_fast``: five elementwise kernels forward, more backward) for PyTorch's fused
    kernel of the same function (``nn.GELU(approximate="tanh")``; equal up to float rounding). The
    config is untouched, so saved checkpoints are unchanged. Returns the number of modules swapped."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(parent, name, torch.nn.GELU(approximate="tanh"))
                swapped += 1
    return swapped


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere (policy, reference, value and reward models during RL)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def make_reference(policy) -> torch.nn.Module | None:
    """A frozen copy of the initial policy, or None for a LoRA policy (use its adapters-disabled self)."""
    if hasattr(policy, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy)
    disable_dropout(ref)
    return ref.eval().requires_grad_(False)


@contextmanager
def adapters_disabled(peft_model) -> Iterator[None]:
    """The base model alone (a LoRA policy's reference) for a while. peft re-enables the adapters by switching
    the active one on again, which freezes any other adapter (a value model's on the same base): the parameters
    trainable before are trainable again after."""
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    try:
        with peft_model.disable_adapter():
            yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def apply_lora(
    model, r: int, alpha: int, dropout: float, target_modules: list[str] | None, task_type: str = "CAUSAL_LM"
):
    """Wrap a model with LoRA adapters (peft). ``target_modules=None`` lets peft pick per architecture.
    ``task_type="SEQ_CLS"`` (a reward or value model): peft also trains the scalar head whole."""
    from peft import LoraConfig, get_peft_model  # only LoRA runs pay for it: peft imports transformers' model classes

    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, task_type=task_type, target_modules=target_modules or None
    )
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:
        raise ModelLoadError(f"LoRA: {e}; set --lora-target-modules for this architecture") from None


def merged_from_state_dict(peft_model, state_dict: dict[str, torch.Tensor], adapter: str | None = None):
    """A plain transformers model with ``peft_model``'s architecture, ``state_dict``'s weights (the whole weights of a
    sharded copy of it, gathered, or :func:`merge_source`'s) and its LoRA ``adapter`` (the active one by default)
    merged by peft. Built on the meta device and filled with the given tensors themselves, so it costs no second copy
    of the weights; the merge writes into the adapted layers' base weights among them."""
    from peft import get_peft_model

    base = peft_model.get_base_model()
    adapter = adapter or peft_model.active_adapter
    lora = copy.deepcopy(peft_model.peft_config[adapter])
    with torch.device("meta"):
        fresh = get_peft_model(type(base)(base.config), lora, adapter_name=adapter)
    fresh.load_state_dict(state_dict, strict=False, assign=True)
    inner = fresh.get_base_model()
    head = inner.get_output_embeddings() if getattr(inner.config, "tie_word_embeddings", False) else None
    if head is not None and head.weight.is_meta:  # the gathered weights hold a tied matrix once: tie it again
        head.weight = inner.get_input_embeddings().weight
    merged = fresh.merge_and_unload()
    empty = [n for n, t in [*merged.named_parameters(), *merged.named_buffers()] if t.is_meta]
    persistent = set(merged.state_dict())
    if any(n in persistent for n in empty):
        raise ModelLoadError(f"merging the gathered LoRA model: no weights for {[n for n in empty if n in persistent]}")
    return merged


def merge_source(peft_model) -> dict[str, torch.Tensor]:
    """``peft_model``'s weights in the CPU's memory, to merge its adapters for a save: the adapted layers' base
    tensors copied (a merge writes into them), every other tensor the model's own where it is on the CPU already (a
    GPU model's weights are copied to the host). So a save holds no second copy of the model on the GPU, and on a CPU
    no copy of the weights no adapter changes."""
    out: dict[str, torch.Tensor] = {}
    moved: dict[tuple, torch.Tensor] = {}  # a tensor under two names (tied embeddings) is moved once
    for name, t in peft_model.state_dict().items():
        t = t.detach()
        if ".base_layer." in name:
            out[name] = t.to("cpu", copy=True)
            continue
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if key not in moved:
            moved[key] = t.to("cpu")
        out[name] = moved[key]
    return out


def save_pretrained_atomic(
    model,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save a transformers-loadable checkpoint: written to a temp dir, then each file moved into place.

    LoRA adapters are merged first, in CPU memory (:func:`merge_source`), so the result needs no peft. Over a quantized
    base (``--quantize-base``), which cannot be merged exactly, the adapter is saved instead (peft's format:
    ``adapter_config.json`` names the base), which transformers loads when peft is installed. ``state_dict``: the
    weights to write in place of the model's own (a sharded model's, gathered whole: training.engines)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tmp-save"
    shutil.rmtree(tmp, ignore_errors=True)
    mergeable = hasattr(model, "merge_and_unload") and not is_quantized(model)  # peft over a plain base
    if state_dict is not None and not mergeable:
        if dtype is not None:
            state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    else:
        to_save = model
        if mergeable:  # a new model: from a sharded model's gathered weights, or from the model's own in CPU memory
            to_save = merged_from_state_dict(model, state_dict if state_dict is not None else merge_source(model))
        if dtype is not None and not is_quantized(to_save):
            to_save = (copy.deepcopy(to_save) if to_save is model else to_save).to(dtype)  # the caller's model stays
        to_save.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return out


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for a key-value cache: ``cache`` (transformers 5.24 and later), else the older
    ``past_key_values``; looked up on the model inside any wrapper (DDP, FSDP, DeepSpeed, peft)."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "get_base_model"):  # peft
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):  # DDP, DeepSpeed engine
            inner = inner.module
        else:
            break
    try:
        names = inspect.signature(type(inner).forward).parameters
    except (TypeError, ValueError):
        names = {}
    return "cache" if "cache" in names else "past_key_values"
