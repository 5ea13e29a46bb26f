"""A model's shapes from its ``config.json`` alone: parameters by module, layers, heads, vocabulary.

Each family's layout is written out from its transformers modeling file (the module tree that
``AutoModelForCausalLM`` builds); keys a saved config leaves out take the config class's default. The
counts are checked to the parameter against randomly initialised models in ``tests/plan``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from instructrl.errors import ConfigError, first_line_of

# families whose decoder layer is attention (q, k, v, o) + gated MLP (gate, up, down) with RMSNorm
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
KNOWN_TYPES = (*LLAMA_LIKE, "gpt2", "gpt_neox", "opt")
# peft's default LoRA targets per architecture (peft.utils.constants, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
PEFT_DEFAULT_TARGETS = {
    **dict.fromkeys(LLAMA_LIKE, ("q_proj", "v_proj")),
    "gpt2": ("c_attn",),
    "gpt_neox": ("query_key_value",),
    "opt": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class Linear:
    """One linear module of a decoder layer, named as peft's ``target_modules`` sees it (the leaf name)."""

    name: str
    d_in: int
    d_out: int
    bias: bool

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class Arch:
    """The shapes of a decoder-only LM that set its memory."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool  # SwiGLU-style gate * up (three MLP matrices) rather than fc -> act -> proj
    linears: tuple[Linear, ...]  # one decoder layer's linear modules
    layer_other_params: int  # one layer's parameters outside its linears (norms)
    embedding_params: int  # token (+ learned position) embeddings (+ OPT's projections)
    final_params: int  # after the last layer: the final norm
    lm_head_params: int  # 0 when the head is tied to the token embedding
    output_dim: int = 0  # width the heads read (OPT: word_embed_proj_dim); 0: hidden_size
    source: str = ""
    saved_dtype: str = "fp32"  # the checkpoint's dtype (config.json's torch_dtype / dtype): a frozen model's as loaded

    @property
    def python_rms_norm(self) -> bool:
        """Llama's family normalizes with an RMSNorm written in Python (it keeps more for its backward)."""
        return self.model_type in LLAMA_LIKE

    @property
    def attention_input_linears(self) -> int:
        """Linears reading the attention's input: q, k, v apart (Llama, OPT) or one fused (GPT-2, GPT-NeoX)."""
        return sum(m.name in ("q_proj", "k_proj", "v_proj", "c_attn", "query_key_value") for m in self.linears)

    @property
    def layer_params(self) -> int:
        return sum(m.params for m in self.linears) + self.layer_other_params

    @property
    def backbone_params(self) -> int:
        """The model without its LM head (``AutoModel``): what a reward or value model keeps."""
        return self.embedding_params + self.num_layers * self.layer_params + self.final_params

    @property
    def lm_params(self) -> int:
        """``AutoModelForCausalLM``'s parameters, a tied head counted once (as ``model.parameters()`` does)."""
        return self.backbone_params + self.lm_head_params

    @property
    def scalar_head_params(self) -> int:
        """The score head of a reward / value model: ``Linear(hidden, 1, bias=False)`` (``...ForSequenceClassification``)."""
        return self.output_dim or self.hidden_size

    def lora_targets(self, targets: list[str] | tuple[str, ...]) -> tuple[Linear, ...]:
        """The layer's linears that ``targets`` selects: () or ["default"] = peft's default for the family,
        ["all-linear"] = every linear of the layer (peft's ``all-linear`` leaves out the LM head too)."""
        names = tuple(targets) or ("default",)
        if names == ("default",):
            names = PEFT_DEFAULT_TARGETS[self.model_type]
        if names == ("all-linear",):
            return self.linears
        known = {m.name for m in self.linears}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"lora_targets: {', '.join(unknown)} is not a linear module of a {self.model_type} layer "
                f"(its linears: {', '.join(sorted(known))}; or 'default', 'all-linear')"
            )
        return tuple(m for m in self.linears if m.name in names)

    def lora_params(self, rank: int, targets: list[str] | tuple[str, ...]) -> int:
        """LoRA adds A (r x d_in) and B (d_out x r) to each targeted linear (Hu et al. 2021, §4.1)."""
        return self.num_layers * sum(rank * (m.d_in + m.d_out) for m in self.lora_targets(targets))

    @property
    def quantizable_params(self) -> int:
        """Weights a 4/8-bit base quantizes: the layers' linear weight matrices (bitsandbytes replaces
        ``nn.Linear`` inside the layers; biases, norms, embeddings and the LM head stay in 16 bits)."""
        return self.num_layers * sum(m.d_in * m.d_out for m in self.linears)


