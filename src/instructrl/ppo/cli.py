"""`instructrl ppo --policy P --reward-model R --prompts D --out O [--ptx-data T --ptx-coef 27.8]`."""

from __future__ import annotations

from instructrl.config import add_config_arguments, resolve_config
from instructrl.ppo.config import PPOConfig


def configure(parser) -> None:
    add_config_arguments(parser, PPOConfig, aliases={"output_dir": ["--out"]})


def main(args) -> int:
    # here, not at the top: `instructrl ... --help` stays free of torch and transformers
    from instructrl.ppo.api import run_ppo

    cfg = resolve_config(PPOConfig, args)
    result = run_ppo(cfg)
    final = result.final
    print(
        f"ppo: {result.iterations} iterations, {result.episodes} episodes; final score "
        f"{final.get('ppo/score_mean', float('nan')):.4f}, KL {final.get('ppo/kl', float('nan')):.3f}; "
        f"policy saved to {result.out_dir}"
    )
    return 0
