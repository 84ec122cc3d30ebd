#!/usr/bin/env bash
# The whole test suite, as `make test` runs it (after `make build`):
#   1. the stage crate's tests, with the torch feature;
#   2. the engine's unit tests;
#   3. the integration tests (the real binaries on real pipelines);
#   4. the SLURM integration tests, against a real cluster: the one `sinfo` reaches, or else the
#      local single-node cluster of ../shared/slurm/local-cluster.sh, started here and stopped after.
# Tests whose prerequisites live outside cargo (the Python venv, the worker, SLURM, root,
# chromium for the dashboard's browser tests, which scripts/browser.sh installs) are
# `#[ignore]`d for a plain `cargo test`; here they run (`--include-ignored`), so a missing
# prerequisite fails loudly. The run fails when any test fails or any test was left out, and
# ends with the totals.
#
#   scripts/test.sh               everything (make test, CI)
#   scripts/test.sh --no-slurm    everything but step 4, for development (says what it left out)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
if ! source scripts/deps.sh; then
  echo "error: the test prerequisites could not be set up (see above); no test was run" >&2
  exit 1
fi
SLURM_SCRIPT=${SLURM_LOCAL_CLUSTER:-$ROOT/../shared/slurm/local-cluster.sh}
NO_SLURM=0
[ "${1:-}" = "--no-slurm" ] && NO_SLURM=1

LOG=$(mktemp -t orchestrator-tests.XXXXXX)
STARTED_CLUSTER=0
cleanup() {
  if [ "$STARTED_CLUSTER" = 1 ]; then
    bash "$SLURM_SCRIPT" stop >/dev/null 2>&1 || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

FAILED_STEPS=()
step() { # step NAME CARGO-ARGS...
  local name=$1; shift
  echo "==> $name: cargo $*" >&2
  if ! cargo "$@" 2>&1 | tee -a "$LOG"; then
    FAILED_STEPS+=("$name")
  fi
}

slurm_answers() { command -v sinfo >/dev/null 2>&1 && timeout 20 sinfo -h >/dev/null 2>&1; }

# The dashboard's browser tests drive Debian's chromium + chromedriver: installed here when
# missing (as root; otherwise this says which command to run and the run fails).
if ! bash scripts/browser.sh; then
  FAILED_STEPS+=("chromium")
fi

step "stages" test --release -p orchestrator-stages --features torch -- --include-ignored
step "engine unit tests" test --release -p orchestrator --lib --bins -- --include-ignored
step "integration" test --release -p orchestrator --test integration -- --include-ignored --skip slurm::

SLURM_LEFT_OUT=0
if [ "$NO_SLURM" = 1 ]; then
  SLURM_LEFT_OUT=1
else
  if ! slurm_answers; then
    if [ -f "$SLURM_SCRIPT" ]; then
      echo "==> starting the local SLURM cluster ($SLURM_SCRIPT)" >&2
      # 8 advertised CPUs so that 4 one-GPU jobs can run at once on a 2-core machine;
      # accounting (MariaDB + slurmdbd) so that the backend reads `sacct`, as on real clusters.
      if env_lines=$(SLURM_LOCAL_CPUS=8 SLURM_LOCAL_ACCOUNTING=1 bash "$SLURM_SCRIPT" start); then
        eval "$env_lines"
        STARTED_CLUSTER=1
      else
        echo "error: the local SLURM cluster did not start (see its messages above)" >&2
      fi
    else
      echo "error: the SLURM tests need a cluster: none answers \`sinfo\`, and $SLURM_SCRIPT is missing" >&2
      echo "hint: start one (or set SLURM_LOCAL_CLUSTER to local-cluster.sh), or run \`scripts/test.sh --no-slurm\` for the rest" >&2
    fi
  fi
  # Without a cluster the tests run anyway and fail, each saying what is missing.
  step "slurm" test --release -p orchestrator --test integration -- --include-ignored --test-threads=1 slurm::
fi

# Totals over every `test result:` line.
read -r PASSED FAILED IGNORED FILTERED < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      n = $(i) + 0
      if ($(i+1) ~ /^passed/) p += n
      if ($(i+1) ~ /^failed/) f += n
      if ($(i+1) ~ /^ignored/) g += n
      if ($(i+1) == "filtered") x += n
    }
  }
  END { print p+0, f+0, g+0, x+0 }' "$LOG")
echo
echo "totals: $PASSED passed, $FAILED failed, $IGNORED ignored, $FILTERED filtered out (steps failed: ${FAILED_STEPS[*]:-none})"
RC=0
if [ "${#FAILED_STEPS[@]}" -gt 0 ] || [ "$FAILED" -gt 0 ]; then RC=1; fi
if [ "$IGNORED" -gt 0 ]; then
  echo "error: $IGNORED test(s) were ignored: every test must run under make test" >&2
  RC=1
fi
if [ "$SLURM_LEFT_OUT" = 1 ]; then
  echo "note: the SLURM tests were left out (--no-slurm); \`make test\` runs them" >&2
fi
# The plain closing line CI reads.
echo "$PASSED passed, $FAILED failed"
exit $RC
