"""The world's base models: GPT-2 at three sizes, their pretraining budgets and where they are shipped.

They are made by ``instructrl world pretrain-base`` (:mod:`instructrl.experiments.pretrain`, which runs
the toolkit's pretraining on the world's corpus); this module only names the sizes and finds the shipped
weights, so the world never imports a training stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instructrl.errors import ModelLoadError

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "base_models"
N_POSITIONS = 256


@dataclass(frozen=True)
class Size:
    """One base-model size and its pretraining budget."""

    n_layer: int
    n_embd: int
    n_head: int
    max_steps: int
    learning_rate: float
    batch_size: int = 16
    max_length: int = 256  # the full context, so few-shot prompts stay on trained positions


# Smallest to largest: 0.34M, 1.6M and 7.4M parameters (22x). Each step is 16 windows of 256 tokens; the
# corpus is about 640 steps per epoch. The budgets (about 2.8, 2.1 and 1.6 epochs) take about an hour in
# all on two CPU cores; larger models get fewer steps but still end with a lower held-out loss.
SIZES: dict[str, Size] = {
    "tiny": Size(n_layer=2, n_embd=80, n_head=4, max_steps=1800, learning_rate=3e-3),
    "small": Size(n_layer=4, n_embd=160, n_head=4, max_steps=1350, learning_rate=2.5e-3),
    "medium": Size(n_layer=6, n_embd=304, n_head=8, max_steps=1040, learning_rate=2e-3),
}


def base_model_path(size: str = "tiny") -> Path:
    """Directory of a shipped base model (loads with ``AutoModelForCausalLM.from_pretrained``)."""
    path = RESOURCES / size
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"base model '{size}' is not installed in {RESOURCES}; "
            f"run 'instructrl world pretrain-base --out DIR --install' (sizes: {', '.join(SIZES)})"
        )
    return path


def resolve_model(name: str) -> str:
    """A size name ('tiny', ...) becomes the shipped base model's path; anything else is returned as is."""
    return str(base_model_path(name)) if name in SIZES else name


def count_parameters(model_dir: Path) -> int:
    """Parameters of a base model, counted from its config (no weights loaded)."""
    # transformers only here: the world's data builders never need it (see the package docstring)
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
