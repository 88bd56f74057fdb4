#!/usr/bin/env bash
# One prepared check of the package on a machine with an NVIDIA GPU (under 8 minutes):
#   1. the layer, kernel-path and model tests on the GPU;
#   2. the benchmark of SKNet-50 and ResNeXt-50 against Keras ResNet50, mixed_float16,
#      with and without --jit_compile;
#   3. the trainer on 2 logical GPUs split from GPU 0 under MirroredStrategy, float16 with loss
#      scaling: killed after its first checkpoint, resumed, and compared with an
#      uninterrupted run;
# and writes one JSON summary ($OUT/gpu_check.json, or ./gpu_check.json).
# Usage: bash tools/gpu_check.sh   (from the repository root, with the package installed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL=3 TF_DETERMINISTIC_OPS=1
WORK="$(mktemp -d)"
summary="$OUT/gpu_check.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$WORK/gpu.txt" 2>&1 || true

# 1. Tests on the GPU (the kernel paths, layers and every family through the harness).
timeout 240 "$PY" -m pytest -q -n 0 -p no:cacheprovider -m "not cross_kernels" \
  tests/test_kernel_paths.py tests/test_layers.py tests/test_models.py > "$WORK/tests.txt" 2>&1
tests_rc=$?

# 2. Benchmark, mixed_float16, without and with XLA.
for jit in false true; do
  timeout 150 "$PY" -m sknet_keras.benchmark --models=sknet50,resnext50 --batch_size=64 \
    --dtype_policy=mixed_float16 --jit_compile=$jit --repeats=3 --memory_batch_size=64 \
    --output="$WORK/bench_jit_$jit.json" > "$WORK/bench_jit_$jit.txt" 2>&1
  echo $? > "$WORK/bench_jit_$jit.rc"
done

# 3. Kill and resume on 2 logical GPUs, against an uninterrupted run.
ARGS=(--model=mini_sknet --dataset=digits --strategy=mirrored --mixed_precision=float16
      --epochs=2 --steps_per_loop=5 --batch_size=32 --export=false)
timeout 120 "$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/whole" > "$WORK/whole.txt" 2>&1
whole_rc=$?
"$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/killed" > "$WORK/killed1.txt" 2>&1 &
pid=$!
for _ in $(seq 1 600); do  # kill once the first checkpoint is on disk
  ls "$WORK/killed/checkpoints/"*.index >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
timeout 120 "$PY" tools/gpu_check.py train "${ARGS[@]}" --model_dir="$WORK/killed" > "$WORK/killed2.txt" 2>&1
resume_rc=$?
"$PY" tools/gpu_check.py compare "$WORK/whole" "$WORK/killed" > "$WORK/compare.txt" 2>&1

"$PY" - "$WORK" "$summary" "$tests_rc" "$whole_rc" "$resume_rc" <<'PYEOF'
import json, os, sys
work, summary, tests_rc, whole_rc, resume_rc = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
def text(name):
    path = os.path.join(work, name)
    return open(path, errors="replace").read() if os.path.exists(path) else ""
def tail(name, n=15):
    return text(name).strip().splitlines()[-n:]
bench = {}
for jit in ("false", "true"):
    path = os.path.join(work, f"bench_jit_{jit}.json")
    bench[f"jit_compile={jit}"] = (json.load(open(path)) if os.path.exists(path)
                                   else {"error": tail(f"bench_jit_{jit}.txt")})
    bench[f"jit_compile={jit}"]["table"] = tail(f"bench_jit_{jit}.txt", 8)
compare = text("compare.txt").strip().splitlines()
out = {
    "gpu": text("gpu.txt").strip(),
    "tests": {"status": tests_rc, "tail": tail("tests.txt", 6)},
    "benchmark": bench,
    "kill_resume": {
        "uninterrupted_status": whole_rc, "resumed_status": resume_rc,
        "resumed_output": tail("killed2.txt", 6),
        "comparison": json.loads(compare[-1]) if compare and compare[-1].startswith("{") else compare,
    },
}
json.dump(out, open(summary, "w"), indent=2)
print(json.dumps({k: out[k] for k in ("gpu", "tests", "kill_resume")}, indent=2))
print("wrote", summary)
PYEOF
