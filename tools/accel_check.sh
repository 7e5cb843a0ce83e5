#!/usr/bin/env bash
# make accel-check: installs only what this accelerator machine lacks, then runs
# `python -m lst_jax.tools.accel_check` (one JSON: runs/accel_check.json; README "Accelerators").
#
#   tools/accel_check.sh [accel_check flags]      set up .venv-accel, run the check
#   tools/accel_check.sh --wheels PYVER           (here, with a network) download the wheels an
#                                                 offline machine with Python PYVER needs, to $ACCEL_WHEELS
#
# JAX: the machine's own is kept when it already sees a GPU or TPU (e.g. a preinstalled jax 0.11
# with CUDA 13); otherwise the pinned ACCEL extra (cuda: jax[cuda13], tpu: jax[tpu]) is installed.
# Everything else comes at pyproject.toml's versions, only where the machine has no version of it
# (tools/accel_requirements.py). With an $ACCEL_WHEELS folder (default wheels/) pip stays offline.
# ACCEL=cpu installs JAX's CPU build instead: the same check on a machine without an accelerator.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${ACCEL_VENV:-.venv-accel}
ACCEL=${ACCEL:-cuda}
WHEELS=${ACCEL_WHEELS:-wheels}

die() { echo "error: $*" >&2; exit 2; }
case $ACCEL in cuda|tpu|cpu) ;; *) die "ACCEL=$ACCEL: choose cuda, tpu or cpu (the check on a CPU-only machine)" ;; esac
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is required (PYTHON=$PY)"

if [ "${1:-}" = --wheels ]; then
  pyver=${2:?usage: tools/accel_check.sh --wheels PYVER (e.g. 3.12)}
  mapfile -t reqs < <("$PY" tools/accel_requirements.py --accel="$ACCEL" --no_jax)
  echo ">> downloading wheels for Python $pyver to $WHEELS (JAX, its own dependencies and CUDA excluded:"
  echo "   a machine with JAX has them; the folder must fit the 64 MiB a device run carries)"
  "$PY" -m pip download -q -d "$WHEELS" --only-binary=:all: --python-version "$pyver" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    "${reqs[@]}"
  rm -f "$WHEELS"/jax-[0-9]* "$WHEELS"/jaxlib-* "$WHEELS"/jax_cuda* "$WHEELS"/nvidia_* "$WHEELS"/libtpu* \
    "$WHEELS"/numpy-* "$WHEELS"/scipy-* "$WHEELS"/ml_dtypes-* "$WHEELS"/opt_einsum-*
  du -sh "$WHEELS"
  exit 0
fi

echo ">> $VENV: a virtualenv over the machine's own packages"
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
pip_from=()
if [ -d "$WHEELS" ]; then pip_from=(--no-index --find-links "$WHEELS"); echo ">> installing from $WHEELS (offline)"; fi
mapfile -t missing < <("$VENV/bin/python" tools/accel_requirements.py --accel="$ACCEL" --missing)
if [ "${#missing[@]}" -gt 0 ] && [ -n "${missing[0]}" ]; then
  echo ">> installing what this machine lacks: ${missing[*]}"
  "$VENV/bin/python" -m pip install -q "${pip_from[@]}" "${missing[@]}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # lst_jax and data_prep from this checkout, uninstalled
"$VENV/bin/python" -c 'import jax; print(">> jax", jax.__version__, "on", jax.default_backend(), jax.devices())'
exec "$VENV/bin/python" -m lst_jax.tools.accel_check "$@"
