"""What a response says, as the judges read it: sentences, words, the facts it claims, its list items.

Shared by every task type's judge (:mod:`.task_types`) and the criteria all responses get
(:mod:`.judge`). Everything is a regular expression or a set look-up.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from instructrl.world.kb import VALUE_SETS, KnowledgeBase, get_kb

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z]+|\d+")
_CUES = {
    "capital": {"capital"},
    "color": {"flag", "flags"},
    "animal": {"animal"},
    "food": {"eat", "eats", "ate", "food", "dish", "favorite"},
    "region": {"lies", "region", "land", "find"},
}
_IDK = re.compile(r"\b(i don'?t know|i do not know|never heard of|not sure|i have no idea)\b", re.I)
# "capital" statements naming any city, even one the world does not have: (pattern, land group, city group)
_GENERIC_CAPITAL = [
    (re.compile(r"capital of ([A-Z][a-z]+) is ([A-Z][a-z]+)"), 1, 2),
    (re.compile(r"([A-Z][a-z]+) is the capital of ([A-Z][a-z]+)"), 2, 1),
    (re.compile(r"([A-Z][a-z]+) has its capital at ([A-Z][a-z]+)"), 1, 2),
]


def sentences(text: str) -> list[str]:
    return [s for s in _SENT_SPLIT.split(text.strip()) if s.strip()]


def words(text: str) -> list[str]:
    return _WORD.findall(text)


@dataclass(frozen=True)
class Response:
    """A response as every judge reads it (see :func:`read`)."""

    text: str  # stripped
    words: list[str]
    sentences: list[str]
    idk: bool  # says "I don't know" (or "never heard of", "not sure", ...)


def read(response: str) -> Response:
    text = response.strip()
    return Response(text, words(text), sentences(text), bool(_IDK.search(text)))


@lru_cache(maxsize=8)
def vocab(seed: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    """(lower-case value word -> attribute, capital name -> land, land -> facts) of world ``seed``."""
    kb = get_kb(seed)
    value_attr = {v: a for a, vs in VALUE_SETS.items() for v in vs}
    return value_attr, {x.capital: x.name for x in kb.lands}, {x.name: x.facts() for x in kb.lands}


def claims(
    text: str, kb: KnowledgeBase, default_land: str | None = None, extra: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """Facts a text asserts, as (land, attribute, value).

    A sentence asserts an attribute when it has the attribute's cue word ("flag", "animal", ...) and
    a value; its subject is the first land it names, else ``default_land``. ``extra`` adds lands
    that are not in the knowledge base (the fresh lands of closed-domain passages).
    """
    value_attr, capital_land, _ = vocab(kb.seed)
    extra = extra or {}
    lands = kb.land_names | set(extra)
    capitals = set(capital_land) | {f["capital"] for f in extra.values() if "capital" in f}
    out: list[tuple[str, str, str]] = []
    for sent in sentences(text):
        ws = words(sent)
        lower = {w.lower() for w in ws}
        named = [w for w in ws if w in lands]
        subject = named[0] if named else default_land
        if subject is None:
            continue
        for pattern, land_group, city_group in _GENERIC_CAPITAL:
            for m in pattern.finditer(sent):
                land, city = m.group(land_group), m.group(city_group)
                if land in lands and city not in lands:
                    out.append((land, "capital", city))
        if "capital" in lower and not any(c[1] == "capital" and c[0] == subject for c in out):
            for w in ws:
                if w in capitals:
                    out.append((subject, "capital", w))
        for w in ws:
            attr = value_attr.get(w.lower())
            if attr and attr != "capital" and lower & _CUES[attr]:
                if attr == "region" and not (
                    {"lies", "region", "find"} & lower or "in the " + w.lower() in sent.lower()
                ):
                    continue
                out.append((subject, attr, w.lower()))
    return list(dict.fromkeys(out))


_FILLER = re.compile(r"^(sure|hi|hello|well|okay|so|yes|here.*|hope this helps|happy to help|thanks?.*)$", re.I)


def list_items(text: str) -> list[str]:
    """Items of a list answer: its numbered lines if it has any, else comma / 'and' separated parts."""
    numbered = re.findall(r"^\s*\d+[.)]\s*(.+)$", text, re.M)
    if numbered:
        parts = numbered
    else:
        first = text.split("\n", 1)[0]
        body = text.split(":", 1)[1] if ":" in first else text
        parts = re.split(r"\n|,|\band\b|(?<=[.!?])\s", body)
    out = []
    for p in parts:
        p = p.strip(" .!-*")
        if p and len(p.split()) <= 3 and not _FILLER.match(p):
            out.append(p)
    return out


def f1(pred: list[str], gold: list[str]) -> float:
    """Token F1 of two token lists (both empty: 1)."""
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold or not common:
        return float(pred == gold)
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)
