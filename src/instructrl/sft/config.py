"""Configuration of supervised fine-tuning (stage 1) and of pretraining, which share the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import help_field
from instructrl.errors import ConfigError
from instructrl.training.config import TrainLoopConfig


@dataclass
class LMTrainConfig(TrainLoopConfig):
    """Fields of any next-token training run (SFT, pretraining)."""

    model: str | None = help_field(None, "Causal LM to start from: a local directory or a Hugging Face Hub id.")
    tokenizer: str | None = help_field(None, "Tokenizer to use (default: the model's).")
    data: str | None = help_field(None, "Training data: JSONL/JSON/TXT file, CSV/Parquet, dataset dir or Hub name.")
    eval_data: str | None = help_field(None, "Validation data (same formats). Default: a split of --data.")
    eval_fraction: float = help_field(
        0.05,
        "Share of --data held out for validation when --eval-data is not given "
        "(0 disables; needs at least 20 records).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    max_length: int = help_field(512, "Longest sequence in tokens (prompt + response).", minimum=8)
    packing: bool = help_field(
        False,
        "Pack each micro-batch into rows of up to max_length tokens instead of padding every example to the "
        "longest: position ids restart at each example, so attention stays inside it (and, for pretraining "
        "text, inside each document). Same examples per step and the same loss as without packing, less "
        "padding. Checked on the model before training; a model that cannot keep packed examples apart "
        "trains unpacked, with a warning and a note in data_report.json.",
    )
    epochs: int = help_field(16, "Passes over the training data. InstructGPT App. C.1: 16 epochs for SFT.")
    batch_size: int = help_field(32, "Examples per optimizer step, across all processes. InstructGPT App. C.1: 32.")
    learning_rate: float = help_field(9.65e-6, "Peak learning rate. InstructGPT App. C.1: 9.65e-6 (1.3B and 6B).")
    residual_dropout: float | None = help_field(
        0.2,
        "Residual dropout during training. InstructGPT App. C.1: 0.2. None keeps the model's own setting.",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    lora_r: int = help_field(0, "LoRA rank (0 = full fine-tuning).", minimum=0)
    lora_alpha: int = help_field(16, "LoRA alpha.", minimum=1)
    lora_dropout: float = help_field(0.05, "LoRA dropout.", minimum=0, maximum=1, exclusive_maximum=True)
    lora_target_modules: list[str] = help_field(
        [], "Modules to adapt (comma separated); empty = peft's default for the architecture."
    )
    select_by: str = help_field(
        "loss",
        "How the final model is chosen among the validation points: 'loss' (lowest validation loss), "
        "'reward' (highest mean reward-model score of validation generations: InstructGPT §3.5), or 'last'.",
        choices=["loss", "reward", "last"],
    )
    reward_model: str | None = help_field(None, "Reward model used when select_by=reward.")
    select_prompts: int = help_field(64, "Validation prompts generated for select_by=reward.", minimum=1)
    select_max_new_tokens: int = help_field(64, "Response length for select_by=reward generations.", minimum=1)

    def validate(self) -> None:
        super().validate()
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class SFTConfig(LMTrainConfig):
    """Supervised fine-tuning on demonstrations (InstructGPT §3.5, App. C.1). Defaults: the paper's recipe."""

    pretrain_data: str | None = help_field(None, 'Pretraining text to mix in ({"text"} JSONL or .txt).')
    pretrain_fraction: float = help_field(
        0.0,
        "Share of each epoch's examples drawn from pretrain_data. InstructGPT App. C.3: the SFT model that "
        "PPO starts from was trained with 10% pretraining data (0.1).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    min_response_tokens: int = help_field(
        1,
        "A prompt is skipped (and counted) when fewer than this many response "
        "tokens fit in max_length; longer responses are truncated (and counted).",
        minimum=1,
    )
    assistant_turns: str = help_field(
        "all",
        "Which assistant turns of a multi-turn {\"messages\"} conversation carry the loss: 'all' (each one, "
        "with its EOS; system and user turns masked) or 'last' (the final turn only). Single-turn data is "
        "the same either way.",
        choices=["all", "last"],
    )

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.pretrain_fraction < 1:
            raise ConfigError(f"pretrain_fraction must be in [0, 1), got {self.pretrain_fraction}")
        if self.pretrain_fraction > 0 and not self.pretrain_data:
            raise ConfigError("pretrain_fraction > 0 needs --pretrain-data")
        if self.select_by == "reward" and not self.reward_model:
            raise ConfigError("select_by=reward needs --reward-model")


@dataclass
class PretrainConfig(LMTrainConfig):
    """Next-token pretraining on plain text (builds the base models of the miniature world)."""

    epochs: int = help_field(1, "Passes over the corpus.")
    batch_size: int = help_field(64, "Sequences per optimizer step.")
    max_length: int = help_field(256, "Sequence length of the packed windows.")
    learning_rate: float = help_field(1e-3, "Peak learning rate.")
    warmup_steps: int = help_field(100, "Linear warmup steps from 0.")
    weight_decay: float = help_field(0.1, "AdamW weight decay.")
    residual_dropout: float | None = help_field(0.0, "Residual dropout.")
    select_by: str = help_field(
        "loss", "'loss' keeps the checkpoint with the lowest held-out loss; 'last' the last.", choices=["loss", "last"]
    )
