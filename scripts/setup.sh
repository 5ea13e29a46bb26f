#!/usr/bin/env bash
# One-time (and idempotent) setup: a virtual environment in .venv with the CPU build of PyTorch and
# instructrl installed in editable mode. Re-runs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
stamp=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    echo "[setup] installing dependencies (a minute or two on a fresh machine)"
    .venv/bin/python -m pip install -q --upgrade pip
    # The CPU build of torch first: a plain 'torch' requirement would pull a multi-GB CUDA build.
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
        .venv/bin/python -m pip install -q "torch==${INSTRUCTRL_TORCH_VERSION:-2.13.0}"
    fi
    .venv/bin/python -m pip install -q -e ".[all,test]"
    echo "$stamp" > .venv/.setup-stamp
fi
