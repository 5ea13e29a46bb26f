import math

import pytest

from instructrl.evaluate.metrics import (
    bleu,
    choice_agreement,
    clustered_mean_se,
    exact_match,
    first_line,
    max_f1,
    mean_se,
    outcome,
    token_f1,
    win_rate,
)


def test_win_rate_with_ties_and_standard_error():
    # 2 wins, 1 tie, 1 loss: mean = (1 + 1 + 0.5 + 0) / 4 = 0.625
    # sample var = ((.375)^2*2 + (.125)^2 + (.625)^2) / 3 = (0.28125 + 0.015625 + 0.390625) / 3 = 0.2291667
    # se = sqrt(0.2291667 / 4) = 0.2393568
    est = win_rate([1, 1, 0.5, 0])
    assert est.mean == pytest.approx(0.625)
    assert est.se == pytest.approx(0.2393568, rel=1e-6)
    assert est.n == 4
    assert win_rate([0.5] * 10).mean == 0.5 and win_rate([0.5] * 10).se == 0
    with pytest.raises(ValueError):
        win_rate([0.7])


def test_outcome_with_tie_margin():
    assert outcome(2.0, 1.0) == 1.0 and outcome(1.0, 2.0) == 0.0
    assert outcome(1.0, 1.05, tie_margin=0.1) == 0.5


def test_mean_se_edge_cases():
    assert mean_se([]).n == 0 and math.isnan(mean_se([]).mean)
    assert math.isnan(mean_se([3.0]).se)


def test_squad_f1_by_hand():
    # pred tokens: [cat, sat, on, mat]  ref: [cat, sat]  (articles dropped)
    # overlap 2: precision 2/4, recall 2/2 -> F1 = 2*.5*1/1.5 = 0.6667
    assert token_f1("The cat sat on the mat.", "a cat sat") == pytest.approx(2 / 3)
    assert token_f1("Paris", "paris!") == 1.0
    assert token_f1("Lyon", "Paris") == 0.0
    assert max_f1("blue", ["red", "blue sky"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert exact_match("The Blue.", ["blue"]) == 1.0


def test_unanswerable_questions():
    assert token_f1("", "") == 1.0
    assert token_f1("I don't know.", "") == 1.0
    assert token_f1("Unanswerable", "") == 1.0
    assert token_f1("Paris", "") == 0.0
    assert max_f1("", []) == 1.0


def test_bleu_through_sacrebleu():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["e f g h"]) == pytest.approx(0.0)
    mid = bleu(["the cat sat on a mat today"], ["the cat sat on the mat"])
    assert 0 < mid < 100
    with pytest.raises(ValueError):
        bleu(["a"], [])


def test_first_line():
    assert first_line(" Paris\nQ: next question") == "Paris"


def test_clustered_standard_error_by_hand():
    # two prompts judged twice each: (1, 1) and (0, 0) around 0.5; cluster sums 1 and -1
    e = clustered_mean_se([1, 1, 0, 0], ["p", "p", "q", "q"])
    assert (e.mean, e.n) == (0.5, 4) and e.se == pytest.approx(math.sqrt(2 / 1 * 2) / 4)
    # one judgment per prompt: the plain standard error of the mean
    xs = [1, 0, 0.5, 1, 0]
    assert clustered_mean_se(xs, range(5)).se == pytest.approx(mean_se(xs).se)
    assert math.isnan(clustered_mean_se([1, 0], ["p", "p"]).se)  # one cluster: no spread between prompts
    with pytest.raises(ValueError):
        clustered_mean_se([1], [])


def test_choice_agreement():
    report = choice_agreement(
        {
            1: {"ana": "left", "ben": "left"},
            2: {"ana": "left", "ben": "right", "cy": "left"},  # pairs: ana-ben no, ana-cy yes, ben-cy no
            3: {"ana": "tie", "ben": "tie"},  # same choice; no order to agree on
            4: {"ana": "right"},  # one labeler: not shared
        }
    )
    assert (report["items"], report["labeler_pairs"]) == (3, 5)
    assert report["agreement"] == pytest.approx(3 / 5)
    assert report["agreement_excluding_ties"] == pytest.approx(2 / 4)
    assert choice_agreement({1: {"ana": "left"}})["agreement"] is None
