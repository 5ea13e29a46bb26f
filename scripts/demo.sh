#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the demo on the built-in miniature world.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/instructrl demo --out "${1:-runs/demo}"