# ---------------------------------------------------------------------------- reading a config
def read_config(model: str) -> dict[str, Any]:
    """The config dict of ``model``: a ``config.json`` file, a folder holding one, or a Hub id (its
    ``config.json`` alone is fetched; no weights)."""
    path = Path(os.path.expanduser(model))
    if path.is_file():
        return _load_json(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model folder '{model}' has no config.json: give a Hugging Face checkpoint folder, a config.json "
                "or a Hub id"
            )
        return _load_json(path / "config.json")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(".json"):
        raise ConfigError(f"model path '{model}' does not exist: give a checkpoint folder, a config.json or a Hub id")
    try:
        from huggingface_hub import hf_hub_download  # only a Hub id needs it (and the network)

        return _load_json(Path(hf_hub_download(model, "config.json")))
    except ConfigError:
        raise
    except Exception as e:  # offline, unknown repo, gated repo: all the same to the user
        raise ConfigError(
            f"could not fetch the config.json of '{model}' from the Hugging Face Hub ({first_line_of(e)}); pass a local "
            "checkpoint folder or config.json, or check the id and your network"
        ) from None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(data).__name__}")
    return data


def load_arch(model: str) -> Arch:
    return arch_from_config(read_config(model), source=model)


def arch_from_config(cfg: dict[str, Any], source: str = "config") -> Arch:
    model_type = cfg.get("model_type")
    if model_type not in KNOWN_TYPES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not one the planner can count (known: {', '.join(KNOWN_TYPES)}); "
            "plan with the config of the closest known family"
        )
    try:
        if model_type in LLAMA_LIKE:
            arch = _llama_like(cfg, model_type, source)
        else:
            arch = {"gpt2": _gpt2, "gpt_neox": _gpt_neox, "opt": _opt}[model_type](cfg, source)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ConfigError(f"{source}: a {model_type} config with a missing or malformed size ({e})") from None
    return replace(arch, saved_dtype=SAVED_DTYPES.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), "fp32"))


# config.json's torch_dtype (dtype in newer transformers) -> the planner's name; anything else (absent, "auto"): fp32
SAVED_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _getter(cfg: dict[str, Any], defaults: dict[str, Any]):
    def get(key: str) -> Any:
        value = cfg.get(key)
        return defaults[key] if value is None else value

    return get


# defaults of transformers' config classes, for keys a saved config.json leaves out
_LLAMA_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None: = num_attention_heads (multi-head attention)
    "head_dim": None,  # None: hidden_size // num_attention_heads
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
_FAMILY_DEFAULTS = {
    "llama": _LLAMA_DEFAULTS,
    "mistral": {**_LLAMA_DEFAULTS, "intermediate_size": 14336, "num_key_value_heads": 8},
    "qwen2": {**_LLAMA_DEFAULTS, "vocab_size": 151936, "intermediate_size": 22016},
    "qwen3": {**_LLAMA_DEFAULTS, "vocab_size": 151936, "intermediate_size": 22016},
}


def _llama_like(cfg: dict[str, Any], model_type: str, source: str) -> Arch:
    get = _getter(cfg, _FAMILY_DEFAULTS[model_type])
    h, inter, n_layers, heads = (
        int(get("hidden_size")),
        int(get("intermediate_size")),
        int(get("num_hidden_layers")),
        int(get("num_attention_heads")),
    )
    kv = int(cfg.get("num_key_value_heads") or _FAMILY_DEFAULTS[model_type]["num_key_value_heads"] or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    # Qwen2: bias on q, k, v (not o); Llama / Qwen3: attention_bias on all four; Mistral: none
    qkv_bias = model_type == "qwen2" or (model_type != "mistral" and bool(get("attention_bias")))
    o_bias = model_type in ("llama", "qwen3") and bool(get("attention_bias"))
    mlp_bias = model_type == "llama" and bool(get("mlp_bias"))
    linears = (
        Linear("q_proj", h, heads * hd, qkv_bias),
        Linear("k_proj", h, kv * hd, qkv_bias),
        Linear("v_proj", h, kv * hd, qkv_bias),
        Linear("o_proj", heads * hd, h, o_bias),
        Linear("gate_proj", h, inter, mlp_bias),
        Linear("up_proj", h, inter, mlp_bias),
        Linear("down_proj", inter, h, mlp_bias),
    )
    vocab = int(get("vocab_size"))
    norms = 2 * h + (2 * hd if model_type == "qwen3" else 0)  # two RMSNorm weights; Qwen3 adds q_norm, k_norm
    return Arch(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=h,
        num_layers=n_layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hd,
        intermediate_size=inter,
        gated_mlp=True,
        linears=linears,
        layer_other_params=norms,
        embedding_params=vocab * h,
        final_params=h,
        lm_head_params=0 if get("tie_word_embeddings") else vocab * h,
        source=source,
    )


_GPT2_DEFAULTS = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "tie_word_embeddings": True,
}


