"""Shared fixtures: tiny models and datasets built inside the tests (nothing is downloaded).
Plain helpers live in testkit.py (a conftest module name is not importable across test folders)."""

from __future__ import annotations

import os
from pathlib import Path

# The tests never download: Hub look-ups fail at once instead of retrying a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `mixed_precision: auto` is fp32 on every test machine, whatever its CPU (on one with AMX or AVX512-BF16 it would
# be bf16, and the tiny runs' numbers would change): tests/test_cpu_precision.py tests the real decision.
os.environ.setdefault("INSTRUCTRL_CPU_BF16", "0")

import pytest
from testkit import fact_demos, write_jsonl

if os.environ.get("PYTEST_XDIST_WORKER"):  # tests side by side (scripts/test.sh): one core each
    import torch

    torch.set_num_threads(1)


def _uses_a_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return bool(info) and any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the test ids
def pytest_collection_modifyitems(config, items):
    """With tests side by side (pytest-xdist, --dist loadgroup): the tests of a file with a module-scoped fixture (a
    run several tests read) stay on one worker, so the run is made once; the labeling app's tests share one database
    server and run on one worker; every other test goes to whichever worker is free, which balances the two."""
    for item in items:
        if "/tests/label/" in item.path.as_posix():
            item.add_marker(pytest.mark.xdist_group("label"))
        elif _uses_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.path.as_posix()))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test starts without the accelerate state an earlier test left in this process (one device
    and one precision per process otherwise: a CPU-only test after a GPU one would be refused)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (width 64) with a BPE tokenizer trained on the fact sentences; random weights."""
    from instructrl.modeling.tiny import make_tiny_model

    texts = [r["prompt"] + " " + r["completion"] for r in fact_demos(200)]
    texts += ["### Instruction:\n", "### Response:\n"]
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, vocab_size=320, n_layer=2, n_embd=64)


@pytest.fixture()
def demos_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "demos.jsonl", fact_demos(80))
