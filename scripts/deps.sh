#!/usr/bin/env bash
# Source this file: installs (once) and exports the pinned libtorch the project builds against.
#
# torch==2.11.0 (the pair of tch 0.24) from PyPI goes into .deps/venv, which the project owns.
# Users with their own libtorch 2.11 set LIBTORCH (or LIBTORCH_USE_PYTORCH=1) before sourcing;
# then nothing is installed. numpy/scikit-learn come along for the reference scripts and fixtures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.deps/venv"
TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==$TORCH_VERSION" "numpy>=1.26" "scikit-learn>=1.3" "safetensors>=0.4" "pillow>=10")

if [ -z "${LIBTORCH:-}" ] && [ -z "${LIBTORCH_USE_PYTORCH:-}" ]; then
  if ! "$VENV/bin/python" -c "import torch, numpy, sklearn, safetensors, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "setting up libtorch $TORCH_VERSION from PyPI into $VENV (once; about 4 GB)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
  fi
  LIBTORCH="$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
  export LIBTORCH
fi
export ORCHESTRATOR_PYTHON="${ORCHESTRATOR_PYTHON:-$VENV/bin/python}"
set +euo pipefail
