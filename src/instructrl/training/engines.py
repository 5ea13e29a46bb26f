"""The distributed engine a stage trains under, always through accelerate: DDP, FSDP2 or DeepSpeed ZeRO.

How an engine is chosen (``--engine``, default ``auto``):

* ``auto`` takes what the launcher set: ``accelerate launch --config_file`` with one of the shipped configs
  (:func:`accelerate_config`; ``instructrl engines`` lists them) or your own selects FSDP or DeepSpeed through the
  environment accelerate reads; without one, DDP on several processes, nothing on one.
* ``fsdp2`` builds accelerate's FSDP plugin here (version 2: ``fully_shard`` per transformer layer, weights,
  gradients and optimizer states sharded over the processes, checkpoints as sharded ``torch.distributed.checkpoint``
  files, the final model gathered into one ``save_pretrained`` directory).
* ``zero2`` / ``zero3`` build accelerate's DeepSpeed plugin (ZeRO stage 2: gradients and optimizer states sharded;
  stage 3: the weights too). DeepSpeed is an optional extra (``pip install 'instructrl[deepspeed]'``). Each trained
  model is its own DeepSpeed engine, prepared by accelerate one model per call; the stages call the engine's own
  ``backward`` and ``step`` (:func:`backward`, :func:`step_engine`) because DeepSpeed steps inside its backward and
  clips by itself (``gradient_clipping`` = the stage's ``max_grad_norm``). Frozen models (PPO's reference and reward
  model) are ZeRO-3 inference engines under ``zero3`` (``deepspeed.initialize`` without an optimizer), replicated
  under ``zero2``. The final model is gathered with ``stage3_gather_16bit_weights_on_model_save``.

accelerate selects FSDP and DeepSpeed only on accelerators: on a CPU with several processes it falls back to plain
DDP without a word. Both run on the CPU over gloo, so with ``--engine fsdp2`` / ``zero2`` / ``zero3`` on a CPU the
accelerator is switched to the engine after it starts (:func:`_fsdp_on_cpu`, :func:`_deepspeed_on_cpu`), and
accelerate's own code does the rest; this is what the multi-process CPU tests exercise.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

from instructrl.errors import ConfigError
from instructrl.losses import ema_update
from instructrl.modeling.memory import is_quantized

log = logging.getLogger("instructrl")

ENGINES = ("auto", "ddp", "fsdp2", "zero2", "zero3")
ZERO_STAGES = {"zero2": 2, "zero3": 3}
ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def shipped_configs() -> dict[str, Path]:
    """The shipped ``accelerate launch --config_file`` files by name (ddp, fsdp2, fsdp2-offload)."""
    return {p.stem: p for p in sorted(ACCELERATE_CONFIGS.glob("*.yaml"))}


def accelerate_config(name: str) -> Path:
    """The shipped ``accelerate launch --config_file`` named ``name``."""
    found = shipped_configs()
    if name not in found:
        raise ConfigError(f"no shipped accelerate config named '{name}': choose one of {', '.join(found)}")
    return found[name]


def launcher_engine() -> str:
    """The engine ``accelerate launch`` asked for through the environment ('fsdp', 'deepspeed' or 'ddp')."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return "ddp"


def deepspeed_installed() -> bool:
    try:
        return importlib.util.find_spec("deepspeed") is not None
    except ValueError:  # present in sys.modules as None: import refused
        return False


