#!/usr/bin/env bash
# Installs (once) what the dashboard's browser tests drive: Debian's chromium + chromium-driver.
# `make test` and `.ci/run` run this. As root it installs them with apt-get when missing; as
# another user it fails, naming the command to run. CHROMIUM / CHROMEDRIVER may point elsewhere.
set -euo pipefail

have() { [ -n "${1:-}" ] && [ -x "$1" ] || command -v "$2" > /dev/null 2>&1; }

if have "${CHROMIUM:-}" chromium && have "${CHROMEDRIVER:-}" chromedriver; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the dashboard's browser tests need chromium and chromedriver" >&2
  echo "hint: sudo apt-get install -y chromium chromium-driver   (or set CHROMIUM and CHROMEDRIVER)" >&2
  exit 1
fi
echo "installing chromium + chromium-driver for the browser tests (once)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium chromium-driver >&2 \
  || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium chromium-driver >&2; }
command -v chromium > /dev/null && command -v chromedriver > /dev/null
