"""Configuration of stage 3, PPO and PPO-ptx against the reward model (InstructGPT §3.5, App. C.4).

The defaults are the paper's recipe for its 1.3B-175B models; ``--config ppo-tiny`` scales it to the
miniature models that run on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import help_field
from instructrl.errors import ConfigError
from instructrl.training.config import MemoryConfig, frozen_dtype_field


@dataclass
class PPOConfig(MemoryConfig):
    """PPO / PPO-ptx (InstructGPT Eq. 2). Defaults: the paper's recipe (App. C.4)."""

    # ------------------------------------------------------------------ models and data
    policy: str | None = help_field(
        None,
        "Policy to start from (the SFT model, InstructGPT App. C.3); also the KL "
        "reference. A local directory or a Hub id.",
    )
    tokenizer: str | None = help_field(
        None, "Tokenizer (default: the policy's). The reward and value models must share it."
    )
    reward_model: str | None = help_field(
        None,
        "Reward model directory (AutoModelForSequenceClassification, num_labels=1; gain/bias read from config.json).",
    )
    value_model: str | None = help_field(
        None,
        "Initial value model (default: the reward model: InstructGPT §3.5 initializes the value function from the RM).",
    )
    prompts: str | None = help_field(
        None,
        'Prompt data: {"prompt"} or {"messages"} records (JSONL/JSON/CSV/'
        "Parquet, dataset dir or Hub name). InstructGPT used 31,144 prompts.",
    )
    ptx_data: str | None = help_field(
        None,
        'Pretraining text for PPO-ptx ({"text"} JSONL or .txt). Without it: '
        "plain PPO (gamma = 0 in InstructGPT Eq. 2).",
    )
    ptx_coef: float = help_field(
        27.8,
        "gamma of InstructGPT Eq. 2: scale of the pretraining LM-loss gradient, "
        "accumulated with the PPO gradient of each minibatch (App. C.4: 27.8).",
        minimum=0,
    )
    ptx_per_episode: float = help_field(
        8.0,
        "Pretraining examples per RL episode. InstructGPT App. C.4: 8 (a ratio of 4 let the pretraining loss rise).",
        minimum=0,
    )
    ptx_max_length: int = help_field(256, "Length in tokens of the packed pretraining windows.", minimum=1)
    ptx_micro_batch_size: int = help_field(
        32, "Pretraining windows per forward pass (gradients are accumulated).", minimum=1
    )

    # ------------------------------------------------------------------ episodes and batches
    total_episodes: int = help_field(
        256_000,
        "Episodes to train on. InstructGPT App. C.4: 256k (512k brought the DROP/SQuAD regressions back).",
        minimum=1,
    )
    batch_size: int = help_field(
        512,
        "Episodes per PPO iteration (rollout batch), across all processes. InstructGPT App. C.4: 512.",
        minimum=1,
    )
    mini_batch_size: int = help_field(
        64,
        "Episodes per optimizer step, across all processes. InstructGPT App. C.4: 64.",
        minimum=1,
    )
    ppo_epochs: int = help_field(1, "Passes over each rollout batch. InstructGPT App. C.4: 1 inner epoch.", minimum=1)
    rollout_batch_size: int | None = help_field(
        None,
        "Episodes per generation/scoring forward on one process (default: all of its share of the batch).",
        minimum=1,
    )
    max_prompt_length: int = help_field(
        256,
        "Prompts longer than this (in tokens) are skipped and counted in data_report.json.",
        minimum=1,
    )
    response_length: int = help_field(
        128,
        "Most response tokens sampled; responses without EOS by then get missing_eos_penalty.",
        minimum=1,
    )
    temperature: float = help_field(
        1.0,
        "Sampling temperature; log-probs are taken at the same temperature "
        "(InstructGPT App. C.4: 1; Huang et al. 2023 policy detail 1).",
        minimum=0,
        exclusive_minimum=True,
    )
    cuda_graphs: bool = help_field(
        True,
        "On a GPU, sample with a static KV cache and replay the decoding step as a "
        "CUDA graph (falls back to plain sampling, with a warning, for a model that "
        "cannot decode that way). No effect on a CPU or with FSDP / DeepSpeed "
        "sharding.",
    )
    compile: bool = help_field(
        False,
        "torch.compile the policy's, reference's and value model's forward passes of scoring and training (not "
        "sampling, whose shapes grow token by token). Meant for GPUs, where small models' passes are bound by "
        "kernel launches (not measured there yet); on a 2-core CPU it was slower, after a minute or more of "
        "compiling (benchmarks/ppo_speed/results.md). On a CPU it needs a C++ compiler. One process only.",
    )

    # ------------------------------------------------------------------ optimization
    learning_rate: float = help_field(
        5e-6,
        "Policy peak learning rate (InstructGPT App. C.4: runs without the "
        "pretraining mix diverged above 8.05e-6 at 1.3B). Tiny models need ~1e-4.",
        minimum=0,
        exclusive_minimum=True,
    )
    value_learning_rate: float | None = help_field(
        None, "Value-model learning rate (default: learning_rate).", minimum=0, exclusive_minimum=True
    )
    warmup_iterations: int = help_field(
        10,
        "Linear warmup over this many PPO iterations, from warmup_start of the "
        "peak; constant after (InstructGPT App. C.4: 10 iterations from 1/10).",
        minimum=0,
    )
    warmup_start: float = help_field(
        0.1,
        "Warmup starts at this fraction of the peak learning rate. InstructGPT: 1/10.",
        minimum=0,
        maximum=1,
    )
    adam_beta1: float = help_field(0.9, "Adam beta1.", minimum=0, maximum=1, exclusive_maximum=True)
    adam_beta2: float = help_field(0.95, "Adam beta2.", minimum=0, maximum=1, exclusive_maximum=True)
    adam_eps: float = help_field(
        1e-5,
        "Adam epsilon (lm-human-preferences: 1e-5; Huang et al. 2023 general detail on Adam).",
        minimum=0,
        exclusive_minimum=True,
    )
    weight_decay: float = help_field(0.0, "AdamW weight decay.", minimum=0)
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm per model (0 disables).", minimum=0)

    # ------------------------------------------------------------------ PPO
    kl_coef: float = help_field(
        0.02,
        "beta, the per-token KL penalty coefficient (InstructGPT §3.5/App. C.4: 0.02; "
        "the initial value when adaptive_kl is on).",
        minimum=0,
    )
    kl_estimator: str = help_field(
        "auto",
        "Per-token KL estimator: k1 = log pi/pi_ref (InstructGPT Eq. 2) or k3 (Schulman 2020; >= 0, lower "
        "variance). auto: k1 in the reward, k3 in the loss (kl_in=loss; the gradient of a k1 loss term is 0 in "
        "expectation).",
        choices=["auto", "k1", "k3"],
    )
    kl_in: str = help_field(
        "reward",
        "Where the KL to the reference acts: 'reward' = -beta * KL_t in each token's reward (InstructGPT Eq. 2), "
        "'loss' = beta * KL added to the policy loss, the reward being the score alone (GRPO, Shao et al. 2024).",
        choices=["reward", "loss"],
    )
    advantage: str = help_field(
        "gae",
        "Advantage estimator. gae: a learned value model and GAE (PPO, InstructGPT). Critic-free, no value model "
        "loaded or trained: grpo = group-normalized score (Shao et al. 2024), rloo = leave-one-out baseline "
        "(Ahmadian et al. 2024), both with samples_per_prompt >= 2; reinforce = the reward-to-go whitened over the "
        "batch (REINFORCE++, Hu 2025), any samples_per_prompt.",
        choices=["gae", "grpo", "rloo", "reinforce"],
    )
    samples_per_prompt: int = help_field(
        1,
        "Responses sampled per prompt in each rollout (the group of grpo / rloo); batch_size counts responses, so "
        "an iteration uses batch_size / samples_per_prompt prompts.",
        minimum=1,
    )
    kl_clamp_min: float | None = help_field(
        None,
        "Clamp each token's KL estimate from below (AlpacaFarm: 0). None: no clamp.",
        unbounded=True,
    )
    adaptive_kl: bool = help_field(False, "Adapt beta toward kl_target (Ziegler et al. 2019). InstructGPT: fixed beta.")
    kl_target: float = help_field(
        6.0,
        "Target per-sequence KL (nats) of the adaptive controller (Ziegler et al. 2019: 6).",
        minimum=0,
        exclusive_minimum=True,
    )
    kl_horizon: int = help_field(
        10_000, "Horizon (episodes) of the adaptive controller (Ziegler et al. 2019: 10000).", minimum=1
    )
    gamma: float = help_field(
        1.0, "GAE discount. InstructGPT App. C.4 / lm-human-preferences: 1 (no discount).", minimum=0, maximum=1
    )
    lam: float = help_field(0.95, "GAE lambda (lm-human-preferences: 0.95).", minimum=0, maximum=1)
    cliprange: float = help_field(0.2, "PPO ratio clip. InstructGPT App. C.4: 0.2.", minimum=0, exclusive_minimum=True)
    cliprange_value: float = help_field(
        0.2,
        "Value clip around the rollout values (PPO2; Huang et al. 2023 policy detail 10).",
        minimum=0,
        exclusive_minimum=True,
    )
    vf_coef: float = help_field(0.1, "Value-loss coefficient (lm-human-preferences: 0.1).", minimum=0)
    whiten_rewards: bool = help_field(
        False,
        "Whiten per-token rewards (scale only) before GAE (Huang et al. 2023 "
        "policy detail 9; later studies found it neutral or harmful).",
    )
    missing_eos_penalty: float | None = help_field(
        -1.0,
        "Score given to responses without EOS within response_length (Ziegler et al. 2019; Huang et al. 2023 "
        "policy detail 5). None keeps the RM score.",
        unbounded=True,
    )
    score_clip: float | None = help_field(
        None,
        "Clip each reward-model score to [-score_clip, score_clip] before the KL penalty is added (and before "
        "missing_eos_penalty replaces it), so that a few outlying scores cannot dominate an update. None: no "
        "clipping (InstructGPT clips nothing).",
        minimum=0,
        exclusive_minimum=True,
    )
    ema: bool = help_field(True, "Keep an EMA of the policy weights and save it as the output (InstructGPT App. C.4).")
    ema_decay: float = help_field(
        0.992,
        "EMA decay per optimizer step. InstructGPT App. C.4: 0.992.",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        exclusive_maximum=True,
    )

    frozen_dtype: str = frozen_dtype_field()
    rollout_gather: str = help_field(
        "whole",
        "Under FSDP2 or ZeRO-3, how sampling reads the sharded policy: 'whole' gathers its weights once per rollout (fast; "
        "holds the whole policy in the compute dtype on each GPU for the rollout), 'layer' lets each forward gather "
        "one layer at a time (memory of two layers; a collective per layer per sampled token, and every process "
        "samples until all are done). The planner counts the gathered policy under 'whole'.",
        choices=["whole", "layer"],
    )
    frozen_placement: str = help_field(
        "auto",
        "Where the reference and reward model live: 'replicated' (whole on every process's device), 'sharded' "
        "(FSDP2 or ZeRO-3 over the processes like the trained models; needs --engine fsdp2 or zero3 on 2+ "
        "processes) or 'cpu' (FSDP2 or ZeRO-3 with the weights in CPU memory, moved to the GPU layer by layer; needs "
        "--engine fsdp2 or zero3 on 2+ GPUs). 'auto': sharded under FSDP2 or ZeRO-3 on several processes, "
        "replicated otherwise.",
        choices=["auto", "replicated", "sharded", "cpu"],
    )

    # ------------------------------------------------------------------ LoRA
    lora_r: int = help_field(
        0,
        "LoRA rank (0 = full fine-tuning). With LoRA the reference is the policy with its adapters disabled.",
        minimum=0,
    )
    lora_alpha: int = help_field(16, "LoRA alpha.", minimum=1)
    lora_target_modules: list[str] = help_field([], "Modules to adapt (comma separated); empty = peft's default.")
    value_lora_r: int = help_field(
        0,
        "LoRA rank of the value model (0 = full fine-tuning): its backbone frozen, adapters on the same modules as "
        "the policy's (lora_alpha, lora_target_modules), the scalar head trained whole; OUT/value_model is saved "
        "merged. With value_shares_policy_base: the rank of its adapter on the policy's base (default: lora_r).",
        minimum=0,
    )
    value_shares_policy_base: bool = help_field(
        False,
        "With a LoRA policy: the value model is the policy's own frozen base with a second adapter and a scalar "
        "head, so one base copy serves the policy, the reference (adapters off) and the value function. It then "
        "starts from the policy's base, not from the reward model (InstructGPT §3.5 initializes it from the RM).",
    )

    # ------------------------------------------------------------------ guards, checkpoints, logs
    max_kl: float | None = help_field(
        100.0,
        "Stop the run (keeping the last good checkpoint) when the mean "
        "per-sequence KL from the reference exceeds this many nats, or is NaN. "
        "None disables the KL bound (NaN still stops).",
        minimum=0,
        exclusive_minimum=True,
    )
    checkpoint_every: int = help_field(10, "Save a resumable checkpoint every N PPO iterations.", minimum=1)
    keep_checkpoints: int = help_field(2, "How many resumable checkpoints to keep.", minimum=0)
    sample_every: int = help_field(
        10, "Write sample generations to samples.jsonl every N iterations (0: never).", minimum=0
    )
    num_samples: int = help_field(4, "Episodes written to samples.jsonl each time.", minimum=0)
    save_value_model: bool = help_field(True, "Also save the trained value model in OUT/value_model.")

    def validate(self) -> None:
        super().validate()
        for name in (
            "batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "total_episodes",
            "response_length",
            "max_prompt_length",
            "ptx_max_length",
            "ptx_micro_batch_size",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.mini_batch_size:
            raise ConfigError(
                f"batch_size={self.batch_size} must be a multiple of mini_batch_size={self.mini_batch_size}"
            )
        if self.total_episodes < self.batch_size:
            raise ConfigError(f"total_episodes={self.total_episodes} is less than one batch ({self.batch_size})")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 for PPO sampling, got {self.temperature}")
        if self.learning_rate <= 0 or (self.value_learning_rate is not None and self.value_learning_rate <= 0):
            raise ConfigError("learning rates must be positive")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.kl_coef < 0 or self.ptx_coef < 0 or self.ptx_per_episode < 0:
            raise ConfigError("kl_coef, ptx_coef and ptx_per_episode must be >= 0")
        if self.adaptive_kl and (self.kl_target <= 0 or self.kl_horizon <= 0):
            raise ConfigError("adaptive_kl needs kl_target > 0 and kl_horizon > 0")
        if not 0 <= self.warmup_start <= 1:
            raise ConfigError(f"warmup_start must be in [0, 1], got {self.warmup_start}")
        if self.advantage in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ConfigError(
                f"advantage={self.advantage} needs samples_per_prompt >= 2, got {self.samples_per_prompt}: its "
                f"baseline is the other responses to the same prompt, so one response alone gets advantage 0"
            )
        if self.batch_size % self.samples_per_prompt:
            raise ConfigError(
                f"batch_size={self.batch_size} must be a multiple of samples_per_prompt={self.samples_per_prompt} "
                f"(every prompt's group of responses sits in one batch)"
            )
        if self.kl_in == "loss" and self.kl_estimator == "k1":
            raise ConfigError(
                "kl_in=loss with kl_estimator=k1: the gradient of a k1 loss term is 0 in expectation, so the KL would "
                "not be held back; use kl_estimator=k3 (or auto)"
            )
        if self.value_model and not self.uses_value_model:
            raise ConfigError(
                f"value_model is set but advantage={self.advantage} trains no value model: drop --value-model or "
                f"use --advantage gae"
            )
        if (self.value_lora_r or self.value_shares_policy_base) and not self.uses_value_model:
            raise ConfigError(
                f"value_lora_r / value_shares_policy_base shape the value model, which advantage={self.advantage} "
                f"does not have: drop them or use --advantage gae"
            )
        if self.value_shares_policy_base:
            if self.lora_r == 0:
                raise ConfigError(
                    "--value-shares-policy-base needs a LoRA policy (--lora-r > 0): the value model is a second "
                    "adapter on the policy's frozen base"
                )
            if self.value_model:
                raise ConfigError(
                    "--value-shares-policy-base: the value model is built on the policy's base, so --value-model "
                    "has nothing to start from; drop one of them"
                )
            if self.gradient_checkpointing:
                raise ConfigError(
                    "--value-shares-policy-base with --gradient-checkpointing: the backward would recompute the "
                    "value model's layers with the policy's adapter switched on; drop one of them"
                )
        if self.score_clip is not None and self.score_clip <= 0:
            raise ConfigError(f"score_clip must be > 0 (or None: no clipping), got {self.score_clip}")

    @property
    def num_iterations(self) -> int:
        return self.total_episodes // self.batch_size

    @property
    def uses_value_model(self) -> bool:
        """Only GAE needs a value model; the critic-free estimators load and train none."""
        return self.advantage == "gae"

    @property
    def kl_kind(self) -> str:
        """The KL estimator in use: ``auto`` is k1 in the reward (InstructGPT Eq. 2) and k3 in the loss."""
        if self.kl_estimator != "auto":
            return self.kl_estimator
        return "k3" if self.kl_in == "loss" else "k1"

    @property
    def use_ptx(self) -> bool:
        return bool(self.ptx_data) and self.ptx_coef > 0 and self.ptx_per_episode > 0
