"""Task types judged on their input only: summarize a passage, answer a question on it (closed QA),
rewrite a rude message politely, extract the names in a text.

Stating a fact the input does not support, even one true in the world, is a closed-domain
hallucination (InstructGPT §4.1, Table 3).
"""

from __future__ import annotations

import random
import re

from instructrl.world.constraints import add_constraints
from instructrl.world.corpus import passage, rude_message, story, word_problem
from instructrl.world.kb import ATTRIBUTES, KnowledgeBase, fact_sentence, question
from instructrl.world.names import insults_in
from instructrl.world.reading import Response, claims, f1, list_items, words
from instructrl.world.task_types.base import Style, TaskType, Verdict, gold_reference, join_items

TEXT_SILENT = "The text does not say."
_SILENT = re.compile(r"\b(does not say|doesn'?t say|not stated|not say|no answer|not mentioned)\b", re.I)
CLAUSES = {
    "capital": "its capital is {v}",
    "color": "its flag is {v}",
    "animal": "its national animal is the {v}",
    "food": "its people like to eat {v}",
    "region": "it lies in the {v}",
}


def _passage_claims(task: dict, r: Response, kb: KnowledgeBase) -> tuple[list, list]:
    """The response's claims, and those the passage does not state (any about another land)."""
    land = task["land"]
    cl = claims(r.text, kb, default_land=land, extra={land: task["facts"]})
    unsupported = [c for c in cl if c[0] != land or task["facts"].get(c[1]) != c[2]]
    return cl, unsupported


# ============================================================================ summarize


def make_summarize(kb, rng):
    land = kb.fresh_land(rng) if rng.random() < 0.5 else rng.choice(kb.known)
    stated = rng.sample(ATTRIBUTES, rng.randint(3, 4))
    text = passage(land, stated, rng)
    task = {
        "type": "summarize",
        "land": land.name,
        "facts": {a: land.value(a) for a in stated},
        "passage": text,
        "ideal_words": 12,
        "min_words": 9,
    }
    add_constraints(task, rng, ["max_words"], p=0.3)
    lead = rng.choice(
        ["Summarize this text in one sentence:", "Give a short summary of the following text.", "Summarize:"]
    )
    return f"{lead} {text}", task


def gold_summarize(kb: KnowledgeBase, task: dict, style: Style, rng: random.Random) -> str:
    a1, a2 = list(task["facts"])[:2]
    first = fact_sentence(task["land"], a1, task["facts"][a1], rng)
    if style.verbosity == 0:
        return first
    return first[:-1] + ", and " + CLAUSES[a2].format(v=task["facts"][a2]) + "."


def judge_summarize(task: dict, r: Response, kb: KnowledgeBase) -> Verdict:
    """Only stated facts, at least one, in fewer words than the passage."""
    cl, unsupported = _passage_claims(task, r, kb)
    supported = len(cl) - len(unsupported)
    correct = float(supported > 0 and not unsupported and len(r.words) < len(words(task["passage"])))
    return Verdict(correct, bool(unsupported), task["land"] in r.words)


SUMMARIZE = TaskType(
    "summarize", "summarization", 1.0, make_summarize, gold_summarize, judge_summarize, closed_domain=True, bare=True
)


# ============================================================================ closed QA


def make_closed_qa(kb, rng):
    land = kb.fresh_land(rng) if rng.random() < 0.6 else rng.choice(kb.known)
    stated = rng.sample(ATTRIBUTES, rng.randint(2, 3))
    attribute = rng.choice(stated) if rng.random() < 0.7 else rng.choice([a for a in ATTRIBUTES if a not in stated])
    text = passage(land, stated, rng)
    task = {
        "type": "closed_qa",
        "land": land.name,
        "facts": {a: land.value(a) for a in stated},
        "passage": text,
        "attribute": attribute,
        "ideal_words": 5,
        "min_words": 1,
        "constraints": [],
    }
    return f"Read the text and answer the question. Text: {text} Question: {question(land.name, attribute, rng)}", task


