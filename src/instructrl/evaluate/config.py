"""Configuration of `instructrl eval`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instructrl.config import BaseConfig, help_field
from instructrl.errors import ConfigError

SUITES = ("winrate", "likert", "truthfulness", "toxicity", "benchmarks")


@dataclass
class EvalConfig(BaseConfig):
    """Evaluate policies on held-out prompts (InstructGPT §4)."""

    models: list[str] = help_field(
        [],
        "Policies to evaluate: PATH or NAME=PATH; append '+fewshot' to prompt a base "
        "model with few-shot demonstrations (the paper's 'GPT prompted').",
    )
    baseline: str | None = help_field(
        None, "Baseline policy the win rates are against (PATH or NAME=PATH). InstructGPT Fig. 1: the 175B SFT model."
    )
    head_to_head: list[str] = help_field(
        [],
        "Pairs of evaluated policies to compare directly, each 'A:B' by their names (A's win rate against B, from "
        "the responses already drawn, by the win rates' judge), e.g. 'GPT prompted:GPT'.",
    )
    prompts: str | None = help_field(
        None, 'Held-out prompts ({"prompt"} records; miniature-world records carry a task).'
    )
    world_dir: str | None = help_field(
        None,
        "A miniature-world dataset dir (instructrl world build): supplies "
        "eval_prompts.jsonl, truthfulqa.jsonl and toxicity_prompts.jsonl.",
    )
    truthfulqa: str | None = help_field(None, "Truthfulness questions (miniature world).")
    toxicity: str | None = help_field(None, "Toxicity prompts with an 'instruction' field (miniature world).")
    judge: str = help_field(
        "auto",
        "Who compares responses: 'labelers' (the world's held-out labelers), 'rm:PATH' "
        "(a reward model), 'python:module:attr' (your own), 'humans:DB_URL' (people in the labeling app: "
        "the comparisons are queued there, blind, and --collect reads them back; InstructGPT §4.1), or "
        "'auto' (labelers for world prompts, else the reward model given by --judge).",
    )
    collect: bool = help_field(
        False,
        "With --judge humans: compute the results from whatever has been labeled so far (the queued run's "
        "OUT/human_eval.json names the database and batch). Running the queuing command again does the same.",
    )
    labelers_per_item: int = help_field(
        1,
        "With --judge humans: distinct labelers who judge each comparison; 2 or more measures inter-labeler "
        "agreement (InstructGPT §3.4 measured it on overlapping tasks).",
        minimum=1,
    )
    assign_to: list[str] = help_field(
        [], "With --judge humans: labelers (names) to give the comparisons to (default: every active labeler)."
    )
    attention_checks: str | None = help_field(
        None,
        'With --judge humans: comparisons with a known answer, {"prompt", "better", "worse"} per line (or '
        '"tie": true for two equally good responses), mixed blind into every labeler\'s queue; results report '
        "the pass rate per labeler.",
    )
    min_attention_pass: float | None = help_field(
        None,
        "With --judge humans --collect: leave out the judgments of labelers whose attention-check pass rate is "
        "below this share (they are named in the summary).",
        minimum=0,
        maximum=1,
    )
    suites: list[str] = help_field(list(SUITES), "Which evaluations to run (world-only ones are skipped elsewhere).")
    num_prompts: int | None = help_field(None, "Use only the first N prompts of each file.", minimum=1)
    max_new_tokens: int = help_field(48, "Response length.", minimum=1)
    temperature: float = help_field(
        0.7, "Sampling temperature for responses (0 = greedy). Benchmarks always use 0.", minimum=0
    )
    batch_size: int = help_field(64, "Prompts per generation batch.", minimum=1)
    benchmark_n: int = help_field(
        100, "Items per benchmark task (alignment tax): the world's, and lm-eval's (its --limit).", minimum=1
    )
    benchmarks: str | None = help_field(
        None,
        "Real benchmarks for the alignment tax (InstructGPT Fig. 29) through lm-evaluation-harness: "
        "'lm-eval:TASK[,TASK...]', run on every model and the baseline, e.g. lm-eval:squadv2,drop,hellaswag,"
        "wmt14-fr-en (the paper's set; needs the optional extra instructrl[lm-eval] and the datasets).",
    )
    lm_eval_include: str | None = help_field(
        None, "A folder of your own lm-eval task definitions (YAML) that --benchmarks can name."
    )
    few_shot_data: str | None = help_field(
        None, "Demonstrations for '+fewshot' models (default: the world's sft.jsonl)."
    )
    few_shot_k: int = help_field(
        3,
        "Demonstrations in a few-shot prompt: the first K of --few-shot-data (for a prompt where they would not leave "
        "room for --max-new-tokens in the model's context, the last ones that do).",
        minimum=0,
    )

    def validate(self) -> None:
        super().validate()
        if self.report_to not in ("none", "wandb", "tensorboard"):
            raise ConfigError(f"--report-to {self.report_to}: evaluation results go to wandb or tensorboard (or none)")
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown:
            raise ConfigError(f"unknown suites {unknown}; choose from {list(SUITES)}")
        for pair in self.head_to_head:
            if len(pair.split(":")) != 2 or not all(x.strip() for x in pair.split(":")):
                raise ConfigError(f"--head-to-head '{pair}': expected two policy names as A:B")
        if self.head_to_head and "winrate" not in self.suites:
            raise ConfigError("--head-to-head compares with the win rates' judge: keep 'winrate' in --suites")
        if self.head_to_head and self.judge.startswith("humans:"):
            raise ConfigError("--head-to-head is not available with --judge humans: queue each pair as its own run")
        for flag, spec in [("--models", m) for m in self.models] + [("--baseline", self.baseline)]:
            # a bare word is neither a folder nor a Hub id (owner/name): refuse it now, not after a Hub lookup
            path = (spec or "").removesuffix("+fewshot")
            if spec and "=" not in spec and "/" not in path and not Path(path).expanduser().exists():
                raise ConfigError(
                    f"{flag} '{spec}': no folder of that name; give PATH, NAME=PATH, or a Hub id as owner/name"
                )
