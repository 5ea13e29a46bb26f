"""Blind human comparisons, summarized: win rates, Likert, metadata, agreement and attention checks.

The input is one row per (comparison, labeler) as the labeling app stores it: which prompt, which model
was on which side (``model_position``: 0 = left, 1 = right; the baseline is on the other side), and, once
submitted, the labeler's ``choice`` (left / right / tie) with a Likert score and flags per side. Rows of
attention checks carry ``check_answer`` instead of a model. Every mean over judgments comes with a standard
error clustered by prompt (one prompt is judged for every model, and by several labelers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from instructrl.evaluate.metrics import Estimate, choice_agreement, clustered_mean_se

SIDES = ("left", "right")
# The flag the paper reports as closed-domain hallucination (Fig. 4) shares the automatic judges' column.
FLAG_COLUMNS = {"hallucination": "hallucination_closed_domain"}


def outcome_for_model(choice: str, model_position: int) -> float:
    """1 when the labeler preferred the model's side, 0.5 for a tie, 0 when the baseline's."""
    if choice == "tie":
        return 0.5
    return 1.0 if choice == SIDES[model_position] else 0.0


def _labels(rows: Sequence[dict], side_of, flags: Sequence[str]) -> dict:
    """Likert and flag rates of the response on ``side_of(row)`` over ``rows`` (clustered by prompt)."""
    clusters = [r["prompt_index"] for r in rows]
    out = {"likert": clustered_mean_se([r["likert"][side_of(r)] for r in rows], clusters).as_dict()}
    for key in flags:
        rates = [float(key in r["flags"][side_of(r)]) for r in rows]
        out[FLAG_COLUMNS.get(key, key)] = clustered_mean_se(rates, clusters).as_dict()
    return out


def attention_checks(rows: Sequence[dict]) -> dict:
    """Pass rate of the attention checks among ``rows``, overall and per labeler."""
    checks = [r for r in rows if r["model"] is None and r["check_answer"] is not None]
    checked = [r for r in checks if r["choice"] is not None]
    by_labeler: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in checked:
        by_labeler[r["labeler"]][0] += r["choice"] == r["check_answer"]
        by_labeler[r["labeler"]][1] += 1
    passed = sum(v[0] for v in by_labeler.values())
    return {
        "pass_rate": passed / len(checked) if checked else None,
        "passed": passed,
        "submitted": len(checked),
        "open": len(checks) - len(checked),
        "by_labeler": {k: {"passed": v[0], "submitted": v[1]} for k, v in sorted(by_labeler.items())},
    }


def human_results(
    rows: Sequence[dict],
    models: Sequence[str],
    baseline: str,
    flags: Sequence[str],
    min_attention_pass: float | None = None,
) -> dict:
    """``{"models": {name: {...}}, "human": {...}}`` from the stored judgments (see the module docstring).

    With ``min_attention_pass``, the judgments of labelers whose attention-check pass rate is below it are
    left out of everything but the attention checks themselves (they are listed in ``excluded_labelers``).
    """
    attention = attention_checks(rows)
    excluded = sorted(
        name
        for name, c in attention["by_labeler"].items()
        if min_attention_pass is not None and c["submitted"] and c["passed"] / c["submitted"] < min_attention_pass
    )
    rows = [r for r in rows if r["labeler"] not in excluded]
    done = [r for r in rows if r["choice"] is not None]
    per_model: dict[str, dict] = {}
    counts: dict[str, dict[str, int]] = {}
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        judged = [r for r in mine if r["choice"] is not None]
        counts[name] = {"submitted": len(judged), "open": len(mine) - len(judged)}
        res: dict = {"judgments": len(judged), "open": len(mine) - len(judged)}
        if judged:
            outcomes = [outcome_for_model(r["choice"], r["model_position"]) for r in judged]
            res["win_rate"] = clustered_mean_se(outcomes, [r["prompt_index"] for r in judged]).as_dict()
            res.update(_labels(judged, lambda r: r["model_position"], flags))
        per_model[name] = res
    model_rows = [r for r in done if r["model"] is not None]
    base = _labels(model_rows, lambda r: 1 - r["model_position"], flags) if model_rows else {}

    choices: dict[int, dict[str, str]] = defaultdict(dict)
    for r in model_rows:
        choices[r["task_id"]][r["labeler"]] = r["choice"]

    submitted = sum(c["submitted"] for c in counts.values())
    human = {
        "baseline": {"name": baseline, **base},
        "judgments": {"submitted": submitted, "open": sum(c["open"] for c in counts.values()), "by_model": counts},
        "labelers": sorted({r["labeler"] for r in rows}),
        "agreement": choice_agreement(choices),
        "attention_checks": attention,
        "min_attention_pass": min_attention_pass,
        "excluded_labelers": excluded,
    }
    return {"models": per_model, "human": human}


def _cell(d: dict | None) -> str:
    if not d:
        return "-"
    e = Estimate(d["mean"], d["se"], d["n"])
    return f"{e.mean:.3f} ± {e.se:.3f}" if e.se == e.se else f"{e.mean:.3f}"


def summary_lines(results: dict) -> list[str]:
    """The human part of ``summary.md``: judgments done and open, Likert and flags of the baseline too,
    agreement and attention checks."""
    h = results["human"]
    j = h["judgments"]
    lines = [
        "",
        f"## Human judgments ({h.get('batch', '')})",
        "",
        f"{j['submitted']} of {j['submitted'] + j['open']} comparisons judged, **{j['open']} still open** "
        f"(labelers: {', '.join(h['labelers']) or 'none'}).",
        "",
        "| model | judged | open | win rate | Likert |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        lines.append(
            f"| {name} | {r.get('judgments', 0)} | {r.get('open', 0)} | {_cell(r.get('win_rate'))} | "
            f"{_cell(r.get('likert'))} |"
        )
    b = h["baseline"]
    lines.append(f"| {b['name']} (baseline) | | | | {_cell(b.get('likert'))} |")
    flag_keys = [k for k in b if k not in ("name", "likert")]
    if flag_keys:
        lines += ["", "Metadata (share of responses flagged):", ""]
        lines += ["| flag | " + " | ".join([*results["models"], b["name"]]) + " |"]
        lines += ["|---" * (len(results["models"]) + 2) + "|"]
        for key in flag_keys:
            cells = [_cell(r.get(key)) for r in results["models"].values()] + [_cell(b.get(key))]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    a = h["agreement"]
    if a["agreement"] is None:
        lines += ["", "Agreement: no comparison has been judged by two labelers yet."]
    else:
        strict = a["agreement_excluding_ties"]
        lines += [
            "",
            f"Agreement: {a['agreement']:.3f} of {a['labeler_pairs']} labeler pairs on {a['items']} shared items "
            f"made the same choice" + (f" ({strict:.3f} excluding ties)." if strict is not None else "."),
        ]
    c = h["attention_checks"]
    if c["submitted"] or c["open"]:
        rate = f"{c['pass_rate']:.3f}" if c["pass_rate"] is not None else "-"
        per = ", ".join(f"{k} {v['passed']}/{v['submitted']}" for k, v in c["by_labeler"].items())
        lines += [
            "",
            f"Attention checks: pass rate {rate} ({c['passed']}/{c['submitted']}; {c['open']} open)"
            + (f"; by labeler: {per}." if per else "."),
        ]
    if h.get("excluded_labelers"):
        lines += [
            "",
            f"Left out of the results (attention checks passed below {h['min_attention_pass']:.2f}): "
            f"{', '.join(h['excluded_labelers'])}.",
        ]
    return lines
