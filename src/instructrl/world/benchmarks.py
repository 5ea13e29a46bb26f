"""Benchmarks for the alignment tax (InstructGPT §4.3, App. E), written in the corpus's own formats.

* ``squad``: reading comprehension with unanswerable questions (SQuADv2 analogue), token F1;
* ``drop``: counting and adding over a market passage (DROP analogue), F1;
* ``hellaswag``: choose a story's next sentence among four by log-likelihood (HellaSwag analogue):
  the distractors break the story arc, swap a character or swap a fact; accuracy;
* ``wmt``: translation from Velan to English (WMT analogue), BLEU via sacrebleu.

Tasks are few-shot (the shots are earlier documents, separated by EOS as in pretraining); generative
ones are decoded at temperature 0 and cut at the first newline, as the paper evaluates. Test passages use fresh lands (never in the corpus), so reading, not memory, answers them.

:func:`flan_dataset` phrases the same tasks as instructions: the data the paper's FLAN / T0
baselines are fine-tuned on (§4.3), in the SFT record format.
"""

from __future__ import annotations

import random
import string
from collections import Counter

from instructrl.world.corpus import NOT_STATED, passage, story, word_problem
from instructrl.world.kb import ATTRIBUTES, KnowledgeBase, question
from instructrl.world.names import to_velan
from instructrl.world.tokenizer import EOS

BENCHMARKS = ("squad", "drop", "hellaswag", "wmt")


# ============================================================================ items


def _squad_example(kb: KnowledgeBase, rng: random.Random) -> tuple[str, str, str]:
    land = kb.fresh_land(rng)
    stated = rng.sample(ATTRIBUTES, rng.randint(2, 3))
    attr = rng.choice(stated) if rng.random() < 0.67 else rng.choice([a for a in ATTRIBUTES if a not in stated])
    answer = land.value(attr) if attr in stated else NOT_STATED
    return passage(land, stated, rng), question(land.name, attr, rng), answer


def _drop_example(kb: KnowledgeBase, rng: random.Random) -> tuple[str, str, str]:
    text, qas = word_problem(kb, rng)
    q, a = rng.choice(qas)
    return text, q, a


def _qa_block(p: str, q: str, a: str | None) -> str:
    return f"Passage: {p}\nQ: {q}\nA:" + (f" {a}" if a is not None else "")


def _translation_sentence(kb: KnowledgeBase, rng: random.Random) -> str:
    land = rng.choice(kb.known)
    if rng.random() < 0.5:
        a = rng.choice(ATTRIBUTES)
        return passage(land, [a], rng)
    return rng.choice(story(kb, land, rng)[0][:3])


SHOT_SEPARATOR = EOS  # shots are separate documents, joined as in pretraining


def _swap(sentence: str, slots: dict[str, str], kb: KnowledgeBase, rng: random.Random, what: str) -> str | None:
    """The sentence with one character (``what="name"``) or one fact (``"fact"``) replaced, or None."""
    if what == "name":
        present = [slots[k] for k in ("h", "m") if slots[k] in sentence]
        if present:
            other = rng.choice([p for p in kb.people if p not in (slots["h"], slots["m"])])
            return sentence.replace(rng.choice(present), other)
        return None
    land = kb.by_name[slots["L"]]
    other = rng.choice([x for x in kb.known if x.name != land.name])
    for attr, slot in (("capital", "C"), ("food", "f"), ("color", "c")):
        if slots[slot] in sentence and other.value(attr) != slots[slot]:
            return sentence.replace(slots[slot], other.value(attr))
    return None


def _hellaswag_item(kb: KnowledgeBase, rng: random.Random, shots: int) -> dict:
    """Context: the first k sentences of a story. Endings: sentence k+1; a sentence from another point
    of the story arc; sentence k+1 with a character swapped; sentence k+1 with a fact swapped (another
    land's capital, food or flag). Structure, reading and knowledge each rule one out."""
    land = rng.choice(kb.known)
    sents, slots = story(kb, land, rng)
    alt, _ = story(kb, land, rng, cast=(slots["h"], slots["m"], slots["a"]))
    k = rng.randint(2, 4)
    j = rng.choice([i for i in range(5) if i != k])
    candidates = [
        alt[j] if alt[j] != sents[k] else sents[j],
        _swap(sents[k], slots, kb, rng, "name"),
        _swap(sents[k], slots, kb, rng, "fact"),
    ]
    wrong = list(dict.fromkeys(c for c in candidates if c and c != sents[k]))
    while len(wrong) < 3:  # a sentence without a name or a fact to swap: more arc distractors
        extra = alt[rng.choice([i for i in range(5) if i != k])]
        if extra not in wrong and extra != sents[k]:
            wrong.append(extra)
    endings = [sents[k]] + wrong[:3]
    order = list(range(4))
    rng.shuffle(order)
    shots_text = "".join(" ".join(story(kb, rng.choice(kb.known), rng)[0]) + SHOT_SEPARATOR for _ in range(shots))
    return {
        "context": shots_text + " ".join(sents[:k]),
        "endings": [endings[i] for i in order],
        "label": order.index(0),
    }


