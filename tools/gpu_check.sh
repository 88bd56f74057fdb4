#!/usr/bin/env bash
# One prepared check of the package on a machine with an NVIDIA GPU, one JSON summary
# ($OUT/gpu_check.json, or ./gpu_check.json; the parts' logs in $OUT/gpu_check_logs/). One
# script for both kinds of machine: the Keras parts (JAX, PyTorch) run everywhere, the
# TensorFlow parts of its earlier version where TensorFlow is.
#
# On the GPU machines the project borrows (PyTorch, JAX with CUDA, timm; no TensorFlow and no
# Keras), from the repository root with the wheels of tools/gpu_wheels.sh in .whl/:
#   bash tools/gpu_check.sh                  (about 7.5 minutes on an H100)
# It installs .whl/*.whl with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target SITE .whl/*.whl          (SITE: an empty folder; then PYTHONPATH=SITE)
# and runs tools/gpu_check_keras.py's parts on KERAS_BACKEND=jax and =torch, each in its own
# process and time box (a part that fails or is killed is recorded; the others run):
#   checks (about 150 s, in parallel): every family's mini network, forward and gradients on
#     the GPU against the CPU (float32) and `fit` under mixed_float16 / mixed_bfloat16; timm's
#     weights through the converter against timm's logits; Keras → timm layout → Keras;
#   bench (120 s JAX, then 170 s PyTorch): SKNet-50, ResNeXt-50, SE-ResNeXt-50, batch 64,
#     mixed bf16 / fp16, JAX (XLA) and PyTorch (eager, torch.compile) beside timm's models
#     under torch.compile + AMP + channels_last; what its time box cuts is recorded as not run;
#   tensorflow (a machine that has TensorFlow; the GPU machines have none and the summary says
#     it was skipped): the layer, kernel-path and model tests on the GPU, sknet_keras.benchmark
#     with and without XLA, and the trainer on 2 logical GPUs killed after its first
#     checkpoint and resumed (tools/gpu_check.py), against an uninterrupted run (8 minutes more:
#     run it alone as `bash tools/gpu_check.sh --sections=tensorflow` where commands are
#     limited in time).
#
#   --sections=checks,bench,tensorflow   the parts to run (default: all)
#   --dry-run   on this machine's CPU: builds the wheels for this Python, installs them into an
#               empty folder, hides TensorFlow (as on the GPU machines), and runs every code
#               path with tiny shapes and mini networks, one part after another (minutes).
# Exit status 1 when anything failed (the summary's "failed" lists it).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DRY=0
SECTIONS=checks,bench,tensorflow
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --sections=*) SECTIONS="${arg#*=}" ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
has() { case ",$SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
OUT="${OUT:-$PWD}"
mkdir -p "$OUT"
summary="$OUT/gpu_check.json"
WORK="$(mktemp -d)"
SITE="$WORK/site"
export TF_CPP_MIN_LOG_LEVEL=3 GPU_CHECK_SECTIONS="$SECTIONS"
# The time boxes (seconds) of the GPU run; the dry run's are wider (a slow, shared CPU).
# (The checks' converters: timm's reference, then PyTorch's and JAX's conversions, in turn.)
T_CHECKS=150 T_BENCH_JAX=120 T_BENCH_TORCH=170 T_TIMM=40 T_CONVERT_TORCH=40 T_CONVERT_JAX=70
FLAGS=()
if [ "$DRY" = 1 ]; then
  T_CHECKS=400 T_BENCH_JAX=400 T_BENCH_TORCH=400 T_TIMM=400 T_CONVERT_TORCH=400 T_CONVERT_JAX=400
  FLAGS=(--dry_run)
  WHL="$WORK/whl"
  export SKNET_GPU_CHECK_HIDE_TENSORFLOW=1 CUDA_VISIBLE_DEVICES= JAX_PLATFORMS=cpu
  version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if ! PYTHON="$PY" bash tools/gpu_wheels.sh --python-version "$version" "$WHL" \
      > "$WORK/wheels.log" 2>&1; then
    cat "$WORK/wheels.log" >&2
    exit 1
  fi
else
  WHL="${WHL:-.whl}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    > "$WORK/gpu.txt" 2>&1 || true
fi

# The wheels, into an empty folder first on the path: keras and the package come from there.
install_rc=none
if ls "$WHL"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHL"/*.whl > "$WORK/install.log" 2>&1
  install_rc=$?
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" tools/gpu_check_keras.py machine "$WORK" "$WHL" "$SITE" "$install_rc" "${FLAGS[@]}" \
  > "$WORK/machine.log" 2>&1

# part NAME BACKEND LIMIT ARGS...: one child in its time box, its log beside its JSON file.
part() {
  local name=$1 backend=$2 limit=$3
  shift 3
  KERAS_BACKEND=$backend timeout -k 10 "$limit" "$PY" tools/gpu_check_keras.py "$@" \
    "${FLAGS[@]}" --deadline=$((limit - 25)) > "$WORK/$name.log" 2>&1
}
# On the GPU the checks run side by side (16 cores; JAX takes GPU memory as it needs it), in
# the dry run one after another.
spawn() { if [ "$DRY" = 1 ]; then "$@"; else "$@" & fi; }
converters() {
  part timm/timm_reference torch "$T_TIMM" timm_reference "$WORK/timm"
  part convert.torch torch "$T_CONVERT_TORCH" convert "$WORK/timm" "$WORK/convert.torch.json"
  part convert.jax jax "$T_CONVERT_JAX" convert "$WORK/timm" "$WORK/convert.jax.json"
}
if has checks; then
  mkdir -p "$WORK/timm"
  # Plainer XLA machine code, compiled faster: the same HLO and numbers (tests/test_backends.py).
  export XLA_PYTHON_CLIENT_PREALLOCATE=false \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0"
  shards=$((DRY ? 1 : 2))  # JAX's compiles are most of the time: two processes on the GPU
  for ((i = 0; i < shards; i++)); do
    spawn part families.jax.$i jax "$T_CHECKS" families "$WORK/families.jax.$i.json" --shard=$i/$shards
  done
  spawn part families.torch.0 torch "$T_CHECKS" families "$WORK/families.torch.0.json"
  spawn converters
  wait
  unset XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS
fi
if has bench; then  # alone on the GPU, one backend after the other
  part bench.jax jax "$T_BENCH_JAX" bench "$WORK/bench.jax.json"
  part bench.torch torch "$T_BENCH_TORCH" bench "$WORK/bench.torch.json"
fi

# The TensorFlow parts, where TensorFlow is.
if has tensorflow; then
  if [ "$DRY" = 1 ]; then
    echo "dry run: tensorflow hidden, as on the GPU machines" > "$WORK/tf_skipped.txt"
  elif ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is None)"; then
    echo "no tensorflow on this machine" > "$WORK/tf_skipped.txt"
  else
    export TF_DETERMINISTIC_OPS=1
    # 1. Tests on the GPU (the kernel paths, layers and every family through the harness).
    timeout 240 "$PY" -m pytest -q -n 0 -p no:cacheprovider -m "not cross_kernels" \
      tests/test_kernel_paths.py tests/test_layers.py tests/test_models.py > "$WORK/tests.txt" 2>&1
    echo $? > "$WORK/tests.rc"
    # 2. Benchmark, mixed_float16, without and with XLA.
    for jit in false true; do
      timeout 150 "$PY" -m sknet_keras.benchmark --models=sknet50,resnext50 --batch_size=64 \
        --dtype_policy=mixed_float16 --jit_compile=$jit --repeats=3 --memory_batch_size=64 \
        --output="$WORK/bench_jit_$jit.json" > "$WORK/bench_jit_$jit.txt" 2>&1
    done
    # 3. Kill and resume on 2 logical GPUs, against an uninterrupted run.
    ARGS=(--model=mini_sknet --dataset=digits --strategy=mirrored --mixed_precision=float16
          --epochs=2 --steps_per_loop=5 --batch_size=32 --export=false)
    timeout 120 "$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/whole" \
      > "$WORK/whole.txt" 2>&1
    echo $? > "$WORK/whole.rc"
    "$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/killed" > "$WORK/killed1.txt" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do  # kill once the first checkpoint is on disk
      ls "$WORK/killed/checkpoints/"*.index >/dev/null 2>&1 && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.2
    done
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    timeout 120 "$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/killed" \
      > "$WORK/killed2.txt" 2>&1
    echo $? > "$WORK/resume.rc"
    "$PY" tools/gpu_check.py compare "$WORK/whole" "$WORK/killed" > "$WORK/compare.txt" 2>&1
  fi
fi

mkdir -p "$OUT/gpu_check_logs"
(cd "$WORK" && find . -maxdepth 2 \( -path ./site -o -path ./whl \) -prune -o \
  \( -name '*.log' -o -name '*.json' -o -name '*.txt' \) -exec cp --parents {} "$OUT/gpu_check_logs/" \;)
"$PY" tools/gpu_check_keras.py summary "$WORK" "$summary"
rc=$?
[ "${GPU_CHECK_KEEP:-0}" = 1 ] && echo "work folder: $WORK" || rm -rf "$WORK"
exit $rc
