#!/usr/bin/env bash
# sweep.sh - a sweep of N cells, each `sleep S` (issue #21's 200 x `sleep 1`), run locally and on
# SLURM from a fresh cache. Prints per run: wall time, number of `sbatch` calls, and the
# submission time (run start -> the last `sbatch` call returned), counted by an `sbatch` wrapper
# put first on PATH. Needs a running cluster (`/work/shared/slurm/local-cluster.sh start`) and a
# release build (`cargo build --release -p orchestrator`).
#
#   bench/slurm/sweep.sh [N=200] [S=1]
# Knobs: POLL (squeue interval, s) [2, the default of `run`]; MAX_JOBS [64]; RATE (sbatch/s) [5];
# LOCAL=0 skips the local run.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200}
S=${2:-1}
POLL=${POLL:-2}
MAX_JOBS=${MAX_JOBS:-64}
RATE=${RATE:-5}
BIN=${ORCHESTRATOR_BIN:-$PWD/target/release/orchestrator}
command -v sbatch >/dev/null || { echo "sbatch is not on PATH: start the cluster first" >&2; exit 3; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release -p orchestrator" >&2; exit 3; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/orch-slurm-sweep.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/wrap"
cat >"$WORK/wrap/sbatch" <<EOF
#!/bin/sh
out=\$($(command -v sbatch) "\$@")
rc=\$?
echo "\$(date +%s.%N) \$out" >> "$WORK/sbatch.calls"
echo "\$out"
exit \$rc
EOF
chmod +x "$WORK/wrap/sbatch"
{
  echo "name: sweep$N"
  echo "matrix: { i: [$(seq -s, 1 "$N")] }"
  echo "stages:"
  echo "  s: { run: \"sleep $S; echo \${matrix.i} > \${outputs.out}\", outputs: [out] }"
} >"$WORK/sweep.yaml"
CPUS=$(sinfo -h -o %c | head -1)

# run_once <name> <args...>: one run on a fresh cache; prints a table row.
run_once() {
  local name=$1
  shift
  local cache="$WORK/cache-$RANDOM$RANDOM"
  : >"$WORK/sbatch.calls"
  local t0 t1
  t0=$(date +%s.%N)
  PATH="$WORK/wrap:$PATH" "$BIN" --cache-dir "$cache" -q run "$WORK/sweep.yaml" "$@" >/dev/null 2>"$WORK/err" ||
    { cat "$WORK/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  local calls last submit="-"
  calls=$(wc -l <"$WORK/sbatch.calls")
  if [ "$calls" -gt 0 ]; then
    last=$(tail -n1 "$WORK/sbatch.calls" | cut -d' ' -f1)
    submit=$(printf '%.2f' "$(echo "$last - $t0" | bc -l)")
  fi
  printf '%-40s %9.2f %13s %15s\n' "$name" "$(echo "$t1 - $t0" | bc -l)" "$calls" "$submit"
}

echo "sweep of $N cells x \`sleep $S\`; node CPUs: $CPUS; squeue poll ${POLL}s; --max-jobs $MAX_JOBS; $RATE sbatch/s"
printf '%-40s %9s %13s %15s\n' "run" "wall (s)" "sbatch calls" "submission (s)"
if [ "${LOCAL:-1}" = 1 ]; then
  run_once "local (-j $CPUS)" --executor local --gpus none -j "$CPUS"
fi
run_once "slurm" --executor slurm --slurm-poll "$POLL" --max-jobs "$MAX_JOBS" --slurm-submit-rate "$RATE"
