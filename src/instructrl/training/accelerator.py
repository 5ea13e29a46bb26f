"""The accelerator every stage runs under: one code path for one CPU, several CPU processes (torchrun, gloo)
and GPUs (DDP / FSDP / DeepSpeed through ``accelerate launch``); stages only talk to
:class:`accelerate.Accelerator`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import set_seed

from instructrl.config import BaseConfig
from instructrl.errors import ConfigError
from instructrl.modeling.memory import DTYPES, check_quantize_base, quantization_config, resolve_weight_dtype
from instructrl.training import engines
from instructrl.training.allocator import keep_freed_memory
from instructrl.training.precision import resolve_auto


def resolve_mixed_precision(cfg: BaseConfig) -> str:
    """``cfg.mixed_precision`` as the run computes: 'auto' is bf16 on a CUDA GPU that supports it and, on the
    CPU, bf16 only where it is clearly faster than fp32 (native bf16: AMX or AVX512-BF16; see
    :mod:`instructrl.training.precision`), else 'no'. Decided and logged once per process."""
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return resolve_auto("cuda" if torch.cuda.is_available() and not cfg.cpu else "cpu")


def make_accelerator(cfg: BaseConfig, project_dir: str | os.PathLike):
    kwargs: dict[str, Any] = {}
    if cfg.report_to not in ("none", "", None):
        kwargs["log_with"] = cfg.report_to
    cpu = cfg.cpu or not torch.cuda.is_available()
    precision = resolve_mixed_precision(cfg)
    if precision == "fp16" and cpu:
        # accelerate has no fp16 autocast on a CPU: it would train in fp32 and still report fp16
        raise ConfigError(
            "--mixed-precision fp16 needs a CUDA GPU and this run is on the CPU"
            + (" (--cpu)" if cfg.cpu else "")
            + ": use --mixed-precision bf16 (CPU autocast; faster on CPUs with AMX) or --mixed-precision no"
        )
    # accelerate keeps one state per process: a second run in the same process (a notebook; a script
    # running SFT in fp32, then PPO in bf16, or one stage with --cpu on a GPU machine) with another
    # precision or device would be refused or, for the device, silently keep the first one. Start a
    # fresh state instead; with several processes the process group stays and only the precision can change.
    device = PartialState._shared_state.get("device")
    single = PartialState._shared_state.get("num_processes", 1) == 1
    if device is not None and single and (device.type == "cpu") != cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
    elif AcceleratorState._shared_state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()
    engine = getattr(cfg, "engine", "auto")  # the training stages' --engine (training.engines)
    plugins = engines.accelerator_kwargs(engine)
    acc = Accelerator(cpu=cpu, mixed_precision=precision, project_dir=str(project_dir), **plugins, **kwargs)
    set_seed(cfg.seed)
    if cpu and acc.num_processes == 1:  # INSTRUCTRL_MALLOC_TUNING=1: keep freed blocks for the next step (allocator.py)
        keep_freed_memory()
    if not acc.is_main_process:  # one copy of the log, from the main process
        logging.getLogger("instructrl").setLevel(logging.WARNING)
    engines.finish_setup(acc, engine, plugins)
    return acc


def weight_dtype(cfg, accelerator, frozen_base: bool) -> torch.dtype:
    """The dtype a trained model's weights load in (``cfg.torch_dtype``; see modeling/memory.py):
    ``frozen_base`` when only LoRA adapters and heads train."""
    return resolve_weight_dtype(
        cfg.torch_dtype,
        frozen_base=frozen_base,
        cuda=accelerator.device.type == "cuda",
        mixed_precision=resolve_mixed_precision(cfg),
    )


def check_levers(cfg) -> None:
    """What the memory levers need from the machine, checked before a stage writes anything (one line each)."""
    check_quantize_base(getattr(cfg, "quantize_base", "none"), cpu=cfg.cpu or not torch.cuda.is_available())


def trained_weights(cfg, accelerator, lora: bool) -> dict:
    """How a trained model's weights load (``load_causal_lm`` / ``build_reward_model`` keywords): their dtype
    (:func:`weight_dtype`) and, for a LoRA base, its quantization (:func:`base_quantization`)."""
    return {
        "dtype": weight_dtype(cfg, accelerator, frozen_base=lora),
        "quantization_config": base_quantization(cfg) if lora else None,
    }


def base_quantization(cfg):
    """The bitsandbytes config of a LoRA run's frozen base (``--quantize-base``), computing in bf16 where the run
    does, else fp16 (CUDA only); None when not quantized."""
    compute = torch.bfloat16 if resolve_mixed_precision(cfg) == "bf16" or cfg.torch_dtype == "bf16" else torch.float16
    return quantization_config(getattr(cfg, "quantize_base", "none"), compute)


def frozen_dtype(cfg, accelerator) -> torch.dtype | None:
    """The dtype of the frozen models (reference, reward model): ``cfg.frozen_dtype``, None for 'auto' (each
    as it loads); fp16 needs CUDA."""
    if cfg.frozen_dtype == "fp16" and accelerator.device.type != "cuda":
        raise ConfigError("--frozen-dtype fp16 needs a CUDA GPU and this run is on the CPU: use bf16 or fp32")
    return DTYPES.get(cfg.frozen_dtype)
