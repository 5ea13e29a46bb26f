"""`instructrl pretrain --model INIT_OR_CHECKPOINT --data TEXT --out O`."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.sft.config import PretrainConfig


def configure(parser) -> None:
    add_config_arguments(parser, PretrainConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # here, not at the top: `instructrl ... --help` stays free of torch and transformers
    from instructrl.sft.api import run_pretrain

    cfg = resolve_config(PretrainConfig, args)
    result = run_pretrain(cfg)
    print(f"pretrain: {result.steps} steps, final train loss {result.final_train_loss:.4f}; saved to {result.out_dir}")
    return 0
