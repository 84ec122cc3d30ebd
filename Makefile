# The two set-up commands of the README, and the pieces they are made of.
#   make main   - build everything (installing the pinned libtorch once) and run the main job
#   make test   - build everything and run the whole test suite
# Both install torch==2.11.0 from PyPI into .deps/venv when no libtorch is given (scripts/deps.sh).

SHELL := /bin/bash
DEPS  := source scripts/deps.sh
CARGO ?= cargo
PIPELINE ?= pipelines/diffprob_50.yaml

.PHONY: main build test test-quick lint bench

main: build
	./target/release/orchestrator run $(PIPELINE)

# The engine never links libtorch; only the stage worker is built with the `torch` feature. Two
# cargo invocations keep cargo from unifying that feature into the engine.
build:
	$(DEPS) && $(CARGO) build --release -p orchestrator --bins
	$(DEPS) && $(CARGO) build --release -p orchestrator-stages --features torch --bins

# The whole suite, SLURM included (scripts/test.sh starts the local cluster when none answers);
# it fails on any failed or ignored test and ends with the totals.
test: build
	scripts/test.sh

# For development: everything but the SLURM cluster tests.
test-quick: build
	scripts/test.sh --no-slurm

lint:
	$(CARGO) fmt --all -- --check
	$(DEPS) && $(CARGO) clippy --release -p orchestrator --all-targets -- -D warnings
	$(DEPS) && $(CARGO) clippy --release -p orchestrator-stages --features torch --all-targets -- -D warnings

bench: build
	./bench/run.sh
