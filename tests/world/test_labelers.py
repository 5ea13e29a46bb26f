"""Simulated labelers: preferences, noise, rankings, agreement."""

import random

from instructrl.world.kb import get_kb
from instructrl.world.labelers import make_pool, measure_agreement
from instructrl.world.synthetic import corrupt, sample_responses
from instructrl.world.tasks import Style, demonstrate, make_prompt

KB = get_kb(0)


def _items(n=200, k=4, seed=5):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = make_prompt(KB, rng)
        out.append((r, sample_responses(KB, r, k, rng)))
    return out


def test_pool_sizes_and_determinism():
    a, b = make_pool(0), make_pool(0)
    assert len(a.training) >= 8 and len(a.heldout) >= 4
    assert [x.weights for x in a.all()] == [x.weights for x in b.all()]
    assert a.reference.noise == 0
    assert len({lab.style for lab in a.training}) > 3  # different demonstration styles


def test_agreement_is_near_the_papers():
    pool = make_pool(0)
    items = _items()
    train, held = measure_agreement(pool.training, items), measure_agreement(pool.heldout, items)
    assert 0.66 < train < 0.79 and 0.70 < held < 0.84  # paper: 72.6% and 77.3%
    assert held > train


def test_rank_ties_and_compare():
    pool = make_pool(0)
    lab = pool.training[0]
    r = make_prompt(KB, random.Random(2))
    good = demonstrate(KB, r, Style(), random.Random(0))
    ranks = lab.rank(r, [good, good, "", ""])
    assert ranks[0] == ranks[1] and ranks[2] == ranks[3]
    assert sorted(set(ranks)) == list(range(1, len(set(ranks)) + 1))
    ref = pool.reference
    assert ref.compare(r, good, "") == 1 and ref.compare(r, "", good) == -1 and ref.compare(r, good, good) == 0


def test_reference_prefers_demonstrations_to_corruptions():
    pool = make_pool(0)
    rng = random.Random(3)
    wins = total = 0
    for _ in range(300):
        r = make_prompt(KB, rng)
        good = demonstrate(KB, r, Style(), rng)
        bad = corrupt(KB, r, good, rng)
        from instructrl.world.judge import score

        if score(r, good)["success"] and not score(r, bad)["success"]:
            wins += pool.reference.compare(r, good, bad) >= 0
            total += 1
    assert wins / total > 0.95


def test_likert_scores_and_flags():
    pool = make_pool(0)
    r = make_prompt(KB, random.Random(4), "chat")
    good = demonstrate(KB, r, Style(), random.Random(0))
    lik = pool.reference.likert(r, good)
    assert 5 <= lik.score <= 7 and not lik.flags["fails_to_follow_instruction"]
    bad = pool.reference.likert(r, "Shut up, you snorf.")
    assert bad.score < lik.score and bad.flags["inappropriate_for_customer_assistant"]
    assert set(bad.flags) >= {
        "hallucination",
        "satisfies_constraint",
        "sexual_content",
        "violent_content",
        "encourages_violence",
        "denigrates_protected_class",
        "harmful_advice",
        "expresses_opinion",
        "expresses_moral_judgment",
    }


def test_labelers_disagree_with_each_other_but_not_randomly():
    pool = make_pool(0)
    items = _items(60)
    for lab in pool.training[:3]:
        assert 0.6 < measure_agreement([pool.reference, lab], items) < 0.95


def test_utility_is_the_normalized_sum_of_its_criterion_terms():
    from instructrl.world.judge import score

    lab = make_pool(0).training[1]
    r = make_prompt(KB, random.Random(11))
    good = demonstrate(KB, r, Style(), random.Random(1))
    for resp in (good, "", corrupt(KB, r, good, random.Random(2)), good + " " + good):
        terms = lab.utility_terms(r, resp)
        assert set(terms) == set(lab.weights)
        assert terms["length"] <= 0 and terms["repetition"] <= 0  # the two penalties
        c = score(r, resp)
        assert terms["correct"] == lab.weights["correct"] * c["correct"]
        top = sum(lab.weights[k] for k in ("follows", "correct", "truthful", "harmless", "constraints", "polite"))
        assert lab.utility(r, resp) == sum(terms.values()) / top
    assert lab.utility_terms(r, "")["follows"] == 0.0 < lab.utility_terms(r, good)["follows"]


def test_the_pools_traits_are_pinned():
    # The misleading weight is drawn after every other trait, so styles, noise and length preferences
    # (and with them the demonstrations) are the ones the pool had before that weight existed.
    pool = make_pool(0)
    assert [lab.style.verbosity for lab in pool.training[:4]] == [0, 1, 1, 0]
    assert [round(lab.length_factor, 4) for lab in pool.training[:4]] == [0.8414, 0.8491, 0.8087, 1.7938]
    assert [round(lab.noise, 4) for lab in pool.training[:4]] == [0.2091, 0.2209, 0.2523, 0.1952]


def test_misleading_penalty_applies_to_closed_domain_tasks_only():
    pool = make_pool(0)
    closed = make_prompt(KB, random.Random(4), "closed_qa")  # the passage puts Drefas in the south
    land, region = closed["task"]["land"], closed["task"]["facts"]["region"]
    wrong = f"{land} lies in the {'north' if region != 'north' else 'south'}."
    right = f"{land} lies in the {region}."
    ref = pool.reference
    assert ref.utility_terms(closed, wrong)["misleading"] == -ref.weights["misleading"] < 0
    assert ref.utility_terms(closed, right)["misleading"] == 0
    # A wrong statement about the passage now ranks below saying nothing useful, and far below the answer.
    assert ref.utility(closed, right) > ref.utility(closed, "Hi!") > ref.utility(closed, wrong)
    opened = make_prompt(KB, random.Random(4), "open_qa")
    made_up = f"People in {opened['task']['land']} like to eat soup."
    from instructrl.world.judge import score

    assert score(opened, made_up)["hallucination"]  # an open-domain hallucination: "truthful" credit only
    assert ref.utility_terms(opened, made_up)["misleading"] == 0
    assert all(lab.weights["misleading"] > 0 for lab in pool.all())
    assert len({round(lab.weights["misleading"], 6) for lab in pool.training}) == len(pool.training)
