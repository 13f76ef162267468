#!/usr/bin/env bash
# Everything that needs the GPU, for the device tool (run from the repo root):
#   build   build for sm_90 (pip install --no-build-isolation --no-deps -e .), build_info
#   tests   the tests that touch the GPU (-k cuda: CUDA kernels, Triton on the GPU, towers on
#           CUDA, the >2^31-element CUDA cases); CI runs the rest. TESTS_K="" runs them all.
#   sanitize  compute-sanitizer memcheck and racecheck on the CUDA kernels' tests
#   bench   the full-size benchmarks (pytest bench/ --benchmark) as markdown tables
#   train   the default `python train/run.py` on the GPU (target: under a minute) and
#           `train/run.py --compare-cpu` (GPU with our kernels vs the CPU with torch's ops)
# Usage on the device:  bash bench/gpu_check.sh [PHASES]   (comma-separated; default: all, in
# the order above). One device call allows 10 minutes and a session 15 minutes of device time,
# machine start included, so split it: "build,tests,bench" (timeout_s 600) first, then
# "sanitize,train" on the same warm machine (the build is kept; a phase after a fresh start
# builds first). SAN_K overrides the sanitizer runs' -k expression, BENCH_FILES the benchmark
# files (default: every bench/bench_*.py, kernels first, the training step last). Each phase
# (and each benchmark file) has its own time limit (PHASE_LIMIT seconds, default 300), so one
# hang costs that much, not the call; each benchmark file writes its tables when it ends, so a
# call cut short keeps the tables of the files that finished.
# Logs, tables and the training run's files land in $OUT (the device tool brings it back).
set -uo pipefail
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" PYTHONUNBUFFERED=1
PHASES=",${1:-build,tests,sanitize,bench,train},"
# The sanitizers slow kernels ~100x: the batch-128/257 conv cases are left to the plain tests.
SAN_K="${SAN_K:-cuda and not large and not opcheck and not gradcheck and not 128x3x227 and not 257x3x224}"
SAN_FILES="tests/test_lrn.py tests/test_max_pool.py tests/test_conv.py"
TESTS_K="${TESTS_K-cuda}"
BENCH_FILES="${BENCH_FILES:-bench/bench_conv.py bench/bench_lrn.py bench/bench_max_pool.py bench/bench_relu_dropout.py bench/bench_train.py}"
PHASE_LIMIT="${PHASE_LIMIT:-300}"
status=0

step() { echo; echo "=== $* ($(date -u +%T))"; }
want() { [[ "$PHASES" == *",$1,"* ]]; }

build() {
  step "build"
  local t0; t0=$(date +%s)
  if ! pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -n 60 "$OUT/build.log"; exit 1
  fi
  echo "build took $(( $(date +%s) - t0 )) s"
  python -m alexnet_kernels | tee "$OUT/build_info.txt"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/build_info.txt"
}

if want build || ! python -c "import alexnet_kernels" >/dev/null 2>&1; then
  build
fi

if want tests; then
  step "tests (-k '$TESTS_K')"
  timeout "$PHASE_LIMIT" python -m pytest tests -q -ra --maxfail=30 ${TESTS_K:+-k "$TESTS_K"} 2>&1 \
    | tee "$OUT/tests.log" | tail -n 40
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want sanitize; then
  step "compute-sanitizer memcheck"
  # shellcheck disable=SC2086
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$PHASE_LIMIT" compute-sanitizer --tool memcheck --error-exitcode 9 \
    python -m pytest $SAN_FILES -q -k "$SAN_K" >"$OUT/memcheck.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || status=1
  echo "memcheck exit $rc ($(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/memcheck.log") clean summaries)"
  tail -n 3 "$OUT/memcheck.log"
  step "compute-sanitizer racecheck"
  # shellcheck disable=SC2086
  timeout "$PHASE_LIMIT" compute-sanitizer --tool racecheck --error-exitcode 9 \
    python -m pytest $SAN_FILES -q -k "$SAN_K" >"$OUT/racecheck.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || status=1
  echo "racecheck exit $rc"; tail -n 3 "$OUT/racecheck.log"
fi

if want bench; then
  step "benchmarks"
  rm -f "$OUT/bench.md" "$OUT/bench.log"
  for f in $BENCH_FILES; do
    echo "--- $f ($(date -u +%T))" | tee -a "$OUT/bench.log"
    ALEXNET_BENCH_OUT="$OUT/bench.md" timeout "$PHASE_LIMIT" python -m pytest "$f" --benchmark -q -ra \
      >>"$OUT/bench.log" 2>&1
    rc=$?; [ $rc -eq 0 ] || status=1
    echo "$f exit $rc"; tail -n 2 "$OUT/bench.log"
  done
  [ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
fi

if want train; then
  step "train/run.py, the default run on the GPU"
  t0=$(date +%s)
  timeout 300 python train/run.py --out "$OUT/default_run" 2>"$OUT/default_run.err" | tee "$OUT/default_run.txt"
  rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || status=1
  echo "default run exit $rc, $(( $(date +%s) - t0 )) s wall clock (the issue's target: under 60 s)"
  tail -n 3 "$OUT/default_run.err"
  step "train/run.py --compare-cpu"
  timeout 400 python train/run.py --compare-cpu --compare-steps 5 2>&1 | tee "$OUT/compare_cpu.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

step "done: exit $status"
exit $status
