"""Knowledge base, corpus and tokenizer of the miniature world."""

import re
from collections import Counter

from instructrl.world.corpus import DOC_TYPES, generate_corpus
from instructrl.world.kb import generate_kb, get_kb
from instructrl.world.names import RESERVED, to_velan, velan_word
from instructrl.world.tokenizer import ASSISTANT, USER, format_prompt, train_tokenizer


def test_kb_is_deterministic_and_has_three_kinds_of_land():
    a, b = generate_kb(3), generate_kb(3)
    assert a.lands == b.lands
    assert len(a.known) == 120 and len(a.unknown) == 40
    assert 10 <= len(a.myths) <= 40
    assert all(land.myth[1] != land.value(land.myth[0]) for land in a.myths)
    assert all(name.lower() not in RESERVED for name in a.taken)
    assert generate_kb(4).lands != a.lands


def test_fresh_lands_are_new():
    import random

    kb = get_kb(0)
    fresh = kb.fresh_land(random.Random(1))
    assert fresh.name not in kb.taken and fresh.capital not in kb.taken and fresh.kind == "fresh"


def test_corpus_shares_and_determinism():
    kb = get_kb(0)
    docs = generate_corpus(kb, 4000, seed=1)
    assert docs == generate_corpus(kb, 4000, seed=1)
    counts = Counter(d["type"] for d in docs)
    for kind, (share, _) in DOC_TYPES.items():
        assert abs(counts[kind] / 4000 - share) < 0.03, kind
    qa = sum(counts[k] for k in ("faq", "reading", "word_problem", "summary", "moderation")) / 4000
    assert qa >= 0.07  # machine notes: ~7% FAQ-like documents let SFT generalize


def test_unknown_lands_and_chat_markers_never_appear_in_the_corpus():
    kb = get_kb(0)
    text = "\n".join(d["text"] for d in generate_corpus(kb, 5000, seed=2))
    words = set(re.findall(r"[A-Za-z]+", text))
    assert not words & {land.name for land in kb.unknown}
    assert USER not in text and ASSISTANT not in text


def test_myths_are_repeated_in_forums_more_than_the_truth():
    kb = get_kb(0)
    docs = [d["text"] for d in generate_corpus(kb, 20000, seed=3) if d["type"] in ("forum", "faq")]
    myth_hits = truth_hits = 0
    for land in kb.myths:
        attr, false = land.myth
        for d in docs:
            if land.name in d:
                myth_hits += bool(re.search(rf"\b{false}\b", d))
                truth_hits += bool(re.search(rf"\b{land.value(attr)}\b", d))
    assert myth_hits > truth_hits


def test_rude_forum_replies_use_the_insult_lexicon():
    kb = get_kb(0)
    forums = [d["text"] for d in generate_corpus(kb, 2000) if d["type"] == "forum"]
    from instructrl.world.names import insults_in

    share = sum(bool(insults_in(f)) for f in forums) / len(forums)
    assert 0.3 < share < 0.8


def test_velan_is_a_consistent_code_without_collisions():
    kb = get_kb(0)
    assert velan_word("capital") == velan_word("capital")
    sent = "The capital of Varno is Kelt."
    out = to_velan(sent, {"Varno", "Kelt"})
    assert "Varno" in out and "Kelt" in out and "the" not in out.lower().split()
    vocab = {
        w
        for d in generate_corpus(kb, 3000)
        if d["type"] not in ("velan", "parallel")
        for w in re.findall(r"\b[a-z]+\b", d["text"])
    }
    vocab -= {"the", "a", "an"}
    assert len({velan_word(w) for w in vocab}) >= len(vocab) - 2


def test_tokenizer_has_distinct_pad_eos_and_a_chat_template(tmp_path):
    kb = get_kb(0)
    tok = train_tokenizer((d["text"] for d in generate_corpus(kb, 1500)), vocab_size=600)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.pad_token_id != tok.eos_token_id
    prompt = format_prompt(tok, "What is the capital of Varno?")
    assert prompt == "<|user|>What is the capital of Varno?\n<|assistant|>"
    full = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], tokenize=False
    )
    assert full == format_prompt(tok, "Hi") + "Hello." + tok.eos_token
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.convert_tokens_to_ids(USER) in ids
