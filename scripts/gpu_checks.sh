#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run, for a machine that has one (results under $OUT, default
# runs/gpu-checks): the tests that skip without CUDA, the scale benchmark (plan vs measured), the PPO speed
# benchmark, and the CPU-bf16 probe of the host. Usage: OUT=dir bash scripts/gpu_checks.sh [quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-checks}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; \
  $PY -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)"; \
  grep -m1 "model name" /proc/cpuinfo; grep -m1 -o -w "amx_bf16\|avx512_bf16" /proc/cpuinfo | sort -u; } > "$OUT/machine.txt" 2>&1
status=0
step() {  # step NAME TIMEOUT CMD...: run one check, keep its log, go on after a failure
  local name=$1 limit=$2; shift 2
  echo "== $name"
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED ($?)"; status=1; fi
  tail -3 "$OUT/$name.log"
}
# 1. the tests with CUDA paths (they skip on a CPU), and the engine tests
step cuda-tests 900 $PY -m pytest -q -p no:cacheprovider -rs tests/test_memory_levers.py tests/test_training.py \
  tests/test_losses.py tests/ppo/test_rollout.py tests/ppo/test_trainer.py tests/test_precision_flags.py \
  tests/test_cpu_precision.py tests/test_engines.py tests/ppo/test_ppo_engines.py \
  tests/test_engines_deepspeed.py tests/ppo/test_ppo_deepspeed.py
# (the DeepSpeed tests skip unless deepspeed is importable: PyPI has no wheel of it, so build one where pip works,
#  `pip wheel --no-deps deepspeed -w .whl`, and carry it with hjson, ninja, msgpack, py-cpuinfo, einops)
[ "${1:-}" = quick ] && exit $status
# 2. the planner against measured GPU memory
step scale-plan-vs-measured 900 $PY benchmarks/scale/plan_vs_measured_gpu.py --out "$OUT/gpu_rows.json"
# 3. PPO speed (instructrl against trl when its wheel travels with the tree: pip install wheels/trl-*.whl)
step ppo-speed 1200 $PY benchmarks/ppo_speed/bench.py --device cuda --iterations 8 --compile --out "$OUT/ppo_speed.json"
exit $status
