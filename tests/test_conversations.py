"""Multi-turn `messages` rows in SFT: every assistant turn carries the loss (or the last only), the system
and user turns are masked; the token spans are checked exactly, with and without a chat template."""

import pytest

from instructrl.data.formats import Demonstration, to_demonstration
from instructrl.data.io import Record
from instructrl.data.template import encode_completion, encode_prompt
from instructrl.data.tokenize import IGNORE_INDEX, tokenize_demonstrations
from instructrl.modeling.loading import load_tokenizer

CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
# a ChatML-like template whose end-of-turn marker is the tokenizer's EOS (as Qwen2 instruct tokenizers)
EOS_CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What color is the flag of Zor1?"},
    {"role": "assistant", "content": "The flag of Zor1 is red."},
    {"role": "user", "content": "And the flag of Zor2?"},
    {"role": "assistant", "content": "The flag of Zor2 is blue."},
    {"role": "user", "content": "What color is the flag of Zor3?"},
    {"role": "assistant", "content": "The flag of Zor3 is green."},
]
ANSWERS = [CONVERSATION[i]["content"] for i in (2, 4, 6)]


def conversation_demo() -> Demonstration:
    return to_demonstration(Record({"messages": CONVERSATION}, "chat.jsonl:1"))


def expected_segments(tok, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """(context, response) ids per turn, built by hand: ``texts`` are the three contexts as rendered text."""
    first = tok(texts[0], add_special_tokens=False)["input_ids"]
    later = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[1:]]
    responses = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in ANSWERS]
    return list(zip([first, *later], responses))


def check_spans(example: dict, segments, trained: set[int]) -> None:
    ids: list[int] = []
    labels: list[int] = []
    for k, (context, response) in enumerate(segments):
        ids += context + response
        labels += [IGNORE_INDEX] * len(context) + (response if k in trained else [IGNORE_INDEX] * len(response))
    assert example["input_ids"] == ids
    assert example["labels"] == labels


PLAIN_CONTEXTS = [
    "Answer in one sentence.\n\n### Instruction:\nWhat color is the flag of Zor1?\n\n### Response:\n",
    "\n\n### Instruction:\nAnd the flag of Zor2?\n\n### Response:\n",
    "\n\n### Instruction:\nWhat color is the flag of Zor3?\n\n### Response:\n",
]
CHAT_CONTEXTS = [
    "<system>Answer in one sentence.</system><user>What color is the flag of Zor1?</user><assistant>",
    "</assistant><user>And the flag of Zor2?</user><assistant>",
    "</assistant><user>What color is the flag of Zor3?</user><assistant>",
]


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_every_assistant_turn_is_trained_and_the_rest_masked(tiny_model, template):
    tok = load_tokenizer(str(tiny_model))
    contexts = PLAIN_CONTEXTS
    if template == "chat":
        tok.chat_template, contexts = CHAT, CHAT_CONTEXTS
    (ex,), report = tokenize_demonstrations([conversation_demo()], tok, max_length=256)
    segments = expected_segments(tok, contexts)
    check_spans(ex, segments, trained={0, 1, 2})
    trained = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert tok.decode(trained) == "<|endoftext|>".join(ANSWERS) + "<|endoftext|>"
    assert (report.kept, report.conversations, report.assistant_turns_trained) == (1, 1, 3)
    # the context of the last turn is what generation renders for that conversation (plain template: exactly)
    if template == "plain":
        before_last = encode_prompt(tok, CONVERSATION[:-1])
        assert ex["input_ids"][: len(before_last)] == before_last


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_last_turn_only_masks_the_earlier_assistant_turns(tiny_model, template):
    tok = load_tokenizer(str(tiny_model))
    contexts = PLAIN_CONTEXTS
    if template == "chat":
        tok.chat_template, contexts = CHAT, CHAT_CONTEXTS
    (every,), _ = tokenize_demonstrations([conversation_demo()], tok, max_length=256)
    (last,), report = tokenize_demonstrations([conversation_demo()], tok, max_length=256, assistant_turns="last")
    check_spans(last, expected_segments(tok, contexts), trained={2})
    assert last["input_ids"] == every["input_ids"]  # the flag changes the labels only
    assert report.assistant_turns_trained == 1


def test_an_eos_that_closes_the_templates_turn_is_not_doubled(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    tok.chat_template = EOS_CHAT
    (ex,), _ = tokenize_demonstrations([conversation_demo()], tok, max_length=256)
    text = tok.decode(ex["input_ids"])
    # exactly the template's own rendering of the conversation (which ends with a newline after the last EOS)
    assert text == tok.apply_chat_template(CONVERSATION, tokenize=False).removesuffix("\n")
    assert "<|endoftext|><|endoftext|>" not in text


def test_single_turn_rows_are_tokenized_as_before(tiny_model):
    """prompt/completion and a one-answer `messages` row: the prompt, then the response and EOS, as always."""
    tok = load_tokenizer(str(tiny_model))
    pc = Demonstration("What color is the flag of Zor1?", "The flag of Zor1 is red.")
    row = to_demonstration(
        Record(
            {"messages": [{"role": "user", "content": pc.prompt}, {"role": "assistant", "content": pc.completion}]},
            "x:1",
        )
    )
    prompt = tok("### Instruction:\nWhat color is the flag of Zor1?\n\n### Response:\n")["input_ids"]
    response = tok("The flag of Zor1 is red.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    for turns in ("all", "last"):
        examples, report = tokenize_demonstrations([pc, row], tok, max_length=128, assistant_turns=turns)
        for ex in examples:
            assert ex == {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response}
        assert report.conversations == 0


def test_a_template_that_rewrites_history_falls_back_to_the_last_turn(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    # drops every earlier assistant answer from the history (as templates that strip reasoning do)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<{{ m['role'] }}>{{ m['content'] }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    demo = conversation_demo()
    (ex,), report = tokenize_demonstrations([demo], tok, max_length=256)
    prompt = encode_prompt(tok, demo.prompt)
    assert ex["input_ids"] == prompt + encode_completion(tok, ANSWERS[-1])
    assert ex["labels"] == [IGNORE_INDEX] * len(prompt) + encode_completion(tok, ANSWERS[-1])
    assert (report.last_turn_only_template, report.last_turn_only_where) == (1, ["chat.jsonl:1"])


def test_overlong_conversations_follow_the_stated_policy(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    (full,), _ = tokenize_demonstrations([conversation_demo()], tok, max_length=256)
    first_answer = next(i for i, t in enumerate(full["labels"]) if t != IGNORE_INDEX)
    # the first answer fits, the rest is cut: kept, counted as truncated, two turns reach into the window
    (cut,), report = tokenize_demonstrations([conversation_demo()], tok, max_length=first_answer + 12)
    assert cut["input_ids"] == full["input_ids"][: first_answer + 12]
    assert report.truncated_completion == 1 and report.assistant_turns_trained in (1, 2)
    # not even one token of the first answer fits: skipped and named
    none, report = tokenize_demonstrations([conversation_demo()], tok, max_length=first_answer)
    assert none == [] and report.skipped_where == ["chat.jsonl:1"]
    # last-turn-only: the last answer must fit
    last_answer = max(i for i, t in enumerate(full["labels"]) if t == IGNORE_INDEX) + 1
    none, report = tokenize_demonstrations([conversation_demo()], tok, max_length=last_answer, assistant_turns="last")
    assert none == [] and report.skipped_long_prompt == 1
