#!/usr/bin/env bash
# overhead.sh - what `--executor slurm` costs per stage against `--executor local`, on trivial
# stages (each writes one line), so the figures are pure orchestration overhead:
#   wide:  N independent stages   -> wall time / N   (throughput: submission + polling)
#   chain: M stages in a line     -> wall time / M   (latency: submit -> complete -> next)
# Prints one table. Needs a running SLURM cluster (`/work/shared/slurm/local-cluster.sh start`)
# and a release build (`cargo build --release -p orchestrator`).
#
#   bench/slurm/overhead.sh [N=100] [M=20]
# Knobs: POLL (squeue interval, s) [0.5]; RATE (sbatch per second, 0 = unlimited) [0 and 5].
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
M=${2:-20}
POLL=${POLL:-0.5}
BIN=${ORCHESTRATOR_BIN:-$PWD/target/release/orchestrator}
command -v sbatch >/dev/null || { echo "sbatch is not on PATH: start the cluster first" >&2; exit 3; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release -p orchestrator" >&2; exit 3; }

WORK=$(mktemp -d /tmp/orch-slurm-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

wide() { # $1 = n
  echo "name: wide"
  echo "matrix: { i: [$(seq -s, 1 "$1")] }"
  echo "stages:"
  echo "  s: { run: \"echo \${matrix.i} > \${outputs.out}\", outputs: [out] }"
}
chain() { # $1 = n
  echo "name: chain"
  echo "stages:"
  echo "  s1: { run: \"echo 1 > \${outputs.out}\", outputs: [out] }"
  for i in $(seq 2 "$1"); do
    echo "  s$i: { run: \"cat \${inputs.x} > \${outputs.out}; echo $i >> \${outputs.out}\", inputs: { x: s$((i - 1)).out }, outputs: [out] }"
  done
}

# time_run <pipeline file> <args...>: wall seconds of one run on a fresh cache.
time_run() {
  local p=$1
  shift
  local cache="$WORK/cache-$RANDOM$RANDOM"
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" --cache-dir "$cache" -q run "$p" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

wide "$N" >"$WORK/wide.yaml"
chain "$M" >"$WORK/chain.yaml"
CPUS=$(sinfo -h -o %c | head -1)
echo "SLURM overhead benchmark: $N independent trivial stages, a chain of $M; squeue poll ${POLL}s; node CPUs: $CPUS"
printf '%-34s %10s %14s\n' "run" "wall (s)" "per stage (ms)"
row() { printf '%-34s %10.2f %14.1f\n' "$1" "$2" "$(echo "$2 * 1000 / $3" | bc -l)"; }
w=$(time_run "$WORK/wide.yaml" --executor local --gpus none -j "$CPUS"); row "wide, local (-j $CPUS)" "$w" "$N"
w=$(time_run "$WORK/wide.yaml" --executor slurm --slurm-poll "$POLL" --slurm-submit-rate 0 --max-jobs 64); row "wide, slurm (rate unlimited)" "$w" "$N"
w=$(time_run "$WORK/wide.yaml" --executor slurm --slurm-poll "$POLL" --slurm-submit-rate 5 --max-jobs 64); row "wide, slurm (5 sbatch/s)" "$w" "$N"
w=$(time_run "$WORK/chain.yaml" --executor local --gpus none); row "chain, local" "$w" "$M"
w=$(time_run "$WORK/chain.yaml" --executor slurm --slurm-poll "$POLL"); row "chain, slurm" "$w" "$M"
