#!/usr/bin/env bash
# Run the benchmarks, the notebooks and the test suite on the accelerator JAX finds (GPU/TPU).
#
#   bash benchmarks/device_check.sh OUT_DIR
#
# Uses the Python on PATH (python3) with gated_jax importable from this checkout; writes
# bench.md, speed_map.{txt,json,md,csv,png}, notebooks.txt and pytest.txt to OUT_DIR. Each part has its own time limit
# (seconds, overridable: BENCH_S, SPEEDMAP_S, NOTEBOOK_S, PYTEST_S), so one slow part cannot eat the others.
set -u
out=${1:?usage: device_check.sh OUT_DIR}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# several processes share one accelerator: no process takes 75% of its memory up front
export XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}
# the `gated-jax` command without installing the package (tests call it)
if ! command -v gated-jax >/dev/null; then
  bindir=$(mktemp -d)
  printf '#!/bin/sh\nexec %s -m gated_jax.cli "$@"\n' "$(command -v $py)" >"$bindir/gated-jax"
  chmod +x "$bindir/gated-jax"
  export PATH="$bindir:$PATH"
fi

{
  date -u
  nvidia-smi -L 2>/dev/null || true
  $py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} 2>&1 | tee "$out/env.txt"

echo "== benchmarks"
timeout "${BENCH_S:-300}" $py -m gated_jax.cli bench --only modules cell flow conv parallel 2>&1 \
  | tee "$out/bench.md"
echo "bench exit ${PIPESTATUS[0]}" | tee -a "$out/bench.md"

echo "== speed map (issue 30; the accelerator's sizes: B up to 256, m up to 1024)"
# each shape is saved as measured: a timeout keeps the shapes done (cheapest first)
timeout "${SPEEDMAP_S:-240}" $py benchmarks/speed_map.py --B 8 32 128 256 --T 256 2048 \
  --nm 64x64 256x256 1024x1024 16x64 --budget 1 --max-rounds 7 \
  --out "$out/speed_map_gpu.json" 2>&1 | tee "$out/speed_map.txt"
echo "speed map exit ${PIPESTATUS[0]}" | tee -a "$out/speed_map.txt"

echo "== notebooks"
timeout "${NOTEBOOK_S:-150}" $py benchmarks/run_notebooks.py --timeout "${NOTEBOOK_EACH_S:-120}" 2>&1 \
  | tee "$out/notebooks.txt"
echo "notebooks exit ${PIPESTATUS[0]}" | tee -a "$out/notebooks.txt"

echo "== tests"
timeout "${PYTEST_S:-150}" $py -m pytest -q -n 8 -p no:cacheprovider tests \
  --ignore=tests/test_notebooks.py -rfE 2>&1 | tee "$out/pytest.txt" | tail -n 30
echo "pytest exit ${PIPESTATUS[0]}" | tee -a "$out/pytest.txt"
