"""What a plan is asked about: the model, the stage, the machines and the levers that trade memory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from instructrl.config import check_range, coerce, help_field
from instructrl.errors import ConfigError

STAGES = ["sft", "rm", "ppo", "dpo"]
# in the order the search tries them (cheapest first); zero3 keeps what fsdp2 keeps, per GPU
ENGINES = ["ddp", "zero2", "fsdp2", "zero3", "zero3-offload"]
DTYPES = ["fp32", "bf16", "fp16"]


@dataclass
class PlanConfig:
    """A memory plan. Defaults: InstructGPT's PPO-ptx recipe (App. C.4) on one node of 8 x 80 GB GPUs,
    weights trained as instructrl loads them (fp32 master weights, bf16 autocast)."""

    model: str | None = help_field(
        None, "The policy: a checkpoint folder, its config.json, or a Hub id (only config.json is fetched)."
    )
    stage: str = help_field("ppo", "Stage to plan: sft, rm, ppo (PPO-ptx) or dpo.", choices=STAGES)
    reward_config: str | None = help_field(
        None,
        "Config of the reward model (rm stage: the model trained; ppo: the frozen RM and, by default, the value "
        "model it initializes). Default: the policy's config (InstructGPT used a 6B RM for every policy size).",
    )
    value_config: str | None = help_field(None, "Config of the value model (default: the reward model's).")
    advantage: str = help_field(
        "gae",
        "PPO's advantage estimator: gae trains a value model (InstructGPT); grpo, rloo and reinforce train none.",
        choices=["gae", "grpo", "rloo", "reinforce"],
    )
    engine: str = help_field(
        "ddp",
        "ddp (all replicated), zero2 (gradients + optimizer sharded), fsdp2 / zero3 (weights too), "
        "zero3-offload (zero3 with the optimizer states in CPU memory).",
        choices=ENGINES,
    )
    device: str = help_field(
        "gpu",
        "Where the processes run: gpu (CUDA) or cpu (processes on CPU cores, gpu_memory read as each process's "
        "share of RAM, a smaller --overhead, no quantized base, a torchrun launch line, no speed estimate).",
        choices=["gpu", "cpu"],
    )
    gpus: int = help_field(8, "GPUs per node.", minimum=1)
    nodes: int = help_field(1, "Nodes; sharding spans all nodes' GPUs.", minimum=1)
    gpu_memory: float = help_field(80.0, "Memory of one GPU, GiB.", minimum=0, exclusive_minimum=True)
    overhead: float | None = help_field(
        None,
        "Fixed GiB per GPU outside the tensors. Default on a GPU 2: CUDA context and kernels (~1), NCCL buffers "
        "and the cuBLAS workspace (~0.5), allocator slack (~0.5). On the CPU 0.5 per process: Python, torch and "
        "transformers loaded (0.24 measured), and the heap and library code a run holds beyond its tensors (0.1-0.5 "
        "measured in PPO-ptx runs at 124M, 0.1-0.25 with a model too small to count; benchmarks/scale/results.md).",
        minimum=0,
    )
    weight_dtype: str = help_field(
        "fp32",
        "Storage dtype of trained weights (instructrl loads them in fp32 and autocasts). bf16/fp16 weights "
        "add an fp32 master copy to the optimizer states.",
        choices=DTYPES,
    )
    mixed_precision: str = help_field(
        "bf16",
        "Compute dtype (autocast): bf16/fp16 halve activations and the KV cache; 'no' keeps fp32.",
        choices=["no", "bf16", "fp16"],
    )
    gradient_checkpointing: bool = help_field(
        False, "Keep only each layer's input and recompute the rest in the backward (about 1/3 more compute)."
    )
    lora_r: int = help_field(0, "LoRA rank for every trained model (0 = full fine-tuning).", minimum=0)
    lora_targets: list[str] = help_field(
        [], "Linear modules LoRA adapts (comma separated): empty = peft's default, or all-linear."
    )
    lora_dropout: float | None = help_field(
        None,
        "LoRA dropout (sft and rm take --lora-dropout; ppo and dpo train without dropout). Each adapter then keeps its "
        "own dropped-out copy of its input. Default: the stage's own (sft 0.05, rm 0).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    value_shares_base: bool = help_field(
        False,
        "PPO with LoRA: the value model is the policy's frozen base with its own adapter and a scalar head "
        "(no base of its own).",
    )
    quantize_base: str = help_field(
        "none", "With LoRA: the frozen base's layer weights in 8 or 4 bits (QLoRA).", choices=["none", "8bit", "4bit"]
    )
    frozen_dtype: str = help_field(
        "auto",
        "Dtype of the frozen reference and reward models. 'auto', as instructrl ppo/dpo's default: the reference in "
        "weight_dtype, the reward model as saved (its config's torch_dtype; fp32 if it names none). 'weights': both "
        "in weight_dtype.",
        choices=["auto", "weights", *DTYPES],
    )
    rollout_gather: str = help_field(
        "whole",
        "PPO under fsdp2 or zero3: sampling on the policy gathered whole once per rollout (counted in the rollout part, in "
        "the compute dtype) or layer by layer in each forward (two units, already counted).",
        choices=["whole", "layer"],
    )
    frozen_placement: str = help_field(
        "auto",
        "Frozen models replicated on every GPU, sharded like the trained ones, or in CPU memory (moved in "
        "layer by layer); auto: sharded under fsdp2/zero3, replicated otherwise.",
        choices=["auto", "replicated", "sharded", "cpu"],
    )
    micro_batch_size: int | None = help_field(
        None,
        "Sequences per forward/backward on one GPU (DPO: a pair counts 2). Default: 8; PPO: its minibatch "
        "share, mini_batch_size / GPUs (one forward per minibatch).",
        minimum=1,
    )
    prompt_length: int = help_field(256, "Prompt tokens (PPO max_prompt_length).", minimum=1)
    response_length: int = help_field(128, "Response tokens; sequences are prompt + response long.", minimum=1)
    batch_size: int = help_field(512, "PPO episodes per iteration, all GPUs (InstructGPT App. C.4: 512).", minimum=1)
    mini_batch_size: int = help_field(64, "PPO episodes per optimizer step, all GPUs (App. C.4: 64).", minimum=1)
    rollout_batch_size: int | None = help_field(
        None,
        "PPO episodes generated and scored at once on one GPU: sets the KV cache (default: the GPU's whole "
        "share of batch_size, as instructrl ppo does).",
        minimum=1,
    )
    ptx_micro_batch_size: int = help_field(32, "PPO-ptx pretraining windows per forward (0: plain PPO).", minimum=0)
    ptx_length: int = help_field(256, "Tokens of a pretraining window.", minimum=1)
    ptx_per_episode: float = help_field(8.0, "Pretraining windows per episode (App. C.4: 8); sets the time.", minimum=0)
    gpu_tflops: float = help_field(
        989.0,
        "Dense bf16 peak of one GPU in TFLOP/s (H100 SXM: 989), for the episodes/s estimate.",
        minimum=0,
        exclusive_minimum=True,
    )
    mfu: float = help_field(
        0.35,
        "Assumed model FLOPs utilization of the forward/backward passes (episodes/s estimate).",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    )
    hbm_bandwidth: float = help_field(
        3350.0,
        "GPU memory bandwidth, GB/s (H100 SXM: 3350): sampling reads the weights once per token.",
        minimum=0,
        exclusive_minimum=True,
    )
    link_bandwidth: float = help_field(
        450.0,
        "Bandwidth of one GPU's all-gather inside a node, GB/s (NVLink 4: ~450): a sharded policy gathers its "
        "weights for every sampled token.",
        minimum=0,
        exclusive_minimum=True,
    )
    network_bandwidth: float = help_field(
        50.0,
        "Bandwidth of one GPU's all-gather across nodes, GB/s (one 400 Gb/s NIC per GPU: 50).",
        minimum=0,
        exclusive_minimum=True,
    )
    search: bool = help_field(True, "Also search the cheapest setting that fits.")
    json: bool = help_field(False, "Print the plan as JSON.")

    # the flag / --set / --config machinery of instructrl.config, without BaseConfig's training-run fields
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> PlanConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown field '{key}' for a plan (instructrl plan --help lists them)")
            kwargs[name] = coerce(value, known[name], source)
        plan = cls(**kwargs)
        plan.validate()
        return plan

    @property
    def effective_overhead(self) -> float:
        """GiB per GPU (or CPU process) outside the tensors: the one asked for, else the device's default."""
        if self.overhead is not None:
            return self.overhead
        return 0.5 if self.device == "cpu" else 2.0

    @property
    def effective_lora_dropout(self) -> float:
        """The LoRA dropout the stage runs with: the one asked for, else the stage's default."""
        if self.lora_dropout is not None:
            return self.lora_dropout
        return 0.05 if self.stage == "sft" else 0.0

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    def validate(self) -> None:
        for f in dataclasses.fields(self):  # choices and ranges: gpus < 1, memory <= 0 are refused here
            value = getattr(self, f.name)
            if f.metadata.get("choices") and value not in f.metadata["choices"]:
                raise ConfigError(f"{f.name}={value!r} is not one of {f.metadata['choices']}")
            check_range(type(self), f, value)
        if not self.model:
            raise ConfigError("--model is required: a checkpoint folder, a config.json or a Hub id")
        if self.quantize_base != "none" and self.device == "cpu":
            raise ConfigError(
                f"quantize_base={self.quantize_base} on --device cpu: bitsandbytes' quantized layers need CUDA; "
                "drop --quantize-base (a bf16 base: --weight-dtype bf16) or plan for GPUs"
            )
        if self.quantize_base != "none" and self.lora_r == 0:
            raise ConfigError(
                f"quantize_base={self.quantize_base} needs LoRA (--lora-r > 0): a quantized base trains no weights"
            )
        if self.lora_dropout and self.stage in ("ppo", "dpo"):
            raise ConfigError(
                f"lora_dropout={self.lora_dropout} for {self.stage}: instructrl {self.stage} trains its adapters without "
                "dropout; drop --lora-dropout"
            )
        if self.value_shares_base and self.gradient_checkpointing:
            raise ConfigError(
                "value_shares_base with gradient_checkpointing: instructrl ppo refuses the pair (the backward would "
                "recompute the value layers with the policy's adapter on); drop one of them"
            )
        if self.value_shares_base and (self.stage != "ppo" or self.lora_r == 0 or self.advantage != "gae"):
            raise ConfigError(
                "value_shares_base is for PPO with LoRA and a value model (--stage ppo --lora-r > 0 --advantage gae)"
            )
