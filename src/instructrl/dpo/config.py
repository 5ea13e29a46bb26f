"""Configuration of DPO, the policy trained directly on comparisons (Rafailov et al. 2023), with no reward model
and no RL. Defaults: the DPO paper's recipe (§6, App. B)."""

from __future__ import annotations

from dataclasses import dataclass

from instructrl.config import help_field
from instructrl.errors import ConfigError
from instructrl.training.config import TrainLoopConfig, frozen_dtype_field


@dataclass
class DPOConfig(TrainLoopConfig):
    """Direct preference optimization on pairwise comparisons or K-way rankings."""

    # ------------------------------------------------------------------ models and data
    model: str | None = help_field(
        None,
        "Policy to start from: the SFT model (Rafailov et al. 2023 §4: preferences should be in-distribution for "
        "it). A frozen copy is the reference pi_ref; with --lora-r, the policy with its adapters disabled.",
    )
    tokenizer: str | None = help_field(None, "Tokenizer to use (default: the model's).")
    data: str | None = help_field(
        None,
        "Comparisons: pairs {prompt, chosen, rejected} (also the implicit-prompt and conversational forms) or K-way "
        "rankings {prompt, completions, ranks} (1 = best, ties allowed), as JSONL/JSON, CSV/Parquet, a dataset dir "
        "or a Hub name: the reward model's formats.",
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
    max_length: int = help_field(
        512, "Longest sequence in tokens (rendered prompt + response + EOS). DPO code: 512.", minimum=8
    )
    min_response_tokens: int = help_field(
        1,
        "A ranking is skipped (and counted) when its prompt leaves fewer response tokens than this; longer "
        "responses are cut (and counted) and then have no EOS, as in SFT.",
        minimum=1,
    )

    # ------------------------------------------------------------------ the loss
    beta: float = help_field(
        0.1,
        "beta: strength of the KL constraint to the reference; the implicit reward is beta * log pi/pi_ref "
        "(Rafailov et al. 2023 Eq. 7; App. B: 0.1, 0.5 for TL;DR summarization). For IPO it is tau (Azar et al. "
        "2023), the log-ratio margin target being 1/(2 tau).",
        minimum=0,
        exclusive_minimum=True,
    )
    loss_type: str = help_field(
        "sigmoid",
        "'sigmoid': the DPO loss -log sigmoid(beta * margin) (Rafailov et al. 2023 Eq. 7; cDPO with "
        "--label-smoothing); 'ipo': (margin - 1/(2 beta))^2 (Azar et al. 2023 Eq. 17).",
        choices=["sigmoid", "ipo"],
    )
    label_smoothing: float = help_field(
        0.0,
        "eps of conservative DPO (cDPO; Mitchell 2023): the share of labels taken to be flipped. 0 = plain DPO.",
        minimum=0,
        maximum=0.5,
        exclusive_maximum=True,
    )
    ranking_loss: str = help_field(
        "pairs",
        "How a K-way ranking is learned: 'pairs' (all C(K,2) comparisons of a prompt in one batch element, each "
        "completion forwarded once: InstructGPT §3.5; each prompt's loss is the mean over its pairs) or "
        "'plackett-luce' (the likelihood of the whole ranking: Rafailov et al. 2023 App. A.3). Equal for pairs.",
        choices=["pairs", "plackett-luce"],
    )
    disable_dropout: bool = help_field(
        True,
        "Turn every dropout layer off in the policy (the reference always runs without), so that a completion's "
        "log-ratio is 0 before the first update and depends only on the weights (the DPO code; TRL's default).",
    )

    # ------------------------------------------------------------------ the pretraining term (DPO-ptx)
    ptx_data: str | None = help_field(
        None,
        'Pretraining text ({"text"} JSONL or .txt) for DPO-ptx: the PPO-ptx term of InstructGPT Eq. 2 added to the '
        "DPO loss, against regressions on public NLP tasks. Without it: plain DPO.",
    )
    ptx_coef: float = help_field(
        1.0,
        "gamma: weight of the pretraining LM loss (mean token NLL of the windows) beside the DPO loss. No paper "
        "value for DPO; PPO-ptx's 27.8 is in the units of PPO's losses (InstructGPT App. C.4).",
        minimum=0,
    )
    ptx_per_unit: int = help_field(
        1, "Pretraining windows per training unit (a prompt with its ranking), drawn afresh each epoch.", minimum=1
    )
    ptx_max_length: int = help_field(256, "Length in tokens of the packed pretraining windows.", minimum=8)

    # ------------------------------------------------------------------ recipe
    epochs: int = help_field(1, "Passes over the comparisons. DPO code: 1 epoch.")
    batch_size: int = help_field(
        64, "Prompts (with all their comparisons) per optimizer step across all processes. DPO App. B: 64."
    )
    learning_rate: float = help_field(1e-6, "Peak learning rate. DPO App. B: 1e-6 (with RMSprop; here AdamW).")
    warmup_steps: int = help_field(150, "Linear warmup from 0. DPO App. B: 150 steps.")
    lr_schedule: str = help_field(
        "constant", "'constant' after the warmup (DPO App. B) or 'cosine'.", choices=["cosine", "constant"]
    )
    max_grad_norm: float = help_field(10.0, "Gradient clipping norm (0 disables). DPO code: 10.")
    select_by: str = help_field(
        "last",
        "Final model: 'last', or 'loss' (lowest held-out DPO loss among the evaluation points).",
        choices=["last", "loss"],
    )

    frozen_dtype: str = frozen_dtype_field()

    # ------------------------------------------------------------------ LoRA
    lora_r: int = help_field(
        0,
        "LoRA rank (0 = full fine-tuning). With LoRA the reference is the policy with its adapters disabled.",
        minimum=0,
    )
    lora_alpha: int = help_field(16, "LoRA alpha.", minimum=1)
    lora_target_modules: list[str] = help_field(
        [], "Modules to adapt (comma separated); empty = peft's default for the architecture."
    )

    # ------------------------------------------------------------------ evaluation
    eval_kl_prompts: int = help_field(
        32,
        "Held-out prompts answered by the policy at each evaluation point to measure KL(pi || pi_ref) (mean "
        "per-sequence log-ratio of sampled responses); 0 skips it. Prompts that leave fewer than "
        "eval_max_new_tokens tokens of max_length are not used.",
        minimum=0,
    )
    eval_max_new_tokens: int = help_field(64, "Longest sampled response for the KL measurement.", minimum=1)
    eval_batch_size: int = help_field(
        16, "Prompts per forward pass and per generation batch when evaluating.", minimum=1
    )

    def validate(self) -> None:
        super().validate()  # choices, and every number within the range its help_field declares (beta > 0, ...)
        if self.loss_type == "ipo" and self.label_smoothing:
            raise ConfigError("label_smoothing is cDPO's, for loss_type=sigmoid; IPO has none")
        if self.ranking_loss == "plackett-luce" and (self.loss_type != "sigmoid" or self.label_smoothing):
            raise ConfigError(
                "ranking_loss=plackett-luce is the DPO (sigmoid) loss of a whole ranking; it has no IPO or "
                "label-smoothed form: use --ranking-loss pairs for those"
            )

    @property
    def use_ptx(self) -> bool:
        return bool(self.ptx_data) and self.ptx_coef > 0
