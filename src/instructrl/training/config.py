"""The fields of the shared training loop: every trained stage's config derives from :class:`TrainLoopConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import BaseConfig, help_field
from instructrl.errors import ConfigError


@dataclass
class MemoryConfig(BaseConfig):
    """Memory levers of every stage that trains a model (sft, rm, dpo, ppo); their measured effect is in
    benchmarks/scale/levers.md."""

    gradient_checkpointing: bool = help_field(
        False,
        "Activation checkpointing: keep only each layer's input in the forward and recompute the layer in the "
        "backward (Chen et al. 2016). Same loss and gradients; activation memory of about one hidden state per "
        "layer instead of all of the layer's intermediates, for about one more forward of compute.",
    )
    torch_dtype: str = help_field(
        "auto",
        "Dtype of the trained model's weights. Trained weights stay fp32 (AdamW's master copy: an update below a "
        "bf16 weight's resolution would be lost; bf16 compute comes from --mixed-precision bf16), so bf16/fp16 "
        "need LoRA (--lora-r): the frozen base is stored in that dtype, the adapters and heads in fp32. 'auto': "
        "fp32, or bf16 for a LoRA base on a CUDA GPU that computes in bf16.",
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    quantize_base: str = help_field(
        "none",
        "With LoRA (--lora-r): load the frozen base's layers in 8 bits (LLM.int8) or 4 bits (NF4, double "
        "quantization: QLoRA, Dettmers et al. 2023) through bitsandbytes; adapters and heads train in fp32. "
        "Needs a CUDA GPU and pip install 'instructrl[bnb]'.",
        choices=["none", "8bit", "4bit"],
    )
    engine: str = help_field(
        "auto",
        "Distributed engine, through accelerate: 'auto' (what `accelerate launch --config_file` set, else DDP on "
        "several processes), 'ddp', 'fsdp2' (weights, gradients and optimizer states of each trained model "
        "sharded per transformer layer), 'zero2' (DeepSpeed ZeRO-2: gradients and optimizer states sharded) or "
        "'zero3' (ZeRO-3: the weights too); DeepSpeed needs pip install 'instructrl[deepspeed]'. All run on CPUs "
        "under torchrun too. Shipped launch configs: `instructrl engines`.",
        choices=["auto", "ddp", "fsdp2", "zero2", "zero3"],
    )

    def validate(self) -> None:
        super().validate()
        if self.quantize_base != "none" and not getattr(self, "lora_r", 0):
            raise ConfigError(
                f"--quantize-base {self.quantize_base} needs LoRA (--lora-r > 0): a quantized base cannot be "
                f"trained, only adapters on it"
            )
        if self.torch_dtype in ("bf16", "fp16") and not getattr(self, "lora_r", 0):
            raise ConfigError(
                f"--torch-dtype {self.torch_dtype} with full fine-tuning: AdamW needs fp32 weights (an update below "
                f"a {self.torch_dtype} weight's resolution is lost); keep --torch-dtype fp32 and add "
                f"--mixed-precision bf16 for bf16 compute, or train LoRA adapters (--lora-r) on a "
                f"{self.torch_dtype} base"
            )


def frozen_dtype_field() -> str:
    """The ``frozen_dtype`` field of the stages that hold frozen models (ppo: reference and reward model; dpo:
    reference)."""
    return help_field(
        "auto",
        "Dtype of the frozen models (the reference and, in PPO, the reward model): bf16 halves their memory, "
        "their log-probs and scores then carry bf16 rounding (about 3 significant digits). fp16 needs CUDA. "
        "'auto': the reference in the policy's dtype, the reward model as saved. A LoRA policy's reference is "
        "its own base with the adapters off, in --torch-dtype.",
        choices=["auto", "fp32", "bf16", "fp16"],
    )


@dataclass
class TrainLoopConfig(MemoryConfig):
    """Fields of the shared training loop (:class:`instructrl.training.loop.Trainer`): batching, optimizer,
    schedule, evaluation points and checkpoints. Stages override defaults and help texts with their recipe."""

    epochs: int = help_field(1, "Passes over the training data.", minimum=1)
    max_steps: int | None = help_field(None, "Stop after this many optimizer steps (overrides epochs).", minimum=1)
    batch_size: int = help_field(32, "Examples per optimizer step, across all processes.", minimum=1)
    micro_batch_size: int | None = help_field(
        None,
        "Examples per forward pass on one process; gradient accumulation makes up batch_size "
        "(default: batch_size / number of processes).",
        minimum=1,
    )
    learning_rate: float = help_field(1e-5, "Peak learning rate.", minimum=0, exclusive_minimum=True)
    lr_schedule: str = help_field(
        "cosine", "'cosine' (decay to lr_final_fraction) or 'constant'.", choices=["cosine", "constant"]
    )
    lr_final_fraction: float = help_field(
        0.1, "Cosine decays to this fraction of the peak. InstructGPT: 10%.", minimum=0, maximum=1
    )
    warmup_steps: int = help_field(0, "Linear warmup steps. InstructGPT SFT and RM: none.", minimum=0)
    weight_decay: float = help_field(0.0, "AdamW weight decay.", minimum=0)
    adam_beta1: float = help_field(0.9, "Adam beta1.", minimum=0, maximum=1, exclusive_maximum=True)
    adam_beta2: float = help_field(
        0.95,
        "Adam beta2 (InstructGPT used 0.95 for its RMs; GPT-3 training style).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    adam_eps: float = help_field(1e-8, "Adam epsilon.", minimum=0, exclusive_minimum=True)
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm (0 disables).", minimum=0)
    eval_every: int | None = help_field(
        None, "Validate every N optimizer steps (default: at the end of each epoch).", minimum=1
    )
    checkpoint_every: int | None = help_field(
        None,
        "Checkpoint every N optimizer steps (default: at the end of each epoch).",
        minimum=1,
    )
    keep_checkpoints: int = help_field(2, "How many resumable checkpoints to keep.", minimum=0)
    save_dtype: str | None = help_field(
        None, "Save final weights in this dtype ('bfloat16', 'float16'); default: as trained."
    )
    select_by: str = help_field(
        "last",
        "Final model: 'last', or 'loss' (lowest validation loss among the evaluation points).",
        choices=["last", "loss"],
    )

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.save_dtype not in (None, "bfloat16", "float16", "float32"):
            raise ConfigError(f"save_dtype must be bfloat16, float16 or float32, got {self.save_dtype}")
