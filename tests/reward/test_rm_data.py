"""Comparison data: K-way rankings, pairwise forms, bad input, splits, and the paper's real ranking samples."""

import json

import pytest
from testkit import SHARED_DATA, write_jsonl

from instructrl.data.io import Record
from instructrl.errors import DataError
from instructrl.reward.data import (
    encode_rankings,
    fit_length,
    labeler_group,
    load_rankings,
    pair_units,
    split_by_prompt,
    split_text_prompt,
    to_ranking,
)

USER = {"role": "user", "content": "Name a colour."}


def rec(data: dict) -> Record:
    return Record(data, "cmp.jsonl:7")


def test_kway_ranking_with_ties_keeps_extra_fields():
    r = to_ranking(
        rec(
            {
                "prompt": "Q?",
                "completions": ["a", "b", "c", "d"],
                "ranks": [2, 1, 2, 3],
                "labeler": "L1",
                "labeler_group": "heldout",
            }
        )
    )
    assert (r.prompt, r.completions, r.ranks) == ("Q?", ["a", "b", "c", "d"], [2, 1, 2, 3])
    assert r.meta == {"labeler": "L1", "labeler_group": "heldout"}
    assert r.pairs == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]  # the tie (0, 2) gives no pair


def test_an_empty_response_is_ranked_like_any_other(tiny_model):
    from transformers import AutoTokenizer

    r = to_ranking(rec({"prompt": "Q?", "completions": ["an answer", ""], "ranks": [1, 2]}))
    assert r.completions == ["an answer", ""] and r.pairs == [(0, 1)]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    kept, encoded, _ = encode_rankings([r], tok, max_length=64)
    assert kept == [r] and [ids[-1] for ids in encoded[0]] == [tok.eos_token_id] * 2  # scored on its EOS
    assert len(encoded[0][1]) < len(encoded[0][0])


def test_explicit_pairs_text_and_conversational():
    r = to_ranking(rec({"prompt": "Q?", "chosen": "yes", "rejected": "no", "margin": 2}))
    assert (r.completions, r.ranks, r.margin, r.raw_prompt) == (["yes", "no"], [1, 2], 2.0, False)
    r = to_ranking(
        rec(
            {
                "prompt": [USER],
                "chosen": [{"role": "assistant", "content": "Red."}],
                "rejected": [{"role": "assistant", "content": "Blue."}],
            }
        )
    )
    assert (r.prompt, r.completions) == ([USER], ["Red.", "Blue."])
    # whole conversations beside an explicit prompt
    r = to_ranking(
        rec(
            {
                "prompt": [USER],
                "chosen": [USER, {"role": "assistant", "content": "Red."}],
                "rejected": [USER, {"role": "assistant", "content": "Blue."}],
            }
        )
    )
    assert r.completions == ["Red.", "Blue."]


def test_implicit_prompt_pairs_split_at_common_prefix():
    r = to_ranking(
        rec(
            {
                "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello friend",
                "rejected": "\n\nHuman: Hi there\n\nAssistant: Help yourself",
            }
        )
    )
    assert r.prompt == "\n\nHuman: Hi there\n\nAssistant:" and r.raw_prompt
    assert r.completions == [" Hello friend", " Help yourself"]  # no word is cut ("Hel")
    assert split_text_prompt("A: yes", "A: yes please") == ("A:", " yes", " yes please")
    conv = [USER, {"role": "assistant", "content": "Red."}, {"role": "user", "content": "Why?"}]
    r = to_ranking(
        rec(
            {
                "chosen": conv + [{"role": "assistant", "content": "I like it."}],
                "rejected": conv + [{"role": "assistant", "content": "No idea."}],
            }
        )
    )
    assert (r.prompt, r.completions, r.raw_prompt) == (conv, ["I like it.", "No idea."], False)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"prompt": "Q", "completions": ["a", "b", "c"], "ranks": [1, 2]},
            r"cmp\.jsonl:7: 'ranks' has 2 entries but there are 3 completions",
        ),
        (
            {"prompt": "Q", "completions": ["a", "b"], "ranks": [1, 1.5]},
            r"cmp\.jsonl:7: ranks\[1\] = 1\.5 is not an integer rank",
        ),
        ({"prompt": "Q", "completions": ["a", "b"], "ranks": [1, "2"]}, r"ranks\[1\] = '2' is not an integer rank"),
        ({"prompt": "Q", "completions": ["a", "b"], "ranks": [0, 1]}, r"ranks\[0\] = 0 is not a rank"),
        (
            {"prompt": "Q", "completions": ["a", 3], "ranks": [1, 2]},
            r"cmp\.jsonl:7: column 'completions\[1\]' must be a string",
        ),
        ({"prompt": "Q", "completions": ["a"], "ranks": [1]}, r"'completions' must be a list of at least 2"),
        (
            {"prompt": "Q", "completions": ["a", "b"]},
            r"expected columns 'prompt', 'completions' and 'ranks'.*found: completions, prompt",
        ),
        ({"prompt": "Q", "chosen": "a"}, r"missing column 'rejected'; columns found: chosen, prompt"),
        ({"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "big"}, r"'margin' must be a number"),
        (
            {"prompt": "Q", "completions": ["a", "b", "c"], "ranks": [1, 2, 3], "margin": 1},
            r"'margin' is only defined for pairwise",
        ),
        ({"chosen": "Yes", "rejected": "No"}, r"share no prompt text; add a 'prompt' column"),
        ({"chosen": "Q:a", "rejected": "Q:a"}, r"'chosen' has an empty response"),
        ({"question": "Q"}, r"cmp\.jsonl:7: expected 'prompt', 'completions' and 'ranks'.*columns found: question"),
        (
            {"prompt": "Q", "completions": ["a", "b"], "ranks": [1, 2], "reference_ranks": [1]},
            r"'reference_ranks' has 1 entries",
        ),
    ],
)
def test_bad_records_name_file_line_and_field(data, message):
    with pytest.raises(DataError, match=message):
        to_ranking(rec(data))


