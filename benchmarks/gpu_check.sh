#!/usr/bin/env bash
# One command for a GPU machine: the GPU tests and the GPU benchmarks, a summary table LAST.
#
#   bash benchmarks/gpu_check.sh            (or: make gpu-check)
#
# Installs nothing from the network. Expects python3 with numpy, CuPy, torch and OpenCV; PyAV and
# scikit-video installed or carried as wheels in .device/ (benchmarks/pack_for_device.sh); DALI
# installed or carried as .dali/ (../shared/tools/dali-for-device.sh: .dali/deps/activate.sh
# unpacks it and puts it on PYTHONPATH). OpenCV's TV-L1 (contrib) is not needed: the TV-L1
# comparisons use fixtures computed on a CPU machine (tests/fixtures/tvl1/). Logs and JSON go to $OUT when set
# (the device runner brings that folder back), else benchmarks/results/gpu_check/.
#
# Steps run one after another; a failing step does not stop the others; the exit status is the
# number of failed steps (0: all passed). Later GPU features add their checks to STEPS below:
# one line "name|timeout seconds|command". Budget: the whole script under 6 minutes.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG_DIR=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$LOG_DIR"
export MCL_FAST_GPU_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

STEPS=(
  "environment|60|nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; $PY -c 'import sys, numpy, cupy; print(sys.version.split()[0], \"numpy\", numpy.__version__, \"cupy\", cupy.__version__, \"devices\", cupy.cuda.runtime.getDeviceCount())'"
  "host library (cmake)|120|if command -v cmake >/dev/null; then cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j 8 --target mcl_host; else echo 'cmake not installed: GPU tests skip the CPU-twin comparisons'; fi"
  "pytest tests/gpu|240|$PY -m pytest tests/gpu -q -p no:cacheprovider"
  "benchmark motion_gpu|150|$PY benchmarks/motion_gpu.py --quick --json $LOG_DIR/motion_gpu.json"
  "benchmark loader_throughput|240|$PY benchmarks/loader_throughput.py --quick --workers 4 16 --json $LOG_DIR/loader_throughput.json"
  "benchmark train_step|240|$PY benchmarks/train_step.py --device cuda --backbones r2plus1d_50,s3d --amp off,bf16,fp16 --steps 10 --warmup 3 --json $LOG_DIR/train_step.json"
  "pretrain smoke fp16|150|$PY -m mcl_fast.train --config ucf101_r2plus1d data.loader=synthetic data.synthetic_batches=6 optim.epochs=1 data.batch_size=8 train.amp=fp16 model.queue_size=1024 output=$LOG_DIR/pretrain_fp16 train.progress=false"
)

# PyAV and scikit-video carried as wheels in .device/ (benchmarks/pack_for_device.sh).
if [ -f .device/activate.sh ]; then
  # shellcheck disable=SC1091
  source .device/activate.sh || echo "gpu_check: the carried wheels could not be installed; video tests will fail"
fi
# DALI carried as .dali/ parts: unpack and put it on the path (once per machine).
if [ -f .dali/deps/activate.sh ]; then
  # shellcheck disable=SC1091
  source .dali/deps/activate.sh || echo "gpu_check: DALI could not be activated; DALI tests will skip"
fi
if [ -d build ] && [ -f build/libmcl_host.so ]; then export MCL_FAST_HOST_LIB=$PWD/build; fi

names=(); statuses=(); seconds=(); notes=()
failed=0
for entry in "${STEPS[@]}"; do
  name=${entry%%|*}; rest=${entry#*|}; limit=${rest%%|*}; cmd=${rest#*|}
  log="$LOG_DIR/$(echo "$name" | tr -c 'a-zA-Z0-9_\n' '_').log"
  echo "=== $name (limit ${limit}s) ==="
  start=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  took=$(( $(date +%s) - start ))
  if [ -f build/libmcl_host.so ]; then export MCL_FAST_HOST_LIB=$PWD/build; fi
  if [ "$rc" -eq 0 ]; then status=PASS; elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=TIMEOUT; else status="FAIL($rc)"; fi
  [ "$rc" -ne 0 ] && failed=$((failed + 1))
  note=$(grep -E "passed|failed|error" "$log" | tail -n 1 | cut -c1-70)
  names+=("$name"); statuses+=("$status"); seconds+=("$took"); notes+=("$note")
done

# Headline numbers of the benchmark, from its JSON.
headline=$($PY - "$LOG_DIR/motion_gpu.json" <<'EOF' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
t = r["tvl1"]["320x240"]; m = r["maps"]; s = r["select_box"]
print(f"TV-L1 320x240 GPU {t['gpu']['pairs_per_s']:.0f} vs CPU {t['cpu']['pairs_per_s']:.1f} pairs/s "
      f"({t['gpu']['pairs_per_s'] / t['cpu']['pairs_per_s']:.0f}x, EPE {t['gpu']['epe']:.3f}/{t['cpu']['epe']:.3f}); "
      f"maps fused {100 * m['fused_frac_of_copy']:.0f}% of copy BW; "
      f"select_box {s['gpu']['boxes_per_s'] / s['numpy']['boxes_per_s']:.0f}x NumPy")
EOF
)

echo
echo "gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1))"
printf '| %-24s | %-9s | %5s | %-70s |\n' "step" "status" "s" "last result line"
printf '|%s|%s|%s|%s|\n' "--------------------------" "-----------" "-------" "------------------------------------------------------------------------"
for i in "${!names[@]}"; do
  printf '| %-24s | %-9s | %5s | %-70s |\n' "${names[$i]}" "${statuses[$i]}" "${seconds[$i]}" "${notes[$i]}"
done
[ -n "$headline" ] && echo "$headline"
echo "failed steps: $failed (logs in $LOG_DIR)"
exit "$failed"
