"""Configuration of expert iteration (rejection-sampling fine-tuning): each round samples n responses per prompt
from the current policy, keeps the one the frozen reward model scores highest, and fine-tunes the policy on
those with the SFT stage.

Expert iteration: Anthony et al. 2017 (imitate the expert that search builds on top of the policy); InstructGPT
(Ouyang et al. 2022) names it, in its discussion of open questions, as an alternative to PPO it did not try.
The best-of-n then fine-tune form: RAFT (Dong et al. 2023) and Llama 2's rejection-sampling fine-tuning
(Touvron et al. 2023 §3.2.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instructrl.config import BaseConfig, help_field
from instructrl.errors import ConfigError


@dataclass
class ExpertConfig(BaseConfig):
    """Expert iteration against a frozen reward model; the fine-tuning of each round is SFT's (``run_sft``)."""

    # ------------------------------------------------------------------ models and data
    policy: str | None = help_field(
        None, "Policy to start from: normally the SFT model (Llama 2 §3.2.3 starts rejection sampling from it)."
    )
    reward_model: str | None = help_field(
        None, "Frozen reward model (an `instructrl rm` output) that scores the samples: the best-of-n judge."
    )
    prompts: str | None = help_field(
        None,
        'Prompt data, as for PPO: {"prompt"} or {"messages"} records (JSONL/JSON/CSV/Parquet, dataset dir or Hub '
        "name). Every round samples responses to these prompts.",
    )
    prompts_per_round: int | None = help_field(
        None,
        "Prompts drawn (without replacement, afresh each round, seeded) per round; default: all of them every round "
        "(RAFT, Dong et al. 2023, draws a batch of prompts per stage).",
        minimum=1,
    )

    # ------------------------------------------------------------------ sampling and selection
    rounds: int = help_field(
        2, "Rounds of sample -> select -> fine-tune; each starts from the previous round's model.", minimum=1
    )
    num_samples: int = help_field(
        4,
        "n: responses sampled per prompt per round, the best kept (best-of-n; Llama 2 §3.2.3 samples K per prompt and "
        "keeps the best by the RM). The kept responses' KL from the policy is at most log n - (n-1)/n.",
        minimum=1,
    )
    max_new_tokens: int = help_field(64, "Longest sampled response in tokens.", minimum=1)
    temperature: float = help_field(
        1.0, "Sampling temperature (Llama 2 §3.2.3: higher temperatures give more diverse samples).", minimum=0
    )
    top_p: float = help_field(
        1.0, "Nucleus sampling threshold (1 = off).", minimum=0, maximum=1, exclusive_minimum=True
    )
    generation_batch_size: int = help_field(32, "Sequences per generation and scoring batch.", minimum=1)
    min_score: float | None = help_field(
        None,
        "Keep a prompt only when its best response scores at least this (normalized reward); default: no threshold.",
        unbounded=True,
    )
    keep_fraction: float = help_field(
        1.0,
        "Keep only this share of the prompts, those whose best response scores highest (after min_score; RAFT's "
        "top-fraction filter). 1 keeps every prompt's best.",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    )

    # ------------------------------------------------------------------ fine-tuning (SFT's fields, passed to run_sft)
    epochs: int = help_field(1, "SFT passes over each round's kept (prompt, best response) pairs.", minimum=1)
    batch_size: int = help_field(32, "SFT examples per optimizer step, across all processes.", minimum=1)
    micro_batch_size: int | None = help_field(
        None, "SFT examples per forward pass per process (default: batch_size / processes).", minimum=1
    )
    learning_rate: float = help_field(
        9.65e-6, "SFT peak learning rate. InstructGPT App. C.1: 9.65e-6.", minimum=0, exclusive_minimum=True
    )
    lr_schedule: str = help_field(
        "cosine", "SFT schedule: 'cosine' (to 10% of the peak) or 'constant'.", choices=["cosine", "constant"]
    )
    warmup_steps: int = help_field(0, "SFT linear warmup steps.", minimum=0)
    max_length: int = help_field(512, "SFT: longest sequence in tokens (prompt + response).", minimum=8)
    residual_dropout: float | None = help_field(
        None,
        "SFT residual dropout; None keeps the model's own setting (InstructGPT's SFT used 0.2).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )
    pretrain_data: str | None = help_field(
        None, 'Pretraining text mixed into each round\'s fine-tuning ({"text"} JSONL or .txt), as SFT --pretrain-data.'
    )
    pretrain_fraction: float = help_field(
        0.0,
        "Share of each fine-tuning epoch drawn from pretrain_data (SFT's mix; InstructGPT App. C.3 used 0.1 for the "
        "SFT model PPO starts from).",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    )

    def run_started(self, directory: Path) -> bool:
        """A round folder is the progress a --resume continues (the rounds hold the SFT checkpoints)."""
        return any(directory.glob("round_*"))

    def validate(self) -> None:
        super().validate()  # choices, and every number within the range its help_field declares
        if self.pretrain_fraction > 0 and not self.pretrain_data:
            raise ConfigError("pretrain_fraction > 0 needs --pretrain-data")
        if self.max_new_tokens >= self.max_length:
            raise ConfigError(
                f"max_new_tokens={self.max_new_tokens} must be below max_length={self.max_length}: the fine-tuning "
                f"sequence holds the prompt and the response"
            )
