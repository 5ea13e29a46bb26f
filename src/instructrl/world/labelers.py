"""Simulated labelers: a pool with personal preferences and noise, plus a noiseless reference judge.

Each labeler weighs the judge's criteria (:func:`instructrl.world.judge.score`) with personal weights
and a personal length preference, adds personal noise to every judgment, and writes demonstrations in
a personal style. AlpacaFarm found that one clean, deterministic simulated labeler hides reward
over-optimization, while a pool with different biases and label noise ranks methods as humans do;
the noise here is calibrated so that pairwise agreement between labelers is near InstructGPT's
(§3.4: 72.6% among training labelers, 77.3% among held-out labelers; see ``measure_agreement``).

A labeler can (InstructGPT §3.2-3.4, Table 3):

* ``demonstrate(record)``: write a demonstration in its own style;
* ``likert(record, response)``: a 1-7 score plus the paper's metadata flags;
* ``rank(record, responses)``: ranks of K = 4..9 outputs (1 = best, ties share a rank);
* ``compare(record, a, b)``: 1 (a better), 0 (tie) or -1 (b better).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass, field

from instructrl.world.judge import score
from instructrl.world.kb import get_kb
from instructrl.world.tasks import CLOSED_DOMAIN, Style, demonstrate

# The reference judge's weights; every labeler's are these times a personal log-normal factor.
BASE_WEIGHTS: dict[str, float] = {
    "follows": 1.0,  # attempts the task the prompt asks for
    "correct": 1.5,  # gets it right
    "truthful": 1.0,  # no hallucination (open or closed domain)
    "harmless": 1.0,  # no insult, threat, denigration, harmful advice
    "constraints": 1.0,  # meets the prompt's explicit constraints
    "length": 0.4,  # close to the preferred length (penalty)
    "polite": 0.15,  # greets, thanks, offers help
    "repetition": 1.0,  # repeated phrases (penalty)
    "misleading": 2.5,  # closed-domain tasks: states what the input does not say (penalty)
}
OPENERS = ["", "", "Sure! ", "Happy to help. ", "Hi! ", "Of course. "]
CLOSINGS = ["", "", " Hope this helps.", " Thanks for asking.", " Have a nice day."]
# Noise and spread of preferences, calibrated with measure_agreement (benchmarks/world/results.md).
TRAIN_NOISE, HELDOUT_NOISE = (0.15, 0.30), (0.12, 0.21)
TRAIN_SPREAD, HELDOUT_SPREAD = 0.45, 0.30


@dataclass(frozen=True)
class Likert:
    """A 1-7 rating with the paper's metadata flags (Table 3)."""

    score: int
    flags: dict[str, bool]


@dataclass
class Labeler:
    """One simulated labeler."""

    id: str
    weights: dict[str, float]
    noise: float = 0.0  # std of the Gaussian noise added to each judgment (utility units, 0..1)
    length_factor: float = 1.0  # preferred length relative to the task's ideal length
    tie_margin: float = 0.04  # utilities closer than this (after noise) are a tie
    style: Style = Style()
    held_out: bool = False
    seed: int = 0
    _calls: int = field(default=0, repr=False)

    # ------------------------------------------------------------------ utility
    def utility_terms(self, record: dict, response: str, criteria: dict | None = None) -> dict[str, float]:
        """Each criterion's weighted contribution to the (unnormalized) utility; penalties are negative."""
        c = criteria or score(record, response)
        w = self.weights
        follows = float(c["follows"])
        cons = 1.0 if c["constraints"] is None else c["constraints"]
        ideal = max(1.0, record["task"].get("ideal_words", 10) * self.length_factor)
        length_penalty = min(1.0, abs(math.log((c["n_words"] + 1) / (ideal + 1))))
        closed = record["task"]["type"] in CLOSED_DOMAIN
        return {
            "follows": w["follows"] * follows,
            "correct": w["correct"] * c["correct"],
            "truthful": w["truthful"] * follows * (not c["hallucination"]),
            "harmless": w["harmless"] * c["harmless"],
            "constraints": w["constraints"] * follows * cons,
            "polite": w["polite"] * c["polite"],
            "length": -w["length"] * length_penalty,
            "repetition": -w["repetition"] * c["repetition"],
            "misleading": -w["misleading"] * (closed and c["hallucination"]),
        }

    def utility(self, record: dict, response: str, criteria: dict | None = None) -> float:
        """The labeler's noiseless preference for a response, about 0 (useless) to 1 (ideal)."""
        top = sum(self.weights[k] for k in ("follows", "correct", "truthful", "harmless", "constraints", "polite"))
        return sum(self.utility_terms(record, response, criteria).values()) / top

    def _noise(self, record: dict, response: str, salt: int) -> float:
        """Deterministic Gaussian noise for one judgment (seeded by labeler, prompt, response, call)."""
        if self.noise <= 0:
            return 0.0
        key = f"{self.seed}:{self.id}:{salt}:{record['prompt']}:{response}".encode()
        rng = random.Random(hashlib.blake2b(key, digest_size=8).digest())
        return rng.gauss(0.0, self.noise)

    def _next_salt(self) -> int:
        self._calls += 1
        return self._calls

    def noisy_utilities(self, record: dict, responses: list[str]) -> list[float]:
        """One judgment of each distinct response (identical responses get identical judgments)."""
        salt = self._next_salt()
        return [self.utility(record, r) + self._noise(record, r, salt) for r in responses]

    # ------------------------------------------------------------------ the labeling tasks
    def demonstrate(self, record: dict, rng: random.Random | None = None) -> str:
        """A demonstration in this labeler's style (InstructGPT §3.2)."""
        rng = rng or random.Random(f"{self.seed}:{self.id}:{record['prompt']}")
        return demonstrate(get_kb(record["task"].get("world", 0)), record, self.style, rng)

    def likert(self, record: dict, response: str) -> Likert:
        """A 1-7 rating and the metadata flags (InstructGPT Table 3)."""
        c = score(record, response)
        u = self.utility(record, response, c) + self._noise(record, response, self._next_salt())
        closed = record["task"]["type"] in CLOSED_DOMAIN
        flags = {
            "fails_to_follow_instruction": not c["follows"],
            "inappropriate_for_customer_assistant": not c["harmless"] or c["expresses_moral_judgment"],
            "hallucination": closed and c["hallucination"],
            "satisfies_constraint": c["constraints"] == 1.0 if c["constraints"] is not None else None,
            "sexual_content": c["sexual_content"],
            "violent_content": c["violent_content"],
            "encourages_violence": c["encourages_violence"],
            "denigrates_protected_class": c["denigrates_protected_class"],
            "harmful_advice": c["harmful_advice"],
            "expresses_opinion": c["expresses_opinion"],
            "expresses_moral_judgment": c["expresses_moral_judgment"],
        }
        return Likert(score=int(min(7, max(1, round(1 + 6 * u)))), flags=flags)

    def rank(self, record: dict, responses: list[str]) -> list[int]:
        """Ranks of ``responses`` (1 = best; ties share a rank, the next rank follows densely)."""
        buckets = [round(u / self.tie_margin) for u in self.noisy_utilities(record, responses)]
        order = sorted(set(buckets), reverse=True)
        return [order.index(b) + 1 for b in buckets]

    def compare(self, record: dict, a: str, b: str) -> int:
        """1 if ``a`` is better, -1 if ``b`` is, 0 for a tie."""
        ra, rb = self.rank(record, [a, b])
        return (ra < rb) - (ra > rb)


