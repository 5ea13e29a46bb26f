"""`instructrl expert-iteration --policy SFT --reward-model RM --prompts P --out O`: best-of-n samples, the best
fine-tuned on, round after round."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.expert.config import ExpertConfig


def configure(parser) -> None:
    add_config_arguments(parser, ExpertConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # here, not at the top: `instructrl expert-iteration --help` stays free of torch and transformers
    from instructrl.expert.api import run_expert_iteration

    cfg = resolve_config(ExpertConfig, args)
    result = run_expert_iteration(cfg)
    for row in result.rounds:
        print(
            f"round {row['round']}: mean RM score {row['expert/score_mean_all']:.3f} of all samples, "
            f"{row['expert/score_mean_kept']:.3f} of the {row['expert/kept']} kept"
        )
    print(f"expert-iteration: {len(result.rounds)} rounds; model saved to {result.out_dir}")
    return 0
