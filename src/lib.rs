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
