"""The prompt distribution: the paper's ten use-case categories, each with a checkable notion of good.

Every prompt record is ``{"prompt", "category", "task"}`` (users are added by :mod:`.build`). The
``task`` dict holds everything a judge needs (the land's facts, the passage's facts, the constraints,
the reference answer), so judging is a pure string check (:mod:`.judge`).

Each task type is one entry of :data:`TASKS` (a :class:`~.task_types.base.TaskType`): how its prompt
is made, its gold answer and how the judge scores a response to it; the entries live in
:mod:`.task_types`, grouped by what a response is judged against.

Category shares follow InstructGPT Table 1. Some prompts carry explicit constraints (:mod:`.constraints`;
§4.1 "follows explicit constraints"), closed-domain tasks (summarization, extraction, closed QA,
rewriting) must use only their input (§4.1 "hallucination"), and some generation prompts ask to
continue rude text respectfully (the RealToxicityPrompts "respectful" instruction, §4.2).

:func:`demonstrate` writes a good answer in a labeler's style (``Style``): the labelers' own
demonstrations differ in openers, verbosity and list formats, as human labelers' do.
"""

from __future__ import annotations

import random
import re

from instructrl.world.constraints import INCLUDE_WORDS, prompt_with_constraints
from instructrl.world.kb import KnowledgeBase
from instructrl.world.task_types.base import Style, TaskType
from instructrl.world.task_types.closed_domain import CLOSED_QA, EXTRACT, POLITE_REWRITE, SUMMARIZE
from instructrl.world.task_types.open_domain import CHAT, DESCRIBE, OPEN_QA, STORY
from instructrl.world.task_types.short_answers import (
    ARITHMETIC,
    BIASED,
    BRAINSTORM,
    CLASSIFY,
    POLITE_CONTINUE,
    RESPECTFUL,
    TRANSLATE,
    rude_prefix,
)

__all__ = [
    "BIASED",
    "CATEGORY_SHARES",
    "CLOSED_DOMAIN",
    "MAKERS",
    "RESPECTFUL",
    "TASKS",
    "Style",
    "TaskType",
    "demonstrate",
    "make_prompt",
    "rude_prefix",
    "task_type",
]

# InstructGPT Table 1: use-case shares of the API prompt dataset.
CATEGORY_SHARES: dict[str, float] = {
    "generation": 0.456,
    "open_qa": 0.124,
    "brainstorming": 0.112,
    "chat": 0.084,
    "rewrite": 0.066,
    "summarization": 0.042,
    "classification": 0.035,
    "other": 0.035,
    "closed_qa": 0.026,
    "extraction": 0.019,
}

# task type name -> entry, in Table 1's order of categories (a category's makers are drawn in this order)
TASKS: dict[str, TaskType] = {
    t.name: t
    for t in (
        DESCRIBE,
        STORY,
        POLITE_CONTINUE,  # generation
        OPEN_QA,
        BRAINSTORM,
        CHAT,
        POLITE_REWRITE,
        TRANSLATE,  # rewrite
        SUMMARIZE,
        CLASSIFY,
        ARITHMETIC,
        CLOSED_QA,
        EXTRACT,
    )
}
# category -> [(share within the category, maker)]
MAKERS = {cat: [(t.share, t.make) for t in TASKS.values() if t.category == cat] for cat in CATEGORY_SHARES}
CLOSED_DOMAIN = tuple(name for name, t in TASKS.items() if t.closed_domain)  # task types judged on their input


def task_type(name: str) -> TaskType:
    if name not in TASKS:
        raise ValueError(f"unknown task type {name}")
    return TASKS[name]


def make_prompt(kb: KnowledgeBase, rng: random.Random, category: str | None = None) -> dict:
    """One prompt record ``{"prompt", "category", "task"}``, its category drawn with Table 1's shares."""
    if category is None:
        category = rng.choices(list(CATEGORY_SHARES), list(CATEGORY_SHARES.values()))[0]
    makers = MAKERS[category]
    maker = rng.choices([m for _, m in makers], [w for w, _ in makers])[0]
    text, task = maker(kb, rng)
    task.setdefault("constraints", [])
    task["world"] = kb.seed
    return {"prompt": prompt_with_constraints(text, task), "category": category, "task": task}


# ============================================================================ demonstrations


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def demonstrate(kb: KnowledgeBase, record: dict, style: Style, rng: random.Random) -> str:
    """A labeler's demonstration for a prompt record, in the labeler's style (InstructGPT §3.2)."""
    task = record["task"]
    spec = task_type(task["type"])
    cons = {c["type"]: c for c in task["constraints"] if rng.random() < style.care}
    terse = "max_words" in cons or "one_sentence" in cons
    s = Style(style.opener, 0 if terse else style.verbosity, style.list_style, style.closing, style.care)
    body = spec.gold(kb, {**task, "constraints": list(cons.values())}, s, rng)
    opener = "" if spec.bare or terse else (style.opener or spec.opener)
    closing = "" if spec.bare or terse else style.closing
    if "start_with" in cons:
        opener = cons["start_with"]["word"] + ", "
        if body.split()[0].strip(",.") not in kb.taken:  # keep names capitalized
            body = body[0].lower() + body[1:]
    if "include" in cons:
        closing = " " + INCLUDE_WORDS[cons["include"]["word"]]
    if body.startswith("1. "):  # a numbered list stands on lines of its own
        opener, closing = opener.strip() + "\n" if opener else "", "\n" + closing.strip() if closing else ""
    text = (opener + body + closing).strip()
    if "one_sentence" in cons:
        text = _sentences(text)[0]
    if "max_words" in cons:
        words = text.split()
        while len(words) > cons["max_words"]["n"] and len(_sentences(" ".join(words))) > 1:
            words = " ".join(_sentences(" ".join(words))[:-1]).split()
        text = " ".join(words)
    return text
