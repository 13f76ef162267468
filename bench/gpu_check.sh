#!/usr/bin/env bash
# Every GPU figure of the project, in two calls on one warm GPU machine:
#
#   bash bench/gpu_check.sh call1   (at most 9 min)  the machine, the build for sm_90, the copy
#                                   rate and matmul peaks, the CUDA tests, the benchmark tables,
#                                   where a training step's time goes
#   bash bench/gpu_check.sh call2   (at most 4 min)  compute-sanitizer memcheck and racecheck on
#                                   small shapes, the GPU default run, train/run.py --compare-cpu,
#                                   Nsight Compute reports of the package's kernels
#
# Phases can also be named one by one (comma-separated): env, build, ceilings, tests, bench,
# profile, sanitize, train, compare, ncu. Each call keeps to a budget (CALL_BUDGET seconds; by
# default 520 for call1 and 220 for call2, the sum for both or for named phases): every phase has
# its own limit and gets at most what is left, the most valuable first, and writes its results
# under $OUT as it measures them, so a call cut short still brings back what it finished. The
# second call must come within the device's warm window (30 s), or it starts on a fresh machine
# and builds again. The last lines printed are a short summary.
#
# Rehearsal without a GPU: GPU_CHECK_DRY=1 bash bench/gpu_check.sh call1,call2 runs every phase,
# skipping only what needs a GPU (nvidia-smi, the ceilings, compute-sanitizer, ncu), at small
# sizes, so that a script bug costs no device time. GPU_CHECK_SKIP_BUILD=1 keeps the installed
# build. PYTHON overrides the interpreter (python3 on the device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-python3}"
DRY="${GPU_CHECK_DRY:-0}"
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" PYTHONUNBUFFERED=1

REQ=",${1:-call1},"
PHASES=""
[[ "$REQ" == *",call1,"* ]] && PHASES+=",env,build,ceilings,tests,bench,profile,"
[[ "$REQ" == *",call2,"* ]] && PHASES+=",env,build,sanitize,train,compare,ncu,"
BUDGET=0
[[ "$REQ" == *",call1,"* ]] && BUDGET=$((BUDGET + 520))
[[ "$REQ" == *",call2,"* ]] && BUDGET=$((BUDGET + 220))
if [ -z "$PHASES" ]; then PHASES="$REQ"; BUDGET=740; fi
BUDGET="${CALL_BUDGET:-$BUDGET}"
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

want() { [[ "$PHASES" == *",$1,"* ]]; }
step() { echo; echo "=== $* ($(date -u +%T), $(( $(date +%s) - T0 )) s into the call)"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - $(date +%s))); }
# limited LIMIT cmd...: runs cmd under min(LIMIT, what is left of the budget); 124 when cut.
limited() {
  local lim=$1; shift
  local l; l=$(left)
  [ "$l" -lt "$lim" ] && lim=$l
  if [ "$lim" -lt 10 ]; then echo "(no time left in this call's budget)"; return 125; fi
  timeout --kill-after=5 "$lim" "$@"
}
status=0
phase_rc() {  # phase_rc NAME RC: the summary line of a phase
  local what=ok
  case "$2" in 0) ;; 124|137) what="cut at its time limit"; status=1 ;; 125) what="skipped: budget spent" ;;
    *) what="failed (exit $2)"; status=1 ;; esac
  note "$(printf '%-10s %s' "$1" "$what")"
}
gpu() { [ "$DRY" = "0" ]; }
skipped() { note "$(printf '%-10s %s' "$1" "skipped in the rehearsal (needs a GPU)")"; }

if want env; then
  step "env"
  {
    date -u +"date %Y-%m-%d %H:%M UTC"
    if gpu; then nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; fi
    "$PY" -c "import torch, triton, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version()); print('triton', triton.__version__)"
  } 2>&1 | tee "$OUT/env.txt"
fi

