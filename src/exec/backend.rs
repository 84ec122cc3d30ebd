//! [`Backend`]: the I/O seam between the scheduler loop and whatever runs a stage's process.
//! [`LocalBackend`] spawns local processes under a reaper (every process of a stage ends with
//! it and with the orchestrator); tests use a fake; the SLURM backend (`super::slurm`) submits
//! through a task of its own, maps `cancel` to one `scancel` call, and `adopt`s jobs an earlier
//! process submitted.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

pub use crate::cache::JobAccounting;

use super::reaper::{self, client::Outcome, client::ServerClient, server::StartJob};

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

/// Runs each job as a local process under a [`super::reaper`]: the reaper dies with the
/// orchestrator (`PR_SET_PDEATHSIG`) and takes every process of the stage with it, waits for
/// all of them (background children included) before reporting the exit, and records the
/// stage's process group in its run dir, so that a later run never starts a fingerprint whose
/// earlier processes still live ([`stop_leftovers`]).
#[derive(Debug, Default)]
pub struct LocalBackend {
    running: HashMap<JobId, Running>,
    /// The run's reaper server, started with the first stage.
    server: Option<Arc<ServerClient>>,
    /// Programs already looked up in `PATH` (it does not change during a run).
    programs: HashMap<String, PathBuf>,
    /// Starts sent to the server so far: each start's id there. Not the [`JobId`], which a
    /// retry reuses: a late reply about the attempt before must never end the retry.
    starts: u64,
    events: Option<UnboundedSender<BackendEvent>>,
}

/// Whom to signal to stop a job.
#[derive(Debug)]
enum Running {
    /// A reaper forked by the server, by its id there (see [`LocalBackend::starts`]).
    Served(Arc<ServerClient>, u64),
    /// A reaper that is our own child (the library's unit tests: no entry point installed).
    Child(libc::pid_t),
}

impl LocalBackend {
    fn start(&mut self, spec: JobSpec) -> Result<(), String> {
        let events = self.events.clone().ok_or("the backend is not attached")?;
        // Opened here so that a log that cannot be written is an error of this job's start.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| format!("cannot open log {}: {e}", spec.log.display()))?;
        let prog = spec.argv.first().ok_or("empty command")?.clone();
        stop_leftovers(&spec)?;
        let files = reaper::ReaperFiles::in_run_dir(&spec.run_dir, reaper::protect_inputs());
        let waiter = match reaper::reaper_exe() {
            Some(exe) => {
                drop(log);
                let program = self
                    .program(&prog)
                    .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
                let server = self.server(exe)?;
                self.starts += 1;
                let id = self.starts;
                let rx = server
                    .start_job(start_job(id, &spec, &files, &program)?)
                    .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
                self.running
                    .insert(spec.job, Running::Served(server.clone(), id));
                Waiter::Served(server, id, rx)
            }
            None => {
                let (child, pid) = fork_reaper(&spec, files, log)?;
                self.running.insert(spec.job, Running::Child(pid));
                Waiter::Child(child, pid)
            }
        };
        let (job, timeout) = (spec.job, spec.timeout);
        let (stage_id, run_dir) = (spec.stage_id, spec.run_dir);
        tokio::spawn(async move {
            let status = waiter.wait(timeout).await;
            if run_dir.join("leftovers").exists() {
                tracing::warn!(
                    "stage `{stage_id}`: processes it started were still running 10 s after it ended and were stopped (see its log)"
                );
            }
            let _ = events.send(BackendEvent::Exited {
                job,
                status,
                accounting: None,
            });
        });
        Ok(())
    }

    /// `prog` resolved in `PATH` once per run.
    fn program(&mut self, prog: &str) -> Result<PathBuf, String> {
        if let Some(p) = self.programs.get(prog) {
            return Ok(p.clone());
        }
        let p = reaper::resolve_program(&[prog.to_string()])?;
        self.programs.insert(prog.to_string(), p.clone());
        Ok(p)
    }

    /// The run's reaper server, started (again, if it was killed) when needed.
    fn server(&mut self, exe: &std::path::Path) -> Result<Arc<ServerClient>, String> {
        match &self.server {
            Some(s) if s.alive() => Ok(s.clone()),
            _ => {
                let s = Arc::new(ServerClient::start(exe)?);
                self.server = Some(s.clone());
                Ok(s)
            }
        }
    }
}

/// The request that starts `spec` under the server, as start `id`.
fn start_job(
    id: u64,
    spec: &JobSpec,
    files: &reaper::ReaperFiles,
    program: &std::path::Path,
) -> Result<StartJob, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| CString::new(b).map_err(|_| "a NUL byte in the command".to_string());
    Ok(StartJob {
        job: id,
        cwd: c(spec.cwd.as_os_str().as_bytes())?,
        log: c(spec.log.as_os_str().as_bytes())?,
        files: files.clone(),
        program: c(program.as_os_str().as_bytes())?,
        argv: spec
            .argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: spec
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?,
    })
}

