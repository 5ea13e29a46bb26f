"""`instructrl world ...`: build the miniature world's datasets, collect rankings, regenerate base models.

Sub-commands:

* ``build --out DIR [--seed S --scale X]``: every dataset (see :mod:`instructrl.world.build`);
* ``label --policy P [P2 ...] --prompts rm_prompts.jsonl --k 4 --out rankings.jsonl``: K samples per
  prompt from a policy (a checkpoint directory, a base-model size such as ``tiny``, or ``synthetic``),
  ranked by the training labelers; with several policies the K samples are shared out among them
  (a later round of comparisons: the SFT policy next to a PPO policy);
* ``corpus --out FILE``: pretraining documents (``{"text"}`` JSONL, or plain text for ``.txt``);
* ``tokenizer --out DIR``: the BPE tokenizer with its chat template;
* ``pretrain-base --out DIR [--install]``: regenerate the base models with ``instructrl pretrain``;
* ``bench --model M``: benchmark scores and instruction-following success of a model.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from instructrl.config import number_type, seed_type
from instructrl.data.io import read_records
from instructrl.errors import DataError, InstructRLError
from instructrl.experiments.pretrain import pretrain_base
from instructrl.world.base_models import SIZES, resolve_model
from instructrl.world.build import build
from instructrl.world.corpus import generate_corpus
from instructrl.world.kb import get_kb
from instructrl.world.labelers import make_pool
from instructrl.world.measure import measure_model
from instructrl.world.sampling import generate, share_slots
from instructrl.world.synthetic import sample_responses
from instructrl.world.tokenizer import format_prompt, load_world_policy, save_tokenizer, train_tokenizer


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("build", help="Write SFT, RM, PPO, evaluation, FLAN and pretraining datasets.")
    p.add_argument("--out", required=True, help="Output directory.")
    p.add_argument("--seed", type=seed_type, default=0, help="World seed (knowledge base, labelers, prompts).")
    p.add_argument(
        "--scale",
        type=number_type(float, 0, above=True),
        default=1.0,
        help="Dataset size; 1 = a tenth of the paper's prompt counts (SFT 1,272 / RM 3,321 / PPO 3,114).",
    )
    p.add_argument(
        "--pretrain-docs",
        type=number_type(int, 1),
        default=None,
        help="Documents in pretrain.jsonl (default 20,000 x scale).",
    )
    p.add_argument(
        "--eval-prompts",
        type=number_type(int, 1),
        default=None,
        help="Evaluation prompts from held-out users (default 320 x scale).",
    )

    p = sub.add_parser("label", help="Sample K responses per prompt from a policy and have labelers rank them.")
    p.add_argument(
        "--policy",
        required=True,
        nargs="+",
        help="Checkpoint directory, base-model size (tiny/small/medium) or 'synthetic'. Several: the K "
        "samples of a prompt are shared out among them in turn, and each row's 'sources' names "
        "the policy behind each sample.",
    )
    p.add_argument("--prompts", required=True, help="Prompt records (rm_prompts.jsonl from 'world build').")
    p.add_argument(
        "--k", default="4", help="Responses per prompt: a number, or a range such as 4-9 (InstructGPT §3.2)."
    )
    p.add_argument("--out", required=True, help="Rankings JSONL: {prompt, completions, ranks, labeler, ...}.")
    p.add_argument(
        "--labelers",
        default="training",
        choices=["training", "heldout", "reference"],
        help="Which labelers rank (each prompt goes to one of them).",
    )
    p.add_argument("--seed", type=seed_type, default=0, help="Sampling and assignment seed.")
    p.add_argument("--limit", type=number_type(int, 1), default=None, help="Only the first N prompts.")
    p.add_argument("--max-new-tokens", type=number_type(int, 1), default=48, help="Longest sampled response.")
    p.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (InstructGPT: 1).")

    p = sub.add_parser("corpus", help="Write pretraining documents.")
    p.add_argument(
        "--out", required=True, help='corpus.jsonl ({"text"} per line) or corpus.txt (blank-line separated).'
    )
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--n-docs", type=number_type(int, 1), default=60_000)

    p = sub.add_parser("tokenizer", help="Train the world's BPE tokenizer (with its chat template).")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--n-docs", type=number_type(int, 1), default=60_000)

    p = sub.add_parser("pretrain-base", help="Regenerate the base models with 'instructrl pretrain'.")
    p.add_argument("--out", required=True, help="Work directory (corpus, tokenizer, runs, fp16 models, report.json).")
    p.add_argument("--sizes", default=None, help="Comma-separated sizes (default: tiny,small,medium).")
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--n-docs", type=number_type(int, 1), default=60_000, help="Corpus documents.")
    p.add_argument(
        "--steps-scale",
        type=number_type(float, 0, above=True),
        default=1.0,
        help="Multiply every size's step budget (quick runs: 0.05).",
    )
    p.add_argument("--install", action="store_true", help="Copy the models into the package (resources/base_models).")

    p = sub.add_parser("bench", help="Benchmarks (SQuAD/DROP/HellaSwag/WMT analogues) and instruction success.")
    p.add_argument("--model", required=True, help="Checkpoint directory or base-model size.")
    p.add_argument(
        "--n", type=number_type(int, 1), default=100, help="Items per benchmark and prompts for instruction success."
    )
    p.add_argument("--seed", type=seed_type, default=0)


def _read_jsonl(path: str) -> list[dict]:
    """World prompt records (the shared reader, plus the fields the labelers judge by)."""
    records = read_records(path, what="prompt data")
    for r in records:
        for key in ("prompt", "task"):
            if key not in r.data:
                raise DataError(
                    f"{r.where}: missing '{key}' (use the prompt files written by 'instructrl world build')"
                )
    return [r.data for r in records]


def _k_range(text: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise InstructRLError(f"--k {text!r}: expected a number or a range like 4-9") from None
    if not 2 <= lo_i <= hi_i:
        raise InstructRLError(f"--k {text!r}: need 2 <= K, and the range low <= high")
    return lo_i, hi_i


def label(args: argparse.Namespace) -> int:
    records = _read_jsonl(args.prompts)[: args.limit]
    lo, hi = _k_range(args.k)
    rng = random.Random(f"label:{args.seed}")
    ks = [rng.randint(lo, hi) for _ in records]
    seed = records[0]["task"].get("world", 0) if records else 0
    pool = make_pool(seed)
    labelers = {"training": pool.training, "heldout": pool.heldout, "reference": [pool.reference]}[args.labelers]
    policies = [args.policy] if isinstance(args.policy, str) else list(args.policy)  # one, or several
    if "synthetic" in policies and len(policies) > 1:
        raise InstructRLError("--policy synthetic cannot be mixed with model policies")
    if policies == ["synthetic"]:
        kb = get_kb(seed)
        samples = [sample_responses(kb, rec, k, rng) for rec, k in zip(records, ks)]
    else:
        paths = [_policy_path(p) for p in policies]  # every path checked before any sampling
        samples = [[""] * k for k in ks]
        for j, (path, slots) in enumerate(zip(paths, share_slots(ks, len(policies)))):
            texts = _sample_from_model(args, path, [records[i] for i, _ in slots], seed=args.seed + j)
            for (i, s), text in zip(slots, texts):
                samples[i][s] = text
    with open(args.out, "w", encoding="utf-8") as f:
        for rec, completions in zip(records, samples):
            lab = rng.choice(labelers)
            row = {
                "prompt": rec["prompt"],
                "completions": completions,
                "ranks": lab.rank(rec, completions),
                "labeler": lab.id,
                **{k: rec[k] for k in ("user", "category", "task", "id") if k in rec},
            }
            if len(policies) > 1:
                row["sources"] = [policies[s % len(policies)] for s in range(len(completions))]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"label: {len(records)} prompts ranked by {args.labelers} labelers -> {args.out}")
    return 0


def _policy_path(policy: str) -> str:
    """The checkpoint directory of a --policy value (a directory or a base-model size)."""
    path = resolve_model(policy)
    if not Path(path).exists():
        raise InstructRLError(f"--policy {policy}: no such directory (or a size: tiny, small, medium, or 'synthetic')")
    return path


def _sample_from_model(args: argparse.Namespace, path: str, records: list[dict], seed: int) -> list[str]:
    """One sample of the model at ``path`` per record (a record repeated k times gets k samples)."""
    tok, model = load_world_policy(path, "--policy")
    texts = [format_prompt(tok, rec["prompt"]) for rec in records]
    return generate(model, tok, texts, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=seed)


def main(args: argparse.Namespace) -> int:
    if args.action == "build":
        meta = build(
            args.out, seed=args.seed, scale=args.scale, pretrain_docs=args.pretrain_docs, eval_prompts=args.eval_prompts
        )
        print(f"build: wrote {', '.join(f'{k} ({v})' for k, v in meta['counts'].items())} to {args.out}")
        return 0
    if args.action == "label":
        return label(args)
    if args.action == "corpus":
        docs = generate_corpus(get_kb(args.seed), args.n_docs, seed=args.seed)
        with open(args.out, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(d["text"] + "\n\n" if args.out.endswith(".txt") else json.dumps({"text": d["text"]}) + "\n")
        print(f"corpus: {len(docs)} documents -> {args.out}")
        return 0
    if args.action == "tokenizer":
        docs = generate_corpus(get_kb(args.seed), args.n_docs, seed=args.seed)
        save_tokenizer(train_tokenizer((d["text"] for d in docs), args.vocab_size), args.out)
        print(f"tokenizer -> {args.out}")
        return 0
    if args.action == "pretrain-base":
        sizes = args.sizes.split(",") if args.sizes else None
        for s in sizes or []:
            if s not in SIZES:
                raise InstructRLError(f"--sizes: unknown size {s!r} (known: {', '.join(SIZES)})")
        report = pretrain_base(
            args.out, sizes, seed=args.seed, n_docs=args.n_docs, steps_scale=args.steps_scale, install=args.install
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.action == "bench":
        print(json.dumps(measure_model(args.model, n=args.n, seed=args.seed), indent=2))
        return 0
    raise InstructRLError(f"unknown action {args.action}")
