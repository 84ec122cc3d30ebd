#!/usr/bin/env bash
# Source this file: installs (once) and exports what the build needs beyond a Rust toolchain.
#
# - libtorch: torch==2.11.0 (the pair of tch 0.24) from PyPI goes into .deps/venv, which the
#   project owns. Users with their own libtorch 2.11 set LIBTORCH (or LIBTORCH_USE_PYTORCH=1)
#   before sourcing; then no torch is installed. numpy/scikit-learn/pillow/opencv come along for
#   the reference scripts and fixtures (the tests compare with PIL's and OpenCV's decoders).
# - cmake, which builds the vendored libjpeg-turbo (the `turbojpeg` crate): the one on PATH, or
#   CMAKE, or else cmake from PyPI into .deps/venv. nasm is optional (SIMD; same pixels without).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.deps/venv"
TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==$TORCH_VERSION" "numpy>=1.26" "scikit-learn>=1.3" "safetensors>=0.4" "pillow>=10" "opencv-python-headless>=4.8" "cmake>=3.16")
# Free disk the set-up needs: the install peaks at 8.0 GB under .deps (wheels unpacked beside the
# venv; 5.2 GB once done, measured with torch 2.11.0), and a from-scratch release build of the
# workspace then puts ~4 GB into target/.
NEED_GB=10

# This file is sourced, often as `source scripts/deps.sh && cargo ...`, where `set -e` does not
# apply: every step checks its own status and the file returns non-zero with a message instead.
deps_fail() {
  echo "error: $1" >&2
  [ -n "${2:-}" ] && echo "hint: $2" >&2
  return 1
}

venv_ready() {
  "$VENV/bin/python" -c "import torch, numpy, sklearn, safetensors, PIL, cv2, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null
}

free_gb() { # free space, in whole GB, of the file system that holds $1
  df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print int($4 / 1048576) }'
}

deps_setup() {
  if [ -z "${LIBTORCH:-}" ] && [ -z "${LIBTORCH_USE_PYTORCH:-}" ]; then
    if ! venv_ready || [ ! -x "$VENV/bin/cmake" ]; then
      mkdir -p "$ROOT/.deps" || deps_fail "cannot create $ROOT/.deps" || return 1
      local free
      free=$(free_gb "$ROOT/.deps")
      if [ -n "$free" ] && [ "$free" -lt "$NEED_GB" ]; then
        deps_fail "installing libtorch $TORCH_VERSION into $VENV and building needs about $NEED_GB GB free on its disk; $free GB are free ($(df -Ph "$ROOT/.deps" | awk 'NR == 2 { print $6 }'))" \
          "free some space, or point LIBTORCH at an existing libtorch $TORCH_VERSION (then nothing is installed)" || return 1
      fi
      echo "setting up libtorch $TORCH_VERSION and the reference packages from PyPI into $VENV (once; about 5 GB)..." >&2
      python3 -m venv "$VENV" || deps_fail "python3 -m venv $VENV failed" "Python 3 with its venv module is needed" || return 1
      # No pip cache: it would keep a second copy of the ~3 GB of wheels. The wheels are unpacked
      # under .deps/tmp, on the disk whose free space was checked (not a possibly small /tmp).
      mkdir -p "$ROOT/.deps/tmp" || deps_fail "cannot create $ROOT/.deps/tmp" || return 1
      if ! TMPDIR="$ROOT/.deps/tmp" "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "${PY_PACKAGES[@]}" >&2; then
        deps_fail "pip could not install ${PY_PACKAGES[*]} into $VENV (its message is above)" \
          "fix what it names (network, disk space) and run the same command again: the install starts over" || return 1
      fi
      rm -rf "$ROOT/.deps/tmp"
      venv_ready || deps_fail "$VENV was installed but \`import torch\` ($TORCH_VERSION) fails there" \
        "remove $ROOT/.deps and run the same command again" || return 1
    fi
    LIBTORCH="$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')" \
      || deps_fail "cannot locate torch in $VENV" "remove $ROOT/.deps and run the same command again" || return 1
    export LIBTORCH
  fi
  if [ -z "${CMAKE:-}" ] && ! command -v cmake >/dev/null 2>&1; then
    if [ ! -x "$VENV/bin/cmake" ]; then
      echo "installing cmake from PyPI into $VENV (builds the vendored libjpeg-turbo)..." >&2
      if [ ! -x "$VENV/bin/pip" ]; then
        python3 -m venv "$VENV" || deps_fail "python3 -m venv $VENV failed" "Python 3 with its venv module is needed" || return 1
      fi
      "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "cmake>=3.16" >&2 \
        || deps_fail "pip could not install cmake into $VENV (its message is above)" "or put a cmake >= 3.16 on PATH" || return 1
    fi
    export CMAKE="$VENV/bin/cmake"
  fi
  export ORCHESTRATOR_PYTHON="${ORCHESTRATOR_PYTHON:-$VENV/bin/python}"
}

deps_setup