if want build; then
  if [ "${GPU_CHECK_SKIP_BUILD:-0}" != "0" ] && "$PY" -c "import alexnet_kernels" 2>/dev/null; then
    note "build      kept the installed build"
  elif ! want tests && ! want bench && "$PY" -c "import alexnet_kernels" 2>/dev/null; then
    note "build      kept the build of the first call (warm machine)"
  else
    step "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
    t=$(date +%s)
    limited 300 "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1
    rc=$?
    phase_rc build $rc
    echo "build took $(( $(date +%s) - t )) s" | tee -a "$SUMMARY"
    if [ $rc -ne 0 ]; then tail -n 60 "$OUT/build.log"; cat "$SUMMARY"; exit 1; fi
  fi
  "$PY" -m alexnet_kernels >"$OUT/build_info.txt" 2>&1 || { cat "$OUT/build_info.txt"; exit 1; }
fi

if want ceilings; then
  step "ceilings: device-to-device copy rate and matmul peaks"
  if gpu; then
    limited 60 "$PY" bench/timing.py >"$OUT/ceilings.env" 2>"$OUT/ceilings.err"
    rc=$?; phase_rc ceilings $rc
    # shellcheck disable=SC1091
    [ $rc -eq 0 ] && set -a && . "$OUT/ceilings.env" && set +a && cat "$OUT/ceilings.env" | tee -a "$SUMMARY"
  else
    skipped ceilings
  fi
fi

TEST_TIMEOUT=""
"$PY" -c "import pytest_timeout" 2>/dev/null && TEST_TIMEOUT="--timeout 90"
if want tests; then
  # The kernels' own tests first (most of the value), then models and training on CUDA.
  step "tests: the CUDA kernels"
  # shellcheck disable=SC2086
  limited 170 "$PY" -m pytest tests/test_lrn.py tests/test_max_pool.py tests/test_conv.py \
    tests/test_relu_dropout.py $(ls tests/test_lrn_max_pool.py 2>/dev/null) tests/test_build.py \
    -k cuda -q -ra --durations=10 -p no:cacheprovider $TEST_TIMEOUT >"$OUT/tests_kernels.log" 2>&1
  rc=$?; phase_rc tests $rc; tail -n 1 "$OUT/tests_kernels.log" | tee -a "$SUMMARY"
  grep -E "^(FAILED|ERROR)" "$OUT/tests_kernels.log" | head -n 20
  step "tests: models and training on CUDA"
  # shellcheck disable=SC2086
  limited 100 "$PY" -m pytest tests -k cuda -q -ra --durations=10 -p no:cacheprovider $TEST_TIMEOUT \
    --ignore=tests/test_lrn.py --ignore=tests/test_max_pool.py --ignore=tests/test_conv.py \
    --ignore=tests/test_relu_dropout.py --ignore=tests/test_lrn_max_pool.py --ignore=tests/test_build.py \
    >"$OUT/tests_models.log" 2>&1
  rc=$?; phase_rc tests2 $rc; tail -n 1 "$OUT/tests_models.log" | tee -a "$SUMMARY"
  grep -E "^(FAILED|ERROR)" "$OUT/tests_models.log" | head -n 20
fi

if want bench; then
  step "benchmarks"
  BENCH_ARGS="--benchmark"; gpu || BENCH_ARGS=""
  rm -f "$OUT/bench.md" "$OUT/bench.log"
  for f in bench/bench_lrn.py bench/bench_max_pool.py $(ls bench/bench_lrn_max_pool.py 2>/dev/null) \
           bench/bench_relu_dropout.py bench/bench_conv.py bench/bench_train.py; do
    [ -f "$f" ] || continue
    lim=75; [[ "$f" == *bench_train* ]] && lim=170
    echo "--- $f" >>"$OUT/bench.log"
    # shellcheck disable=SC2086
    ALEXNET_BENCH_OUT="$OUT/bench.md" limited $lim "$PY" -m pytest "$f" $BENCH_ARGS -q -ra \
      -p no:cacheprovider >>"$OUT/bench.log" 2>&1
    phase_rc "$(basename "$f" .py)" $?
  done
fi

if want profile; then
  step "profile: where a training step's time goes"
  PROFILE_ARGS=""; gpu || PROFILE_ARGS="--batch 2 --steps 1 --precisions fp32"
  # shellcheck disable=SC2086
  limited 100 "$PY" bench/profile_step.py --out "$OUT/profile.md" $PROFILE_ARGS >"$OUT/profile.log" 2>&1
  phase_rc profile $?
