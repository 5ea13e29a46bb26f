"""What a task type is, and what several task types share."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from instructrl.world.kb import KnowledgeBase
from instructrl.world.reading import Response


@dataclass(frozen=True)
class Style:
    """How one labeler writes demonstrations."""

    opener: str = ""  # "Sure! ", "Happy to help. ", ...
    verbosity: int = 1  # 0 minimal, 1 one full sentence, 2 with extra detail
    list_style: str = "comma"  # "comma" | "numbered"
    closing: str = ""  # " Hope this helps.", ...
    care: float = 1.0  # probability of honouring each explicit constraint


class Verdict(NamedTuple):
    """A task type's own criteria of a response (:func:`instructrl.world.judge.score` adds the rest)."""

    correct: float  # 0..1, task accuracy against the reference
    hallucination: bool  # a claim the world (open domain) or the input (closed domain) does not support
    on_task: bool  # it addresses this task (names the land, gives a number, ...); part of ``follows``


@dataclass(frozen=True)
class TaskType:
    """One kind of prompt: how it is made, its gold answer and how a response to it is judged."""

    name: str  # the record's task["type"]
    category: str  # its use case in InstructGPT Table 1 (a key of CATEGORY_SHARES)
    share: float  # its share of the category's prompts
    make: Callable[[KnowledgeBase, random.Random], tuple[str, dict]]  # -> (prompt text, task dict)
    gold: Callable[[KnowledgeBase, dict, Style, random.Random], str]  # a good answer's content
    judge: Callable[[dict, Response, KnowledgeBase], Verdict]
    closed_domain: bool = False  # judged on its input only (§4.1: closed-domain hallucination)
    bare: bool = False  # demonstrations carry no opener or closing (a label, a number, a rewrite)
    opener: str = ""  # a demonstration's opener when the labeler's style has none
    success_at: float = 0.99  # the ``correct`` a success needs


def join_items(items: list[str], style: Style, numbered: bool) -> str:
    if numbered or style.list_style == "numbered":
        return "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items))
    if len(items) == 1:
        return items[0] + "."
    return ", ".join(items[:-1]) + " and " + items[-1] + "."


def gold_reference(kb: KnowledgeBase, task: dict, style: Style, rng: random.Random) -> str:
    """The task's reference answer, as it stands (a polite rewrite, a translation)."""
    return task["reference"]