def check_engine(engine: str) -> None:
    """What an engine needs from the machine and the installed packages, checked before anything is written."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: unknown engine; choose one of {', '.join(ENGINES)}")
    launched = launcher_engine()
    if engine == "ddp" and launched in ("fsdp", "deepspeed"):
        raise ConfigError(
            f"--engine ddp but the launcher's accelerate config selects {launched_name(launched)}: drop --engine (or "
            "pass --engine auto) to use the launcher's, or launch with `--config_file $(instructrl engines --path ddp)`"
        )
    if engine != "auto" and launched != "ddp" and (engine in ZERO_STAGES) != (launched == "deepspeed"):
        raise ConfigError(
            f"--engine {engine} but the launcher's accelerate config selects {launched_name(launched)}: drop --engine "
            f"to use the launcher's, or launch with `--config_file $(instructrl engines --path {engine})`"
        )
    if engine in ZERO_STAGES and launched == "deepspeed":
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        if stage is not None and stage != str(ZERO_STAGES[engine]):
            raise ConfigError(
                f"--engine {engine} but the launcher's DeepSpeed config has ZeRO stage {stage}: drop --engine to use "
                "the launcher's stage"
            )
    # after the mismatches: a flag that contradicts the launch config is the first thing to fix
    wants_deepspeed = engine in ZERO_STAGES or (engine == "auto" and launched == "deepspeed")
    if wants_deepspeed and not deepspeed_installed():
        what = f"--engine {engine}" if engine != "auto" else "the launcher's accelerate config (DeepSpeed)"
        raise ConfigError(
            f"{what} needs DeepSpeed, which is not installed: pip install 'instructrl[deepspeed]', "
            "or use --engine fsdp2 (it shards weights, gradients and optimizer states as ZeRO-3 does)"
        )


def launched_name(launched: str) -> str:
    return {"fsdp": "FSDP", "deepspeed": "DeepSpeed", "ddp": "DDP"}[launched]


def accelerator_kwargs(engine: str) -> dict[str, Any]:
    """The plugin keywords of ``Accelerator`` for an engine chosen with ``--engine`` (none for auto and ddp: the
    launcher's environment decides)."""
    check_engine(engine)
    if engine == "fsdp2" and launcher_engine() != "fsdp":  # under an FSDP launch config, accelerate builds its own
        return {"fsdp_plugin": fsdp2_plugin()}
    if engine in ZERO_STAGES and launcher_engine() != "deepspeed":
        return {"deepspeed_plugin": deepspeed_plugin(ZERO_STAGES[engine])}
    return {}


def fsdp2_plugin() -> FullyShardedDataParallelPlugin:
    """FSDP2 with each transformer layer its own shard unit (the classes are set per model in :func:`prepare`)."""
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        state_dict_type="SHARDED_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )


def deepspeed_plugin(stage: int) -> DeepSpeedPlugin:
    """DeepSpeed ZeRO ``stage`` as the stages drive it: no gradient accumulation inside DeepSpeed (the stages
    accumulate micro-batches themselves and mark the last one, :func:`backward`), no ZeRO-3 init at load (each model
    is partitioned when prepared), and the whole 16-bit (or fp32) weights gathered for the final save."""
    return DeepSpeedPlugin(
        zero_stage=stage,
        gradient_accumulation_steps=1,
        zero3_init_flag=False,
        zero3_save_16bit_model=True,
        offload_optimizer_device="none",
        offload_param_device="none",
    )


def finish_setup(accelerator, engine: str, kwargs: dict[str, Any]) -> None:
    """After the accelerator starts: FSDP or DeepSpeed on a multi-process CPU run (see the module docstring), and the
    choice logged once."""
    cpu_multi = accelerator.distributed_type == DistributedType.MULTI_CPU
    plugin = kwargs.get("fsdp_plugin")
    if plugin is None and launcher_engine() == "fsdp" and cpu_multi:
        plugin = fsdp2_plugin()  # an FSDP launch config on a CPU machine (torchrun with accelerate's variables)
    if plugin is not None and cpu_multi:
        _fsdp_on_cpu(plugin, accelerator.mixed_precision)
    ds = kwargs.get("deepspeed_plugin")
    if ds is None and launcher_engine() == "deepspeed" and cpu_multi:
        ds = DeepSpeedPlugin()  # from the launcher's environment, as accelerate builds it on a GPU
    if ds is not None and cpu_multi:
        _deepspeed_on_cpu(accelerator, ds, accelerator.mixed_precision)
    if is_deepspeed(accelerator):
        # accelerate tells transformers about ZeRO-3, which then partitions every model as it loads (zero.Init).
        # The stages load each model whole and DeepSpeed partitions it when prepared: checks and copies at load
        # (the reference, the value head, vocabulary sizes) see whole weights.
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    if (plugin is not None or ds is not None) and accelerator.num_processes == 1:
        log.info("--engine %s on one process: nothing to shard, the model trains as a whole", engine)
    log.info("engine: %s on %d process(es)", describe(accelerator), accelerator.num_processes)


def _fsdp_on_cpu(plugin: FullyShardedDataParallelPlugin, mixed_precision: str) -> None:
    # accelerate keeps the distributed type in two shared states; AcceleratorState copies PartialState's into
    # itself each time one is built, so both say FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    state.fsdp_plugin = plugin


def _deepspeed_on_cpu(accelerator, plugin: DeepSpeedPlugin, mixed_precision: str) -> None:
    # as _fsdp_on_cpu, and what accelerate does for DeepSpeed on a GPU: the plugin gets the run's precision and
    # becomes the active one; DeepSpeed itself takes the process group accelerate started (gloo)
    PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED
    state = AcceleratorState()
    state.distributed_type = DistributedType.DEEPSPEED
    plugin.set_mixed_precision(mixed_precision)
    plugin.select(_from_accelerator_state=True)
    state.deepspeed_plugins = {"default": plugin}
    accelerator.deepspeed_engine_wrapped = None


def describe(accelerator) -> str:
    t = accelerator.distributed_type
    if t == DistributedType.FSDP:
        return f"FSDP{accelerator.state.fsdp_plugin.fsdp_version}"
    if t == DistributedType.DEEPSPEED:
        return f"DeepSpeed ZeRO-{accelerator.state.deepspeed_plugin.zero_stage}"
    return "DDP" if accelerator.num_processes > 1 else "single process"


def is_sharded(accelerator) -> bool:
    """Whether the trained models' parameters are split over the processes (FSDP, DeepSpeed ZeRO)."""
    return accelerator.distributed_type in SHARDED and accelerator.num_processes > 1


def is_fsdp(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator) -> int:
    """The ZeRO stage of a DeepSpeed run (0 for other engines)."""
    return accelerator.state.deepspeed_plugin.zero_stage if is_deepspeed(accelerator) else 0


def shards_weights(accelerator) -> bool:
    """Whether each process holds only part of the trained weights (FSDP, ZeRO-3): forwards are collectives."""
    return accelerator.num_processes > 1 and (is_fsdp(accelerator) or zero_stage(accelerator) == 3)


def layer_classes(model: torch.nn.Module) -> list[str]:
    """The transformer layer classes FSDP shards one by one: the ``_no_split_modules`` of every transformers model
    inside ``model`` (a reward or value model wraps one) that occur in it. None found is a user error."""
    declared: list[str] = []
    for m in model.modules():
        for name in getattr(m, "_no_split_modules", None) or []:
            if name not in declared:
                declared.append(name)
    present = {type(m).__name__ for m in model.modules()}
    found = [n for n in declared if n in present]
    if not found:
        raise ConfigError(
            f"FSDP auto-wrap found no transformer layer class in {type(model).__name__} (declared: "
            f"{declared or 'none'}): use a transformers model whose class declares _no_split_modules, or --engine ddp"
        )
    return found


def prepare(
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 0.0,
    micro_batch: int = 1,
):
    """``accelerator.prepare(model, optimizer)``, one trained model at a time (FSDP2 and DeepSpeed prepare one model
    per call). Under FSDP each of the model's transformer layers becomes a shard unit. Under DeepSpeed the engine
    clips to ``max_grad_norm`` (0: no clipping) and is told the micro-batch size (for its own bookkeeping)."""
    if is_sharded(accelerator) and hasattr(model, "peft_config") and is_quantized(model):
        raise ConfigError(
            f"--quantize-base under {describe(accelerator)}: a quantized base is not sharded here; use --engine ddp "
            "(LoRA's trained weights are small), or a bf16 base (--torch-dtype bf16) under the sharding engine"
        )
    if is_fsdp(accelerator):
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        plugin = accelerator.state.fsdp_plugin
        if not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):  # the launch config's own classes stay
            plugin.transformer_cls_names_to_wrap = layer_classes(model)
            plugin.auto_wrap_policy = transformer_auto_wrap_policy  # accelerate binds it to the classes per model
    if is_deepspeed(accelerator):
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        if config.get("gradient_accumulation_steps") not in (1, "auto", None):
            log.info(
                "DeepSpeed gradient_accumulation_steps %s -> 1: the stage accumulates its micro-batches itself",
                config["gradient_accumulation_steps"],
            )
        config.update(
            gradient_accumulation_steps=1,
            gradient_clipping=float(max_grad_norm or 0.0),
            train_micro_batch_size_per_gpu=micro_batch,
            train_batch_size=micro_batch * accelerator.num_processes,
        )
        zero = config.get("zero_optimization", {})
        _size_zero(zero, model, owner=accelerator.state.deepspeed_plugin)
        if zero.get("stage") == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True  # the final save gathers the whole weights
        accelerator.gradient_accumulation_steps = 1
    return accelerator.prepare(model, optimizer)


