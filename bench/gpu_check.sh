#!/usr/bin/env bash
# Everything that needs the GPU, in one call of the device tool (run from the repo root):
#   build for sm_90, the whole test suite on CUDA (large tensors included), compute-sanitizer
#   memcheck and racecheck on the CUDA kernels' tests, and the full-size benchmarks.
# Logs and the benchmark tables land in $OUT (the device tool brings that folder back).
# Usage on the device: bash bench/gpu_check.sh [pytest -k expression for the sanitizer runs]
set -uo pipefail
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" PYTHONUNBUFFERED=1
SAN_K="${1:-cuda and not large and not opcheck and not gradcheck and not 128x3x227 and not 257x3x224}"

step() { echo; echo "=== $*"; }

step "build ($(date -u +%FT%TZ))"
t0=$(date +%s)
if ! pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  tail -n 60 "$OUT/build.log"; exit 1
fi
echo "build took $(( $(date +%s) - t0 )) s"
python -m alexnet_kernels | tee "$OUT/build_info.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/build_info.txt"

step "tests (CPU and CUDA)"
python -m pytest tests -q -ra -x 2>&1 | tee "$OUT/tests.log" | tail -n 25

step "compute-sanitizer memcheck"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 9 \
  python -m pytest tests/test_lrn.py tests/test_max_pool.py tests/test_conv.py -q -k "$SAN_K" >"$OUT/memcheck.log" 2>&1
echo "memcheck exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/memcheck.log") clean summaries)"; tail -n 3 "$OUT/memcheck.log"

step "compute-sanitizer racecheck"
compute-sanitizer --tool racecheck --error-exitcode 9 \
  python -m pytest tests/test_lrn.py tests/test_max_pool.py tests/test_conv.py -q -k "$SAN_K" >"$OUT/racecheck.log" 2>&1
echo "racecheck exit $?"; tail -n 3 "$OUT/racecheck.log"

step "benchmarks"
rm -f "$OUT/bench.md"
ALEXNET_BENCH_OUT="$OUT/bench.md" python -m pytest bench/ --benchmark -q -ra >"$OUT/bench.log" 2>&1
echo "bench exit $?"
cat "$OUT/bench.md"
