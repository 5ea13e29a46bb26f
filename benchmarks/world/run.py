"""Measure the miniature world: base models, labelers, prompt distribution.

    PYTHONPATH=src python benchmarks/world/run.py [--n 100] [--sizes tiny,small,medium]

Writes benchmarks/world/results.json and results.md:
* per base size: parameters, training time and held-out perplexity (from pretrain_report.json, the
  report of 'instructrl world pretrain-base'), benchmark scores (SQuAD/DROP/HellaSwag/WMT analogues,
  few-shot, temperature 0), instruction-following success zero-shot and few-shot;
* labeler agreement among training and among held-out labelers (synthetic responses, and samples of
  the tiny base model when it is installed);
* category shares of the built datasets.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def agreement(n_prompts: int, seed: int = 0) -> dict:
    from instructrl.world.kb import get_kb
    from instructrl.world.labelers import make_pool, measure_agreement
    from instructrl.world.synthetic import sample_responses
    from instructrl.world.tasks import make_prompt

    kb = get_kb(seed)
    rng = random.Random(f"agreement:{seed}")
    items = []
    for _ in range(n_prompts):
        rec = make_prompt(kb, rng)
        items.append((rec, sample_responses(kb, rec, 4, rng)))
    out = {}
    for pool_seed in (0, 1, 2):
        pool = make_pool(pool_seed)
        out[f"pool{pool_seed}"] = {
            "training": round(measure_agreement(pool.training, items), 4),
            "heldout": round(measure_agreement(pool.heldout, items), 4),
        }
    return out


def agreement_on_model(size: str, n_prompts: int) -> dict | None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructrl.world.base_models import RESOURCES
    from instructrl.world.labelers import make_pool, measure_agreement
    from instructrl.world.measure import eval_records
    from instructrl.world.sampling import sample_responses

    if not (RESOURCES / size / "config.json").exists():
        return None
    tok = AutoTokenizer.from_pretrained(RESOURCES / size)
    model = AutoModelForCausalLM.from_pretrained(RESOURCES / size).float()
    recs = eval_records(0, n_prompts, sample_seed=7)
    samples = sample_responses(model, tok, [r["prompt"] for r in recs], k=4, max_new_tokens=40)
    pool = make_pool(0)
    items = list(zip(recs, samples))
    return {
        "training": round(measure_agreement(pool.training, items), 4),
        "heldout": round(measure_agreement(pool.heldout, items), 4),
    }


def category_shares() -> dict:
    from instructrl.world.build import build

    with tempfile.TemporaryDirectory() as d:
        meta = build(d, seed=0, scale=1.0, pretrain_docs=100)
    total = Counter()
    for counts in meta["categories"].values():
        total.update(counts)
    n = sum(total.values())
    return {"counts": meta["counts"], "shares": {k: round(v / n, 4) for k, v in total.most_common()}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="Items per benchmark and prompts per success measurement.")
    ap.add_argument("--sizes", default="tiny,small,medium")
    ap.add_argument("--agreement-prompts", type=int, default=400)
    ap.add_argument(
        "--labelers-only",
        action="store_true",
        help="Measure agreement and category shares again, keeping the base-model measurements in results.json "
        "(they do not depend on the labelers).",
    )
    args = ap.parse_args()

    from instructrl.world.base_models import RESOURCES
    from instructrl.world.measure import measure_model

    report_path = HERE / "pretrain_report.json"
    pretrain = json.loads(report_path.read_text())["sizes"] if report_path.exists() else {}
    results: dict = {"sizes": {}, "n": args.n}
    sizes = args.sizes.split(",")
    if args.labelers_only:  # the base models' rows are kept as they are; none is measured again
        kept = json.loads((HERE / "results.json").read_text())
        results, sizes = {"sizes": kept["sizes"], "n": kept["n"]}, []
    for size in sizes:
        if not (RESOURCES / size / "config.json").exists():
            print(f"[skip] base model {size} not installed", file=sys.stderr)
            continue
        start = time.time()
        m = measure_model(size, n=args.n)
        for key in ("zero_shot", "few_shot"):
            m[key].pop("examples", None)
        results["sizes"][size] = {"pretrain": pretrain.get(size), **m, "measure_seconds": round(time.time() - start, 1)}
        print(size, json.dumps(results["sizes"][size]), flush=True)
    results["agreement_synthetic"] = agreement(args.agreement_prompts)
    results["agreement_tiny_samples"] = agreement_on_model("tiny", 150)
    results["categories"] = category_shares()
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(render(results, kept_conclusion(HERE / "results.md")))
    print((HERE / "results.md").read_text())
    return 0


def kept_conclusion(page: Path) -> str:
    """The conclusion written by hand at the top of the results page (between its title and "Produced by"),
    kept when the tables below it are written again: read it against the new numbers."""
    text = page.read_text() if page.exists() else ""
    start, end = text.find("\n\n") + 2, text.find("Produced by `")
    return text[start:end] if 2 <= start <= end else ""


def render(r: dict, conclusion: str = "") -> str:
    """The results page: the conclusion first, then the measured tables."""
    lines = [
        "# Miniature world: measured properties",
        "",
        *([conclusion.rstrip("\n"), ""] if conclusion else []),
        "Produced by `PYTHONPATH=src python benchmarks/world/run.py` (raw numbers in results.json).",
        "",
        "## Base models",
        "",
        "| size | params | train steps | train time (s) | held-out ppl | SQuAD F1 | DROP F1 | HellaSwag acc | WMT BLEU "
        "| success 0-shot | success few-shot |",
        "|" + "---|" * 11,
    ]
    for size, s in r["sizes"].items():
        p = s.get("pretrain") or {}
        b = s["benchmarks"]
        lines.append(
            f"| {size} | {p.get('parameters', '?'):,} | {p.get('steps', '?')} | {p.get('train_seconds', '?')} | "
            f"{p.get('heldout_perplexity', '?')} | {b['squad_f1']:.3f} | {b['drop_f1']:.3f} | "
            f"{b['hellaswag_acc']:.3f} | {b['wmt_bleu']:.1f} | {s['zero_shot']['success']:.3f} | "
            f"{s['few_shot']['success']:.3f} |"
        )
    lines += [
        "",
        "Chance: HellaSwag 0.25; SQuAD F1 of always answering 'not stated' is about 0.33.",
        "",
        "## Labeler agreement (pairwise, ties left out)",
        "",
        "InstructGPT §3.4: 72.6 ± 1.5% among training labelers, 77.3 ± 1.3% among held-out labelers.",
        "",
        "| responses | pool | training | held-out |",
        "|---|---|---|---|",
    ]
    for pool, a in r["agreement_synthetic"].items():
        lines.append(f"| synthetic policy | {pool} | {a['training']:.3f} | {a['heldout']:.3f} |")
    if r.get("agreement_tiny_samples"):
        a = r["agreement_tiny_samples"]
        lines.append(f"| tiny base model samples | pool0 | {a['training']:.3f} | {a['heldout']:.3f} |")
    lines += [
        "",
        "## Category shares (all built prompt sets, scale 1)",
        "",
        "| category | share | paper |",
        "|---|---|---|",
    ]
    from instructrl.world.tasks import CATEGORY_SHARES

    for cat, share in r["categories"]["shares"].items():
        lines.append(f"| {cat} | {share:.3f} | {CATEGORY_SHARES[cat]:.3f} |")
    lines += ["", f"Dataset sizes at scale 1: {r['categories']['counts']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
