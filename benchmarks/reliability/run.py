"""Reliability benchmark: the bad-input walk, the kill-and-resume matrix, and concurrent labelers.

    .venv/bin/python benchmarks/reliability/run.py [--kills 3] [--parts walk,resume,label]

Writes results.json and results.md next to this file. Small sizes: about 10 minutes on 2 CPU cores.
The generators of bad values and the labeling helpers are the tests' own (tests/ and tests/label/ on
sys.path), so the benchmark walks exactly what the tests walk, with counts instead of assertions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "label", ROOT / "tests" / "ppo", ROOT / "tests" / "reward"):
    sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from testkit import cli_env, fact_demos, write_jsonl  # noqa: E402

PY = sys.executable


# ---------------------------------------------------------------------------- 1. the bad-input walk
CLI_SAMPLE = [
    ["sft", "--learning-rate", "nan", "--max-length", "64"],
    ["sft", "--max-steps", "0"],
    ["sft", "--batch-size", "abc"],
    ["rm", "--max-steps", "-3"],
    ["rm", "--learning-rate", "-1"],
    ["ppo", "--batch-size", "-1"],
    ["ppo", "--kl-coef", "inf"],
    ["eval", "--temperature", "-0.5"],
    ["eval", "--models", "sft"],
    ["generate", "--model", "x", "--max-new-tokens", "-5"],
    ["generate", "--model", "x", "--top-p", "nan"],
    ["sft", "--model", "/no/such/model", "--data", "/no/such/data.jsonl", "--out", "/tmp/instructrl-bench-none"],
]


def walk() -> dict:
    from test_hardening import bad_values, config_classes

    from instructrl.errors import ConfigError

    tried, handled, not_handled, per_class = 0, 0, [], {}
    for cls in config_classes():
        n = 0
        for f in dataclasses.fields(cls):
            for value in bad_values(cls, f):
                tried += 1
                n += 1
                case = f"{cls.__name__}.{f.name}={value!r}"
                try:
                    cls.from_dict({f.name: value})
                except ConfigError as e:
                    if f.name in str(e) and "\n" not in str(e):
                        handled += 1
                    else:
                        not_handled.append(f"{case}: message {str(e)[:200]!r}")
                except Exception as e:
                    not_handled.append(f"{case}: {type(e).__name__}: {str(e)[:200]}")
                else:
                    not_handled.append(f"{case}: accepted")
        per_class[cls.__name__] = n
    cli_tried, cli_handled, cli_not = 0, 0, []
    for args in CLI_SAMPLE:
        cli_tried += 1
        r = subprocess.run([PY, "-m", "instructrl", *args], capture_output=True, text=True, env=cli_env(), timeout=300)
        lines = r.stderr.strip().splitlines()
        if r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1:
            cli_handled += 1
        else:
            cli_not.append(f"{' '.join(args)}: exit {r.returncode}, {len(lines)} lines: {r.stderr.strip()[-300:]!r}")
    return {
        "config_cases_tried": tried,
        "config_cases_handled": handled,
        "config_not_handled": not_handled,
        "config_classes": per_class,
        "cli_tried": cli_tried,
        "cli_handled": cli_handled,
        "cli_not_handled": cli_not,
    }


# ---------------------------------------------------------------------------- 2. kill and resume
def build_world(root: Path) -> dict[str, Path]:
    from ppo_helpers import make_reward_model
    from rm_helpers import write_rankings

    from instructrl.modeling.tiny import make_tiny_model

    texts = [r["prompt"] + " " + r["completion"] for r in fact_demos(200)]
    texts += ["### Instruction:\n", "### Response:\n"]
    model = make_tiny_model(root / "model", texts, vocab_size=320, n_layer=2, n_embd=64)
    return {
        "model": model,
        "demos": write_jsonl(root / "demos.jsonl", fact_demos(80)),
        "rankings": write_rankings(root / "rankings.jsonl", 48),
        "rm": make_reward_model(model, root / "rm", gain=2.0, bias=0.5),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": d["prompt"]} for d in fact_demos(40)]),
        "ptx": write_jsonl(
            root / "ptx.jsonl", [{"text": d["prompt"] + " " + d["completion"]} for d in fact_demos(120, seed=3)]
        ),
    }


def stage_args(stage: str, w: dict[str, Path]) -> list[str]:
    if stage == "sft":
        return [
            "sft", "--model", str(w["model"]), "--data", str(w["demos"]), "--epochs", "3", "--batch-size", "8",
            "--learning-rate", "3e-3", "--max-length", "64", "--checkpoint-every", "3", "--eval-every", "6",
            "--select-by", "last", "--residual-dropout", "0.1", "--no-progress",
        ]  # fmt: skip
    if stage == "rm":
        return [
            "rm", "--model", str(w["model"]), "--data", str(w["rankings"]), "--max-steps", "24", "--batch-size", "4",
            "--learning-rate", "1e-3", "--max-length", "64", "--checkpoint-every", "3", "--no-progress",
        ]  # fmt: skip
    return [
        "ppo", "--policy", str(w["model"]), "--reward-model", str(w["rm"]), "--prompts", str(w["prompts"]),
        "--total-episodes", "64", "--batch-size", "8", "--mini-batch-size", "4", "--response-length", "8",
        "--learning-rate", "1e-3", "--warmup-iterations", "2", "--ema", "--adaptive-kl", "--ptx-data",
        str(w["ptx"]), "--ptx-per-episode", "1", "--ptx-max-length", "16", "--checkpoint-every", "1", "--no-progress",
    ]  # fmt: skip


def max_abs_diff(a: Path, b: Path) -> float | None:
    from safetensors.torch import load_file

    if not (a / "model.safetensors").exists() or not (b / "model.safetensors").exists():
        return None
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if x.keys() != y.keys():
        return float("inf")
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x) if x else 0.0


def last_step(out: Path) -> int:
    """The last optimizer step (PPO: iteration) the run logged to metrics.jsonl; 0 before the first."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(x).get("step", 0) for x in lines if x.strip().endswith("}")), default=0)
    except (OSError, ValueError):
        return 0


