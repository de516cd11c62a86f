#!/usr/bin/env bash
# The GPU device check, prepared to run as one command on a GPU machine that
# has this checkout (working tree included) and cannot download anything:
#
#     bash benchmarks/device_check.sh
#
# runs benchmarks/device_check.py --require-gpu on PyTorch, JAX and
# TensorFlow in turn, each under its own timeout (all three within about
# 8 minutes), and writes their tables into docs/performance/device_check.md
# (the sections of passing runs only). Logs, the page and `nvidia-smi`'s
# view go to $OUT (or /tmp/device_check): the page comes back from there.
#
# What the machine needs: a CUDA build of PyTorch and/or JAX (and/or
# TensorFlow) that sees the GPU, NumPy, scikit-learn, h5py, Pillow,
# safetensors, tokenizers and huggingface_hub (the zoo's imports), and
# Keras >= 3.15 with its own needs (namex, optree, rich, absl-py, ml-dtypes).
# Where Keras is missing, wheels in .whl/ (for that machine's Python) are
# installed into /tmp/site first, e.g. made beforehand on a machine with
# internet access:
#
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 \
#         --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
#
# A backend whose library is not installed is skipped and reported as such;
# one that is installed but sees no GPU, or leaves any array on the CPU,
# fails. Exit status: 0 if every installed backend passed, else 1.
#
# Environment: PYTHON (default python3), SIZE (device_check.py --size,
# default 8), STEPS (default 300), LIMIT (seconds per backend, default 150).

set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
SIZE=${SIZE:-8}
STEPS=${STEPS:-300}
LIMIT=${LIMIT:-150}
DEST=${OUT:-/tmp/device_check}
PAGE=docs/performance/device_check.md
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import keras" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || { echo "installing .whl/ failed" >&2; exit 1; }
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "Keras is not installed here and .whl/ holds no wheels (see this script's header)" >&2
        exit 1
    fi
fi

{
    date -u
    nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import importlib
for name in ("keras", "torch", "jax", "jaxlib", "tensorflow", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # noqa: BLE001
        print(name, "not importable:", type(error).__name__)
EOF
} 2>&1 | tee "$DEST/environment.txt"

status=0
summary=()
for backend in torch jax tensorflow; do
    if ! "$PY" -c "import $backend" 2>/dev/null; then
        summary+=("$backend: skipped, not installed")
        continue
    fi
    echo "=== $backend: device_check.py --size $SIZE --steps $STEPS (limit ${LIMIT}s)"
    KERAS_BACKEND=$backend timeout -k 10 "$LIMIT" "$PY" benchmarks/device_check.py \
        --require-gpu --size "$SIZE" --steps "$STEPS" --markdown "$PAGE" \
        2>&1 | tee "$DEST/device_check_$backend.log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) summary+=("$backend: passed") ;;
        124|137) summary+=("$backend: FAILED, ran past ${LIMIT}s"); status=1 ;;
        *) summary+=("$backend: FAILED, exit status $rc"); status=1 ;;
    esac
done

cp "$PAGE" "$DEST/" 2>/dev/null
printf '%s\n' "${summary[@]}" | tee "$DEST/summary.txt"
exit $status