def _size_zero(zero: dict[str, Any], model: torch.nn.Module, owner: object | None = None) -> None:
    """Fill the buffer sizes of a ZeRO section that its config leaves out or sets to "auto", in place.

    DeepSpeed's own defaults are sized for one large model per process: a 5e8-element gradient bucket (2 GB in fp32,
    which holds all of a smaller model's gradients once written) and up to 1e9 gathered parameters kept live (a
    whole 1B model per process). accelerate sizes the bucket from the hidden size only when a config file says
    "auto". Here, for every trained or frozen model: the bucket hidden² elements and the ZeRO-3 prefetch 0.9
    hidden² (accelerate's "auto" values), parameters of at most 10 x hidden elements kept whole, and about two
    transformer layers kept gathered, as FSDP2 holds (and the plan counts each of these). ``owner`` (the launch's
    DeepSpeed plugin, whose config every trained model shares) remembers which keys were filled here, so that the
    next model (PPO's value model after its policy) gets sizes of its own, not the previous model's."""
    hidden = next(
        (h for m in model.modules() if isinstance(h := getattr(getattr(m, "config", None), "hidden_size", None), int)),
        None,
    )
    sizes: dict[str, int] = {}
    if hidden:
        sizes["reduce_bucket_size"] = hidden * hidden
    if zero.get("stage") == 3:
        unit = _largest_unit(model)
        sizes.update(stage3_max_live_parameters=2 * unit, stage3_max_reuse_distance=2 * unit)
        if hidden:
            sizes.update(
                stage3_prefetch_bucket_size=int(0.9 * hidden * hidden), stage3_param_persistence_threshold=10 * hidden
            )
    filled: set[str] = set() if owner is None else vars(owner).setdefault("_instructrl_filled_zero_keys", set())
    for key, value in sizes.items():
        if key in filled or zero.get(key, "auto") == "auto":
            zero[key] = value
            filled.add(key)