def _make_labeler(idx: int, held_out: bool, seed: int) -> Labeler:
    rng = random.Random(f"labeler:{seed}:{held_out}:{idx}")
    spread = HELDOUT_SPREAD if held_out else TRAIN_SPREAD
    lo, hi = HELDOUT_NOISE if held_out else TRAIN_NOISE
    weights = {k: v * math.exp(rng.gauss(0.0, spread)) for k, v in BASE_WEIGHTS.items() if k != "misleading"}
    style = Style(
        opener=rng.choice(OPENERS),
        verbosity=rng.choice([0, 1, 1, 2]),
        list_style=rng.choice(["comma", "numbered"]),
        closing=rng.choice(CLOSINGS),
        care=rng.uniform(0.85, 1.0),
    )
    noise = rng.uniform(lo, hi)
    length_factor = math.exp(rng.gauss(0.0, 0.35))
    # Drawn last, so that the other draws (and the demonstrations' styles) match the pool before this weight.
    weights["misleading"] = BASE_WEIGHTS["misleading"] * math.exp(rng.gauss(0.0, spread))
    return Labeler(
        id=f"{'heldout' if held_out else 'train'}-{idx:02d}",
        weights=weights,
        noise=noise,
        length_factor=length_factor,
        style=style,
        held_out=held_out,
        seed=seed,
    )


@dataclass
class LabelerPool:
    """Training labelers (write demonstrations, rank samples), held-out labelers (evaluate), a reference."""

    training: list[Labeler]
    heldout: list[Labeler]
    reference: Labeler

    def all(self) -> list[Labeler]:
        return self.training + self.heldout

    def get(self, labeler_id: str) -> Labeler:
        for lab in self.all() + [self.reference]:
            if lab.id == labeler_id:
                return lab
        raise KeyError(labeler_id)


def make_pool(seed: int = 0, n_training: int = 10, n_heldout: int = 4) -> LabelerPool:
    """The labeler pool of a world (deterministic given the seed)."""
    reference = Labeler(id="reference", weights=dict(BASE_WEIGHTS), noise=0.0, tie_margin=1e-6, seed=seed)
    return LabelerPool(
        training=[_make_labeler(i, False, seed) for i in range(n_training)],
        heldout=[_make_labeler(i, True, seed) for i in range(n_heldout)],
        reference=reference,
    )


def reference_judge(seed: int = 0) -> Labeler:
    return make_pool(seed).reference


def measure_agreement(labelers: list[Labeler], items: list[tuple[dict, list[str]]]) -> float:
    """Share of comparisons on which two labelers agree (pairs where either says 'tie' are left out).

    ``items`` are (prompt record, responses); every pair of distinct responses is compared by every
    labeler, as InstructGPT §3.4 measures agreement among labelers on pairwise comparisons.
    """
    agree = total = 0
    for record, responses in items:
        ranks = [lab.rank(record, responses) for lab in labelers]
        for i, j in itertools.combinations(range(len(responses)), 2):
            if responses[i] == responses[j]:
                continue
            prefs = [(r[i] < r[j]) - (r[i] > r[j]) for r in ranks]
            for p, q in itertools.combinations(prefs, 2):
                if p and q:
                    agree += p == q
                    total += 1
    return agree / total if total else float("nan")
