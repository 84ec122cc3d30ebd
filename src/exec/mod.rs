//! Execution: [`run`] drives a [`Pipeline`] to completion with one [`scheduler::Scheduler`] loop
//! over a [`backend::Backend`], using the [`Cache`] for hits and commits; [`plan::plan`] is the
//! dry run behind `orchestrator plan`.
//!
//! Decisions (also in ARCHITECTURE.md): stages read inputs through read-only hardlink views of
//! store objects; every stage gets `CUDA_VISIBLE_DEVICES` (empty for CPU stages, so a CPU stage
//! never grabs a GPU another stage holds); on a machine without GPUs, GPU stages run on the CPU
//! one at a time; CPU stages run beside them up to `--jobs`; every stage gets a CPU-thread budget
//! (`ORCHESTRATOR_CPU_THREADS`, `OMP_NUM_THREADS`, `MKL_NUM_THREADS`), its share of the cores.

pub mod backend;
pub mod eta;
pub mod gather;
pub mod job;
pub mod plan;
pub mod reaper;
pub mod resources;
pub mod scheduler;
pub mod slurm;
pub mod view;

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator_stages::{KindSpec, Worker};

use crate::cache::{Cache, CacheError, JobAccounting};
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
    /// The GPUs this run may hand out. `Discover` asks `nvidia-smi` only once a stage that
    /// asks for GPUs has to run (a no-op run or a CPU-only pipeline never looks), once per run.
    pub gpus: GpuChoice,
    pub fail_fast: bool,
    /// The stage workers found.
    pub workers: Workers,
    /// Instances (indices into `Pipeline::instances`) that run even when cached (`--force`);
    /// their dependents follow the usual rules (a byte-identical output keeps them cached).
    pub force: std::collections::BTreeSet<usize>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub instance: String,
    pub location: String,
    pub message: String,
    pub log: Option<PathBuf>,
}

#[derive(Debug)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    pub failed: Vec<Failure>,
    pub skipped: usize,
    /// Jobs this run stopped itself (Ctrl-C, `--fail-fast`, an error): not failures; they run
    /// again next time.
    pub cancelled: usize,
    pub not_started: usize,
    pub interrupted: bool,
    /// The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP); the exit code is 128 + it.
    pub signal: i32,
    pub wall: Duration,
    pub results_dir: PathBuf,
    /// For each instance done in this run (ran or cached), in pipeline order, the digest of the
    /// `metrics.json` it stored, if any: what the final summary reads the stages' warnings from.
    pub metrics: Vec<(String, String)>,
    /// An error that stopped the run after it had started (it drained first): reported once,
    /// after the summary, with its own exit code.
    pub fatal: Option<ExecError>,
}

/// How a job a backend placed shows as a device: `gpu:2@node07`, `cpu@node07`.
pub fn device_of(a: &JobAccounting, gpu: bool) -> String {
    let node = a.node.as_deref().unwrap_or("?");
    match a.gpus {
        Some(n) if n > 0 => format!("gpu:{n}@{node}"),
        _ if gpu => format!("gpu@{node}"),
        _ => format!("cpu@{node}"),
    }
}

/// GPUs that ran a stage, from its device: `cuda:0,1` 2, `gpu:2@node07` 2, `gpu@node07` 1,
/// `cpu` (also a GPU stage that ran on a machine without one) 0.
pub fn gpus_of_device(device: &str) -> u32 {
    if let Some(ids) = device.strip_prefix("cuda:") {
        return ids.split(',').filter(|s| !s.trim().is_empty()).count() as u32;
    }
    if device == "cuda" {
        return 1;
    }
    if let Some(rest) = device.strip_prefix("gpu") {
        return match rest.strip_prefix(':') {
            Some(n) => n
                .split('@')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            None => 1,
        };
    }
    0
}

/// Where the worker is expected: `ORCHESTRATOR_STAGE_BIN`, else beside this executable.
pub fn stage_bin_candidate() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRATOR_STAGE_BIN") {
        return PathBuf::from(p);
    }
    beside_exe(Worker::Torch.binary())
}

/// Where the lite worker is expected: `ORCHESTRATOR_STAGE_LITE_BIN`, else beside
/// `ORCHESTRATOR_STAGE_BIN` when that is set (one build folder), else beside this executable.
pub fn lite_bin_candidate() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRATOR_STAGE_LITE_BIN") {
        return PathBuf::from(p);
    }
    let name = Worker::Lite.binary();
    match std::env::var_os("ORCHESTRATOR_STAGE_BIN") {
        Some(full) => PathBuf::from(full).with_file_name(name),
        None => beside_exe(name),
    }
}

fn beside_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The stage workers: `orchestrator-stage` runs every kind (it links libtorch, ~1.5 s to start);
/// `orchestrator-stage-lite` runs the pure-Rust kinds in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    pub torch: Option<PathBuf>,
    pub lite: Option<PathBuf>,
}

impl Workers {
    /// The workers that exist where [`stage_bin_candidate`] and [`lite_bin_candidate`] point.
    pub fn find() -> Workers {
        let file = |p: PathBuf| p.is_file().then_some(p);
        Workers {
            torch: file(stage_bin_candidate()),
            lite: file(lite_bin_candidate()),
        }
    }

    /// The binary that runs a stage of `kind`: the lite worker for a pure-Rust kind when it
    /// exists, else `orchestrator-stage`.
    pub fn for_kind(&self, kind: &KindSpec) -> Option<&Path> {
        match kind.worker {
            Worker::Lite => self.lite.as_deref().or(self.torch.as_deref()),
            Worker::Torch => self.torch.as_deref(),
        }
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
