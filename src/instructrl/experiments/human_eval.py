"""Evaluation by people: ``instructrl eval --judge humans:DB_URL`` queues blind comparisons in the
labeling app and ``--collect`` turns what has been labeled into the usual results.

InstructGPT §4.1 / App. E: labelers compare each model's output with the baseline's on held-out prompts,
without knowing which model wrote which, rate each output 1-7 and record the metadata of Table 3. Here
the eval command generates the responses (``evaluate.runner``), queues one comparison per (model, prompt)
with the sides drawn at random, gives each to ``--labelers-per-item`` labelers and mixes in the optional
attention checks (``label.service.queue_comparisons``), writes ``OUT/human_eval.json`` and returns at once.
Collecting reads the judgments back (``label.service.comparison_judgments``) and summarizes them
(``evaluate.human``). This module joins the two sibling packages, which do not import each other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

from instructrl.data.io import read_records, write_jsonl
from instructrl.errors import ConfigError, DataError, InstructRLError
from instructrl.evaluate import human
from instructrl.evaluate.config import EvalConfig
from instructrl.evaluate.report import flat_metrics
from instructrl.evaluate.runner import (
    Policy,
    parse_model_spec,
    read_prompt_records,
    resolve_inputs,
    sampling_precision,
    summary_markdown,
)
from instructrl.label import db, service
from instructrl.label.labels import FLAGS
from instructrl.label.security import check_text
from instructrl.training.tracking import log_summary

log = logging.getLogger("instructrl.eval")
PREFIX = "humans:"
MANIFEST = "human_eval.json"


def is_human_eval(cfg: EvalConfig) -> bool:
    return cfg.collect or cfg.judge.startswith(PREFIX)


def run(cfg: EvalConfig) -> str:
    """Queue the comparisons (first run) or collect the results (``--collect``, or the same command again);
    returns the text to print."""
    out = Path(cfg.output_dir or "eval")
    if cfg.collect or (out / MANIFEST).exists():
        return collect(cfg, out)
    return queue(cfg, out)


# ---------------------------------------------------------------------------- queue
def _db_url(cfg: EvalConfig) -> str:
    url = cfg.judge[len(PREFIX) :]
    if not url:
        raise ConfigError("--judge humans:DB_URL: give the labeling app's database, e.g. humans:sqlite:///labels.db")
    return url


def _engine(url: str):  # type: ignore[no-untyped-def]
    """The database engine; its errors name the flag this command took the URL from."""
    try:
        return db.make_engine(url)
    except InstructRLError as e:
        raise ConfigError(str(e).replace("--db ", "--judge humans:", 1)) from None


def _shown(engine) -> str:  # type: ignore[no-untyped-def]
    return engine.url.render_as_string(hide_password=True)


def _prompt_text(prompt) -> str:  # type: ignore[no-untyped-def]
    """A prompt as labelers read it: the text, or a conversation one turn per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def read_attention_checks(path: str) -> list[service.PairToCompare]:
    """``{"prompt", "better", "worse"}`` (or ``"tie": true``) per line; errors name the file and line."""
    checks = []
    for i, r in enumerate(read_records(path, what="attention checks")):
        d = r.data
        missing = [k for k in ("prompt", "better", "worse") if not isinstance(d.get(k), str) or not d[k].strip()]
        if missing:
            raise DataError(f"{r.where}: an attention check needs non-empty text in {', '.join(missing)}")
        if not isinstance(d.get("tie", False), bool):
            raise DataError(f"{r.where}: 'tie' must be true or false")
        checks.append(service.PairToCompare(i, d["prompt"], d["better"], d["worse"], tie=d.get("tie", False)))
    return checks


