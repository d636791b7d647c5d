#!/usr/bin/env bash
# The GPU check, for a lent GPU machine (run from the repository root, with .whl carried):
#   installs the carried wheels; a smoke test of the GPU backends' Ops (every override's check)
#   and executors (the captured CUDA-graph step against eager, on CuPy and torch:cuda);
#   `pytest -m gpu`; three examples on --backend cupy; the GPU benchmark (B-D with the
#   captured executors, the torch CUDA-graph step and the JAX scan epoch; E with TF32 and
#   peak memory); a kernel-level profile of B and E; the scikit-learn estimator on the GPU.
# Logs and JSON go to $OUT. Every stage has its own time limit, so one slow stage cannot eat
# the others; the whole script stays under 6 minutes. Usage: OUT=/some/dir bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
start=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

stage "setup"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
python3 -c "import sys, numpy, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"

stage "smoke: each GPU backend's Ops (overrides, their check) and the captured step against eager"
timeout 90 python3 - <<'PY'
import numpy as np, portable_bp as pbp
for row in pbp.backends.describe():
    print(f"{row['spec']:<18} {'yes' if row['available'] else 'no ':<4} {row.get('hot_path') or '-':<28} {row.get('device_name') or row['reason']}")
    for name, why in row["dropped"].items():
        print(f"   !!! override {name} refused: {why}")
X = np.random.default_rng(0).standard_normal((130, 8)); y = np.arange(130) % 4
for spec in ("cupy", "torch:cuda"):
    if not pbp.backends.probe(spec)[0]:
        continue
    print(spec, "overrides:", pbp.backends.get(spec).ops.overrides())
    for opt in ("sgd", "adam"):
        got = {}
        for executor in ("eager", "graph"):
            net = pbp.Network([8, 16, 4], activation="relu", loss="cross_entropy", backend=spec,
                              dtype="float32", seed=0)
            net.executor = executor
            net.fit(X, y, epochs=3, batch_size=16, optimizer=opt)
            got[executor] = [net.backend.to_numpy(a) for p in net.params for a in p]
        err = max(float(abs(a - b).max()) for a, b in zip(got["eager"], got["graph"]))
        failures = pbp.backends.get(spec).executor_failures
        print(f"{spec} {opt}: graph vs eager max |param diff| {err:.2e}; executor failures: {failures or 'none'}")
PY

stage "pytest -m gpu"
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider -rfEs --junitxml="$OUT/pytest_gpu.xml" > "$OUT/pytest_gpu.log" 2>&1; tail -30 "$OUT/pytest_gpu.log"

stage "examples on --backend cupy"
timeout 20 python3 examples/xor.py --backend cupy | tail -2
timeout 25 python3 examples/digits.py --backend cupy | tail -2
timeout 30 python3 examples/gpu_training.py --backend cupy | tail -3

stage "GPU benchmark B-D (float32, interleaved rounds): captured executors, torch CUDA graph, JAX scan"
timeout 130 python3 -m benchmarks --device gpu --configs B,C,D --rounds 3 --no-memory \
  --contenders cupy,torch,jax,bound --json "$OUT/gpu_bench_BCD.json" 2>&1 | tail -40

stage "GPU benchmark E (float32, TF32 child, peak memory)"
timeout 110 python3 -m benchmarks --device gpu --configs E --rounds 3 --tf32 \
  --contenders cupy,torch,bound --json "$OUT/gpu_bench_E.json" 2>&1 | tail -30

stage "GPU profile B and E: kernels per step, busy vs wall"
timeout 45 python3 -m benchmarks.gpu_profile --configs B,E --top 12 \
  --json "$OUT/gpu_profile.json" 2>&1 | grep -v '^USDT\|acc_events\|_warn_once'

stage "scikit-learn estimator on the GPU (short)"
timeout 40 python3 -m benchmarks.sklearn_bench --device gpu --rounds 1 --json "$OUT/sklearn_gpu.json" 2>&1 | tail -8

stage "done"