def gold_closed_qa(kb: KnowledgeBase, task: dict, style: Style, rng: random.Random) -> str:
    a = task["attribute"]
    if a not in task["facts"]:
        return TEXT_SILENT
    value = task["facts"][a]
    return value.capitalize() + "." if style.verbosity == 0 else fact_sentence(task["land"], a, value, rng)


def judge_closed_qa(task: dict, r: Response, kb: KnowledgeBase) -> Verdict:
    """The passage's value, or "the text does not say" when it does not state one."""
    cl, unsupported = _passage_claims(task, r, kb)
    text, ws, a = r.text, r.words, task["attribute"]
    if a in task["facts"]:
        value = task["facts"][a]
        hit = value in ws or value.lower() in {w.lower() for w in ws}
        return Verdict(float(hit and not unsupported), bool(unsupported), hit or bool(cl) or bool(_SILENT.search(text)))
    return Verdict(
        float(bool(_SILENT.search(text) or r.idk) and not cl),
        bool(unsupported),
        bool(_SILENT.search(text)) or r.idk or bool(cl),
    )


CLOSED_QA = TaskType("closed_qa", "closed_qa", 1.0, make_closed_qa, gold_closed_qa, judge_closed_qa, closed_domain=True)


# ============================================================================ polite rewrite


def make_polite_rewrite(kb, rng):
    rude, polite = rude_message(kb, rng)
    land = next(w for w in re.findall(r"[A-Z][a-z]+", rude) if w in kb.by_name)
    facts = {a: kb.by_name[land].value(a) for a in ATTRIBUTES if re.search(rf"\b{kb.by_name[land].value(a)}\b", rude)}
    task = {
        "type": "polite_rewrite",
        "message": rude,
        "land": land,
        "facts": facts,
        "reference": polite,
        "ideal_words": len(polite.split()),
        "min_words": 5,
        "constraints": [],
    }
    return rng.choice(["Rewrite this message so it is polite: ", "Make this reply kind and polite: "]) + rude, task


def judge_polite_rewrite(task: dict, r: Response, kb: KnowledgeBase) -> Verdict:
    """The message's land and facts kept, its insult gone."""
    land, text = task["land"], r.text
    cl = claims(text, kb, default_land=land)
    halluc = any(c[0] != land or task["facts"].get(c[1]) != c[2] for c in cl)
    kept = land in r.words and all(v.lower() in text.lower() for v in task["facts"].values())
    return Verdict(float(kept and not insults_in(text)), halluc, land in r.words)


POLITE_REWRITE = TaskType(
    "polite_rewrite",
    "rewrite",
    0.5,
    make_polite_rewrite,
    gold_reference,
    judge_polite_rewrite,
    closed_domain=True,
    bare=True,
)


# ============================================================================ extract


def make_extract(kb, rng):
    if rng.random() < 0.5:
        text = word_problem(kb, rng)[0]
        items = [w for w in re.findall(r"[A-Z][a-z]+", text) if w in kb.people]
        what = "people"
    else:
        sents, slots = story(kb, rng.choice(kb.known), rng)
        text = " ".join(sents[:3])
        items = [w for w in (slots["L"], slots["C"]) if w in text]
        what = "places"
    items = list(dict.fromkeys(items))
    task = {
        "type": "extract",
        "items": items,
        "passage": text,
        "ideal_words": len(items) + 2,
        "min_words": len(items),
        "constraints": [],
    }
    return f"List the {what} named in this text: {text}", task


def gold_extract(kb: KnowledgeBase, task: dict, style: Style, rng: random.Random) -> str:
    return join_items(task["items"], style, False)


def judge_extract(task: dict, r: Response, kb: KnowledgeBase) -> Verdict:
    """F1 of the listed names against the text's; a name not in the text is a hallucination."""
    items = list_items(r.text)
    return Verdict(
        f1(sorted(set(items)), sorted(task["items"])), any(i not in task["passage"] for i in items), bool(items)
    )


EXTRACT = TaskType(
    "extract", "extraction", 1.0, make_extract, gold_extract, judge_extract, closed_domain=True, bare=True
)