def batch_name(out: Path) -> str:
    """The evaluation's name in the database: the output folder's name plus a random suffix."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", out.resolve().name)[:40].lstrip("-_.") or "eval"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def queue(cfg: EvalConfig, out: Path) -> str:
    url = _db_url(cfg)
    cfg = resolve_inputs(cfg)
    if not cfg.baseline:
        raise ConfigError("--judge humans: give the model the others are compared with (--baseline NAME=PATH)")
    if cfg.benchmarks:
        raise ConfigError(
            "--benchmarks: run the benchmarks in an `instructrl eval` of their own (without --judge humans)"
        )
    engine = _engine(url)
    try:
        # everything a user can get wrong is checked before minutes of generation
        db.migrate(engine)
        factory = db.session_factory(engine)
        with db.reachable(engine), db.transaction(factory) as s:
            chosen = service.active_labelers(s, cfg.assign_to or None)
            service.check_plan(len(chosen), cfg.labelers_per_item, 1.0)
        checks = read_attention_checks(cfg.attention_checks) if cfg.attention_checks else []
        records = read_prompt_records(cfg.prompts, cfg.num_prompts)
        texts = [_prompt_text(r["prompt"]) for r in records]
        for where, t in [(f"{cfg.prompts}:{i + 1}", t) for i, t in enumerate(texts)]:
            check_text(t, f"{where}: prompt")
        base = parse_model_spec(cfg.baseline)
        specs = [parse_model_spec(m) for m in cfg.models]
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or base.name in names:
            raise ConfigError(
                f"model names must differ from each other and from the baseline's: {names} vs {base.name}"
            )
        shots = (
            [r.data for r in read_records(cfg.few_shot_data)[: cfg.few_shot_k]]
            if cfg.few_shot_data and any(s.few_shot for s in [base, *specs])
            else []
        )
        if any(s.few_shot for s in [base, *specs]) and not shots:
            raise ConfigError("'+fewshot' models need --few-shot-data (or --world-dir)")

        prompts = [r["prompt"] for r in records]
        log.info("generating baseline responses (%s)", base.name)
        base_resp = Policy(base, cfg, shots).answer(prompts)
        pairs, rows = [], [{"model": base.name, "prompt": p, "response": r} for p, r in zip(prompts, base_resp)]
        for spec in specs:
            log.info("generating responses of %s (%s)", spec.name, spec.path)
            resp = Policy(spec, cfg, shots).answer(prompts)
            rows += [{"model": spec.name, "prompt": p, "response": r} for p, r in zip(prompts, resp)]
            pairs += [
                service.PairToCompare(i, t, r, b, model=spec.name, baseline=base.name)
                for i, (t, r, b) in enumerate(zip(texts, resp, base_resp))
            ]
        batch = batch_name(out)
        out.mkdir(parents=True, exist_ok=True)
        with db.reachable(engine), db.transaction(factory) as s:  # one transaction: all of it queued, or none
            q = service.queue_comparisons(
                s,
                pairs + checks,
                batch=batch,
                labelers=cfg.assign_to or None,
                per_item=cfg.labelers_per_item,
                seed=cfg.seed,
            )
        db_shown = _shown(engine)
    finally:
        engine.dispose()
    cfg.save(out, resolved_mixed_precision=sampling_precision(cfg))
    write_jsonl(out / "responses.jsonl", rows)
    manifest = {
        "db": db_shown,
        "batch": batch,
        "prompts_file": cfg.prompts,
        "prompts": len(records),
        "baseline": {"name": base.name, "path": base.path, "few_shot": base.few_shot},
        "models": {s.name: {"path": s.path, "few_shot": s.few_shot} for s in specs},
        "labelers": q.labelers,
        "labelers_per_item": cfg.labelers_per_item,
        "comparisons": q.comparisons,
        "attention_checks": q.attention_checks,
        "assignments": q.assignments,
        "queued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(out / MANIFEST, manifest)
    return (
        f"queued {q.comparisons} blind comparisons ({len(specs)} model(s) x {len(records)} prompts against "
        f"{base.name}) and {q.attention_checks} attention check(s) as {q.assignments} assignments for "
        f"{len(q.labelers or [])} labeler(s) ({', '.join(q.labelers or [])}), each comparison to "
        f"{cfg.labelers_per_item}; batch {batch} in {db_shown}.\n"
        f"Labelers work in `instructrl label serve --db ...`; results so far: instructrl eval --collect --out {out}"
    )


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- collect
def collect(cfg: EvalConfig, out: Path) -> str:
    path = out / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"{path}: no queued human evaluation in {out} (queue one with --judge humans:DB_URL --models ... "
            "--baseline ... --prompts ... --out OUT)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        batch, models, baseline = manifest["batch"], list(manifest["models"]), manifest["baseline"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a queued human evaluation ({e})") from None
    asked = [parse_model_spec(m).name for m in cfg.models] if cfg.models else models
    if sorted(asked) != sorted(models):
        raise ConfigError(
            f"{out} holds a human evaluation of {', '.join(models)}, not of {', '.join(asked)}: collect it with "
            "--collect --out, or queue the new one under another --out"
        )
    url = _db_url(cfg) if cfg.judge.startswith(PREFIX) else manifest["db"]
    if "***" in url:
        raise ConfigError(f"{path}: the database URL is stored without its password: pass --judge humans:DB_URL")
    engine = _engine(url)
    try:
        db.migrate(engine)
        with db.reachable(engine), db.transaction(db.session_factory(engine)) as s:
            rows = service.comparison_judgments(s, batch)
        shown = _shown(engine)
    finally:
        engine.dispose()
    model_rows = [r for r in rows if r["model"] is not None]
    judged = sum(r["choice"] is not None for r in model_rows)
    if not judged:
        raise ConfigError(
            f"nothing labeled yet: 0 of {len(model_rows)} comparisons of batch {batch} in {shown} are judged "
            "(labelers work in `instructrl label serve`); collect again later"
        )
    summary = human.human_results(rows, models, baseline, list(FLAGS), cfg.min_attention_pass)
    for name, res in summary["models"].items():
        res.update(path=manifest["models"][name]["path"], few_shot=manifest["models"][name]["few_shot"])
    summary["human"].update(batch=batch, db=shown, labelers_per_item=manifest.get("labelers_per_item"))
    results = {
        "judge": f"humans ({shown})",
        "world": False,
        "prompts": manifest["prompts"],
        "baseline": baseline,
        "models": summary["models"],
        "human": summary["human"],
    }
    text = summary_markdown(results) + "\n".join(human.summary_lines(results)) + "\n"
    _write_json(out / "results.json", results)
    (out / "summary.md").write_text(text, encoding="utf-8")
    log_summary(cfg.report_to, out, "eval-humans", cfg.to_dict(), flat_metrics(results))
    return text
