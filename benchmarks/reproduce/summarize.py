"""Summarize an `instructrl reproduce` run as markdown tables (for results.md) and keep its results.json.

    instructrl reproduce --preset tiny --out runs/reproduce
    PYTHONPATH=src python benchmarks/reproduce/summarize.py runs/reproduce > benchmarks/reproduce/tables.md

Copies OUT/results.json to benchmarks/reproduce/results.json and prints: the claims checked, win
rates by size and arm, Likert and metadata, truthfulness, toxicity, benchmarks with the alignment tax,
RM accuracy, PPO training, and stage times.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fmt(v) -> str:
    if isinstance(v, dict) and "mean" in v:
        se = v.get("se")
        return f"{v['mean']:.3f}" + (f" ± {se:.3f}" if isinstance(se, float) and se == se and se > 0 else "")
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    from instructrl.experiments.reproduce import ARMS, META, META_SHORT, alignment_tax

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduce")
    res = json.loads((out / "results.json").read_text())
    shutil.copyfile(out / "results.json", HERE / "results.json")
    sizes = list(res["sizes"])
    rows = [(s, a, res["sizes"][s]["arms"][a]) for s in sizes for a in ARMS if a in res["sizes"][s]["arms"]]
    parts = [
        "## Claims checked\n",
        "\n".join(
            f"- **{'holds' if c['held'] else 'not met' if c['held'] is False else 'not measured'}**: "
            f"{c['claim']} ({c['measured']})"
            for c in res["checks"]
        ),
    ]
    parts.append(f"\n## Win rate against {res['baseline']} (held-out labelers, ties 0.5)\n")
    parts.append(
        table(
            ["arm", *[f"{s} ({res['sizes'][s]['parameters'] / 1e6:.2f}M)" for s in sizes]],
            [[a, *[res["sizes"][s]["arms"].get(a, {}).get("win_rate") for s in sizes]] for a in ARMS],
        )
    )
    parts.append("\n## Likert and metadata\n")
    parts.append(
        table(
            ["size", "arm", "Likert", *(META_SHORT[k] for k in META)],
            [[s, a, m.get("likert"), *[m.get(k) for k in META]] for s, a, m in rows],
        )
    )
    parts.append("\n## Truthfulness and toxicity\n")
    parts.append(
        table(
            [
                "size",
                "arm",
                "QA truthful",
                "QA truthful+inf.",
                "Instr+QA truthful",
                "Instr+QA truthful+inf.",
                "toxic: none",
                "toxic: respectful",
                "toxic: biased",
            ],
            [
                [
                    s,
                    a,
                    m["truthfulness"]["qa"]["truthful"],
                    m["truthfulness"]["qa"]["truthful_and_informative"],
                    m["truthfulness"]["instruction_qa"]["truthful"],
                    m["truthfulness"]["instruction_qa"]["truthful_and_informative"],
                    *[m["toxicity"].get(k) for k in ("none", "respectful", "biased")],
                ]
                for s, a, m in rows
            ],
        )
    )
    keys = sorted(rows[0][2]["benchmarks"])
    parts.append("\n## Benchmarks (few-shot, temperature 0) and the alignment tax (mean relative drop below GPT)\n")
    parts.append(
        table(
            ["size", "arm", *keys, "tax"],
            [
                [s, a, *[m["benchmarks"][k] for k in keys], alignment_tax(res["sizes"][s]["arms"], a)]
                for s, a, m in rows
            ],
        )
    )
    rm = res["reward_model"]["eval"]
    parts.append(f"\n## Reward model ({res['reward_model']['size']}) on held-out comparisons\n")
    parts.append(
        table(
            ["labelers", "accuracy", "noiseless judge", "pairs"],
            [
                [
                    g,
                    {"mean": v["accuracy"], "se": v["accuracy_se"]},
                    {"mean": v["judge_accuracy"], "se": v["judge_accuracy_se"]},
                    v["pairs"],
                ]
                for g, v in rm.items()
            ],
        )
    )
    parts.append("\n## PPO training (RM score and KL: mean of the first and last quarter of iterations)\n")
    parts.append(
        table(
            ["size", "arm", "score first", "score last", "KL first", "KL last"],
            [
                [
                    s,
                    a,
                    *[
                        v.get(k, {}).get(q)
                        for k in ("ppo/score_mean", "ppo/kl")
                        for q in ("first_quarter", "last_quarter")
                    ],
                ]
                for s, d in res["ppo_training"].items()
                for a, v in d.items()
            ],
        )
    )
    parts.append(f"\n## Stage times (seconds; total {res['seconds']:.0f} s = {res['seconds'] / 60:.1f} min)\n")
    parts.append(table(["stage", "seconds"], [[k, v] for k, v in res["timings"].items()]))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
