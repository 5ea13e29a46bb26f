"""Gather the `reproduce --preset methods` runs of several seeds into one table (and runs.json beside it).

    python benchmarks/methods/collect.py /tmp/methods/seed0 /tmp/methods/seed1 /tmp/methods/seed2

For each method: the win rate against SFT per seed (± its SE within the seed) and the mean over seeds, the KL from
SFT, the alignment tax, truthful + informative, closed-domain hallucination and training seconds, averaged over
the seeds; then the over-optimization curves' points averaged over the seeds. Prints Markdown.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def value(row: dict, key: str) -> float | None:
    v = row.get(key)
    return v.get("mean") if isinstance(v, dict) else v


def fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(dirs: list[str]) -> None:
    runs = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    seeds = [r["seed"] for r in runs]
    names = list(runs[0]["arms"])
    lines = [
        "| method | " + " | ".join(f"win rate, seed {s}" for s in seeds) + " | mean win rate | KL from SFT | "
        "alignment tax | truthful + informative | hallucination (closed) | train s |",
        "|---" * (len(seeds) + 7) + "|",
    ]
    for name in names:
        rows = [r["arms"][name] for r in runs]
        wins = [f"{row['win_rate']['mean']:.3f} ± {row['win_rate']['se']:.3f}" for row in rows]
        cells = [
            fmt(mean([value(row, "win_rate") for row in rows])),
            fmt(mean([value(row, "kl_from_sft") for row in rows]), 2),
            fmt(mean([row.get("alignment_tax") for row in rows])),
            fmt(mean([value(row, "truthful_and_informative") for row in rows])),
            fmt(mean([value(row, "hallucination_closed_domain") for row in rows])),
            fmt(mean([row.get("train_seconds") for row in rows]), 0),
        ]
        lines.append(f"| {name} | " + " | ".join(wins + cells) + " |")
    lines += ["", "Over-optimization curves, mean over the seeds:", ""]
    for curve in runs[0]["curves"]:
        lines += ["| " + curve + " point | KL from SFT | win rate vs SFT | mean RM score |", "|---|---|---|---|"]
        for i, point in enumerate(runs[0]["curves"][curve]):
            pts = [r["curves"][curve][i] for r in runs]
            label = f"n = {point['n']}" if "n" in point else f"iteration {point['iteration']}"
            lines.append(
                f"| {label} | {fmt(mean([p['kl'] for p in pts]), 2)} | "
                f"{fmt(mean([p['win_rate']['mean'] for p in pts]))} | {fmt(mean([p['rm_score'] for p in pts]))} |"
            )
        lines.append("")
    timing = [f"seed {r['seed']}: {r['seconds']:.0f} s of stages ({r['shared_seconds']:.0f} s shared)" for r in runs]
    lines.append("Stage time per run: " + "; ".join(timing) + ".")
    (HERE / "runs.json").write_text(json.dumps(runs, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
