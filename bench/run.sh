#!/usr/bin/env bash
# Entry point of the benchmark harness: orchestrator against DVC and Snakemake on the same
# workloads, plus the project's own cargo benches. `make bench` runs this with no arguments.
#
#   bench/run.sh                  # every workload and cargo bench; peers used if installed
#   bench/run.sh --all            # the same, installing DVC and Snakemake into bench/.venv first
#   bench/run.sh --help           # every option (workloads, repetitions, quick mode, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
