"""Real benchmarks for the alignment tax through EleutherAI's lm-evaluation-harness (``lm-eval`` 0.4.x).

InstructGPT §4.2 / Fig. 29: RLHF can lower scores on public NLP benchmarks (SQuADv2, DROP, HellaSwag,
WMT'15 French-English), the "alignment tax" PPO-ptx reduces. ``instructrl eval --benchmarks lm-eval:TASKS``
runs those tasks (or any other lm-eval task, or your own YAML task definitions with ``--lm-eval-include
DIR``) on every model and on the baseline, each with the task's own prompt format and few-shot setting;
the summary shows each score and its relative drop against the baseline. ``lm-eval`` is an optional extra
(``pip install 'instructrl[lm-eval]'``); its tasks download their datasets on first use.
"""

from __future__ import annotations

import logging
import math

from instructrl.errors import ConfigError

log = logging.getLogger("instructrl.eval")
PREFIX = "lm-eval:"
# The paper's set (InstructGPT Fig. 29) as lm-eval names it; WMT'15 fr-en is closest to lm-eval's wmt14-fr-en.
PAPER_TASKS = ("squadv2", "drop", "hellaswag", "wmt14-fr-en")
# The headline metric of a task's results, first match wins (lm-eval reports several, each with its filter).
PRIMARY_METRICS = ("f1", "acc_norm", "acc", "bleu", "exact_match", "exact", "em")


def parse_benchmarks(spec: str) -> list[str]:
    """``lm-eval:task1,task2`` -> the task names."""
    if not spec.startswith(PREFIX):
        raise ConfigError(
            f"--benchmarks {spec!r}: expected lm-eval:TASK[,TASK...], e.g. lm-eval:{','.join(PAPER_TASKS)}"
        )
    tasks = [t.strip() for t in spec[len(PREFIX) :].split(",") if t.strip()]
    if not tasks:
        raise ConfigError(f"--benchmarks {spec!r}: name at least one lm-eval task, e.g. lm-eval:hellaswag")
    return tasks


def task_manager(tasks: list[str], include: str | None, spec: str):  # type: ignore[no-untyped-def]
    """lm-eval's task index holding every task in ``tasks``; ConfigError when lm-eval is missing or a task unknown."""
    try:
        from lm_eval.tasks import TaskManager  # an optional extra (instructrl[lm-eval]), slow to import
    except ImportError:
        raise ConfigError(
            f"--benchmarks {spec}: lm-eval is not installed (pip install 'instructrl[lm-eval]')"
        ) from None
    for name in ("lm-eval", "lm_eval"):  # its per-task progress lines: ours say what runs
        logging.getLogger(name).setLevel(logging.WARNING)
    if include:
        # your own task definitions alone are indexed in a moment; the full index only when a task is not there
        manager = TaskManager(include_path=include, include_defaults=False)
        if all(t in manager.all_tasks for t in tasks):
            return manager
    manager = TaskManager(include_path=include)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = (
            f" or in --lm-eval-include {include}"
            if include
            else " (your own: --lm-eval-include DIR of task YAML files)"
        )
        raise ConfigError(f"--benchmarks {spec}: unknown lm-eval task(s) {', '.join(unknown)}: not in lm-eval{where}")
    return manager


def run_tasks(model, tokenizer, tasks: list[str], manager, *, limit: int | None, batch_size: int) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """``{task: {metric: value}}`` for one loaded causal LM (every metric lm-eval reports, stderr left out)."""
    import lm_eval  # an optional extra, checked by task_manager
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False)
    scores: dict[str, dict] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        values = {}
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if "_stderr" in name or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            values[name if filt in ("", "none") else f"{name},{filt}"] = float(value)
        scores[task] = values
    return scores


def primary(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The headline (metric, value) of one task's results."""
    for name in PRIMARY_METRICS:
        if name in metrics and not math.isnan(metrics[name]):
            return name, metrics[name]
    return next(iter(metrics.items()), None)


def relative_drop(score: float, baseline: float) -> float | None:
    """How much lower than the baseline's, relative to it (0.1 = 10% lower; negative = higher)."""
    if baseline == 0 or math.isnan(score) or math.isnan(baseline):
        return None
    return (baseline - score) / abs(baseline)