def kill_once(cmd: list[str], out: Path, mode: str, delay: float, deadline: float) -> dict:
    """Start the command and SIGKILL it after `delay` seconds, or (mode "tmp") while a checkpoint is being
    written (a `.tmp-step-*` folder exists)."""
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    caught = False
    ckpts = out / "checkpoints"
    while proc.poll() is None and time.monotonic() < deadline:
        if mode == "time" and time.monotonic() - t0 >= delay:
            break
        if mode == "step" and last_step(out) >= delay:
            break
        if mode == "tmp" and ckpts.is_dir() and any(p.name.startswith(".tmp-step-") for p in ckpts.iterdir()):
            caught = True
            break
        time.sleep(0.002 if mode == "tmp" else 0.01)
    finished = proc.poll() is not None
    after_complete = (out / ".complete").exists()  # the run had already finished its work: not a kill
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    present = sorted(p.name for p in ckpts.iterdir()) if ckpts.is_dir() else []
    return {
        "mode": mode,
        "target": round(delay, 2),  # seconds (mode "time") or the step logged (mode "step")
        "step_logged_at_kill": last_step(out),
        "at_s": round(time.monotonic() - t0, 2),
        "killed": not finished and not after_complete,
        "after_complete": not finished and after_complete,
        "during_checkpoint_write": caught,
        "checkpoints_left": present,
    }


def kill_trial(cmd: list[str], out: Path, kills: list[tuple[str, float]], deadline: float) -> dict:
    """Kill the run at each point in turn (the first in the fresh run, later ones in its resumes), then
    resume with --resume until the completion marker is written."""
    done = []
    for i, (mode, delay) in enumerate(kills):
        done.append(kill_once(cmd + (["--resume"] if i else []), out, mode, delay, deadline))
        if (out / ".complete").exists():
            break
    resumes, rc, err = 0, None, ""
    while resumes < 3 and not (out / ".complete").exists():
        r = subprocess.run(cmd + ["--resume"], env=cli_env(), capture_output=True, text=True, timeout=600)
        resumes += 1
        rc, err = r.returncode, r.stderr[-600:]
        if rc != 0:
            break
    return {
        "kills": done,
        "n_killed": sum(k["killed"] for k in done),
        "during_checkpoint_write": sum(k["during_checkpoint_write"] for k in done),
        "final_resumes": resumes,
        "resume_rc": rc,
        "complete": (out / ".complete").exists(),
        "error": err if rc not in (0, None) else "",
    }


