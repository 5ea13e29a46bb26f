"""`instructrl dpo --model SFT --data comparisons.jsonl --out O` trains a policy directly on comparisons."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.dpo.config import DPOConfig


def configure(parser) -> None:
    add_config_arguments(parser, DPOConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # here, not at the top: `instructrl dpo --help` stays free of torch and transformers
    from instructrl.dpo.api import run_dpo

    cfg = resolve_config(DPOConfig, args)
    result = run_dpo(cfg)
    print(
        f"dpo: {result.steps} steps, final train loss {result.final_train_loss:.4f}; "
        f"model saved to {result.out_dir}" + (f" (selected step {result.best_step})" if result.best_step else "")
    )
    return 0
