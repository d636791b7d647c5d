#!/usr/bin/env bash
# The GPU check, for a lent GPU machine (minutes at a time), run from the repository root:
#
#   bash benchmarks/gpu_check.sh --prepare   # HERE, with internet: wheels the GPU image lacks into .whl/
#   OUT=/some/dir bash benchmarks/gpu_check.sh            # THERE (carry .whl): the check itself
#   OUT=/tmp/x bash benchmarks/gpu_check.sh --dry-run     # anywhere: the stages and limits, nothing run
#
# Correctness first (the stages a GPU answers that no CPU can), then speed, then the rest:
#   1 setup        the carried wheels (array-api-compat, array-api-strict) installed, versions
#   2 smoke        every GPU backend's Ops overrides and their check; executor failures
#   3 correctness  tests/test_gpu.py: captured vs eager vs NumPy float64, counted replays,
#                  the forced fallback, torch's sync-debug epoch, jax:gpu float32 precision
#   4 speed        B and D, float32, 3 rounds: captured executors vs the torch CUDA-graph step,
#                  the JAX scan epoch and the cuBLAS bound
#   5 the rest     the other GPU-marked tests, a one-rank NCCL fit, E with TF32 and peak memory,
#                  the scikit-learn estimator, the examples
# Every stage has its own limit, cut further to what is left of BUDGET seconds (under 9
# minutes in all), so one slow stage cannot eat the others. Logs and JSON go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET:-530}
MODE=${1:-run}
WHEELS="array-api-compat array-api-strict"

if [ "$MODE" = "--prepare" ]; then
  mkdir -p .whl && exec python3 -m pip download --no-deps --only-binary=:all: -d .whl $WHEELS
fi
if [ "$MODE" != "run" ] && [ "$MODE" != "--dry-run" ]; then
  echo "usage: gpu_check.sh [--prepare | --dry-run]" >&2; exit 2
fi
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false OUT
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, then the carried wheels
start=$(date +%s)
planned=0

# stage NAME LIMIT: the function NAME under `timeout`, at most LIMIT seconds and never past
# the budget; its output to $OUT/NAME.log, and its exit status and last lines here.
stage() {
  local name=$1 limit=$2 left
  planned=$((planned + limit))
  left=$((BUDGET - ($(date +%s) - start)))
  [ "$limit" -gt "$left" ] && limit=$left
  echo; echo "=== [$(( $(date +%s) - start ))s] $name (limit ${limit}s)"
  if [ "$MODE" = "--dry-run" ]; then declare -f "$name" | sed -n '3,$p' | sed '$d'; return 0; fi
  if [ "$limit" -le 5 ]; then echo "skipped: the budget of ${BUDGET}s is spent"; return 0; fi
  export -f "$name"
  timeout --kill-after=5 "$limit" bash -c "$name" > "$OUT/$name.log" 2>&1
  echo "exit $?"; tail -n 40 "$OUT/$name.log"
}

setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  else
    echo "no .whl/ here: run 'bash benchmarks/gpu_check.sh --prepare' where there is internet, and carry .whl"
  fi
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 - <<'PY'
import sys
print("python", sys.version.split()[0])
for name in ("numpy", "array_api_compat", "array_api_strict", "cupy", "torch", "jax", "mpi4py"):
    try:
        print(name, __import__(name).__version__)
    except Exception as exc:
        print(name, "missing:", exc)
PY
}

smoke() {
  python3 - <<'PY'
import portable_bp as pbp
for row in pbp.backends.describe():
    print(f"{row['spec']:<18} {'yes' if row['available'] else 'no ':<4} {row.get('hot_path') or '-':<28} "
          f"{row.get('device_name') or row['reason']}")
    for name, why in row["dropped"].items():
        print(f"   !!! override {name} refused: {why}")
PY
}

correctness() {
  python3 -m pytest -q -p no:cacheprovider -rfEs tests/test_gpu.py --junitxml="$OUT/correctness.xml"
}

speed() {
  python3 -m benchmarks --device gpu --configs B,D --dtypes float32 --rounds 3 --no-memory \
    --contenders cupy,torch,jax,bound --json "$OUT/gpu_bench_BD.json"
}

gpu_tests() {
  python3 -m pytest -q -p no:cacheprovider -rfEs -m gpu --ignore=tests/test_gpu.py --junitxml="$OUT/gpu_tests.xml" tests
}

nccl_one_rank() {
  python3 - <<'PY'
import numpy as np
import portable_bp as pbp
from portable_bp.distributed.nccl import NCCL
comm = NCCL(timeout=20)
X = np.random.default_rng(0).standard_normal((256, 8)); y = np.arange(256) % 4
net = pbp.Network([8, 16, 4], activation="relu", loss="cross_entropy", backend=comm.backend_spec, seed=0)
history = net.fit(X, y, epochs=2, batch_size=32, comm=comm)
print(comm, "losses", history.history["loss"], "failures", net.backend.executor_failures or "none")
PY
}

bench_E() {
  python3 -m benchmarks --device gpu --configs E --rounds 3 --tf32 --contenders cupy,torch,bound \
    --json "$OUT/gpu_bench_E.json"
}

sklearn() {
  python3 -m benchmarks.sklearn_bench --device gpu --rounds 1 --json "$OUT/sklearn_gpu.json"
}

examples() {
  python3 examples/xor.py --backend cupy | tail -2
  python3 examples/digits.py --backend cupy | tail -2
}

stage setup 30
stage smoke 40
stage correctness 150
stage speed 120
stage gpu_tests 50
stage nccl_one_rank 30
stage bench_E 60
stage sklearn 30
stage examples 20
echo; echo "=== [$(( $(date +%s) - start ))s] done (stage limits planned: ${planned}s, budget ${BUDGET}s)"
