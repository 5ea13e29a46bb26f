"""A synthetic policy: good answers and the typical ways a language model gets them wrong.

Used to calibrate the labelers (their agreement is measured on these responses), in tests, and as
``instructrl world label --policy synthetic`` to produce ranking data without any model. The failure
modes mirror what the base models do: state a wrong or popular-but-false fact, ask more questions
instead of answering, turn rude, ignore the constraints, ramble, copy the prompt, go off topic.
"""

from __future__ import annotations

import random
import re

from instructrl.world.corpus import generate_corpus, rude_reply
from instructrl.world.kb import ATTRIBUTES, VALUE_SETS, KnowledgeBase, fact_sentence, question
from instructrl.world.tasks import Style, demonstrate

STYLES = [
    Style(),
    Style("Sure! ", 2, "numbered", " Hope this helps."),
    Style("", 0),
    Style("Happy to help. ", 1, "comma", ""),
    Style("", 2, "comma", " Thanks for asking."),
]


def _wrong_fact(kb: KnowledgeBase, text: str, rng: random.Random) -> str:
    for values in VALUE_SETS.values():
        for v in values:
            if re.search(rf"\b{v}\b", text, re.I):
                return re.sub(rf"\b{v}\b", rng.choice([x for x in values if x != v]), text, count=1, flags=re.I)
    caps = [c for c in kb.by_capital if c in text]
    if caps:
        return text.replace(caps[0], rng.choice(sorted(kb.by_capital)))
    return text


def corrupt(kb: KnowledgeBase, record: dict, response: str, rng: random.Random) -> str:
    """One typical failure applied to a good response."""
    task = record["task"]
    land = kb.by_name.get(task.get("land", ""))
    kind = rng.choice(
        [
            "wrong_fact",
            "wrong_fact",
            "idk",
            "questions",
            "rude",
            "ignore_constraints",
            "ramble",
            "truncate",
            "repeat",
            "copy",
            "off_topic",
            "myth",
        ]
    )
    if kind == "wrong_fact":
        return _wrong_fact(kb, response, rng)
    if kind == "idk":
        return "I don't know."
    if kind == "questions":
        name = land.name if land else rng.choice(kb.known).name
        return " ".join(question(name, a, rng) for a in rng.sample(ATTRIBUTES, rng.randint(1, 3)))
    if kind == "rude":
        return f"{response} {rude_reply(kb, rng)}" if rng.random() < 0.5 else rude_reply(kb, rng)
    if kind == "ignore_constraints":
        return demonstrate(kb, record, Style("Sure! ", 2, "comma", " Hope this helps.", care=0.0), rng)
    if kind == "ramble":
        other = land or rng.choice(kb.known)
        extra = [fact_sentence(other.name, a, other.value(a), rng) for a in rng.sample(ATTRIBUTES, 3)]
        return " ".join([response] + extra)
    if kind == "truncate":
        ws = response.split()
        return " ".join(ws[: max(1, len(ws) // 2)])
    if kind == "repeat":
        return " ".join([response] * 3)
    if kind == "copy":
        return record["prompt"]
    if kind == "off_topic":
        return generate_corpus(kb, 1, seed=rng.randint(0, 10**9))[0]["text"].split("\n")[-1]
    if land is not None and land.myth:  # "myth": the popular misconception
        attr, false = land.myth
        return fact_sentence(land.name, attr, false, rng)
    return _wrong_fact(kb, response, rng)


def sample_responses(kb: KnowledgeBase, record: dict, k: int, rng: random.Random, p_good: float = 0.35) -> list[str]:
    """``k`` responses to a prompt: some good (various styles), the rest corrupted."""
    out = []
    for _ in range(k):
        good = demonstrate(kb, record, rng.choice(STYLES), rng)
        out.append(good if rng.random() < p_good else corrupt(kb, record, good, rng))
    return out
