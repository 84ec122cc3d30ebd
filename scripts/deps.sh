#!/usr/bin/env bash
# Source this file: installs (once) and exports what the build needs beyond a Rust toolchain.
#
# - libtorch: torch==2.11.0 (the pair of tch 0.24) from PyPI goes into .deps/venv, which the
#   project owns. Users with their own libtorch 2.11 set LIBTORCH (or LIBTORCH_USE_PYTORCH=1)
#   before sourcing; then no torch is installed. numpy/scikit-learn/pillow/opencv come along for
#   the reference scripts and fixtures (the tests compare with PIL's and OpenCV's decoders).
# - cmake, which builds the vendored libjpeg-turbo (the `turbojpeg` crate): the one on PATH, or
#   CMAKE, or else cmake from PyPI into .deps/venv. nasm is optional (SIMD; same pixels without).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.deps/venv"
TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==$TORCH_VERSION" "numpy>=1.26" "scikit-learn>=1.3" "safetensors>=0.4" "pillow>=10" "opencv-python-headless>=4.8" "cmake>=3.16")

venv_ready() {
  "$VENV/bin/python" -c "import torch, numpy, sklearn, safetensors, PIL, cv2, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null
}

if [ -z "${LIBTORCH:-}" ] && [ -z "${LIBTORCH_USE_PYTORCH:-}" ]; then
  if ! venv_ready || [ ! -x "$VENV/bin/cmake" ]; then
    echo "setting up libtorch $TORCH_VERSION and the reference packages from PyPI into $VENV (once; about 4 GB)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
  fi
  LIBTORCH="$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
  export LIBTORCH
fi
if [ -z "${CMAKE:-}" ] && ! command -v cmake >/dev/null 2>&1; then
  if [ ! -x "$VENV/bin/cmake" ]; then
    echo "installing cmake from PyPI into $VENV (builds the vendored libjpeg-turbo)..." >&2
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "cmake>=3.16" >&2
  fi
  export CMAKE="$VENV/bin/cmake"
fi
export ORCHESTRATOR_PYTHON="${ORCHESTRATOR_PYTHON:-$VENV/bin/python}"
set +euo pipefail