def benchmark_items(kb: KnowledgeBase, name: str, n: int, seed: int = 0, shots: int = 2) -> list[dict]:
    """``n`` test items of one benchmark: ``{"prompt", "reference"}`` or ``{"context", "endings", "label"}``."""
    rng = random.Random(f"bench:{name}:{kb.seed}:{seed}")
    items = []
    for _ in range(n):
        if name in ("squad", "drop"):
            make = _squad_example if name == "squad" else _drop_example
            blocks = [_qa_block(*make(kb, rng)) for _ in range(shots)]
            p, q, a = make(kb, rng)
            items.append({"prompt": SHOT_SEPARATOR.join(blocks + [_qa_block(p, q, None)]), "reference": a})
        elif name == "wmt":
            nouns = kb.proper_nouns()
            lines = []
            for _ in range(shots):
                s = _translation_sentence(kb, rng)
                lines += [f"Velan: {to_velan(s, nouns)}", f"English: {s}"]
            s = _translation_sentence(kb, rng)
            lines += [f"Velan: {to_velan(s, nouns)}", "English:"]
            items.append({"prompt": "\n".join(lines), "reference": s})
        elif name == "hellaswag":
            items.append(_hellaswag_item(kb, rng, shots))
        else:
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return items


# ============================================================================ metrics


def _normalize(text: str) -> list[str]:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    toks = [t for t in text.split() if t not in ("a", "an", "the")]
    return [] if " ".join(toks) == NOT_STATED else toks  # "not stated" is SQuADv2's empty answer


def f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 after normalization; both empty (no answer) scores 1."""
    p, r = _normalize(prediction), _normalize(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu  # an optional extra (instructrl[eval])

    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def run_benchmarks(
    model, tokenizer, kb: KnowledgeBase, n: int = 100, seed: int = 0, names: tuple[str, ...] = BENCHMARKS
) -> dict[str, float]:
    """Score a causal LM on the benchmarks: ``{"squad_f1", "drop_f1", "hellaswag_acc", "wmt_bleu"}``."""
    # torch and transformers load only where a model runs: the world package itself stays pure Python (__init__.py)
    from instructrl.world.sampling import continuation_logprobs, generate

    scores: dict[str, float] = {}
    for name in names:
        items = benchmark_items(kb, name, n, seed)
        if name == "hellaswag":
            pairs = [(it["context"], " " + e) for it in items for e in it["endings"]]
            lps = continuation_logprobs(model, tokenizer, pairs)
            correct = 0
            for i, it in enumerate(items):
                per = [lp / max(1, cnt) for lp, cnt in lps[4 * i : 4 * i + 4]]
                correct += int(max(range(4), key=per.__getitem__) == it["label"])
            scores["hellaswag_acc"] = correct / len(items)
            continue
        preds = generate(
            model,
            tokenizer,
            [it["prompt"] for it in items],
            max_new_tokens=24 if name != "wmt" else 32,
            temperature=0.0,
            stop_at_newline=True,
        )
        refs = [it["reference"] for it in items]
        if name == "wmt":
            scores["wmt_bleu"] = bleu(preds, refs)
        else:
            scores[f"{name}_f1"] = sum(f1(p, r) for p, r in zip(preds, refs)) / len(items)
    return scores


# ============================================================================ FLAN / T0 analogue

_FLAN_TEMPLATES = {
    "squad": [
        "Answer the question using only the passage. If the passage does not say, answer '{ns}'.\n"
        "Passage: {p}\nQuestion: {q}",
        "Read this and answer the question ('{ns}' if it cannot be answered). {p} {q}",
    ],
    "drop": [
        "Read the passage and answer the question with a number or a name.\nPassage: {p}\nQuestion: {q}",
        "{p} Based on the text, {q}",
    ],
    "hellaswag": ["How does this story end? {c}", "Write the last sentence of the story: {c}"],
    "wmt": ["Translate from Velan to English: {v}", "What is the English for this Velan sentence? {v}"],
}
_FLAN_CATEGORY = {"squad": "closed_qa", "drop": "closed_qa", "hellaswag": "generation", "wmt": "rewrite"}


def flan_dataset(kb: KnowledgeBase, n: int, seed: int = 0) -> list[dict]:
    """``n`` benchmark-style tasks phrased as instructions, as SFT records (labeler ``"flan"``)."""
    rng = random.Random(f"flan:{kb.seed}:{seed}")
    out = []
    for i in range(n):
        name = BENCHMARKS[i % len(BENCHMARKS)]
        template = rng.choice(_FLAN_TEMPLATES[name])
        if name in ("squad", "drop"):
            p, q, a = (_squad_example if name == "squad" else _drop_example)(kb, rng)
            q = q if template.startswith(("Answer", "Read")) else q[0].lower() + q[1:]
            prompt, completion = template.format(p=p, q=q, ns=NOT_STATED), a
        elif name == "hellaswag":
            sents, _ = story(kb, rng.choice(kb.known), rng)
            prompt, completion = template.format(c=" ".join(sents[:-1])), sents[-1]
        else:
            s = _translation_sentence(kb, rng)
            prompt, completion = template.format(v=to_velan(s, kb.proper_nouns())), s
        out.append(
            {
                "prompt": prompt,
                "completion": completion,
                "labeler": "flan",
                "user": "flan",
                "category": _FLAN_CATEGORY[name],
                "source": name,
                "id": f"flan-{i:06d}",
            }
        )
    return out
