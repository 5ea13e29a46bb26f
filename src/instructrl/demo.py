"""`instructrl demo --out O`: the method end to end on built-in data, on a CPU, in minutes.

This version runs stage 1 on a small built-in world of fictional countries: it builds a tokenizer and
a tiny GPT-2, pretrains it on encyclopedic text plus FAQ pages, fine-tunes it on demonstrations in the
instruction template, and measures instruction following on countries held out of the demonstrations,
before and after SFT.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from instructrl.data.io import write_jsonl

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "silver", "gold"]
ANIMALS = ["lynx", "heron", "otter", "falcon", "bison", "gecko", "walrus", "ibex", "marten", "crane"]
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "vu", "zo", "ne", "shi", "po", "da", "ul"]


def make_world(n_countries: int = 160, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n_countries:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize())
    return [{"name": n, "capital": "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize(),
             "color": rng.choice(COLORS), "animal": rng.choice(ANIMALS)} for n in sorted(names)]


def corpus(world: list[dict], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for c in world:
        facts = [f"The capital of {c['name']} is {c['capital']}.", f"The flag of {c['name']} is {c['color']}.",
                 f"The national animal of {c['name']} is the {c['animal']}."]
        for _ in range(3):
            rng.shuffle(facts)
            docs.append(f"{c['name']} is a country. " + " ".join(facts))
        # FAQ pages: questions answered in a format unlike the instruction template
        docs.append(f"FAQ. Q: What is the capital of {c['name']}? A: The capital of {c['name']} is {c['capital']}. "
                    f"Q: What color is the flag of {c['name']}? A: The flag of {c['name']} is {c['color']}.")
    rng.shuffle(docs)
    return docs


def demonstrations(world: list[dict]) -> list[dict]:
    rows = []
    for c in world:
        rows.append({"prompt": f"What is the capital of {c['name']}?", "completion": f"The capital of {c['name']} is {c['capital']}."})
        rows.append({"prompt": f"Tell me the color of {c['name']}'s flag.", "completion": f"The flag of {c['name']} is {c['color']}."})
    return rows


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="Output directory (models, data, summary.json).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=600, help="Base-model pretraining steps.")


def main(args) -> int:
    from instructrl.generate import generate
    from instructrl.modeling.loading import load_causal_lm, load_tokenizer
    from instructrl.modeling.tiny import make_tiny_model_dir
    from instructrl.sft.api import run_pretrain, run_sft
    from instructrl.sft.config import PretrainConfig, SFTConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world = make_world(seed=args.seed)
    train_c, held_c = world[:100], world[100:]
    docs = corpus(world, args.seed)
    write_jsonl(out / "pretrain.jsonl", ({"text": d} for d in docs))
    write_jsonl(out / "sft.jsonl", demonstrations(train_c))
    print(f"[demo 1/4] built {len(world)} countries, {len(docs)} documents, {2 * len(train_c)} demonstrations", flush=True)

    base = out / "base"
    if not (base / "model.safetensors").exists():
        init = make_tiny_model_dir(out / "init", docs, vocab_size=1024, n_layer=2, n_embd=128, n_head=4, n_positions=128)
        print(f"[demo 2/4] pretraining a {2}-layer GPT-2 on the corpus ({args.pretrain_steps} steps, ~2 min)", flush=True)
        run_pretrain(PretrainConfig(model=str(init), data=str(out / "pretrain.jsonl"), output_dir=str(base),
                                    max_steps=args.pretrain_steps, epochs=100, batch_size=32, max_length=64,
                                    learning_rate=3e-3, warmup_steps=30, select_by="last", seed=args.seed,
                                    resume=(base / "checkpoints").exists()))
    sft = out / "sft"
    print(f"[demo 3/4] SFT on the demonstrations ({time.time() - t0:.0f}s so far)", flush=True)
    run_sft(SFTConfig(model=str(base), data=str(out / "sft.jsonl"), output_dir=str(sft), epochs=10, batch_size=16,
                      learning_rate=1e-3, max_length=64, residual_dropout=0.0, eval_fraction=0.0, select_by="last",
                      seed=args.seed, resume=(sft / "checkpoints").exists()))

    print("[demo 4/4] instruction following on held-out countries, base vs SFT", flush=True)
    prompts = [f"What is the capital of {c['name']}?" for c in held_c]
    answers = [c["capital"] for c in held_c]
    summary = {}
    for name, path in (("base", base), ("sft", sft)):
        tok = load_tokenizer(str(path))
        model = load_causal_lm(str(path), tok)
        gens = generate(model, tok, prompts, temperature=0, max_new_tokens=16)
        acc = sum(a in g.text for a, g in zip(answers, gens)) / len(answers)
        summary[name] = {"heldout_accuracy": acc, "example": {"prompt": prompts[0], "response": gens[0].text}}
        print(f"  {name:4s}: {acc:.0%} correct   e.g. {prompts[0]!r} -> {gens[0].text!r}", flush=True)
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {summary['seconds']:.0f}s; results in {out / 'summary.json'}")
    return 0
