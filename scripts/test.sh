#!/usr/bin/env bash
# The test command: sets up .venv and the services the tests need, then runs the suite.
# Long checks are marked `slow` and run only with INSTRUCTRL_SLOW=1.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# lint and format first: one line per finding, and the suite does not start on an unclean tree
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . || { echo "[test] ruff: the tree is not clean (fix: .venv/bin/ruff check --fix . && .venv/bin/ruff format .)" >&2; exit 1; }
cleanup=()
if [ -f scripts/services.sh ]; then
    # Starts PostgreSQL / installs Chromium for the labeling-app tests; prints env exports.
    eval "$(bash scripts/services.sh start)" || echo "[test] services unavailable; dependent tests skip"
    cleanup+=("bash scripts/services.sh stop")
fi
marker="not slow"
[ "${INSTRUCTRL_SLOW:-0}" = "1" ] && marker=""
# two workers side by side (pytest-xdist; tests/conftest.py keeps the tests that share a file's module-scoped run
# on one worker); INSTRUCTRL_TEST_WORKERS=0 runs in one
workers=${INSTRUCTRL_TEST_WORKERS:-2}
parallel=()
[ "$workers" != "0" ] && parallel=(-n "$workers" --dist loadgroup)
.venv/bin/python -m pytest -m "$marker" "${parallel[@]}" "$@"
rc=$?
for c in "${cleanup[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
