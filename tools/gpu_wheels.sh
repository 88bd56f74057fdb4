#!/usr/bin/env bash
# The wheels a GPU machine without TensorFlow and Keras needs to run tools/gpu_check.sh: the
# package's own wheel and Keras (the version this environment has) with those of its
# dependencies that such a machine lacks (namex, optree; it has absl-py, numpy, rich, h5py,
# ml-dtypes and packaging beside PyTorch and JAX). Binary wheels for CPython X (default 3.12,
# the GPU machines' `python3`) on manylinux x86-64, whatever this machine's Python is.
#
#   bash tools/gpu_wheels.sh [--python-version 3.12] [DEST]     (DEST defaults to .whl)
#
# Then, on the GPU machine, from the repository root with DEST carried beside it (.whl/ is not
# ignored by git, so a copy of the working tree carries it), one command, under 8 minutes on
# an H100, that writes $OUT/gpu_check.json:
#   bash tools/gpu_check.sh
# (it installs the wheels itself, into an empty folder SITE it then puts on PYTHONPATH:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target SITE .whl/*.whl).
# Fails when the wheels add up to more than 64 MiB (what one device command may carry).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
PYVER=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --python-version=*) PYVER="${1#*=}"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
DEST="${1:-.whl}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
rm -f "$DEST"/*.whl

# The package's wheel, built from a copy of what the wheel holds (no stale build/ folder of
# the tree gets in, and others' runs in the tree are left alone). No build isolation where this
# Python has setuptools (offline, seconds); otherwise `build` fetches it.
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
cp pyproject.toml README.md "$SRC/"
tar cf - --exclude=__pycache__ sknet_keras | tar xf - -C "$SRC"
if "$PY" -c "import setuptools, wheel" 2>/dev/null; then ISOLATION=--no-isolation; else ISOLATION=; fi
"$PY" -m build -q --wheel $ISOLATION --outdir "$DEST" "$SRC" >/dev/null

# Keras at this environment's version, and its dependencies the GPU machine lacks, pinned to
# this environment's versions where it has them.
pin() { "$PY" -c "import importlib.metadata as m, sys
try: print(sys.argv[1] + '==' + m.version(sys.argv[1]))
except m.PackageNotFoundError: print(sys.argv[1])" "$1"; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DEST" "$(pin keras)" "$(pin namex)" "$(pin optree)"

# Keras' requirements, against what the GPU machine is known to have.
HAS="absl-py numpy rich h5py ml-dtypes packaging namex optree"
for req in $(unzip -p "$DEST"/keras-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: *\([A-Za-z0-9_.-]*\).*/\1/p'); do
  case " $HAS " in *" $(echo "$req" | tr 'A-Z_.' 'a-z--') "*) ;;
    *) echo "gpu_wheels: keras requires $req, which this script does not carry" >&2; exit 1 ;;
  esac
done

total=0
for f in "$DEST"/*.whl; do
  size=$(stat -c %s "$f")
  total=$((total + size))
  printf '%10d  %s\n' "$size" "$(basename "$f")"
done
printf '%10d  total (%s MiB) in %s\n' "$total" "$(awk "BEGIN { printf \"%.1f\", $total / 1048576 }")" "$DEST"
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "gpu_wheels: over 64 MiB, more than one device command may carry" >&2
  exit 1
fi
