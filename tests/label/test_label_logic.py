"""Pure logic: labels, rank normalization, agreement, assignment planning, safe paths, prompt parsing."""

from __future__ import annotations

import os

import pytest

from instructrl.errors import DataError, InstructRLError
from instructrl.label import labels as L
from instructrl.label.agreement import agreement, pair_agreement
from instructrl.label.security import hash_secret, new_token, safe_subpath
from instructrl.label.service import parse_prompt_text, plan_assignments


def test_dense_ranks_close_gaps_and_keep_ties():
    assert L.dense_ranks([1, 3, 3, 4]) == [1, 2, 2, 3]
    assert L.dense_ranks(["2", "1", "2", "4"]) == [2, 1, 2, 3]
    assert L.dense_ranks([1, 1, 1, 1]) == [1, 1, 1, 1]
    with pytest.raises(L.LabelError, match="between 1 and 3"):
        L.dense_ranks([1, 2, 5])
    with pytest.raises(L.LabelError, match=r"ranks\[1\]"):
        L.dense_ranks([1, "x", 2])


def test_ranking_from_mapping_requires_every_output():
    assert L.ranking_from_mapping({10: 2, 11: 1, 12: 2}, [10, 11, 12]) == [2, 1, 2]
    with pytest.raises(L.LabelError, match=r"missing a rank for output\(s\) \[12\]"):
        L.ranking_from_mapping({10: 1, 11: 2}, [10, 11, 12])
    with pytest.raises(L.LabelError, match="do not belong"):
        L.ranking_from_mapping({10: 1, 11: 2, 99: 3}, [10, 11])


def test_likert_and_flags():
    assert L.check_likert("7", "A") == 7
    for bad in (0, 8, "x", None, ""):
        with pytest.raises(L.LabelError, match=r"^A: "):
            L.check_likert(bad, "A")
    assert L.check_flags(["expresses_opinion", "hallucination", "hallucination"], "A") == [
        "hallucination",
        "expresses_opinion",
    ]
    with pytest.raises(L.LabelError, match="unknown flag"):
        L.check_flags(["bogus"], "A")
    assert len(L.FLAGS) == 11  # InstructGPT Table 3


def test_pair_agreement_by_hand():
    assert pair_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == (6, 6)
    assert pair_agreement([1, 2, 3, 4], [2, 1, 3, 4]) == (5, 6)  # only (A, B) flipped
    assert pair_agreement([1, 2, 3, 4], [1, 1, 2, 3]) == (5, 5)  # (A, B) tied by one labeler: excluded
    assert pair_agreement([1, 1], [2, 1]) == (0, 0)
    assert pair_agreement([4, 3, 2, 1], [1, 2, 3, 4]) == (0, 6)


def test_agreement_over_tasks_and_pairs():
    report = agreement(
        {
            1: {"ana": [1, 2, 3], "ben": [1, 3, 2]},  # 2/3
            2: {"ana": [1, 2], "ben": [1, 2], "cy": [2, 1]},  # ana-ben 1/1, ana-cy 0/1, ben-cy 0/1
            3: {"ana": [1, 2, 3]},  # one labeler: not compared
        }
    )
    assert (report.agree, report.total, report.tasks) == (3, 6, 2)
    assert report.rate == pytest.approx(0.5)
    assert report.by_pair[("ana", "ben")] == [3, 4]
    assert report.by_pair[("ben", "cy")] == [0, 1]
    assert report.stderr == pytest.approx((0.25 / 6) ** 0.5)
    assert agreement({}).rate is None


def test_plan_assignments_overlap_and_balance():
    plan = plan_assignments(list(range(12)), ["a", "b", "c"], {}, overlap=2, overlap_share=1.0, seed=1)
    by_task: dict[int, list[str]] = {}
    for t, n in plan:
        by_task.setdefault(t, []).append(n)
    assert all(len(v) == 2 and len(set(v)) == 2 for v in by_task.values())
    loads = [sum(1 for _, n in plan if n == x) for x in "abc"]
    assert loads == [8, 8, 8]
    single = plan_assignments(list(range(9)), ["a", "b", "c"], {"a": 5}, overlap=2, overlap_share=0.0)
    counts = {x: sum(1 for _, n in single if n == x) for x in "abc"}
    assert counts["a"] == 0 and abs(counts["b"] - counts["c"]) <= 1  # a already holds 5: b and c catch up
    some = plan_assignments(list(range(200)), ["a", "b"], {}, overlap=2, overlap_share=0.25, seed=3)
    assert 230 < len(some) < 270  # about a quarter of the tasks got a second labeler
    with pytest.raises(InstructRLError, match="--overlap 3"):
        plan_assignments([1], ["a", "b"], {}, overlap=3)
    with pytest.raises(InstructRLError, match="no labelers"):
        plan_assignments([1], [], {})


def test_safe_subpath_refuses_escapes(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    assert safe_subpath(root, "run1") == (root / "run1").resolve()
    assert safe_subpath(root, "a/b") == (root / "a" / "b").resolve()
    (root / "link").symlink_to(tmp_path)
    for bad in ("../x", "/etc", "a/../../b", "", "link/x", "..", "a\\..\\b"):
        with pytest.raises(InstructRLError):
            safe_subpath(root, bad)


def test_tokens_are_random_and_hashed():
    a, b = new_token(), new_token()
    assert a != b and len(a) > 40
    assert hash_secret(a) != a and len(hash_secret(a)) == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"prompt": "ok"}\n{"prompt": "x"', r"p\.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n\n["a"]', r"p\.jsonl:3: expected a JSON object"),
        ('{"text": "hi"}', r"p\.jsonl:1: missing field 'prompt'; fields found: text"),
        ('{"prompt": ""}', r"p\.jsonl:1: 'prompt' must be a non-empty string"),
        ('{"prompt": "a", "labeler": "x"}', r"p\.jsonl:1: unknown field\(s\) labeler"),
        ('{"prompt": "a", "completions": ["only one"]}', r"p\.jsonl:1: 'completions' holds 1 outputs"),
        ('{"prompt": "a", "completions": "abc"}', r"p\.jsonl:1: 'completions' must be a list of strings"),
        ('{"prompt": "a", "user": 5}', r"p\.jsonl:1: 'user' must be a string"),
        ("\n\n", r"p\.jsonl: holds no prompts"),
    ],
)
def test_prompt_file_errors_name_file_and_line(text, message):
    with pytest.raises(DataError, match=message):
        parse_prompt_text(text, "p.jsonl")


def test_prompt_file_parses_all_fields():
    lines = parse_prompt_text(
        '{"prompt": "a", "user": "u1", "category": "chat"}\n{"prompt": "b", "completions": ["x", "y", "z", "w"]}\n',
        "p.jsonl",
    )
    assert [(x.prompt, x.user, x.category, x.completions) for x in lines] == [
        ("a", "u1", "chat", None),
        ("b", None, None, ["x", "y", "z", "w"]),
    ]


def test_migrations_match_the_models(tmp_path):
    """The shipped migrations create exactly the tables the ORM models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from instructrl.label import db
    from instructrl.label.models import Base

    engine = db.make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert db.migrate(engine) == db.head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert os.path.exists(tmp_path / "m.db")