def _gpt2(cfg: dict[str, Any], source: str) -> Arch:
    get = _getter(cfg, _GPT2_DEFAULTS)
    h, heads, vocab = int(get("n_embd")), int(get("n_head")), int(get("vocab_size"))
    inner = int(cfg.get("n_inner") or 4 * h)
    linears = (  # Conv1D modules, all with bias
        Linear("c_attn", h, 3 * h, True),
        Linear("c_proj", h, h, True),  # attn.c_proj
        Linear("c_fc", h, inner, True),
        Linear("c_proj", inner, h, True),  # mlp.c_proj: the same leaf name, so one target selects both
    )
    return Arch(
        model_type="gpt2",
        vocab_size=vocab,
        hidden_size=h,
        num_layers=int(get("n_layer")),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        intermediate_size=inner,
        gated_mlp=False,
        linears=linears,
        layer_other_params=2 * 2 * h,  # ln_1, ln_2: weight + bias
        embedding_params=vocab * h + int(get("n_positions")) * h,  # wte + wpe
        final_params=2 * h,  # ln_f
        lm_head_params=0 if get("tie_word_embeddings") else vocab * h,
        source=source,
    )


_NEOX_DEFAULTS = {
    "vocab_size": 50432,
    "hidden_size": 6144,
    "num_hidden_layers": 44,
    "num_attention_heads": 64,
    "intermediate_size": 24576,
    "tie_word_embeddings": False,
    "attention_bias": True,
}


def _gpt_neox(cfg: dict[str, Any], source: str) -> Arch:
    get = _getter(cfg, _NEOX_DEFAULTS)
    h, heads, vocab, inter = (
        int(get("hidden_size")),
        int(get("num_attention_heads")),
        int(get("vocab_size")),
        int(get("intermediate_size")),
    )
    bias = bool(get("attention_bias"))
    linears = (
        Linear("query_key_value", h, 3 * h, bias),
        Linear("dense", h, h, bias),
        Linear("dense_h_to_4h", h, inter, True),
        Linear("dense_4h_to_h", inter, h, True),
    )
    return Arch(
        model_type="gpt_neox",
        vocab_size=vocab,
        hidden_size=h,
        num_layers=int(get("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        intermediate_size=inter,
        gated_mlp=False,
        linears=linears,
        layer_other_params=2 * 2 * h,  # input_layernorm, post_attention_layernorm
        embedding_params=vocab * h,  # embed_in (rotary: no parameters)
        final_params=2 * h,  # final_layer_norm
        lm_head_params=0 if get("tie_word_embeddings") else vocab * h,  # embed_out
        source=source,
    )


_OPT_DEFAULTS = {
    "vocab_size": 50272,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "num_attention_heads": 12,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": None,  # None: hidden_size
    "do_layer_norm_before": True,
    "_remove_final_layer_norm": False,
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "tie_word_embeddings": True,
}


def _opt(cfg: dict[str, Any], source: str) -> Arch:
    get = _getter(cfg, _OPT_DEFAULTS)
    h, heads, vocab, ffn = (
        int(get("hidden_size")),
        int(get("num_attention_heads")),
        int(get("vocab_size")),
        int(get("ffn_dim")),
    )
    wed = int(cfg.get("word_embed_proj_dim") or h)
    bias = bool(get("enable_bias"))
    norm = 2 * h if get("layer_norm_elementwise_affine") else 0
    linears = (
        Linear("q_proj", h, h, bias),
        Linear("k_proj", h, h, bias),
        Linear("v_proj", h, h, bias),
        Linear("out_proj", h, h, bias),
        Linear("fc1", h, ffn, bias),
        Linear("fc2", ffn, h, bias),
    )
    # OPT's learned positions carry an offset of 2 rows; project_in/out (no bias) only when wed != hidden
    embedding = vocab * wed + (int(get("max_position_embeddings")) + 2) * h + (2 * wed * h if wed != h else 0)
    final = norm if get("do_layer_norm_before") and not get("_remove_final_layer_norm") else 0
    return Arch(
        model_type="opt",
        vocab_size=vocab,
        hidden_size=h,
        num_layers=int(get("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        intermediate_size=ffn,
        gated_mlp=False,
        linears=linears,
        layer_other_params=2 * norm,  # self_attn_layer_norm, final_layer_norm of each layer
        embedding_params=embedding,
        final_params=final,
        lm_head_params=0 if get("tie_word_embeddings") else vocab * wed,
        output_dim=wed,
        source=source,
    )
