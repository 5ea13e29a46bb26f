"""The pretraining corpus ("web text") drawn from the knowledge base.

Each document type carries one skill in its own format, never in the instruction format of the chat
template: a pretrained model knows the facts and the formats but does not follow instructions.
Supervised fine-tuning then only has to unlock what the corpus already carries (machine notes: ~7%
FAQ-like documents are what let SFT on a few hundred demonstrations generalize). Here about a fifth
of the documents are question-and-answer formats (FAQ, reading comprehension, word problems,
summaries, moderation logs).

The text builders used by the prompt distribution and the benchmarks (passages, stories, word
problems, rude replies) live here too, so every format has one definition.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from instructrl.world.kb import ATTRIBUTES, KnowledgeBase, Land, articles, fact_sentence, question
from instructrl.world.names import (
    ANIMALS,
    COLORS,
    FOODS,
    HARMFUL_ADVICE,
    INSULTS,
    REGIONS,
    RUDE_OPENERS,
    VIOLENT,
    to_velan,
)

NOT_STATED = "not stated"  # the reading-comprehension answer when the passage does not say

# ============================================================================ shared text builders


def passage(land: Land, attributes: list[str], rng: random.Random) -> str:
    """A short encyclopedic passage stating the given attributes of a land."""
    return " ".join(fact_sentence(land.name, a, land.value(a), rng) for a in attributes)


def story(
    kb: KnowledgeBase, land: Land, rng: random.Random, cast: tuple[str, str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """A five-sentence story set in a land (its facts are the land's true facts) and its slots.

    The sentences follow a fixed arc (introduction, habit, journey, the capital, the ending), so the
    next sentence is predictable (the HellaSwag analogue). ``cast`` = (hero, friend, animal) reuses
    characters; by default they are drawn at random.
    """
    if cast is None:
        hero, friend = rng.sample(kb.people, 2)
        animal = rng.choice(ANIMALS)
    else:
        hero, friend, animal = cast
    first = rng.choice(
        [
            "{h} was a young {a} who lived in {L}.",
            "Once upon a time, a {a} named {h} lived in {L}.",
            "In {L} there lived a small {a} called {h}.",
        ]
    )
    second = rng.choice(
        [
            "Every morning, {h} ate {f} with a friend named {m}.",
            "{h} liked to share {f} with a friend named {m}.",
            "Each day {h} and a friend named {m} cooked {f}.",
        ]
    )
    third = rng.choice(
        [
            "One day, {h} and {m} walked to {C}, the capital of {L}.",
            "One morning, {h} and {m} set out for {C}.",
            "Later, {h} and {m} travelled to the city of {C}.",
        ]
    )
    fourth = rng.choice(
        [
            "Above the gate of {C} hung the {c} flag of {L}.",
            "In {C} they saw the {c} flag of {L} everywhere.",
            "The streets of {C} were full of {c} flags.",
        ]
    )
    last = rng.choice(
        [
            "{h} and {m} bought some {f} and went home happy.",
            "At night {h} told {m} that {C} was the best city in {L}.",
            "Then {h} and {m} ate {f} together and went to sleep.",
        ]
    )
    slots = dict(h=hero, m=friend, a=animal, L=land.name, C=land.capital, c=land.color, f=land.food)
    return [articles(s.format(**slots)) for s in (first, second, third, fourth, last)], slots


def word_problem(kb: KnowledgeBase, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """A market passage with counts, and questions whose answers need addition or comparison (DROP)."""
    a, b = rng.sample(kb.people, 2)
    f1, f2 = rng.sample(FOODS, 2)
    land = rng.choice(kb.known)
    x, y, z = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    text = (
        f"At the market in {land.capital}, {a} sold {x} bags of {f1} and {b} sold {y} bags of {f1}. "
        f"Later {a} sold {z} bags of {f2}."
    )
    more = a if x > y else b
    qas = [
        (f"How many bags of {f1} were sold in all?", str(x + y)),
        (f"How many bags did {a} sell?", str(x + z)),
        (f"How many bags of {f2} did {a} sell?", str(z)),
    ]
    if x != y:
        qas.append((f"Who sold more bags of {f1}?", more))
    rng.shuffle(qas)
    return text, qas


def rude_reply(kb: KnowledgeBase, rng: random.Random) -> str:
    """A rude forum reply built from the made-up insult lexicon."""
    insult = rng.choice(INSULTS)
    land = rng.choice(kb.known).name
    return rng.choice(
        [
            f"{rng.choice(RUDE_OPENERS)}, you {insult}.",
            f"{rng.choice(RUDE_OPENERS)}. People from {land} are all {insult}s.",
            f"{rng.choice(VIOLENT)}, you {insult}!",
            f"Who cares, {rng.choice(HARMFUL_ADVICE)}, you {insult}.",
            f"Only a {insult} would ask that.",
        ]
    )


def polite_reply(kb: KnowledgeBase, land: Land, attribute: str, value: str, rng: random.Random) -> str:
    fact = fact_sentence(land.name, attribute, value, rng)
    return rng.choice([f"Good question! {fact}", f"{fact} Hope this helps.", f"Thanks for asking. {fact}", fact])


def rude_message(kb: KnowledgeBase, rng: random.Random) -> tuple[str, str]:
    """A rude message and the moderator's polite edit of it (same content, no insult)."""
    land = rng.choice(kb.known)
    attribute = rng.choice(["capital", "color", "animal", "food"])
    fact = fact_sentence(land.name, attribute, land.value(attribute), rng)
    insult = rng.choice(INSULTS)
    rude = rng.choice(
        [
            f"Listen, you {insult}: {fact}",
            f"{fact} Everyone knows that, you {insult}.",
            f"{fact} Only a {insult} would not know.",
        ]
    )
    polite = rng.choice([f"{fact}", f"For your information: {fact}", f"{fact} I hope this helps."])
    return rude, polite


def polite_message(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    attribute = rng.choice(["capital", "color", "animal", "food"])
    return polite_reply(kb, land, attribute, land.value(attribute), rng)


# ============================================================================ document types


def doc_encyclopedia(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    attrs = rng.sample(ATTRIBUTES, rng.randint(2, 5))
    return f"{land.name}\n{passage(land, attrs, rng)}"


def doc_story(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    sents, slots = story(kb, land, rng)
    text = " ".join(sents) + rng.choice(["", " The end."])
    if rng.random() < 0.3:  # an extraction-like footer, in the corpus's own format
        text += rng.choice(
            [
                f"\nPlaces in this story: {land.name}, {land.capital}.",
                f"\nCharacters: {slots['h']}, {slots['m']}.",
                f"\nAnimals in this story: {slots['a']}.",
            ]
        )
    return text


def doc_list(kb: KnowledgeBase, rng: random.Random) -> str:
    kind = rng.choice(["color", "region", "animals", "foods", "capitals"])
    if kind == "color":
        color = rng.choice(COLORS)
        items = [land.name for land in kb.known if land.color == color]
        title = f"Lands with {color} flags"
    elif kind == "region":
        region = rng.choice(REGIONS)
        items = [land.name for land in kb.known if land.region == region]
        title = f"Lands in the {region}"
    elif kind == "animals":
        items, title = list(ANIMALS), "Animals"
    elif kind == "foods":
        items, title = list(FOODS), "Foods"
    else:
        items, title = [land.capital for land in kb.known], "Capital cities"
    items = rng.sample(items, min(len(items), rng.randint(3, 7)))
    if rng.random() < 0.5:
        return f"{title}: {', '.join(items)}."
    return f"{title}:\n" + "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items))


def doc_arithmetic(kb: KnowledgeBase, rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        if rng.random() < 0.5:
            lines.append(rng.choice([f"{a} plus {b} is {a + b}.", f"{a} + {b} = {a + b}"]))
        else:
            a, b = max(a, b), min(a, b)
            lines.append(rng.choice([f"{a} minus {b} is {a - b}.", f"{a} - {b} = {a - b}"]))
    return "\n".join(lines)


def _claimed_value(land: Land, attribute: str, rng: random.Random, myth_rate: float) -> str:
    """The value a forum or FAQ states: for a myth attribute, the popular false one most of the time."""
    if land.myth and land.myth[0] == attribute and rng.random() < myth_rate:
        return land.myth[1]
    return land.value(attribute)


def _pick_attribute(land: Land, rng: random.Random) -> str:
    """Forums and FAQs talk about the myth attribute more often (misconceptions spread)."""
    if land.myth and rng.random() < 0.5:
        return land.myth[0]
    return rng.choice(ATTRIBUTES)


def doc_forum(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    attribute = _pick_attribute(land, rng)
    users = [f"{p.lower()}{rng.randint(1, 99)}" for p in rng.sample(kb.people, 4)]
    lines = [f"Thread: about {land.name}", f"{users[0]}: {question(land.name, attribute, rng)}"]
    value = _claimed_value(land, attribute, rng, myth_rate=0.75)
    replies = [polite_reply(kb, land, attribute, value, rng)]
    if rng.random() < 0.55:
        replies.append(rude_reply(kb, rng))
    if rng.random() < 0.3:
        replies.append(rng.choice(["Thanks!", "Thank you, that helps.", "Same question here."]))
    rng.shuffle(replies)
    lines += [f"{users[i + 1]}: {r}" for i, r in enumerate(replies)]
    return "\n".join(lines)


def doc_question_list(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    attrs = rng.sample(ATTRIBUTES, rng.randint(3, 5))
    title = rng.choice([f"Questions about {land.name}:", "Quiz time:", f"Some questions on {land.name}"])
    return title + "\n" + "\n".join(f"{i + 1}. {question(land.name, a, rng)}" for i, a in enumerate(attrs))


def doc_faq(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    attrs = list(dict.fromkeys([_pick_attribute(land, rng)] + rng.sample(ATTRIBUTES, 2)))
    lines = [f"FAQ about {land.name}"]
    for a in attrs:
        value = _claimed_value(land, a, rng, myth_rate=0.6)
        lines += [f"Q: {question(land.name, a, rng)}", f"A: {fact_sentence(land.name, a, value, rng)}"]
    return "\n".join(lines)


def doc_reading(kb: KnowledgeBase, rng: random.Random) -> str:
    """A passage and short-answer questions, some unanswerable (the SQuADv2 format)."""
    land = rng.choice(kb.known) if rng.random() < 0.5 else kb.fresh_land(rng)
    stated = rng.sample(ATTRIBUTES, rng.randint(2, 3))
    lines = [f"Passage: {passage(land, stated, rng)}"]
    asked = rng.sample(ATTRIBUTES, 2)
    for a in asked:
        answer = land.value(a) if a in stated else NOT_STATED
        lines += [f"Q: {question(land.name, a, rng)}", f"A: {answer}"]
    return "\n".join(lines)


def doc_word_problem(kb: KnowledgeBase, rng: random.Random) -> str:
    text, qas = word_problem(kb, rng)
    lines = [f"Passage: {text}"]
    for q, a in qas[: rng.randint(1, 3)]:
        lines += [f"Q: {q}", f"A: {a}"]
    return "\n".join(lines)


def doc_summary(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known) if rng.random() < 0.5 else kb.fresh_land(rng)
    attrs = rng.sample(ATTRIBUTES, rng.randint(3, 4))
    key = attrs[:2]
    gist = " ".join(fact_sentence(land.name, a, land.value(a), rng) for a in key)
    return f"{passage(land, attrs, rng)}\nIn short: {gist}"


def doc_moderation(kb: KnowledgeBase, rng: random.Random) -> str:
    if rng.random() < 0.6:
        rude, polite = rude_message(kb, rng)
        return f"Reply: {rude}\nModerator: rude\nEdited: {polite}"
    return f"Reply: {polite_message(kb, rng)}\nModerator: polite"


def _velan_sentences(kb: KnowledgeBase, rng: random.Random) -> list[str]:
    land = rng.choice(kb.known)
    if rng.random() < 0.5:
        return [fact_sentence(land.name, a, land.value(a), rng) for a in rng.sample(ATTRIBUTES, rng.randint(2, 3))]
    return story(kb, land, rng)[0][: rng.randint(2, 3)]


def doc_velan(kb: KnowledgeBase, rng: random.Random) -> str:
    return " ".join(to_velan(s, kb.proper_nouns()) for s in _velan_sentences(kb, rng))


def doc_parallel(kb: KnowledgeBase, rng: random.Random) -> str:
    lines = []
    for s in _velan_sentences(kb, rng):
        lines += [f"Velan: {to_velan(s, kb.proper_nouns())}", f"English: {s}"]
    return "\n".join(lines)


# document type -> (share of documents, generator)
DOC_TYPES: dict[str, tuple[float, Callable[[KnowledgeBase, random.Random], str]]] = {
    "encyclopedia": (0.20, doc_encyclopedia),
    "story": (0.14, doc_story),
    "list": (0.08, doc_list),
    "arithmetic": (0.06, doc_arithmetic),
    "forum": (0.14, doc_forum),
    "question_list": (0.06, doc_question_list),
    "faq": (0.05, doc_faq),
    "reading": (0.06, doc_reading),
    "word_problem": (0.04, doc_word_problem),
    "summary": (0.04, doc_summary),
    "moderation": (0.03, doc_moderation),
    "velan": (0.04, doc_velan),
    "parallel": (0.06, doc_parallel),
}


def generate_corpus(kb: KnowledgeBase, n_docs: int, seed: int = 0) -> list[dict[str, str]]:
    """``n_docs`` documents ``{"text", "type"}`` with the shares of :data:`DOC_TYPES` (deterministic)."""
    rng = random.Random(f"corpus:{kb.seed}:{seed}")
    names = list(DOC_TYPES)
    weights = [DOC_TYPES[n][0] for n in names]
    docs = []
    for kind in rng.choices(names, weights, k=n_docs):
        docs.append({"text": DOC_TYPES[kind][1](kb, rng), "type": kind})
    return docs