def resume_matrix(tmp: Path, kills: int, chain: int, seed: int, budget_s: float) -> dict:
    w = build_world(tmp / "world")
    rng = random.Random(seed)
    stop_at = time.monotonic() + budget_s
    result = {}
    for stage in ("sft", "rm", "ppo"):
        base = [PY, "-m", "instructrl", *stage_args(stage, w)]
        ref = tmp / f"{stage}-ref"
        t0 = time.monotonic()
        proc = subprocess.Popen(
            base + ["--out", str(ref)], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        first_ckpt = None  # seconds to the first checkpoint folder: the interpreter start and loading before it
        while proc.poll() is None:
            if first_ckpt is None and (ref / "checkpoints").is_dir() and any((ref / "checkpoints").iterdir()):
                first_ckpt = time.monotonic() - t0
            time.sleep(0.01)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.read())
        ref_s = time.monotonic() - t0
        total_steps = last_step(ref)
        first_ckpt = first_ckpt or 0.5 * ref_s
        if r.returncode != 0:
            result[stage] = {"reference_error": r.stderr[-1000:], "kills": 0, "kills_survived": 0, "trials": []}
            continue
        trials = []
        # trial 0: one kill while a checkpoint is written; then trials of `chain` kills each, at seeded random
        # steps (the fresh run killed once the first step is logged, its resume at the next, later step)
        plans = [[("tmp", 0.0)]] + [
            [("step", n) for n in sorted(rng.sample(range(1, total_steps), min(chain, total_steps - 1)))]
            for _ in range(max(kills - 1, 0))
        ]
        for i, plan in enumerate(plans):
            if time.monotonic() > stop_at:
                break
            out = tmp / f"{stage}-kill{i}"
            t = kill_trial(base + ["--out", str(out)], out, plan, time.monotonic() + 4 * ref_s + 120)
            diff = max_abs_diff(ref, out) if t["complete"] else None
            t["max_abs_diff"] = diff
            t["bit_identical"] = diff == 0.0
            t["survived"] = bool(t["n_killed"] and t["complete"] and diff is not None and diff <= 1e-5)
            trials.append(t)
            print(f"[resume] {stage} trial {i}: {t}", flush=True)
        result[stage] = {
            "reference_s": round(ref_s, 1),
            "reference_steps": total_steps,
            "reference_first_checkpoint_s": round(first_ckpt, 1),
            "trials_tried": sum(bool(t["n_killed"]) for t in trials),
            "trials_survived": sum(t["survived"] for t in trials),
            "kills": sum(t["n_killed"] for t in trials),
            "kills_survived": sum(t["n_killed"] for t in trials if t["survived"]),
            "trials": trials,
        }
    return result


# ---------------------------------------------------------------------------- 3. concurrent labelers
N_LABELERS, N_DEMO, N_RANK, OVERLAP, K, THREADS = 12, 40, 40, 2, 4, 24


