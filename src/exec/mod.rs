//! Execution: [`run`] drives a [`Pipeline`] to completion with one [`scheduler::Scheduler`] loop
//! over a [`backend::Backend`], using the [`Cache`] for hits and commits; [`plan::plan`] is the
//! dry run behind `orchestrator plan`.
//!
//! Decisions (also in ARCHITECTURE.md): stages read inputs through read-only hardlink views of
//! store objects; every stage gets `CUDA_VISIBLE_DEVICES` (empty for CPU stages, so a CPU stage
//! never grabs a GPU another stage holds); on a machine without GPUs, GPU stages run on the CPU
//! one at a time; CPU stages run beside them up to `--jobs`.

pub mod backend;
pub mod job;
pub mod plan;
pub mod resources;
pub mod scheduler;
pub mod slurm;
pub mod view;

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::{Cache, CacheError};
use crate::pipeline::Pipeline;

pub use backend::{Backend, LocalBackend};
pub use resources::GpuChoice;
pub use view::{MessageFormat, View};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path} does not exist: it is input `{input}` of stage `{stage}` ({location}){what}\nhint: {hint}; cached results are kept", path = path.display(), what = help.what.as_ref().map(|w| format!(": {w}")).unwrap_or_default(), hint = help.hint)]
    MissingInput {
        path: PathBuf,
        stage: String,
        input: String,
        location: String,
        /// What the input is and how to set it (boxed: errors stay small).
        help: Box<MissingHelp>,
    },
    #[error("stage `{stage}` ({location}) {why}\nhint: lower its `resources.gpus`, or pass more devices with --gpus")]
    Unsatisfiable {
        stage: String,
        location: String,
        why: String,
    },
    #[error("the stage worker `orchestrator-stage` was not found (looked at {looked_at})\nhint: build it with `make build`, or point ORCHESTRATOR_STAGE_BIN at it", looked_at = looked_at.display())]
    WorkerMissing { looked_at: PathBuf },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot start the scheduler: {0}")]
    Runtime(std::io::Error),
}

/// What a missing input is and how to fix it, for [`ExecError::MissingInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHelp {
    /// What the input is (the param's `describe:`, else the kind's port).
    pub what: Option<String>,
    /// How to fix it (`set it with --set casia=PATH` when the path comes from a param).
    pub hint: String,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// CPU job slots.
    pub jobs: u32,
    /// Concrete GPU ids this run may hand out (empty: no GPUs).
    pub gpus: Vec<u32>,
    pub fail_fast: bool,
    /// The `orchestrator-stage` worker, when found.
    pub stage_bin: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub instance: String,
    pub location: String,
    pub message: String,
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    pub failed: Vec<Failure>,
    pub skipped: usize,
    pub not_started: usize,
    pub interrupted: bool,
    pub wall: Duration,
    pub results_dir: PathBuf,
}

/// Where the worker is expected: `ORCHESTRATOR_STAGE_BIN`, else beside this executable.
pub fn stage_bin_candidate() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRATOR_STAGE_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("orchestrator-stage")))
        .unwrap_or_else(|| PathBuf::from("orchestrator-stage"))
}

pub fn find_stage_bin() -> Option<PathBuf> {
    let p = stage_bin_candidate();
    p.is_file().then_some(p)
}

/// Resolve `--gpus` to concrete ids.
pub fn gpu_ids(choice: &GpuChoice) -> Vec<u32> {
    match choice {
        GpuChoice::Discover => resources::discover_gpus(),
        GpuChoice::None => Vec::new(),
        GpuChoice::Ids(v) => v.clone(),
    }
}

/// Run `p` with `backend` on a single-threaded runtime (the loop and the process spawns stay on
/// this thread, which `PR_SET_PDEATHSIG` relies on; commits hash on the blocking pool).
pub fn run(
    p: &Pipeline,
    cache: &Cache,
    opts: RunOptions,
    backend: Box<dyn Backend + '_>,
    view: &mut View,
) -> Result<RunSummary, ExecError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExecError::Runtime)?;
    rt.block_on(async {
        let s = scheduler::Scheduler::new(p, cache, opts, backend, view)?;
        s.run().await
    })
}

#[cfg(test)]
mod tests;
