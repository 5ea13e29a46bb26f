"""A self-contained HTML report (plots embedded as PNG data) from evaluation results.

Everything shown is read from measured results; where the paper's pattern does not appear, the
report's checks say so plainly.
"""

from __future__ import annotations

import base64
import html
import io
import json
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
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}.ok{color:#161}.short{color:#a11}.note{color:#555;font-size:.9em}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


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
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(values)
    errs = [errors.get(n, 0) if errors else 0 for n in names]
    errs = [0 if e != e else e for e in errs]  # NaN standard errors draw no bar
    ax.bar(names, [values[n] for n in names], yerr=errs, capsize=4, color="#4a7ab5")
    if ref is not None:
        ax.axhline(ref, color="#999", ls="--", lw=1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    return _png(fig)


def grouped_chart(
    title: str, groups: dict[str, dict[str, float]], ylabel: str = "", colors: dict[str, str] | None = None
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
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=name, color=(colors or {}).get(name))
    if logx:
        log_ticks(ax, sorted({x for xs, _ in series.values() for x in xs}))
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
