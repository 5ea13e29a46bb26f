"""`instructrl sft --model M --data D --out O`."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.sft.config import SFTConfig


def configure(parser) -> None:
    add_config_arguments(parser, SFTConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # here, not at the top: `instructrl ... --help` stays free of torch and transformers
    from instructrl.sft.api import run_sft

    cfg = resolve_config(SFTConfig, args)
    result = run_sft(cfg)
    print(
        f"sft: {result.steps} steps, final train loss {result.final_train_loss:.4f}; "
        f"model saved to {result.out_dir}" + (f" (selected step {result.best_step})" if result.best_step else "")
    )
    return 0