def _largest_unit(model: torch.nn.Module) -> int:
    """Parameters of the largest transformer layer or embedding of ``model`` (its whole size without layers)."""
    try:
        classes = set(layer_classes(model))
    except ConfigError:
        return sum(p.numel() for p in model.parameters())
    sizes = [sum(p.numel() for p in m.parameters()) for m in model.modules() if type(m).__name__ in classes]
    sizes += [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    return max(sizes)


def no_sync(accelerator, model, active: bool = True):
    """Defer the gradient all-reduce of the backward passes inside (all but a step's last micro-batch), under DDP.
    FSDP2 would keep each unit's whole, unsharded gradient between the micro-batches (a whole model's gradient per
    process), so there every micro-batch's gradient is reduce-scattered into the shards at once (what accelerate's
    ``sync_each_batch`` does): the same sum, in sharded memory. DeepSpeed is told through :func:`backward`
    instead; its ZeRO stages refuse ``no_sync``."""
    if not active or accelerator.num_processes == 1 or is_deepspeed(accelerator) or is_fsdp(accelerator):
        return nullcontext()
    return accelerator.no_sync(model)


def backward(accelerator, model, loss: torch.Tensor, last: bool = True) -> None:
    """``loss.backward()`` for ``model`` through its engine. Under DeepSpeed: the engine's own backward, with
    ``last`` marking the step's last backward of this model (where ZeRO reduces the gradients); the optimizer step
    is :func:`step_engine`'s, after every backward of the step."""
    if is_deepspeed(accelerator):
        model.set_gradient_accumulation_boundary(last)
        model.backward(loss)
    else:
        accelerator.backward(loss)


def step_engine(model) -> float:
    """A DeepSpeed engine's optimizer step (it clips to its ``gradient_clipping`` first) and the gradient norm it
    measured before clipping."""
    model.set_gradient_accumulation_boundary(True)
    model.step()
    norm = model.get_global_grad_norm()
    return float("nan") if norm is None else float(norm)


def full_state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict of a sharded ``model`` on the main process (a collective: every process calls it; the
    others get None). None everywhere when the model is not sharded: it saves itself as it is."""
    if not is_sharded(accelerator):
        return None
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    # a tied weight (GPT-2's lm_head = wte) comes back under both names; the model saves it once, so do we
    raw = accelerator.unwrap_model(model)
    own = {n for n, _ in raw.named_parameters()} | {n for n, _ in raw.named_buffers()}
    return {k: v for k, v in state.items() if k in own}


def local_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters this process holds, parameters of the whole model): equal unless sharded."""
    local = total = 0
    for p in model.parameters():
        total += p.ds_numel if hasattr(p, "ds_numel") else p.numel()  # ZeRO-3 keeps an empty tensor in p
        local += _local(p).numel()
    return local, total


def every_process_done(done: torch.Tensor) -> bool:
    """Whether every row of every process is done (a collective): sampling on a sharded policy, whose forwards
    are collectives themselves, stops on all processes at the same step."""
    flag = done.all().to(torch.int32).reshape(1)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


@contextmanager
def gathered(accelerator, model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Hold an FSDP2 model's whole weights on every process for a stretch of forwards (sampling, evaluation):
    gathered once, not at every forward, and sharded again afterwards. Inside, the forwards run no collectives, so
    processes may run different numbers of them (a rollout that ends early, an evaluation on the main process
    only). Entering and leaving are collectives. Under ZeRO-3, DeepSpeed's own gather for generation (its hooks off
    meanwhile). A no-op for other engines."""
    if enabled and zero_stage(accelerator) == 3 and accelerator.num_processes > 1:
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        with unwrap_model_for_generation(model):
            yield
        return
    if not (enabled and is_fsdp(accelerator) and accelerator.num_processes > 1):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # each unit's own setting, put back afterwards (accelerate keeps the embedding-and-head unit gathered after its
    # forward, the layers not); FSDP2 has a setter but no getter, so its state is read directly
    saved = []
    for u in units:
        state = u._get_fsdp_state()
        groups = [(g, g.post_forward_mesh_info) for g in state._fsdp_param_groups]
        saved.append((state, state._auto_reshard_after_forward, groups))
    for u in units:
        u.unshard()
        u.set_reshard_after_forward(False, recurse=False)  # the gathered weights stay through the forwards
    try:
        yield
    finally:
        for state, auto, groups in saved:
            state._auto_reshard_after_forward = auto
            for group, info in groups:
                group.post_forward_mesh_info = info
        for u in units:
            u.reshard()


class ShardEMA:
    """An exponential moving average of a sharded model's parameters, kept as this process's own shards (no whole
    copy on any process). :meth:`swapped_in` puts the average into the model for a while (to gather and save it)."""

    def __init__(self, model: torch.nn.Module):
        self.params = list(model.parameters())
        with torch.no_grad():
            self.shadow = [_local(p).clone() for p in self.params]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        ema_update(self.shadow, [_local(p) for p in self.params], decay)

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {"shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        for mine, saved in zip(self.shadow, state["shadow"], strict=True):
            mine.copy_(saved)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        with torch.no_grad():
            live = [_local(p).clone() for p in self.params]
            for p, avg in zip(self.params, self.shadow):
                _local(p).copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, kept in zip(self.params, live):
                    _local(p).copy_(kept)


def _local(p: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter (its shard of a DTensor, its ZeRO-3 partition), in place: writes reach the
    parameter."""
    if hasattr(p, "ds_tensor"):
        return p.ds_tensor
    return p.to_local() if hasattr(p, "to_local") else p


CHECKSUM_CHUNK = 1 << 20  # elements summed at once by param_checksum


def param_checksum(model: torch.nn.Module) -> float:
    """A cheap fingerprint of the parameters this process holds (to check that DDP ranks stay in sync; under
    sharding each process fingerprints its own shards)."""
    total = 0.0
    for i, p in enumerate(model.parameters()):
        # summed in float64 a chunk at a time, where the weights are: a float64 copy of a whole tensor would take
        # twice its size in memory (an embedding matrix: gigabytes at 7B)
        flat = _local(p).detach().reshape(-1)
        part = float(sum(chunk.double().sum() for chunk in flat.split(CHECKSUM_CHUNK)))  # one read per tensor
        total += part * (1.0 + (i % 7) * 1e-3)
    return total


def sync_record(accelerator, *models: torch.nn.Module | None) -> tuple[list[list[float]], list[list[list[int]]]]:
    """For each process (gathered, a collective): the checksum of each model's weights it holds (0 for a missing
    model), and (parameters held, parameters in the model) of each."""
    rows = []
    for m in models:
        held, total = local_parameter_count(m) if m is not None else (0, 0)
        rows.append([param_checksum(m) if m is not None else 0.0, float(held), float(total)])
    mine = torch.tensor(rows, dtype=torch.float64, device=accelerator.device).flatten()  # (3 * models,)
    every = accelerator.gather(mine.unsqueeze(0)).view(-1, len(models), 3).tolist()  # (processes, models, 3)
    checks = [[m[0] for m in proc] for proc in every]
    shares = [[[int(m[1]), int(m[2])] for m in proc] for proc in every]
    return checks, shares


# ---------------------------------------------------------------------- frozen models (reference, reward model)
def _placement_refused(asked: str) -> ConfigError:
    if asked == "sharded":
        return ConfigError(
            "--frozen-placement sharded: the frozen models are sharded by FSDP2 or ZeRO-3, so it needs --engine fsdp2 "
            "or zero3 on two or more processes; use replicated here"
        )
    return ConfigError(
        f"--frozen-placement {asked}: FSDP2 or ZeRO-3 keep the frozen models in CPU memory and stream their layers, so "
        "it needs --engine fsdp2 or zero3 on two or more processes; use replicated here"
    )


def check_frozen_placement(asked: str, engine: str) -> None:
    """:func:`frozen_placement`'s refusals from the flags and the launch environment alone, before a run writes
    anything (the accelerator is not started yet)."""
    launched = launcher_engine()
    fsdp = engine == "fsdp2" or (engine == "auto" and launched == "fsdp")
    zero3 = engine == "zero3" or (
        engine == "auto" and launched == "deepspeed" and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if asked in ("sharded", "cpu") and not ((fsdp or zero3) and world > 1):
        raise _placement_refused(asked)


def frozen_placement(accelerator, asked: str) -> str:
    """Where the frozen models live: 'replicated' (whole on every process's device), 'sharded' (FSDP2 or ZeRO-3 over
    the processes, gathered unit by unit in their forwards) or 'cpu' (FSDP2 or ZeRO-3 with the weights in CPU memory,
    moved to the GPU unit by unit). 'auto': sharded under FSDP2 or ZeRO-3 on several processes, replicated otherwise
    (ZeRO-2 keeps whole weights on every process)."""
    shards = shards_weights(accelerator)
    if asked == "auto":
        return "sharded" if shards else "replicated"
    if asked in ("sharded", "cpu") and not shards:
        raise _placement_refused(asked)
    if asked == "cpu" and accelerator.device.type == "cpu":
        return "replicated"  # already in CPU memory
    return asked


def place_frozen(accelerator, model: torch.nn.Module | None, placement: str, asked: str = "auto"):
    """``model`` (frozen, evaluation only) where ``placement`` puts it. A model with no transformer layers to shard
    (a hand-made reward) stays replicated under 'auto'. Under ZeRO-3, 'sharded' makes it a DeepSpeed inference
    engine (``deepspeed.initialize`` without an optimizer: partitioned, gathered layer by layer in its forwards), and
    'cpu' one whose partitions stay in CPU memory (DeepSpeed's ``offload_param``)."""
    if model is None:
        return None
    if placement == "replicated":
        return model.to(accelerator.device)
    try:
        classes = layer_classes(model)
    except ConfigError:
        if asked == "auto":
            return model.to(accelerator.device)
        raise
    if is_deepspeed(accelerator):
        return _zero3_inference(accelerator, model, offload=placement == "cpu")
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = accelerator.state.fsdp_plugin
    saved = plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap, plugin.cpu_offload
    plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap = transformer_auto_wrap_policy, classes
    if placement == "cpu":
        plugin.cpu_offload = CPUOffloadPolicy()
    try:
        return fsdp2_prepare_model(accelerator, model.to(accelerator.device if placement == "sharded" else "cpu"))
    finally:
        plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap, plugin.cpu_offload = saved


def _zero3_inference(accelerator, model: torch.nn.Module, offload: bool = False):
    import deepspeed

    trained = accelerator.state.deepspeed_plugin.deepspeed_config
    zero: dict[str, Any] = {"stage": 3, "stage3_param_persistence_threshold": 0}
    _size_zero(zero, model)
    if offload:  # the partitions in CPU memory, each layer's moved to the GPU for its forward
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": zero,
        # the trained models' 16-bit setting: DeepSpeed casts the weights to it
        **{k: trained[k] for k in ("bf16", "fp16") if isinstance(trained.get(k), dict)},
    }
    engine, *_ = deepspeed.initialize(model=model.to(accelerator.device), config=config)
    engine.eval()  # DeepSpeed's eval() returns None, not the engine
    return engine


@contextmanager
def frozen_resharded(accelerator, *models: torch.nn.Module | None) -> Iterator[None]:
    """For the scoring phase: sharded frozen models are sharded again afterwards, every unit (accelerate keeps a
    model's embedding-and-head unit gathered after its forward, for a backward that frozen models never run)."""
    try:
        yield
    finally:
        if is_fsdp(accelerator):
            from torch.distributed.fsdp import FSDPModule

            for m in (m for m in models if m is not None):
                for unit in (u for u in m.modules() if isinstance(u, FSDPModule)):
                    unit.reshard()