fi

SAN_FILES="tests/test_lrn.py tests/test_max_pool.py tests/test_conv.py $(ls tests/test_lrn_max_pool.py 2>/dev/null)"
# Small shapes only: the sanitizers slow kernels 10-100x.
SAN_K="${SAN_K:-cuda and not large and not opcheck and not gradcheck and not compile and not 128x and not 257x}"
if want sanitize; then
  if gpu; then
    step "compute-sanitizer memcheck"
    # shellcheck disable=SC2086
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 limited 100 compute-sanitizer --tool memcheck --error-exitcode 9 \
      "$PY" -m pytest $SAN_FILES -q -x -k "$SAN_K" -p no:cacheprovider >"$OUT/memcheck.log" 2>&1
    phase_rc memcheck $?; grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck.log" | tail -n 2 | tee -a "$SUMMARY"
    step "compute-sanitizer racecheck (the kernels with shared memory)"
    limited 60 compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$PY" -m pytest tests/test_conv.py -q -x -k "$SAN_K" -p no:cacheprovider >"$OUT/racecheck.log" 2>&1
    phase_rc racecheck $?; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|passed|failed" "$OUT/racecheck.log" | tail -n 2 | tee -a "$SUMMARY"
  else
    skipped sanitize
  fi
fi

if want train; then
  step "train/run.py: the default run"
  TRAIN_ARGS=""; gpu || TRAIN_ARGS="--epochs 1 --train-images 64 --val-images 32 --batch-size 32"
  rm -rf /tmp/ak_default_run  # its checkpoint stays on the device; its CSV and plot come back
  t=$(date +%s)
  # shellcheck disable=SC2086
  limited 120 "$PY" train/run.py --out /tmp/ak_default_run $TRAIN_ARGS >"$OUT/default_run.txt" 2>"$OUT/default_run.err"
  rc=$?; phase_rc train $rc
  note "default run: $(( $(date +%s) - t )) s wall clock (target: under 60 s on the GPU)"
  tail -n 3 "$OUT/default_run.txt"
  cp /tmp/ak_default_run/metrics.csv "$OUT/default_run_metrics.csv" 2>/dev/null
  cp /tmp/ak_default_run/curves.png "$OUT/default_run_curves.png" 2>/dev/null
fi

if want compare; then
  step "train/run.py --compare-cpu"
  if gpu; then
    limited 80 "$PY" train/run.py --compare-cpu --compare-steps 5 >"$OUT/compare_cpu.txt" 2>&1
    phase_rc compare $?; tail -n 4 "$OUT/compare_cpu.txt" | tee -a "$SUMMARY"
  else
    # No GPU to compare with: the script must say so in one line and exit 2.
    "$PY" train/run.py --compare-cpu >"$OUT/compare_cpu.txt" 2>&1
    rc=$?; [ $rc -eq 2 ] && rc=0; phase_rc compare $rc
  fi
fi

if want ncu; then
  step "Nsight Compute: one launch of each of the package's kernels"
  if gpu; then
    limited 150 ncu --clock-control none --kernel-name-base demangled \
      --kernel-name "regex:alexnet_kernels|relu" --launch-count 60 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      --section Occupancy --section LaunchStats -f -o "$OUT/kernels" "$PY" bench/ncu_ops.py >"$OUT/ncu.log" 2>&1
    phase_rc ncu $?
    ncu --import "$OUT/kernels.ncu-rep" --page details --csv >"$OUT/ncu_details.csv" 2>/dev/null
  else
    limited 120 "$PY" bench/ncu_ops.py >"$OUT/ncu.log" 2>&1
    phase_rc ncu-ops $?
  fi
fi

echo
echo "=== summary ($(( $(date +%s) - T0 )) s of a ${BUDGET} s budget; files under $OUT)"
cat "$SUMMARY"
[ -f "$OUT/bench.md" ] && grep -c "^| " "$OUT/bench.md" | sed 's/^/benchmark rows (with headers): /'
echo "exit $status"
exit $status
