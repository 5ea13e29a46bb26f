import json

import pytest
from testkit import SHARED_DATA, write_jsonl

from instructrl.data.formats import load_demonstrations, load_prompts, load_texts, to_demonstration
from instructrl.data.io import Record, read_records
from instructrl.errors import DataError


def test_prompt_completion_and_extra_fields_kept(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hi?", "completion": "Hello.", "labeler": "L3"}])
    (d,) = load_demonstrations(str(f))
    assert (d.prompt, d.completion, d.meta) == ("Hi?", "Hello.", {"labeler": "L3"})
    assert d.where == f"{f}:1"


def test_conversational_messages():
    rec = Record(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
        "x:1",
    )
    d = to_demonstration(rec)
    assert d.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert d.completion == "Hello"


def test_conversational_prompt_completion_and_instruction_forms():
    d = to_demonstration(
        Record(
            {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}, "x:1"
        )
    )
    assert d.prompt == [{"role": "user", "content": "Q"}] and d.completion == "A"
    d = to_demonstration(Record({"instruction": "Summarize.", "input": "Long text.", "output": "Short."}, "x:2"))
    assert d.prompt == "Summarize.\n\nLong text." and d.completion == "Short."


def test_malformed_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        read_records(str(f))


def test_missing_column_names_column_and_found_columns(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: missing column 'completion'; columns found: answer, prompt"):
        load_demonstrations(str(f))
    f = write_jsonl(tmp_path / "e.jsonl", [{"question": "a"}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: expected .*'prompt' and 'completion'.*columns found: question"):
        load_demonstrations(str(f))


def test_empty_file_and_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        read_records(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        read_records(str(tmp_path / "nope.jsonl"))


def test_non_utf8_names_line(tmp_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        read_records(str(f))


def test_bad_values_are_named():
    with pytest.raises(DataError, match=r"x:1: column 'completion' must be a string, got int"):
        to_demonstration(Record({"prompt": "a", "completion": 3}, "x:1"))
    with pytest.raises(DataError, match=r"x:1: column 'completion' is empty"):
        to_demonstration(Record({"prompt": "a", "completion": "  "}, "x:1"))
    with pytest.raises(DataError, match="last message must be the assistant"):
        to_demonstration(Record({"messages": [{"role": "user", "content": "a"}]}, "x:1"))
    with pytest.raises(DataError, match="unknown role 'bot'"):
        to_demonstration(Record({"messages": [{"role": "bot", "content": "a"}]}, "x:1"))


def test_json_array_txt_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"prompt": "p", "completion": "c"}] * 2))
    assert len(load_demonstrations(str(tmp_path / "a.json"))) == 2
    (tmp_path / "t.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    assert load_texts(str(tmp_path / "t.txt")) == ["first doc\nline two", "second doc"]
    (tmp_path / "d.csv").write_text('prompt,completion\nhello,world\n"a, b",c\n')
    demos = load_demonstrations(str(tmp_path / "d.csv"))
    assert [(d.prompt, d.completion) for d in demos] == [("hello", "world"), ("a, b", "c")]


def test_unknown_hub_dataset_is_one_clear_error():
    with pytest.raises(DataError, match="could not load 'no-such-org/no-such-dataset-xyz'"):
        read_records("no-such-org/no-such-dataset-xyz")


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data not present")
@pytest.mark.parametrize("name", ["truthfulqa_rankings.jsonl", "realtoxicity_rankings.jsonl"])
def test_real_messy_text_loads_as_prompts_and_demonstrations(tmp_path, name):
    rows = [json.loads(line) for line in (SHARED_DATA / name).read_text(encoding="utf-8").splitlines()]
    prompts = load_prompts(str(SHARED_DATA / name))
    assert len(prompts) == len(rows) == 300
    assert prompts[17].prompt == rows[17]["prompt"]
    # every completion as a demonstration: the text survives the round trip character for character
    demos = [{"prompt": r["prompt"], "completion": c} for r in rows for c in r["completions"] if c.strip()]
    loaded = load_demonstrations(str(write_jsonl(tmp_path / "best.jsonl", demos)))
    assert [d.completion for d in loaded] == [d["completion"] for d in demos]
    assert any(any(ord(ch) > 127 for ch in d.completion + str(d.prompt)) for d in loaded)
