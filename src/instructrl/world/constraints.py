"""Explicit constraints (InstructGPT §4.1 "follows explicit constraints"): drawn for a prompt, phrased
in it, checked on a response.

A constraint is a dict ``{"type", ...}``: at most ``n`` words, include / avoid / start with a
``word``, one sentence, a numbered list. Each task type's maker says which kinds its prompts may carry.
"""

from __future__ import annotations

import random
import re

from instructrl.world.kb import ATTRIBUTES
from instructrl.world.reading import sentences

# included word -> the sentence a demonstration adds to include it
INCLUDE_WORDS = {
    "lovely": "What a lovely question.",
    "truly": "I truly hope this helps.",
    "friend": "Have a nice day, friend.",
    "indeed": "It is indeed so.",
    "sunny": "Have a sunny day.",
}
START_WORDS = ["Well", "Okay", "So", "Yes"]
# attribute -> the word to avoid (never one of the attributes the prompt asks about)
AVOID_WORDS = {"capital": "capital", "color": "flag", "animal": "animal", "food": "eat", "region": "lies"}


def constraint_text(c: dict) -> str:
    kind = c["type"]
    if kind == "max_words":
        return f"Use at most {c['n']} words."
    if kind == "include":
        return f"Use the word '{c['word']}'."
    if kind == "avoid":
        return f"Do not use the word '{c['word']}'."
    if kind == "one_sentence":
        return "Answer in one sentence."
    if kind == "start_with":
        return f"Start your answer with '{c['word']}'."
    if kind == "numbered":
        return "Answer as a numbered list."
    raise ValueError(kind)


def add_constraints(task: dict, rng: random.Random, kinds: list[str], p: float = 0.35) -> None:
    task["constraints"] = []
    if rng.random() >= p:
        return
    chosen = rng.sample(kinds, 2 if len(kinds) > 1 and rng.random() < 0.2 else 1)
    if "include" in chosen and ("max_words" in chosen or "one_sentence" in chosen):
        chosen = ["include"]  # the included word comes in a sentence of its own
    for kind in chosen:
        c: dict = {"type": kind}
        if kind == "max_words":
            c["n"] = task["min_words"] + rng.randint(1, 4)
        elif kind == "include":
            c["word"] = rng.choice(sorted(INCLUDE_WORDS))
        elif kind == "avoid":
            attr = rng.choice([a for a in ATTRIBUTES if a not in task.get("asked", [])])
            c["word"] = AVOID_WORDS[attr]
        elif kind == "start_with":
            c["word"] = rng.choice(START_WORDS)
        task["constraints"].append(c)


def prompt_with_constraints(text: str, task: dict) -> str:
    return " ".join([text] + [constraint_text(c) for c in task["constraints"]])


def constraint_ok(c: dict, text: str) -> bool:
    kind = c["type"]
    if kind == "max_words":
        return 0 < len(text.split()) <= c["n"]
    if kind == "include":
        return re.search(rf"\b{c['word']}\b", text, re.I) is not None
    if kind == "avoid":
        return re.search(rf"\b{c['word']}\b", text, re.I) is None
    if kind == "one_sentence":
        return len(sentences(text)) == 1
    if kind == "start_with":
        first = text.split()[0].strip(",.!:;") if text.split() else ""
        return first.lower() == c["word"].lower()
    if kind == "numbered":
        return bool(re.search(r"^\s*1[.)]", text, re.M) and re.search(r"^\s*2[.)]", text, re.M))
    raise ValueError(kind)
