#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the demo on the built-in miniature world.
#   bash scripts/demo.sh [OUT] [instructrl demo options]   e.g. bash scripts/demo.sh --quick (the 5-minute recipe)
# OUT defaults to runs/demo (runs/demo-quick with --quick: a run folder holds one recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=runs/demo
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    out=$1
    shift
elif [[ " $* " == *" --quick "* ]]; then
    out=runs/demo-quick
fi
exec .venv/bin/instructrl demo --out "$out" "$@"
