//! [`Backend`]: the I/O seam between the scheduler loop and whatever runs a stage's process.
//! [`LocalBackend`] spawns local processes (own process group, killed with the orchestrator);
//! tests use a fake; the SLURM backend (`super::slurm`) submits through a task of its own, maps
//! `cancel` to one `scancel` call, and `adopt`s jobs an earlier process submitted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

pub use crate::cache::JobAccounting;

pub type JobId = usize;

/// Everything needed to start one attempt of one stage.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job: JobId,
    pub stage_id: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// stdout and stderr both go here.
    pub log: PathBuf,
    pub run_dir: PathBuf,
    /// Declared outputs: name -> (absolute path, is_dir). Backends that stage files use it.
    pub outputs: BTreeMap<String, (PathBuf, bool)>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Code(i32),
    Signal(i32),
    TimedOut,
    SpawnFailed(String),
    /// A backend's own account of how the job ended (e.g. "SLURM job 12 ... (log: ...)").
    Backend(String),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Success => write!(f, "success"),
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::TimedOut => write!(f, "time limit reached"),
            ExitStatus::SpawnFailed(e) => write!(f, "could not start: {e}"),
            ExitStatus::Backend(m) => write!(f, "{m}"),
        }
    }
}

/// What a backend tells the scheduler loop.
#[derive(Debug)]
pub enum BackendEvent {
    /// The job ended (or could not be started); `accounting` is the backend's record of it where
    /// it keeps one (SLURM: `sacct`, else `scontrol`).
    Exited {
        job: JobId,
        status: ExitStatus,
        accounting: Option<JobAccounting>,
    },
    /// Something the user should see (e.g. an array submitted, a job re-attached).
    Note { message: String },
}

/// A job an earlier orchestrator process started that this one now follows.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The backend's id for it (e.g. a SLURM job id).
    pub id: String,
    /// The run dir the earlier process prepared; its outputs are committed from there.
    pub run_dir: PathBuf,
}

/// The I/O seam to whatever runs stage processes. No method blocks on a subprocess: a backend
/// that talks to a service (`sbatch`, `scancel`) does so off the scheduler loop and reports back
/// through the events channel given to [`Backend::attach`].
pub trait Backend {
    /// Called once, before anything else: where events go.
    fn attach(&mut self, events: UnboundedSender<BackendEvent>);
    /// Start jobs, highest priority first. Each one's end (also a failure to start it) arrives
    /// later as `BackendEvent::Exited`.
    fn submit(&mut self, specs: Vec<JobSpec>);
    /// Stop jobs: `hard` = kill now; otherwise ask them to stop (they may checkpoint first).
    fn cancel(&mut self, jobs: &[JobId], hard: bool);
    /// An attempt at fingerprint `key` that an earlier orchestrator process started and that is
    /// still running or finished successfully: the backend follows it as `job` from now on and
    /// reports its end like any other job's. Backends whose jobs die with the orchestrator (local
    /// processes) have none.
    fn adopt(&mut self, _job: JobId, _key: &str) -> Option<Adopted> {
        None
    }
    /// `job`'s outcome is final on the scheduler's side (its outputs are committed, or it failed
    /// or was cancelled): forget whatever would let a later process adopt it.
    fn release(&mut self, _job: JobId) {}
    /// Whether the first Ctrl-C cancels running jobs (a cluster's queued jobs would otherwise
    /// outlive the run) instead of letting them finish.
    fn cancels_on_interrupt(&self) -> bool {
        false
    }
    /// How a job shows before the backend says where it runs, for backends that place jobs
    /// themselves (a cluster: `gpu@slurm`); `None`: the device of the scheduler's grant.
    fn placement(&self, _gpu: bool) -> Option<String> {
        None
    }
}

/// Runs each job as a local process in its own process group; the kernel kills it when the
/// orchestrator dies (`PR_SET_PDEATHSIG`), so `kill -9` of the orchestrator leaves no orphans
/// writing into the cache. A spawn is a `fork` + `exec` (no wait on the child), so it stays on the
/// loop's thread, which `PR_SET_PDEATHSIG` ties the children to.
#[derive(Debug, Default)]
pub struct LocalBackend {
    pids: HashMap<JobId, i32>,
    events: Option<UnboundedSender<BackendEvent>>,
}

impl LocalBackend {
    fn start(&mut self, spec: JobSpec) -> Result<(), String> {
        let events = self.events.clone().ok_or("the backend is not attached")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| format!("cannot open log {}: {e}", spec.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let (prog, args) = spec.argv.split_first().ok_or("empty command")?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        self.pids.insert(spec.job, pid);
        let job = spec.job;
        let timeout = spec.timeout;
        tokio::spawn(async move {
            let waited = match timeout {
                Some(t) => match tokio::time::timeout(t, child.wait()).await {
                    Ok(r) => Some(r),
                    Err(_) => {
                        // SAFETY: signalling our own child's process group.
                        unsafe { libc::kill(-pid, libc::SIGKILL) };
                        let _ = child.wait().await;
                        None
                    }
                },
                None => Some(child.wait().await),
            };
            let status = match waited {
                None => ExitStatus::TimedOut,
                Some(Err(e)) => ExitStatus::SpawnFailed(e.to_string()),
                Some(Ok(s)) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (s.code(), s.signal()) {
                        (Some(0), _) => ExitStatus::Success,
                        (Some(c), _) => ExitStatus::Code(c),
                        (None, Some(sig)) => ExitStatus::Signal(sig),
                        (None, None) => ExitStatus::Code(-1),
                    }
                }
            };
            let _ = events.send(BackendEvent::Exited {
                job,
                status,
                accounting: None,
            });
        });
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn attach(&mut self, events: UnboundedSender<BackendEvent>) {
        self.events = Some(events);
    }

    fn submit(&mut self, specs: Vec<JobSpec>) {
        for spec in specs {
            let job = spec.job;
            if let Err(e) = self.start(spec) {
                if let Some(events) = &self.events {
                    let _ = events.send(BackendEvent::Exited {
                        job,
                        status: ExitStatus::SpawnFailed(e),
                        accounting: None,
                    });
                }
            }
        }
    }

    fn cancel(&mut self, jobs: &[JobId], hard: bool) {
        let sig = if hard { libc::SIGKILL } else { libc::SIGTERM };
        for job in jobs {
            if let Some(&pid) = self.pids.get(job) {
                if pid > 0 {
                    // SAFETY: signalling the process group we created for this job.
                    unsafe { libc::kill(-pid, sig) };
                }
            }
        }
    }

    fn release(&mut self, job: JobId) {
        self.pids.remove(&job);
    }
}