def test_all_tied_rankings_are_skipped_and_counted(tmp_path):
    f = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "Q", "completions": ["a", "b"], "ranks": [1, 2]},
            {"prompt": "R", "completions": ["a", "b", "c"], "ranks": [2, 2, 2]},
        ],
    )
    rankings, report = load_rankings(str(f))
    assert len(rankings) == 1 and (report.records, report.skipped_all_tied) == (2, 1)
    assert report.skipped_where == [f"{f}:2"]
    g = write_jsonl(tmp_path / "tied.jsonl", [{"prompt": "R", "completions": ["a", "b"], "ranks": [1, 1]}])
    with pytest.raises(DataError, match="none of its 1 rankings has two different ranks"):
        load_rankings(str(g))


def test_pairs_from_a_datasets_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "Q?", "chosen": "yes", "rejected": "no", "labeler": "A"}] * 3).save_to_disk(
        str(tmp_path / "ds")
    )
    rankings, _ = load_rankings(str(tmp_path / "ds"))
    assert len(rankings) == 3 and rankings[0].completions == ["yes", "no"] and rankings[0].meta == {"labeler": "A"}


def test_split_by_prompt_and_labeler_groups():
    rows = [
        to_ranking(rec({"prompt": f"Q{i % 10}", "chosen": "a", "rejected": "b", "labeler": f"L{i % 3}"}))
        for i in range(40)
    ]
    train, held = split_by_prompt(rows, 0.2, seed=0)
    assert len({r.prompt for r in held}) == 2 and not {r.prompt for r in train} & {r.prompt for r in held}
    assert [labeler_group(r, frozenset({"L2"})) for r in rows[:3]] == ["train", "train", "heldout"]
    grouped = to_ranking(rec({"prompt": "Q", "chosen": "a", "rejected": "b", "labeler_group": "held-out"}))
    assert labeler_group(grouped) == "heldout" and labeler_group(rows[0]) == "train"
    assert labeler_group(to_ranking(rec({"prompt": "Q", "chosen": "a", "rejected": "b"}))) is None


def test_long_responses_keep_their_eos():
    assert fit_length([1, 2], [5, 6, 7, 0], 5, eos_id=0) == ([1, 2, 5, 6, 0], True)
    assert fit_length([1, 2, 3, 4], [5, 0], 5, eos_id=0, min_response_tokens=2) == (None, False)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared InstructGPT samples not present")
def test_real_instructgpt_rankings_k12_with_ties(tiny_model):
    from instructrl.modeling.loading import load_tokenizer

    for name in ("truthfulqa_rankings.jsonl", "realtoxicity_rankings.jsonl"):
        path = SHARED_DATA / name
        rankings, report = load_rankings(str(path))
        raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        all_tied = sum(len(set(r["ranks"])) < 2 for r in raw)
        assert report.records == 300 and report.skipped_all_tied == all_tied and len(rankings) == 300 - all_tied
        assert {len(r.completions) for r in rankings} == {12}
        assert "models" in rankings[0].meta and "prompt_type" in rankings[0].meta
        n_pairs = [len(r.pairs) for r in rankings]
        assert max(n_pairs) <= 66 and sum(n_pairs) == sum(
            sum(a < b for a in r["ranks"] for b in r["ranks"]) for r in raw
        )
        tok = load_tokenizer(str(tiny_model))
        kept, encoded, enc = encode_rankings(rankings[:40], tok, max_length=96)
        assert enc.kept + enc.skipped_long_prompt == 40 and len(kept) == len(encoded) == enc.kept
        assert all(seq[-1] == tok.eos_token_id and len(seq) <= 96 for seqs in encoded for seq in seqs)
        assert len(pair_units(kept)) == sum(len(r.pairs) for r in kept)
    tqa = load_rankings(str(SHARED_DATA / "truthfulqa_rankings.jsonl"))[0]
    assert any(len(r.pairs) < 66 for r in tqa)  # ties present
