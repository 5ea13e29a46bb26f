"""Build the world's datasets in the toolkit's standard formats.

``instructrl world build --out DIR`` writes:

* ``sft.jsonl``: ``{"prompt", "completion", "labeler", "user", "category", "task", "id"}``,
  demonstrations by the training labelers (InstructGPT §3.2);
* ``rm_prompts.jsonl`` and ``ppo_prompts.jsonl``: ``{"prompt", "user", "category", "task", "id"}``;
* ``eval_prompts.jsonl``: the same, from held-out users only (§3.2: splits are by user);
* ``truthfulqa.jsonl``: questions on myths and unknown lands (§4.2), from held-out users;
* ``toxicity_prompts.jsonl``: rude sentence starts, each with no, a respectful and a biased
  instruction (the RealToxicityPrompts analogue, §4.2);
* ``flan.jsonl``: benchmark-style tasks phrased as instructions (the FLAN/T0 baseline, §4.3);
* ``pretrain.jsonl``: ``{"text"}`` web-text documents (for PPO-ptx);
* ``world.json``: seed, scale and counts.

``prompt`` is the user's message; trainers format it with the tokenizer's chat template. ``task``
holds what the judge needs. Sizes follow the paper's prompt counts (§3.2: SFT 12,725, RM 33,207,
PPO 31,144, evaluation 3,196) divided by ten at ``scale=1``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from instructrl.errors import ConfigError
from instructrl.world.benchmarks import flan_dataset
from instructrl.world.corpus import generate_corpus
from instructrl.world.kb import KnowledgeBase, get_kb, question
from instructrl.world.labelers import make_pool
from instructrl.world.tasks import BIASED, RESPECTFUL, make_prompt, rude_prefix

PAPER_COUNTS = {"sft": 12_725, "rm": 33_207, "ppo": 31_144, "eval": 3_196}


def sizes(scale: float) -> dict[str, int]:
    """Prompt counts at a scale (scale 1 = a tenth of the paper's)."""
    return {k: max(8, round(v * scale / 10)) for k, v in PAPER_COUNTS.items()}


def _users(prefix: str, n: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """User ids and Zipf-like activity weights (a few users send many prompts)."""
    ids = [f"{prefix}{rng.randrange(16**6):06x}" for _ in range(n)]
    return ids, [1.0 / (i + 1) ** 0.7 for i in range(n)]


def _prompts(
    kb: KnowledgeBase, n: int, users: tuple[list[str], list[float]], rng: random.Random, split: str
) -> list[dict]:
    ids, weights = users
    out = []
    for i in range(n):
        rec = make_prompt(kb, rng)
        out.append(
            {
                "prompt": rec["prompt"],
                "user": rng.choices(ids, weights)[0],
                "category": rec["category"],
                "task": rec["task"],
                "id": f"{split}-{i:06d}",
            }
        )
    return out


def truthfulqa_prompts(kb: KnowledgeBase, rng: random.Random, users: list[str]) -> list[dict]:
    """Every myth question, plus as many questions about unknown lands (truthful answer: I don't know)."""
    out = []
    for land in kb.myths:
        attr = land.myth[0]
        out.append(
            {
                "prompt": question(land.name, attr, rng),
                "category": "open_qa",
                "kind": "myth",
                "task": {
                    "type": "open_qa",
                    "land": land.name,
                    "attribute": attr,
                    "known": True,
                    "asked": [attr],
                    "ideal_words": 7,
                    "min_words": 3,
                    "constraints": [],
                    "world": kb.seed,
                },
            }
        )
    for land in rng.sample(kb.unknown, min(len(kb.unknown), len(kb.myths))):
        attr = rng.choice(["capital", "color", "animal", "food"])
        out.append(
            {
                "prompt": question(land.name, attr, rng),
                "category": "open_qa",
                "kind": "unknown",
                "task": {
                    "type": "open_qa",
                    "land": land.name,
                    "attribute": attr,
                    "known": False,
                    "asked": [attr],
                    "ideal_words": 7,
                    "min_words": 3,
                    "constraints": [],
                    "world": kb.seed,
                },
            }
        )
    for i, rec in enumerate(out):
        rec["user"], rec["id"] = rng.choice(users), f"truthfulqa-{i:05d}"
    return out


def toxicity_prompts(kb: KnowledgeBase, n: int, rng: random.Random, users: list[str]) -> list[dict]:
    """Rude sentence starts, each under three instructions: none, respectful, biased (§4.2)."""
    out = []
    for i in range(n):
        prefix, template = rude_prefix(kb, rng)
        for instruction, lead in (("none", ""), ("respectful", RESPECTFUL + " "), ("biased", BIASED + " ")):
            out.append(
                {
                    "prompt": lead + prefix,
                    "category": "generation",
                    "instruction": instruction,
                    "user": rng.choice(users),
                    "id": f"toxicity-{i:05d}-{instruction}",
                    "task": {
                        "type": "polite_continue",
                        "prefix": prefix,
                        "template": template,
                        "instruction": instruction,
                        "ideal_words": 10,
                        "min_words": 3,
                        "constraints": [],
                        "world": kb.seed,
                    },
                }
            )
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def build(
    out_dir: str | Path,
    seed: int = 0,
    scale: float = 1.0,
    pretrain_docs: int | None = None,
    eval_prompts: int | None = None,
) -> dict:
    """Write every dataset of world ``seed`` to ``out_dir``; returns the counts (also in world.json).

    ``eval_prompts`` overrides the scaled number of evaluation prompts (tighter win-rate standard
    errors without more training data)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kb = get_kb(seed)
    pool = make_pool(seed)
    rng = random.Random(f"build:{seed}:{scale}")
    n = sizes(scale)
    if eval_prompts is not None:
        if eval_prompts < 1:
            raise ConfigError(f"eval_prompts must be at least 1, got {eval_prompts}")
        n["eval"] = eval_prompts
    train_users = _users("u", max(20, round(120 * scale)), rng)
    heldout_users = _users("h", max(8, round(30 * scale)), rng)

    sft = _prompts(kb, n["sft"], train_users, rng, "sft")
    for rec in sft:  # each demonstration written by one training labeler, in that labeler's style
        labeler = rng.choice(pool.training)
        rec["completion"] = labeler.demonstrate(rec, rng)
        rec["labeler"] = labeler.id
    sft = [{k: r[k] for k in ("prompt", "completion", "labeler", "user", "category", "task", "id")} for r in sft]
    files = {
        "sft.jsonl": sft,
        "rm_prompts.jsonl": _prompts(kb, n["rm"], train_users, rng, "rm"),
        "ppo_prompts.jsonl": _prompts(kb, n["ppo"], train_users, rng, "ppo"),
        "eval_prompts.jsonl": _prompts(kb, n["eval"], heldout_users, rng, "eval"),
        "truthfulqa.jsonl": truthfulqa_prompts(kb, rng, heldout_users[0]),
        "toxicity_prompts.jsonl": toxicity_prompts(kb, max(20, round(200 * scale)), rng, heldout_users[0]),
        "flan.jsonl": flan_dataset(kb, max(64, round(n["sft"])), seed=seed),
        "pretrain.jsonl": [
            {"text": d["text"]}
            for d in generate_corpus(kb, pretrain_docs or max(1000, round(20_000 * scale)), seed=seed + 1)
        ],
    }
    for name, records in files.items():
        write_jsonl(out / name, records)
    meta = {
        "seed": seed,
        "scale": scale,
        "counts": {k: len(v) for k, v in files.items()},
        "categories": {
            k: dict(Counter(r["category"] for r in files[k]))
            for k in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl", "eval_prompts.jsonl")
        },
        "labelers": {"training": [lab.id for lab in pool.training], "heldout": [lab.id for lab in pool.heldout]},
        "users": {"training": len(train_users[0]), "heldout": len(heldout_users[0])},
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
