"""SFT checkpoint selection by reward-model score (InstructGPT §3.5: the final SFT model is chosen by RM score on a
validation set, not by validation loss, which overfits after one epoch).

``RewardSelector(reward_model_path, prompts, max_new_tokens=64, seed=0)`` is the ``Selector`` the SFT trainer calls
at each validation point: ``selector(model, tokenizer) -> float`` is the mean normalized RM score of the model's
responses to the validation prompts (greedy by default; seeded sampling with ``temperature > 0``). Generation runs
under a forked RNG, so selection never changes the training run's random stream.
"""

from __future__ import annotations

import torch

from instructrl.data.formats import Prompt
from instructrl.modeling.generation import generate
from instructrl.modeling.reward import RewardModel


class RewardSelector:
    """Mean normalized reward of a policy's responses to fixed prompts; higher is better."""

    name = "reward"
    higher_is_better = True

    def __init__(
        self,
        reward_model_path: str,
        prompts: list[Prompt],
        max_new_tokens: int = 64,
        seed: int = 0,
        temperature: float = 0.0,
        batch_size: int = 32,
    ):
        if not prompts:
            raise ValueError("RewardSelector needs at least one prompt")
        self.path, self.prompts = str(reward_model_path), list(prompts)
        self.max_new_tokens, self.seed, self.temperature, self.batch_size = (
            max_new_tokens,
            seed,
            temperature,
            batch_size,
        )
        self.rm = RewardModel.from_pretrained(self.path)  # loaded once: fail early on a bad path

    @torch.no_grad()
    def __call__(self, model, tokenizer) -> float:
        device = next(model.parameters()).device
        self.rm.to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            gens = generate(
                model,
                tokenizer,
                self.prompts,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                batch_size=self.batch_size,
            )
        scores = self.rm.score(self.prompts, [g.text for g in gens], batch_size=self.batch_size)  # (N,)
        return float(scores.mean())
