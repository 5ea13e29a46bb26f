"""Helpers shared by the tests (imported as `testkit`): paths, tiny datasets, running the CLI."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "instructgpt-samples"

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]


def fact_demos(n: int = 80, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = rng.choice(COLORS)
        rows.append({"prompt": f"What color is the flag of Zor{i}?", "completion": f"The flag of Zor{i} is {c}."})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# the two-process tests run on CPUs over gloo wherever they run: on a machine with one GPU, two processes would
# otherwise both ask accelerate for a CUDA device of their own
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}


def free_port() -> int:
    """A TCP port free on this machine now (for a torchrun rendezvous; tests may run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], env: dict[str, str] | None = None, timeout: int = 600):
    """``instructrl ARGS`` under torchrun with two CPU processes (gloo) on a free port; the completed process."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    return subprocess.run(
        [*cmd, "-m", "instructrl", *args],
        env={**(env or cli_env()), **CPU_ONLY},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def succeeded(r):
    """``r`` (a completed process) after checking it exited 0 (else its stderr's end is the failure)."""
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def metric_column(out: Path, key: str) -> list[float]:
    """``key`` of every row of a run's metrics.jsonl."""
    return [json.loads(line)[key] for line in (out / "metrics.jsonl").read_text().splitlines()]


def about_half(pairs: list[list[int]]) -> bool:
    """(held, total) of two processes: together about the whole (ZeRO-3 pads each partition), each about half."""
    (h0, total), (h1, _) = pairs
    return total <= h0 + h1 <= 1.02 * total and abs(h0 - total / 2) <= 0.05 * total


def cut_after_checkpoint(src: Path, dst: Path, drop: str) -> None:
    """``dst``: run ``src`` as a kill after an earlier checkpoint leaves it (outputs and checkpoint ``drop`` gone)."""
    import shutil

    shutil.copytree(src, dst)
    for p in dst.iterdir():
        if p.name not in ("checkpoints", "config.yaml", "metrics.jsonl", "samples.jsonl", "data_report.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(dst / "checkpoints" / drop)


def cli_env() -> dict[str, str]:
    """Environment for running `python -m instructrl` in a subprocess against this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(args: list[str], cwd: Path | None = None, timeout: int = 300):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "instructrl", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def length_reward_model(tokenizer):
    """A :class:`~instructrl.modeling.reward.RewardModel` whose raw score is the number of real tokens of the
    row (rendered prompt + response + EOS): it prefers the longest response, so its choices are known."""
    from types import SimpleNamespace

    import torch

    from instructrl.modeling.reward import RewardModel

    class Length(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device for the scoring loop
            self.config = SimpleNamespace()  # no context limit

        def forward(self, input_ids, attention_mask, position_ids=None):
            return SimpleNamespace(logits=attention_mask.float().sum(-1, keepdim=True))  # (B, 1)

    return RewardModel(Length(), tokenizer, {"gain": 1.0, "bias": 0.0, "method": "none"})


def save_tiny_reward_model(policy_dir: Path, out: Path, seed: int = 0) -> Path:
    """An RM-format folder: the tiny policy's backbone under a fresh (random) scalar head, with its tokenizer."""
    import torch

    from instructrl.modeling.loading import load_tokenizer, save_pretrained_atomic
    from instructrl.modeling.reward import build_reward_model

    tok = load_tokenizer(str(policy_dir))
    torch.manual_seed(seed)
    return save_pretrained_atomic(build_reward_model(str(policy_dir), tok), tok, out)


# One interpreter for many short CLI calls: the child imports the heavy libraries once, then forks one process
# per call, so each call still starts from a fresh state with its own exit code, stdout and stderr (logging set up
# by the CLI as in a real run, a traceback printed as Python prints it) but without the seconds of imports.
_FORKING_CLI = r"""
import json, os, sys, traceback
import importlib, importlib.util
from instructrl import cli
# torch, transformers' model loading and peft: what every call that loads a model imports (seconds)
import instructrl.modeling.loading, transformers.modeling_utils, peft  # noqa: F401, E401
jobs = json.loads(sys.argv[1])
for name in {j["args"][0] for j in jobs if j["args"]} & set(cli.COMMANDS):
    cli.build_parser(name)
    api = cli.COMMANDS[name][0].rsplit(".", 1)[0] + ".api"  # the stage's code, imported by its main
    if importlib.util.find_spec(api) is not None:
        importlib.import_module(api)
codes = []
for j in jobs:
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, j["out"]), (2, j["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        if j["cwd"]:
            os.chdir(j["cwd"])
        sys.argv = ["instructrl", *j["args"]]
        try:
            code = cli.main(j["args"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) or e.code is None else (print(e.code, file=sys.stderr) or 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code or 0)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes), flush=True)
os._exit(0)  # nothing to tear down: skip the libraries' exit handlers
"""


def run_cli_many(calls: list[list[str]], cwd: Path | None = None, timeout: int = 300):
    """`run_cli` for each argument list in `calls`, in order, sharing one interpreter's start-up: for refusals
    and other quick calls (a few seconds each saved). Returns one `subprocess.CompletedProcess` per call."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            {"args": [str(a) for a in args], "out": f"{tmp}/{i}.out", "err": f"{tmp}/{i}.err", "cwd": str(cwd or "")}
            for i, args in enumerate(calls)
        ]
        r = subprocess.run(
            [sys.executable, "-c", _FORKING_CLI, json.dumps(jobs)],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=timeout,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        codes = json.loads(r.stdout.strip().splitlines()[-1])
        return [
            subprocess.CompletedProcess(
                ["instructrl", *j["args"]],
                code,
                Path(j["out"]).read_text(encoding="utf-8"),
                Path(j["err"]).read_text(encoding="utf-8"),
            )
            for j, code in zip(jobs, codes)
        ]
