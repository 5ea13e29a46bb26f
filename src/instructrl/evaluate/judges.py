"""Judges decide which of two responses to a prompt is better.

A judge is any object with a ``name`` and a batched ``compare``::

    class MyJudge:
        name = "my-judge"
        def compare(self, prompts: list[dict], responses: list[str], baselines: list[str]) -> list[float]:
            ...  # per item: 1.0 if the response beats the baseline, 0.5 for a tie, 0.0 if it loses

``prompts`` are prompt records as read from the prompt file (``{"prompt": ..., **metadata}``). Plug one in
with ``instructrl eval --judge python:my_module:MyJudge`` (the attribute is called with no arguments).
Built in: ``rm:PATH`` (a reward model: higher score wins) and, in the miniature world, ``labelers``
(the held-out simulated labelers, each comparison judged by one of them in turn).
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from instructrl.config import SEED_MAX
from instructrl.errors import ConfigError
from instructrl.evaluate.metrics import outcome
from instructrl.evaluate.world_eval import HeldOutLabelerJudge
from instructrl.modeling.reward import load_frozen_reward


@runtime_checkable
class Judge(Protocol):
    name: str

    def compare(self, prompts: list[dict], responses: list[str], baselines: list[str]) -> list[float]: ...


class RewardModelJudge:
    """A reward model as judge: the response with the higher (normalized) reward wins; scores within
    ``tie_margin`` tie."""

    def __init__(self, path: str, tie_margin: float = 0.0, batch_size: int = 32):
        self.rm = load_frozen_reward(path)
        self.name = f"rm:{path}"
        self.tie_margin, self.batch_size = tie_margin, batch_size

    def scores(self, prompts: list[dict], responses: list[str]) -> list[float]:
        return self.rm.score([p["prompt"] for p in prompts], responses, batch_size=self.batch_size).tolist()

    def compare(self, prompts: list[dict], responses: list[str], baselines: list[str]) -> list[float]:
        a, b = self.scores(prompts, responses), self.scores(prompts, baselines)
        return [outcome(x, y, self.tie_margin) for x, y in zip(a, b)]


def load_judge(spec: str) -> Judge:
    """``rm:PATH``, ``labelers`` (miniature world) or ``python:module:attribute``."""
    kind, _, rest = spec.partition(":")
    if kind == "rm" and rest:
        return RewardModelJudge(rest)
    if kind == "labelers":
        if rest and not (rest.isdigit() and int(rest) <= SEED_MAX):
            raise ConfigError(f"--judge {spec}: the labelers' seed must be a whole number from 0 to {SEED_MAX}")
        return HeldOutLabelerJudge(seed=int(rest) if rest else 0)
    if kind == "python" and rest.count(":") == 1:
        module, attr = rest.split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"--judge {spec}: cannot load it ({e})") from None
        if not callable(factory):
            raise ConfigError(f"--judge {spec}: {attr} is a {type(factory).__name__}, not a class or function")
        judge = factory()
        if not isinstance(judge, Judge):
            raise ConfigError(f"--judge {spec}: the object has no name/compare(prompts, responses, baselines)")
        return judge
    raise ConfigError(f"--judge {spec!r}: expected rm:PATH, labelers, or python:module:attribute")
