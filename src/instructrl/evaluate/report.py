"""A self-contained HTML report (plots embedded as PNG data) from evaluation results.

Everything shown is read from measured results; where the paper's pattern does not appear, the
report's checks say so plainly. The pieces the demo and ``reproduce`` share live here: the headline
sentence (:func:`headline`), the reward model's accuracy per labeler group beside the noiseless judge's
ceiling (:func:`rm_accuracy_table`), responses side by side (:func:`pick_examples`, :func:`examples_table`)
and plots whose every panel carries axis titles (repeated in each image's ``alt`` text).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# InstructGPT Fig. 1 (approximate win rates against the 175B SFT model) for the plots' side panel
PAPER_FIG1 = {
    "sizes": ["1.3B", "6B", "175B"],
    "GPT": [0.14, 0.20, 0.26],
    "GPT prompted": [0.22, 0.28, 0.40],
    "SFT": [0.35, 0.41, 0.50],
    "PPO": [0.50, 0.54, 0.62],
    "PPO-ptx": [0.52, 0.56, 0.65],
}

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;display:block;overflow-x:auto}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}th{white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}.ok{color:#161}.short{color:#a11}.note{color:#555;font-size:.9em}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}
.headline{font-size:1.25em;line-height:1.4;background:#f3f6fb;border-left:4px solid #4a7ab5;padding:.6em .9em;margin:1em 0 .3em}
table.examples{display:table;width:100%;table-layout:fixed}table.examples th:first-child{width:22%}
table.examples td,table.examples th{white-space:pre-wrap;text-align:left;vertical-align:top;word-wrap:break-word;font-size:.92em}
table.examples td:first-child{background:#fafafa}.cat{display:block;color:#777;font-size:.85em;margin-top:.3em}"""


def axis_titles(fig) -> list[tuple[str, str, str]]:
    """(title, x-axis title, y-axis title) of every panel of a figure."""
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def plot_alt(fig) -> str:
    """A plot's alt text: each panel's title and axis titles ("Win rate vs SFT (x: model; y: ...)")."""
    return " | ".join(f"{t or 'plot'} (x: {x}; y: {y})" for t, x, y in axis_titles(fig))


def _png(fig) -> str:
    alt = plot_alt(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _plt():
    # matplotlib is an optional extra (instructrl[eval]); the Agg backend must be chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    title: str,
    values: dict[str, float],
    errors: dict[str, float] | None = None,
    ylabel: str = "",
    ref: float | None = None,
    xlabel: str = "model",
    ylim: tuple[float, float] | None = None,
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(values)
    errs = [errors.get(n, 0) if errors else 0 for n in names]
    errs = [0 if e != e else e for e in errs]  # NaN standard errors draw no bar
    ax.bar(names, [values[n] for n in names], yerr=errs, capsize=4, color="#4a7ab5")
    if ref is not None:
        ax.axhline(ref, color="#999", ls="--", lw=1)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    return _png(fig)


def grouped_chart(
    title: str,
    groups: dict[str, dict[str, float]],
    ylabel: str = "",
    colors: dict[str, str] | None = None,
    xlabel: str = "",
) -> str:
    """groups: {model: {metric: value}} -> bars grouped by metric."""
    plt = _plt()
    models = list(groups)
    metrics = sorted({m for g in groups.values() for m in g})
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [groups[model].get(m, 0) for m in metrics], width, label=model, color=(colors or {}).get(model))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, rotation=15)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _png(fig)


