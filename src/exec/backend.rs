//! [`Backend`]: the I/O seam between the scheduler loop and whatever runs a stage's process.
//! [`LocalBackend`] spawns local processes (own process group, killed with the orchestrator);
//! tests use a fake; a SLURM backend fits the same trait: `submit` returns the job id the
//! scheduler records, `cancel` maps to `scancel`, `reattach` re-polls a recorded id after a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

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
    Exited { job: JobId, status: ExitStatus },
}

pub trait Backend {
    /// Start a job. Returns the backend's id for it (a pid, a SLURM job id) for the run record.
    /// Its end arrives later as `BackendEvent::Exited` on `events`.
    fn submit(
        &mut self,
        spec: JobSpec,
        events: UnboundedSender<BackendEvent>,
    ) -> Result<String, String>;
    /// Stop a job: `hard` = kill now; otherwise ask it to stop (it may checkpoint first).
    fn cancel(&mut self, job: JobId, hard: bool);
    /// Follow a job started by an earlier orchestrator process (by its recorded id). Backends whose
    /// jobs die with the orchestrator (local processes) cannot, and return false.
    fn reattach(
        &mut self,
        _spec: &JobSpec,
        _recorded_id: &str,
        _events: UnboundedSender<BackendEvent>,
    ) -> bool {
        false
    }
    /// Whether the first Ctrl-C cancels running jobs (a cluster's queued jobs would otherwise
    /// outlive the run) instead of letting them finish.
    fn cancels_on_interrupt(&self) -> bool {
        false
    }
}

/// Runs each job as a local process in its own process group; the kernel kills it when the
/// orchestrator dies (`PR_SET_PDEATHSIG`), so `kill -9` of the orchestrator leaves no orphans
/// writing into the cache.
#[derive(Debug, Default)]
pub struct LocalBackend {
    pids: HashMap<JobId, i32>,
}

impl Backend for LocalBackend {
    fn submit(
        &mut self,
        spec: JobSpec,
        events: UnboundedSender<BackendEvent>,
    ) -> Result<String, String> {
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
            let _ = events.send(BackendEvent::Exited { job, status });
        });
        Ok(pid.to_string())
    }

    fn cancel(&mut self, job: JobId, hard: bool) {
        if let Some(&pid) = self.pids.get(&job) {
            if pid > 0 {
                let sig = if hard { libc::SIGKILL } else { libc::SIGTERM };
                // SAFETY: signalling the process group we created for this job.
                unsafe { libc::kill(-pid, sig) };
            }
        }
    }
}