/// No entry point in this program (the library's unit tests): fork, and become the reaper
/// between fork and exec.
fn fork_reaper(
    spec: &JobSpec,
    files: reaper::ReaperFiles,
    log: std::fs::File,
) -> Result<(tokio::process::Child, libc::pid_t), String> {
    let (prog, args) = spec.argv.split_first().ok_or("empty command")?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let me = std::process::id() as libc::pid_t;
    let stage = reaper::StageExec::new(&spec.argv, &spec.env)
        .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args);
    // SAFETY: the hook runs between fork and exec; `split` only makes system calls that need no
    // allocation and take no lock.
    unsafe {
        cmd.pre_exec(move || reaper::split(me, &files, &stage));
    }
    cmd.current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
    let pid = child.id().map(|p| p as libc::pid_t).unwrap_or(0);
    Ok((child, pid))
}

/// How the end of a job's reaper is awaited.
enum Waiter {
    Served(
        Arc<ServerClient>,
        u64,
        tokio::sync::oneshot::Receiver<Outcome>,
    ),
    Child(tokio::process::Child, libc::pid_t),
}

impl Waiter {
    /// The job's end; past `timeout` it is killed and reported as timed out.
    async fn wait(self, timeout: Option<Duration>) -> ExitStatus {
        match self {
            Waiter::Served(server, id, mut rx) => {
                let first = match timeout {
                    Some(t) => tokio::time::timeout(t, &mut rx).await.ok(),
                    None => Some((&mut rx).await),
                };
                let (outcome, timed_out) = match first {
                    Some(o) => (o, false),
                    None => {
                        server.cancel(id, true);
                        (rx.await, true)
                    }
                };
                match outcome {
                    _ if timed_out => ExitStatus::TimedOut,
                    Ok(Outcome::Ended(st)) => from_wait_status(st),
                    Ok(Outcome::NotStarted(e)) => ExitStatus::SpawnFailed(e),
                    Ok(Outcome::Lost(e)) => ExitStatus::Backend(e),
                    Err(_) => ExitStatus::Backend("the stages' reaper process has ended".into()),
                }
            }
            Waiter::Child(mut child, pid) => {
                let waited = match timeout {
                    Some(t) => match tokio::time::timeout(t, child.wait()).await {
                        Ok(r) => Some(r),
                        Err(_) => {
                            // SAFETY: signalling our own child (the reaper), which kills the stage.
                            unsafe { libc::kill(pid, reaper::SIG_HARD) };
                            let _ = child.wait().await;
                            None
                        }
                    },
                    None => Some(child.wait().await),
                };
                match waited {
                    None => ExitStatus::TimedOut,
                    Some(Err(e)) => ExitStatus::SpawnFailed(e.to_string()),
                    Some(Ok(s)) => {
                        use std::os::unix::process::ExitStatusExt;
                        from_wait_status(s.into_raw())
                    }
                }
            }
        }
    }
}

/// A raw wait status as an [`ExitStatus`].
fn from_wait_status(st: i32) -> ExitStatus {
    if libc::WIFEXITED(st) {
        match libc::WEXITSTATUS(st) {
            0 => ExitStatus::Success,
            c => ExitStatus::Code(c),
        }
    } else if libc::WIFSIGNALED(st) {
        ExitStatus::Signal(libc::WTERMSIG(st))
    } else {
        ExitStatus::Code(-1)
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
        // The reaper forwards SIGTERM to the stage (SIGKILL after a grace period), or kills it
        // at once.
        for job in jobs {
            match self.running.get(job) {
                Some(Running::Served(server, id)) => server.cancel(*id, hard),
                Some(&Running::Child(pid)) if pid > 0 => {
                    let sig = if hard {
                        reaper::SIG_HARD
                    } else {
                        libc::SIGTERM
                    };
                    // SAFETY: signalling our own child, the job's reaper.
                    unsafe { libc::kill(pid, sig) };
                }
                _ => {}
            }
        }
    }

    fn release(&mut self, job: JobId) {
        self.running.remove(&job);
    }
}

/// Stop what an earlier attempt of the same fingerprint left running (its reaper was killed
/// too, e.g. `kill -9` of both), so that two copies never write at once: its process group,
/// recorded in the fingerprint's work dir with its run dir, is checked (members whose
/// environment names that run dir), sent SIGTERM, then SIGKILL. An error when they cannot be
/// stopped.
fn stop_leftovers(spec: &JobSpec) -> Result<(), String> {
    let Some((rec, _)) = reaper::attempt_record(&spec.run_dir) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&rec) else {
        return Ok(());
    };
    let (Some(runs), Some((pgid, prev))) = (spec.run_dir.parent(), text.trim().split_once(' '))
    else {
        return Ok(());
    };
    let prev_dir = runs.join(prev);
    let Some(pgid) = pgid.parse::<libc::pid_t>().ok().filter(|&g| g > 1) else {
        return Ok(());
    };
    let members = reaper::members_of(pgid, &prev_dir);
    if members.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "stage `{}`: {} process(es) of an earlier attempt (process group {pgid}, {}) were left running by an earlier run; stopping them before it starts again",
        spec.stage_id,
        members.len(),
        prev_dir.display()
    );
    for (sig, wait) in [(libc::SIGTERM, 2000), (libc::SIGKILL, 2000)] {
        // SAFETY: a process group verified above to be an earlier attempt of this stage.
        unsafe { libc::kill(-pgid, sig) };
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(wait) {
            if reaper::members_of(pgid, &prev_dir).is_empty() {
                let _ = std::fs::remove_file(&rec);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(format!(
        "processes of an earlier attempt of stage `{}` are still running (process group {pgid}) and cannot be stopped\nhint: stop them (`kill -9 -{pgid}`), then run again",
        spec.stage_id
    ))
}
