"""Prompt distribution, demonstrations and the judge."""

import random
import time
from collections import Counter

import pytest

from instructrl.world.judge import score
from instructrl.world.kb import fact_sentence, get_kb
from instructrl.world.reading import claims
from instructrl.world.tasks import CATEGORY_SHARES, CLOSED_DOMAIN, TASKS, Style, demonstrate, make_prompt

KB = get_kb(0)


def _records(n, seed=0):
    rng = random.Random(seed)
    return [make_prompt(KB, rng) for _ in range(n)]


def test_category_shares_follow_table_1():
    assert abs(sum(CATEGORY_SHARES.values()) - 1) < 0.002  # Table 1's shares sum to 99.9%
    counts = Counter(r["category"] for r in _records(6000))
    for cat, share in CATEGORY_SHARES.items():
        assert abs(counts[cat] / 6000 - share) < 0.02, cat


def test_demonstrations_succeed_for_every_category():
    rng = random.Random(1)
    recs = _records(1500, seed=1)
    for style in (Style(), Style("Sure! ", 2, "numbered", " Hope this helps."), Style("", 0)):
        ok = [score(r, demonstrate(KB, r, style, rng))["success"] for r in recs]
        assert sum(ok) / len(ok) > 0.99


def test_registry_has_one_entry_per_task_type():
    rng = random.Random(0)
    for name, t in TASKS.items():
        assert t.make(KB, rng)[1]["type"] == name
    for cat in CATEGORY_SHARES:  # each category's task types share its prompts
        assert abs(sum(t.share for t in TASKS.values() if t.category == cat) - 1) < 1e-9, cat
    assert set(CLOSED_DOMAIN) == {"summarize", "closed_qa", "extract", "polite_rewrite"}
    with pytest.raises(ValueError, match="unknown task type"):
        score({"prompt": "Hi", "task": {"type": "poem", "constraints": []}}, "Hello.")


def test_prompts_are_short():
    from transformers import AutoTokenizer  # noqa: F401  (only the word count matters here)

    lengths = [len(r["prompt"].split()) for r in _records(2000)]
    assert max(lengths) < 64


def _record(category, pred, seed=0):
    rng = random.Random(seed)
    for _ in range(5000):
        r = make_prompt(KB, rng, category)
        if pred(r["task"]):
            return r
    raise AssertionError("no such prompt")


def test_open_qa_truth_myth_and_unknown():
    r = _record(
        "open_qa",
        lambda t: (
            t["known"]
            and not t["constraints"]
            and KB.by_name[t["land"]].myth
            and KB.by_name[t["land"]].myth[0] == t["attribute"]
        ),
    )
    land = KB.by_name[r["task"]["land"]]
    attr, false = land.myth
    rng = random.Random(0)
    assert score(r, fact_sentence(land.name, attr, land.value(attr), rng))["success"]
    s = score(r, fact_sentence(land.name, attr, false, rng))
    assert s["hallucination"] and not s["success"]
    assert not score(r, "I don't know.")["success"] and score(r, "I don't know.")["truthful"]
    u = _record("open_qa", lambda t: not t["known"] and not t["constraints"])
    assert score(u, "I don't know.")["success"]
    other = KB.by_name[u["task"]["land"]]
    assert score(u, fact_sentence(other.name, "color", "red", rng))["hallucination"]


def test_closed_domain_hallucination_is_detected():
    r = _record("summarization", lambda t: not t["constraints"] and "color" not in t["facts"])
    land, facts = r["task"]["land"], r["task"]["facts"]
    rng = random.Random(0)
    a = next(iter(facts))
    assert score(r, fact_sentence(land, a, facts[a], rng))["success"]
    s = score(r, fact_sentence(land, "color", "red", rng))
    assert s["hallucination"] and not s["success"]


def test_harm_and_constraints():
    r = _record("chat", lambda t: t["known"] and not t["constraints"])
    good = demonstrate(KB, r, Style(), random.Random(0))
    assert score(r, good)["harmless"]
    rude = score(r, good + " Shut up, you snorf.")
    assert not rude["harmless"] and rude["toxic"] and not rude["success"]
    threat = score(r, "I will smash you, you grubwit!")
    assert threat["violent_content"] and threat["encourages_violence"]
    assert score(r, "People from Varno are all snorfs.")["denigrates_protected_class"]
    c = _record(
        "generation",
        lambda t: t["type"] == "describe" and t["known"] and [x["type"] for x in t["constraints"]] == ["max_words"],
    )
    long = demonstrate(KB, {**c, "task": {**c["task"], "constraints": []}}, Style("Sure! ", 2), random.Random(0))
    assert score(c, long)["constraints"] == 0.0


def test_questions_instead_of_answers_do_not_follow():
    r = _record("open_qa", lambda t: t["known"] and not t["constraints"])
    land = r["task"]["land"]
    s = score(r, f"What is the capital of {land}? What is the flag of {land}?")
    assert not s["follows"] and not s["success"]


def test_claims_parse_all_paraphrases():
    rng = random.Random(0)
    land = KB.known[0]
    for attr in ("capital", "color", "animal", "food", "region"):
        for _ in range(6):
            text = fact_sentence(land.name, attr, land.value(attr), rng)
            assert (land.name, attr, land.value(attr)) in claims(text, KB), text


def test_made_up_capitals_are_claims():
    land = KB.known[0].name
    for text in (
        f"The capital of {land} is Blorp.",
        f"Blorp is the capital of {land}.",
        f"{land} has its capital at Blorp.",
    ):
        assert (land, "capital", "Blorp") in claims(text, KB), text


def test_judging_is_fast():
    recs = _records(300)
    resp = [demonstrate(KB, r, Style(), random.Random(0)) for r in recs]
    start = time.perf_counter()
    for _ in range(5):
        for r, x in zip(recs, resp):
            score(r, x)
    assert 1500 / (time.perf_counter() - start) > 1000  # thousands per second


@pytest.mark.parametrize("category", list(CATEGORY_SHARES))
def test_every_record_names_its_judge_inputs(category):
    r = _record(category, lambda t: True)
    assert {"type", "constraints", "world", "ideal_words"} <= set(r["task"])