def label_load(db_url: str, tmp: Path) -> dict:
    import httpx
    from labelkit import seed, start_server, stop_server
    from sqlalchemy import func, select

    from instructrl.label.models import Assignment, Demonstration, Rating

    labelers = [f"lab{i:02d}" for i in range(N_LABELERS)]
    world = seed(
        db_url,
        labelers,
        overlap=OVERLAP,
        demo_prompts=[f"Demonstration prompt {i}" for i in range(N_DEMO)],
        rank_prompts=[
            {"prompt": f"Ranking prompt {i}", "completions": [f"output {i}.{j}" for j in range(K)]}
            for i in range(N_RANK)
        ],
    )
    server = start_server(db_url, tmp / "exports", workers=2)
    try:
        jobs, rng = [], random.Random(0)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for name in labelers:
                headers = {"Authorization": f"Bearer {world.tokens[name]}"}
                for a in http.get("/api/assignments", headers=headers).json():
                    if a["kind"] == "demonstration":
                        bodies = [{"text": f"{name} writes for {a['id']} (copy {c})"} for c in (1, 2)]
                    else:
                        detail = http.get(f"/api/assignments/{a['id']}", headers=headers).json()
                        bodies = [
                            {
                                "outputs": [
                                    {"completion_id": c["id"], "likert": rng.randint(1, 7), "flags": [], "rank": r}
                                    for c, r in zip(detail["completions"], rng.sample(range(1, K + 1), K))
                                ]
                            }
                            for _ in (1, 2)
                        ]
                    jobs.append((a["id"], a["kind"], headers, bodies))
        results, lock = [], threading.Lock()
        barriers = {aid: threading.Barrier(2) for aid, *_ in jobs}

        def submit(job, copy: int) -> None:
            aid, kind, headers, bodies = job
            try:
                barriers[aid].wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            t0 = time.perf_counter()
            try:
                status = client.post(f"/api/assignments/{aid}/{kind}", json=bodies[copy], headers=headers).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            with lock:
                results.append((aid, status, time.perf_counter() - t0))

        rng.shuffle(jobs)
        limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
        with (
            httpx.Client(base_url=server.url, timeout=60, limits=limits) as client,
            ThreadPoolExecutor(max_workers=THREADS) as pool,
        ):
            start = time.perf_counter()
            for f in [pool.submit(submit, job, c) for job in jobs for c in (0, 1)]:
                f.result(timeout=120)
            elapsed = time.perf_counter() - start
    finally:
        stop_server(server.process)
    statuses: dict[str, int] = {}
    for _, s, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    acked = {aid for aid, s, _ in results if s == 200}
    per_assignment: dict[int, list] = {}
    for aid, s, _ in results:
        per_assignment.setdefault(aid, []).append(s)
    with world.tx() as s:
        stored = s.scalar(select(func.count(Assignment.id)).where(Assignment.status == "submitted"))
        demos = s.scalar(select(func.count(Demonstration.id)))
        ratings = s.scalar(select(func.count(Rating.id)))
    world.engine.dispose()
    lat = sorted(t for *_, t in results)
    return {
        "requests": len(results),
        "assignments": len(jobs),
        "labelers": N_LABELERS,
        "client_threads": THREADS,
        "server_workers": 2,
        "statuses": statuses,
        "acknowledged": len(acked),
        "stored": stored,
        "stored_demonstrations": demos,
        "stored_ratings": ratings,
        "expected_ratings": N_RANK * OVERLAP * K,
        "double_acknowledged": sum(1 for v in per_assignment.values() if v.count(200) > 1),
        "elapsed_s": round(elapsed, 2),
        "req_per_s": round(len(results) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
    }


def labels(tmp: Path) -> dict:
    out = {"sqlite": label_load(f"sqlite:///{tmp / 'labels.db'}", tmp / "sqlite")}
    base = os.environ.get("INSTRUCTRL_PG_URL")
    if not base:
        out["postgresql"] = "not run: INSTRUCTRL_PG_URL is not set"
        return out
    import uuid

    from labelkit import _pg_schema_url
    from sqlalchemy import create_engine, text

    schema = "bench_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        out["postgresql"] = label_load(_pg_schema_url(base, schema), tmp / "pg")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return out


# ---------------------------------------------------------------------------- report
def machine() -> dict:
    flags = subprocess.run(
        "grep -o 'avx512[a-z_0-9]*\\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u", shell=True, capture_output=True, text=True
    ).stdout.split()
    return {
        "nproc": os.cpu_count(),
        "cpu_flags": flags,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "shared": "the machine was shared with other jobs during the run",
    }


def markdown(res: dict) -> str:
    rows, notes = [], []
    w = res.get("walk")
    if w:
        rows.append(
            f"| config fields x bad values (`from_dict`) | {w['config_cases_tried']} | {w['config_cases_handled']} |"
        )
        rows.append(f"| CLI invocations (subprocess) | {w['cli_tried']} | {w['cli_handled']} |")
        notes += [f"- not handled: {c}" for c in w["config_not_handled"] + w["cli_not_handled"]]
    rz = res.get("resume")
    if rz:
        for stage, r in rz.items():
            diffs = [t["max_abs_diff"] for t in r["trials"] if t.get("max_abs_diff") is not None]
            tmp = sum(  # waited for, or hit by chance (a `.tmp-step-*` folder left by the kill)
                1 for t in r["trials"] for k in t["kills"] if any(c.startswith(".tmp-") for c in k["checkpoints_left"])
            )
            early = sum(
                1
                for t in r["trials"]
                for k in t["kills"]
                if not any(c.startswith("step-") for c in k["checkpoints_left"])
            )
            rows.append(
                f"| {stage.upper()}: SIGKILLs survived (in {len(r['trials'])} trials, each resumed with `--resume` to the "
                f"end; {tmp} kills during a checkpoint write, {early} before the first checkpoint; max abs diff of "
                f"the final weights {max(diffs) if diffs else 'n/a'}) | {r['kills']} | {r['kills_survived']} |"
            )
            notes += [f"- {stage}: {t}" for t in r["trials"] if t["n_killed"] and not t["survived"]]
            if "reference_error" in r:
                notes.append(f"- {stage} reference run failed: {r['reference_error'][-300:]}")
    lb = res.get("label")
    if lb:
        for db, r in lb.items():
            if isinstance(r, str):
                rows.append(f"| labelers on {db} | {r} | |")
                continue
            rows.append(
                f"| labelers on {db}: {r['requests']} submissions ({r['assignments']} assignments x 2 at once), "
                f"(server on 127.0.0.1, 2 workers, 12 labelers, 24 client threads), acknowledged vs stored, "
                f"{r['double_acknowledged']} acknowledged twice; p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms | {r['acknowledged']} | {r['stored']} |"
            )
    problems = (
        (w and (w["config_not_handled"] or w["cli_not_handled"]))
        or (rz and any(r["kills_survived"] < r["kills"] or "reference_error" in r for r in rz.values()))
        or (lb and any(not isinstance(r, str) and r["acknowledged"] != r["stored"] for r in lb.values()))
    )
    concl = "No failure found" if not problems else "Failures found (listed below the table)"
    m = res["machine"]
    missing = [p for p in ("walk", "resume", "label") if p not in res]
    text = [
        "# Reliability",
        "",
        f"**{concl}** in the parts that ran" + (f"; not run: {', '.join(missing)}" if missing else "") + ".",
        "",
        "| check | tried / acknowledged | handled / survived / stored |",
        "|---|---|---|",
        *rows,
        "",
        *notes,
        "",
        "Handled: a `ConfigError` of one line naming the field (config), or one line on stderr, exit 2 and no "
        "traceback (CLI). Survived: killed with SIGKILL, resumed with `--resume` to its completion marker, final "
        "`model.safetensors` within 1e-5 of the uninterrupted run (bit-identical where the diff is 0).",
        "",
        f"Command: `.venv/bin/python benchmarks/reliability/run.py --kills {res['args']['kills']} "
        f"--chain {res['args']['chain']}` "
        f"(seed {res['args']['seed']}; PostgreSQL when `INSTRUCTRL_PG_URL` is set, after "
        '`eval "$(bash scripts/services.sh start)"`). Full record: [results.json](results.json).',
        "",
        f"Machine: nproc {m['nproc']}, CPU flags {' '.join(m['cpu_flags']) or '(no avx512/amx)'}, {m['date']}, "
        f"{m['shared']}. Total time {res['total_s']} s.",
        "",
    ]
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=3, help="kills per stage (the first while a checkpoint is written)")
    ap.add_argument("--chain", type=int, default=2, help="kills per random-step trial (the run, then its resumes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="walk,resume,label")
    ap.add_argument("--resume-budget", type=float, default=420.0, help="seconds for the kill-and-resume part")
    a = ap.parse_args()
    parts = a.parts.split(",")
    res: dict = {"args": vars(a), "machine": machine()}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="instructrl-reliability-") as d:
        tmp = Path(d)
        if "walk" in parts:
            res["walk"] = walk()
            print("[walk]", {k: v for k, v in res["walk"].items() if k != "config_classes"}, flush=True)
        if "resume" in parts:
            res["resume"] = resume_matrix(tmp, a.kills, a.chain, a.seed, a.resume_budget)
        if "label" in parts:
            (tmp / "label").mkdir()
            res["label"] = labels(tmp / "label")
            print("[label]", res["label"], flush=True)
    res["total_s"] = round(time.monotonic() - t0, 1)
    (HERE / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (HERE / "results.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
