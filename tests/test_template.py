from instructrl.data.formats import Demonstration
from instructrl.data.template import render_prompt
from instructrl.data.tokenize import IGNORE_INDEX, collate, pack_texts, tokenize_demonstrations
from instructrl.modeling.loading import load_tokenizer

CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_plain_template(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    assert render_prompt(tok, "Name a color.") == "### Instruction:\nName a color.\n\n### Response:\n"
    conv = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "C"},
    ]
    # an earlier assistant turn ends with EOS, as SFT trains every assistant turn to end
    assert render_prompt(tok, conv) == (
        "S\n\n### Instruction:\nA\n\n### Response:\nB<|endoftext|>\n\n### Instruction:\nC\n\n### Response:\n"
    )


def test_chat_template_used_when_present(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    tok.chat_template = CHAT
    assert render_prompt(tok, "Hi") == "<user>Hi</user><assistant>"


def test_loss_mask_covers_response_and_eos_only(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    demo = Demonstration("What color is the flag of Zor1?", "The flag of Zor1 is red.")
    (ex,), report = tokenize_demonstrations([demo], tok, max_length=128)
    prompt_len = len(tok(render_prompt(tok, demo.prompt))["input_ids"])
    resp = tok(demo.completion, add_special_tokens=False)["input_ids"]
    assert ex["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert ex["labels"][prompt_len:] == resp + [tok.eos_token_id]
    assert ex["input_ids"][prompt_len:] == resp + [tok.eos_token_id]
    assert report.kept == 1


def test_overlong_policy_is_counted(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    long_prompt = Demonstration("Zor1 " * 200, "red", where="f.jsonl:7")
    long_answer = Demonstration("Hi?", "The flag of Zor1 is red. " * 50, where="f.jsonl:8")
    ok = Demonstration("Hi?", "Fine.")
    examples, report = tokenize_demonstrations([long_prompt, long_answer, ok], tok, max_length=64)
    assert (report.kept, report.skipped_long_prompt, report.truncated_completion) == (2, 1, 1)
    assert report.skipped_where == ["f.jsonl:7"]
    assert all(len(e["input_ids"]) <= 64 for e in examples)
    assert examples[0]["input_ids"][-1] != tok.eos_token_id  # truncated: no EOS
    assert examples[1]["input_ids"][-1] == tok.eos_token_id


def test_collate_pads_with_pad_not_eos(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}], tok.pad_token_id
    )
    assert batch["input_ids"][1].tolist() == [5, tok.pad_token_id, tok.pad_token_id]
    assert batch["labels"][1].tolist() == [5, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tok.pad_token_id != tok.eos_token_id


def test_pack_texts_windows(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    windows = pack_texts(["The flag of Zor1 is red."] * 40, tok, max_length=32)
    assert windows and all(len(w["input_ids"]) == 32 for w in windows[:-1])
    assert tok.eos_token_id in windows[0]["input_ids"]
