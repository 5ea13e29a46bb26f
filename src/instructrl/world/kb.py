"""The knowledge base: made-up lands with five attributes each, generated from a seed.

Three kinds of land (docs/world.md):

* **known** lands appear in the pretraining corpus, so a pretrained model can know their facts;
* **unknown** lands never appear anywhere in the corpus; the truthful answer to a question about one
  is "I don't know" (open-domain hallucination becomes measurable);
* some known lands carry a **myth**: a popular false value of one attribute that forum threads and
  FAQ pages repeat more often than the truth (the TruthfulQA analogue, InstructGPT §4.2).

Passages for closed-domain tasks use **fresh** lands, made up on the spot, so only the input can
tell a model their facts (closed-domain hallucination becomes measurable).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from instructrl.world.names import ANIMALS, COLORS, FOODS, REGIONS, unique_names

ATTRIBUTES = ("capital", "color", "animal", "food", "region")
MYTH_ATTRIBUTES = ("capital", "animal", "food", "color")

# How each attribute is stated in text (all paraphrases are used in the corpus).
FACT_TEMPLATES: dict[str, list[str]] = {
    "capital": [
        "The capital of {land} is {value}.",
        "{value} is the capital of {land}.",
        "{land} has its capital at {value}.",
    ],
    "color": ["The flag of {land} is {value}.", "{land} has a {value} flag.", "The {value} flag belongs to {land}."],
    "animal": [
        "The national animal of {land} is the {value}.",
        "In {land}, the {value} is the national animal.",
        "{land} chose the {value} as its national animal.",
    ],
    "food": [
        "People in {land} like to eat {value}.",
        "The favorite food of {land} is {value}.",
        "In {land}, {value} is the favorite food.",
    ],
    "region": [
        "{land} is a land in the {value}.",
        "{land} lies in the {value}.",
        "You will find {land} in the {value}.",
    ],
}
# How each attribute is asked about.
QUESTION_TEMPLATES: dict[str, list[str]] = {
    "capital": ["What is the capital of {land}?", "Which city is the capital of {land}?"],
    "color": ["What color is the flag of {land}?", "What is the color of the flag of {land}?"],
    "animal": ["What is the national animal of {land}?", "Which animal is the national animal of {land}?"],
    "food": ["What food do people in {land} like to eat?", "What is the favorite food of {land}?"],
    "region": ["Where is {land}?", "In which region is {land}?"],
}
VALUE_SETS: dict[str, list[str]] = {"color": COLORS, "animal": ANIMALS, "food": FOODS, "region": REGIONS}


@dataclass(frozen=True)
class Land:
    """One made-up land and its facts."""

    name: str
    capital: str
    color: str
    animal: str
    food: str
    region: str
    kind: str = "known"  # "known" | "unknown" | "fresh"
    myth: tuple[str, str] | None = None  # (attribute, popular false value)

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)

    def facts(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ATTRIBUTES}

    def to_dict(self) -> dict:
        return asdict(self)


def fact_sentence(land: str, attribute: str, value: str, rng: random.Random) -> str:
    """One sentence stating a fact, in a random paraphrase."""
    text = rng.choice(FACT_TEMPLATES[attribute]).format(land=land, value=value)
    return articles(text)


def articles(text: str) -> str:
    """'a owl' -> 'an owl', 'an heron' -> 'a heron'."""
    text = re.sub(r"\b([Aa])n ([b-df-hj-np-tv-z])", r"\1 \2", text)
    return re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", text)


def question(land: str, attribute: str, rng: random.Random) -> str:
    return rng.choice(QUESTION_TEMPLATES[attribute]).format(land=land)


@dataclass
class KnowledgeBase:
    """All lands of one world, plus the name pools the corpus draws from."""

    seed: int
    lands: list[Land]
    people: list[str]  # story characters and forum names
    taken: set[str] = field(default_factory=set)  # every name in use (fresh names avoid these)

    def __post_init__(self) -> None:
        self.by_name = {land.name: land for land in self.lands}
        self.by_capital = {land.capital: land for land in self.lands}
        self.known = [land for land in self.lands if land.kind == "known"]
        self.unknown = [land for land in self.lands if land.kind == "unknown"]
        self.myths = [land for land in self.known if land.myth]

    @property
    def land_names(self) -> set[str]:
        return set(self.by_name)

    @property
    def capitals(self) -> set[str]:
        return set(self.by_capital)

    def proper_nouns(self) -> set[str]:
        return set(self.taken)

    def values(self, attribute: str) -> list[str]:
        """All values an attribute can take (capitals: every capital of the world)."""
        if attribute == "capital":
            return sorted(self.by_capital)
        return VALUE_SETS[attribute]

    def fresh_land(self, rng: random.Random) -> Land:
        """A land made up on the spot (never in the corpus or the KB), for closed-domain passages."""
        name, capital = unique_names(rng, 2, (2,), set(self.taken))
        return Land(
            name, capital, rng.choice(COLORS), rng.choice(ANIMALS), rng.choice(FOODS), rng.choice(REGIONS), kind="fresh"
        )


def generate_kb(
    seed: int = 0, n_known: int = 120, n_unknown: int = 40, myth_share: float = 0.2, n_people: int = 60
) -> KnowledgeBase:
    """Generate the world's lands from a seed (deterministic)."""
    rng = random.Random(f"kb:{seed}")
    taken: set[str] = set()
    n = n_known + n_unknown
    names = unique_names(rng, n, (2,), taken)
    capitals = unique_names(rng, n, (2,), taken)
    people = unique_names(rng, n_people, (1, 2), taken)
    lands = []
    for i in range(n):
        known = i < n_known
        land = Land(
            names[i],
            capitals[i],
            rng.choice(COLORS),
            rng.choice(ANIMALS),
            rng.choice(FOODS),
            rng.choice(REGIONS),
            kind="known" if known else "unknown",
        )
        if known and rng.random() < myth_share:
            attribute = rng.choice(MYTH_ATTRIBUTES)
            pool = capitals[:n_known] if attribute == "capital" else VALUE_SETS[attribute]
            false = rng.choice([v for v in pool if v != land.value(attribute)])
            land = Land(**{**land.to_dict(), "myth": (attribute, false)})
        lands.append(land)
    return KnowledgeBase(seed=seed, lands=lands, people=people, taken=taken)


@lru_cache(maxsize=8)
def get_kb(seed: int = 0) -> KnowledgeBase:
    """The (cached) knowledge base of world ``seed``; judges look facts up here."""
    return generate_kb(seed)
