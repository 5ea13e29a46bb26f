"""Configuration of reward-model training (stage 2). Defaults: the paper's recipe (InstructGPT §3.5, App. C.2)."""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import help_field
from instructrl.errors import ConfigError
from instructrl.training.config import TrainLoopConfig


@dataclass
class RMConfig(TrainLoopConfig):
    """A reward model trained on K-way rankings with the loss of InstructGPT Eq. 1."""

    model: str | None = help_field(
        None,
        "Causal LM to start from (normally the SFT checkpoint); its unembedding is replaced by a scalar head "
        "read at the response's EOS (InstructGPT §3.5). With --eval-only: the reward model to evaluate.",
    )
    tokenizer: str | None = help_field(None, "Tokenizer to use (default: the model's).")
    data: str | None = help_field(
        None,
        "Comparisons: K-way rankings {prompt, completions, ranks} or pairs {prompt?, chosen, rejected}, as "
        "JSONL/JSON, CSV/Parquet, a dataset dir or a Hub name.",
    )
    eval_data: str | None = help_field(
        None, "Held-out comparisons (same formats). Default: a split of --data by prompt."
    )
    eval_fraction: float = help_field(
        0.05,
        "Share of --data's prompts held out for evaluation when --eval-data is not given (0 disables). "
        "Splits are by prompt, so no prompt is in both sides.",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    heldout_labelers: list[str] = help_field(
        [],
        "Labeler ids (the 'labeler' field) or group names (the 'labeler_group' field) whose comparisons are "
        "never trained on and are reported as the held-out group (InstructGPT §3.4, §4: held-out labelers).",
    )
    eval_only: bool = help_field(False, "Only evaluate --model (a trained reward model) on --eval-data.")
    batching: str = help_field(
        "prompts",
        "'prompts': all comparisons of a prompt form one batch element, each completion forwarded once "
        "(InstructGPT §3.5: K passes instead of 2*C(K,2)). 'pairs': every comparison an independent, "
        "shuffled example (the §3.5 ablation, which overfit).",
        choices=["prompts", "pairs"],
    )
    share_prompt: bool = help_field(
        True,
        "With batching=prompts, forward each prompt once for its K completions (its keys and values reused by "
        "each completion): fewer tokens, the same rewards. Checked on the first batch against the plain "
        "forward; a model where they differ, or that keeps no key-value cache, falls back to the plain forward, "
        "as do gradient checkpointing (no cache while training), FSDP and ZeRO-3 (one backward through two "
        "forwards of sharded weights).",
    )
    length_buckets: int = help_field(
        4,
        "With share_prompt, a micro-batch's completions are forwarded in up to this many groups of similar length, "
        "each padded to its own longest (split where it saves more padding than a forward costs): the same "
        "rewards for fewer padded tokens. 1 = one batch padded to the longest completion.",
        minimum=1,
    )
    max_length: int = help_field(512, "Longest sequence in tokens (rendered prompt + response + EOS).", minimum=8)
    min_response_tokens: int = help_field(
        1,
        "A ranking is skipped (and counted) when its prompt leaves fewer response tokens than this; longer "
        "responses are cut and given their EOS back (and counted), so the score is still read at EOS.",
        minimum=1,
    )
    epochs: int = help_field(1, "Passes over the comparisons. InstructGPT App. C.2: 1 epoch (more overfits).")
    batch_size: int = help_field(
        64,
        "Prompts (with all their comparisons) per optimizer step across all processes; with batching=pairs, "
        "comparison pairs. InstructGPT App. C.2: 64 prompts.",
    )
    learning_rate: float = help_field(9e-6, "Peak learning rate. InstructGPT App. C.2: 9e-6.")
    lr_final_fraction: float = help_field(0.1, "Cosine decays to this fraction of the peak. InstructGPT App. C.2: 10%.")
    adam_beta1: float = help_field(0.9, "Adam beta1. InstructGPT App. C.2: 0.9.")
    adam_beta2: float = help_field(0.95, "Adam beta2. InstructGPT App. C.2: 0.95.")
    disable_dropout: bool = help_field(
        True,
        "Turn every dropout layer off while training the reward model, so that the K completions of a "
        "prompt are scored by the same function (lm-human-preferences; Huang et al. 2023).",
    )
    lora_r: int = help_field(
        0,
        "LoRA rank (0 = full fine-tuning). With LoRA the backbone is frozen and trains adapters, the scalar head "
        "trains whole; the saved reward model has the adapters merged (a plain transformers checkpoint).",
        minimum=0,
    )
    lora_alpha: int = help_field(16, "LoRA alpha.", minimum=1)
    lora_dropout: float = help_field(0.0, "LoRA dropout.", minimum=0, maximum=1, exclusive_maximum=True)
    lora_target_modules: list[str] = help_field(
        [], "Modules to adapt (comma separated); empty = peft's default for the architecture."
    )
    select_by: str = help_field(
        "last",
        "Final model: 'last' (the paper trains one epoch and keeps it) or 'loss' (lowest held-out log loss "
        "among the evaluation points).",
        choices=["last", "loss"],
    )
    normalize: str = help_field(
        "auto",
        "Reward normalization after training: 'demonstrations' (a bias so that labeler demonstrations score "
        "mean 0: InstructGPT §3.5), 'reference' (gain and bias so that reference-policy samples score mean 0, "
        "std 1: lm-human-preferences) or 'none'. 'auto': 'demonstrations' when --demonstrations is given, "
        "else 'none'.",
        choices=["auto", "none", "demonstrations", "reference"],
    )
    demonstrations: str | None = help_field(None, "Demonstrations (SFT format) for --normalize demonstrations.")
    reference_policy: str | None = help_field(
        None, "Causal LM sampled for --normalize reference (normally the SFT model)."
    )
    normalize_prompts: str | None = help_field(None, "Prompts the reference policy answers for --normalize reference.")
    normalize_samples: int = help_field(
        1024, "At most this many demonstrations or reference samples are scored.", minimum=1
    )
    normalize_max_new_tokens: int = help_field(64, "Response length of the reference-policy samples.", minimum=1)
    eval_batch_size: int = help_field(
        32, "Sequences per forward pass when scoring for evaluation and normalization.", minimum=1
    )

    def validate(self) -> None:
        super().validate()
        for name in ("eval_batch_size", "normalize_samples", "min_response_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.normalize == "demonstrations" and not self.demonstrations:
            raise ConfigError("normalize=demonstrations needs --demonstrations FILE")
        if self.normalize == "reference" and not (self.reference_policy and self.normalize_prompts):
            raise ConfigError("normalize=reference needs --reference-policy MODEL and --normalize-prompts FILE")

    @property
    def normalize_method(self) -> str:
        """The normalization actually applied (resolving the default)."""
        if self.normalize != "auto":
            return self.normalize
        return "demonstrations" if self.demonstrations else "none"