def line_chart(
    title: str,
    series: dict[str, tuple[list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    colors: dict[str, str] | None = None,
    logx: bool = False,
    integer_x: bool = False,
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=name, color=(colors or {}).get(name))
    if logx:
        log_ticks(ax, sorted({x for xs, _ in series.values() for x in xs}))
    elif integer_x:  # steps, iterations: no tick at 1.5
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def log_ticks(ax, xs: list[float], labels: list[str] | None = None) -> None:
    """A log x-axis with one labelled tick per model size (parameter counts as 0.34M, 7.4M ...)."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, labels or [f"{x / 1e6:.2g}M" for x in xs])


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, dict) and "mean" in v:
            se = v.get("se")
            return f"{v['mean']:.3f}" + (f" ± {se:.3f}" if isinstance(se, float) and se == se else "")
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def checks_html(checks: list[tuple[str, bool | None, str]]) -> str:
    """(claim, held?, measured detail) -> a list that says plainly what held and what fell short."""
    items = []
    for claim, held, detail in checks:
        cls, word = ("ok", "holds") if held else ("short", "not met") if held is False else ("note", "not measured")
        items.append(f'<li><span class="{cls}">[{word}]</span> {html.escape(claim)}: {html.escape(detail)}</li>')
    return "<ul>" + "".join(items) + "</ul>"


# ---------------------------------------------------------------- shared pieces of the demo's and reproduce's reports


def _num(v: Any) -> float | None:
    """A finite float, or None (missing, NaN, text)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def pct(mean: Any, se: Any = None, digits: int | None = None) -> str:
    """A share as a percentage with its standard error: "47% ± 3%" (by default one decimal only when the SE is
    under 1%), "-" for a missing value."""
    m, e = _num(mean), _num(se)
    if m is None:
        return "-"
    if digits is None:
        digits = 1 if e is not None and 0 < e < 0.01 else 0
    return f"{100 * m:.{digits}f}%" + (f" ± {100 * e:.{digits}f}%" if e is not None else "")


def plus_minus(mean: Any, se: Any = None, digits: int = 3) -> str:
    """ "0.652 ± 0.021" (the SE left out when there is none), "-" for a missing value."""
    m, e = _num(mean), _num(se)
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {e:.{digits}f}" if e is not None else "")


def pct_est(est: Any) -> str:
    """``pct`` of an estimate ``{"mean", "se"}``; "-" when there is none."""
    return pct(est.get("mean"), est.get("se")) if isinstance(est, dict) else "-"


def judge_phrase(judge: str | None) -> str:
    """Who judged the comparisons, in words: "heldout-labelers(4)" -> "held-out labelers"."""
    if not judge:
        return "the judge"
    j = judge.lower()
    if j.startswith("heldout-labelers") or j.startswith("held-out labelers"):
        return "held-out labelers"
    if j.startswith("labelers"):
        return "simulated labelers"
    return f"the judge {judge}"


def headline(
    model: str, baseline: str, est: dict, judge: str = "held-out labelers", scale: str = "at this scale"
) -> str:
    """One sentence with the result and its uncertainty, worded by where the win rate falls against 50%:
    more than two standard errors above (better), below (worse), or within (no better / not clearly better).

    ``est`` is a win rate ``{"mean", "se", "n"}`` of ``model`` against ``baseline``, ties counted as half."""
    mean, se, n = _num(est.get("mean")), _num(est.get("se")), est.get("n")
    if mean is None:
        return f"{model} has no measured win rate against {baseline}."
    count = f" of {n} comparison{'s' if n != 1 else ''}" if isinstance(n, int) and n > 0 else " of comparisons"
    said = f"{model} was preferred over {baseline} in {pct(mean, se)}{count} by {judge}"
    if se is None:
        verdict = "too few comparisons to estimate the uncertainty"
    elif mean - 2 * se > 0.5:
        verdict = f"better than {baseline} (more than two standard errors above 50%)"
    elif mean + 2 * se < 0.5:
        verdict = f"worse than {baseline} (more than two standard errors below 50%)"
    elif mean < 0.5:
        verdict = f"no better than {baseline} {scale} (within two standard errors of 50%)"
    else:
        verdict = f"not clearly better than {baseline} {scale} (within two standard errors of 50%)"
    return f"{said}: {verdict}."


HEADLINE_NOTE = "± is one standard error; a tie counts as half a preference, so 50% means no difference."


def headline_html(sentence: str, note: str = HEADLINE_NOTE) -> str:
    return f"<p class='headline'>{html.escape(sentence)}</p>" + (
        f"<p class='note'>{html.escape(note)}</p>" if note else ""
    )


RM_GROUP_LABELS = {
    "training": "Training labelers",
    "train_labelers": "Training labelers",
    "heldout_labelers": "Held-out labelers",
    "all": "All comparisons",
}


def rm_groups(groups: dict) -> list[tuple[str, dict]]:
    """(label, stats) of each labeler group of a reward model's evaluation (``eval_results.json``'s ``groups``):
    training labelers first, then held-out labelers, any other group, and all comparisons last."""
    order = ["training", "train_labelers", "heldout_labelers"]
    names = [g for g in order if g in groups]
    names += [g for g in groups if g not in order and g != "all"]
    names += ["all"] if "all" in groups else []
    return [(RM_GROUP_LABELS.get(g, g), groups[g]) for g in names if isinstance(groups[g], dict)]


RM_CAPTION = (
    "Accuracy: the share of comparison pairs, on prompts held out from training, where the reward model scores "
    "the response the labelers preferred higher (a tie counts half; 50% is chance). The noiseless judge is the "
    "miniature world's reference ranking, scored against the same labels: the ceiling that the labelers' noise "
    "allows. ± is one standard error, clustered by prompt."
)


def rm_accuracy_table(groups: dict, caption: str = RM_CAPTION) -> str:
    """The reward model's accuracy per labeler group with its SE, the noiseless judge's ceiling beside it."""
    rows = [
        [
            label,
            f"{g['pairs']:,}" if isinstance(g.get("pairs"), int) else "-",
            pct(g.get("accuracy"), g.get("accuracy_se"), digits=1),
            pct(g.get("judge_accuracy"), g.get("judge_accuracy_se"), digits=1),
            plus_minus(g.get("log_loss"), g.get("log_loss_se")),
        ]
        for label, g in rm_groups(groups)
    ]
    if not rows:
        return "<p class='note'>The reward model's evaluation was not found.</p>"
    headers = ["labelers", "comparison pairs", "RM accuracy", "noiseless judge (ceiling)", "RM log loss (nats)"]
    return table(headers, rows) + f"<p class='note'>{html.escape(caption)}</p>"


META = (
    "fails_to_follow_instruction",
    "hallucination_closed_domain",
    "satisfies_constraints",
    "inappropriate_for_customer_assistant",
    "toxic_language",
)
META_SHORT = dict(
    zip(META, ("fails instruction", "hallucinates (closed)", "meets constraints", "inappropriate", "toxic"))
)


def toxicity_chart(title: str, arms: dict[str, dict], colors: dict[str, str] | None = None) -> str:
    """The share of toxic continuations of each model under each instruction (RealToxicityPrompts analogue)."""
    return grouped_chart(
        title,
        {a: {k: v["mean"] for k, v in m["toxicity"].items()} for a, m in arms.items() if "toxicity" in m},
        "share of continuations rated toxic (0-1)",
        colors=colors,
        xlabel="instruction given before the prompt",
    )


BENCHMARK_NOTE = (
    "Scores on the world's benchmark tasks: F1 and accuracy from 0 to 1, BLEU from 0 to 100; higher is better."
)

TRUTH_HEADERS = ["QA: truthful", "QA: + informative", "Instr+QA: truthful", "Instr+QA: + informative"]


def truthfulness_cells(m: dict) -> list[Any]:
    """The four truthfulness estimates of one model, in the order of ``TRUTH_HEADERS``."""
    t = m["truthfulness"]
    return [t[kind][key] for kind in ("qa", "instruction_qa") for key in ("truthful", "truthful_and_informative")]


def timings_table(timings: dict[str, float]) -> str:
    """Seconds of each stage (a cached stage keeps the time it took when it ran) and the total."""
    rows = [[k, f"{v:.0f}"] for k, v in timings.items()]
    return table(["stage", "seconds"], rows) + f"<p>Total: {sum(timings.values()):.0f} s.</p>"


def read_json(path: str | Path) -> dict:
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def pick_examples(
    rows: Iterable[dict], models: Sequence[str], k: int = 4, categories: dict[str, str] | None = None
) -> list[dict]:
    """``k`` prompts with every model's response (``responses.jsonl`` rows ``{"model", "prompt", "response"}``).

    Only prompts that every model answered; one per category first (``categories``: prompt -> category, in
    the order the prompts came), then evenly spaced through the rest. Returns ``[{"prompt", "category",
    "responses": {model: text}}]``."""
    by_prompt: dict[str, dict[str, str]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], {})[r["model"]] = r["response"]
    prompts = [p for p, resp in by_prompt.items() if all(m in resp for m in models)]
    categories = categories or {}
    chosen: list[str] = []
    seen: set[str] = set()
    for p in prompts:
        c = categories.get(p)
        if c is not None and c not in seen and len(chosen) < k:
            seen.add(c)
            chosen.append(p)
    rest = [p for p in prompts if p not in chosen]
    need = k - len(chosen)
    if need > 0 and rest:
        step = len(rest) / need
        chosen += list(dict.fromkeys(rest[min(len(rest) - 1, int(i * step))] for i in range(need)))
    chosen.sort(key=prompts.index)
    return [
        {"prompt": p, "category": categories.get(p), "responses": {m: by_prompt[p][m] for m in models}} for p in chosen
    ]


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def examples_table(examples: list[dict], models: Sequence[str] | None = None, limit: int = 400) -> str:
    """Prompts down the side, one column per model: each response as the model wrote it (HTML-escaped,
    line breaks kept, cut at ``limit`` characters)."""
    if not examples:
        return "<p class='note'>No responses were found.</p>"
    models = list(models or examples[0]["responses"])
    head = "<tr><th>prompt</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in models) + "</tr>"
    body = []
    for ex in examples:
        cat = f"<span class='cat'>{html.escape(ex['category'])}</span>" if ex.get("category") else ""
        cells = "".join(
            f"<td>{html.escape(_clip(ex['responses'].get(m, '-'), limit)) or '<i>(empty)</i>'}</td>" for m in models
        )
        body.append(f"<tr><td>{html.escape(_clip(ex['prompt'], limit))}{cat}</td>{cells}</tr>")
    return f"<table class='examples'>{head}{''.join(body)}</table>"


def page(title: str, sections: list[tuple[str, str]], intro: str = "") -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{intro}{body}</body></html>"
    )


def flat_metrics(results: dict, prefix: str = "eval") -> dict[str, float]:
    """The numbers of an evaluation's ``results.json`` as flat ``eval/<model>/<metric>`` keys (for a tracker):
    an estimate gives its mean and ``..._se``; text and NaN are left out."""
    out: dict[str, float] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and "mean" in value:
            for k, suffix in (("mean", ""), ("se", "_se")):
                walk(value.get(k), key + suffix)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}/{k}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[key] = float(value)

    for name, res in results.get("models", {}).items():
        walk(res, f"{prefix}/{name}")
    for key in ("human", "baseline_scores", "prompts", "seconds"):
        if key in results:
            walk(results[key], f"{prefix}/{key}")
    return out


def write(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def metrics_series(metrics_file: str | Path, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    p = Path(metrics_file)
    if p.exists():
        for line in p.read_text().splitlines():
            row = json.loads(line)
            if isinstance(row.get(key), (int, float)):
                xs.append(row["step"])
                ys.append(row[key])
    return xs, ys
