//! The `orchestrator` engine: YAML pipelines -> content-hashed DAG -> cached, GPU-aware execution.
//!
//! Boundaries (see ARCHITECTURE.md): [`pipeline`] (YAML -> validated, expanded model; pure),
//! [`dag`] (graph views), [`fingerprint`] (cache keys), [`cache`] (content-addressed store + sled
//! index), [`exec`] (one scheduler loop, resource slots, local / SLURM / fake backends),
//! [`report`] (metrics pivoted over the matrix), [`serve`] (the read-only web dashboard, on top
//! of the others), [`cli`] + [`commands`] (thin). Never links
//! libtorch: built-in stages run in the separate `orchestrator-stage` worker process.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod exec;
pub mod exit;
pub mod fingerprint;
pub mod pipeline;
pub mod report;
pub mod serve;

// The engine never links libtorch (ARCHITECTURE.md, invariant 1). Cargo unifies features across a
// build, so `cargo build --workspace --features orchestrator-stages/torch` (or `--all-features`)
// would quietly compile the stages crate with tch into this binary: refuse it here. The built
// binary's dynamic dependencies are checked too (tests/integration/exec.rs).
const _: () = assert!(
    !orchestrator_stages::WITH_TORCH,
    "the engine must not link libtorch: build it without the `torch` feature of orchestrator-stages (`make build` builds the engine and the worker with two cargo invocations)"
);
