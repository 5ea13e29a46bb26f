"""`instructrl rm --model M --data D --out O` trains a reward model;
`instructrl rm --eval-only --model O --eval-data F [--out DIR]` evaluates one."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.reward.config import RMConfig


def configure(parser) -> None:
    add_config_arguments(parser, RMConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # torch and transformers load only when the command runs, so `instructrl rm --help` stays instant
    from instructrl.reward.api import evaluate_rm, run_rm

    cfg = resolve_config(RMConfig, args)
    if cfg.eval_only:
        evaluate_rm(cfg)
        return 0
    result = run_rm(cfg)
    norm = result.normalization
    print(
        f"rm: {result.steps} steps, {result.forward_passes} completion forward passes, final train loss "
        f"{result.final_train_loss:.4f}; normalization {norm['method']} (gain {norm['gain']:.4f}, bias "
        f"{norm['bias']:.4f}); reward model saved to {result.out_dir}"
    )
    return 0
