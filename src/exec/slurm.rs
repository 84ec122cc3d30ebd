//! [`SlurmBackend`]: runs every stage attempt as one `sbatch` job on a SLURM cluster, running
//! exactly the command line the local backend would run (a generated `job.sbatch` in the
//! attempt's run dir), and follows all jobs with ONE `squeue` call per poll.
//!
//! Decisions:
//! - The job id is recorded twice at submit: `<run dir>/slurm-job-id` (for people) and
//!   `<cache>/slurm/jobs/<fingerprint key>` (job id + run dir), which [`recorded_attempt`] reads
//!   on startup so that a restarted orchestrator re-attaches to a live job instead of submitting
//!   again. The record is removed once the job's end has been reported to the scheduler.
//! - Only the orchestrator process writes the cache index; jobs write only their run dir and work
//!   dir, so the cache root must be on a filesystem the nodes share ([`check_shared_root`]).
//! - Node failure and preemption requeue the job (`--requeue`, log opened in append mode); it
//!   then runs again with the same work dir, so a stage resumes from its checkpoint. These states
//!   fail the stage only if SLURM leaves the job in them (seen on two polls in a row).
//! - Scheduler slots do not model the cluster: every stage holds one slot (a GPU stage one fake
//!   GPU slot, so it still gets `device: cuda`), capped by `--max-jobs`; the real GPUs come from
//!   `--gres=gpu:N`, and SLURM keeps the rest pending.
//! - Job arrays are not implemented: submissions are rate limited instead (`--slurm-submit-rate`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::backend::{Backend, BackendEvent, ExitStatus, JobId, JobSpec};
use super::job::{shell_quote, Prepared};
use super::resources::Grant;
use crate::cache::Cache;
use crate::pipeline::{Pipeline, Resources as Ask};

/// `sbatch` options the backend sets itself; a pipeline may not override them.
const RESERVED: [&str; 9] = [
    "output",
    "error",
    "parsable",
    "wrap",
    "chdir",
    "open-mode",
    "job-name",
    "requeue",
    "export",
];

/// Knobs from the command line.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub poll: Duration,
    /// At most this many `sbatch` calls per second.
    pub submit_rate: f64,
    /// Concurrent jobs (queued or running) this run keeps on the cluster.
    pub max_jobs: u32,
}

/// What the scheduler should be given for a SLURM run: the pipeline with every stage's slot ask
/// reduced to one slot, and the slots themselves (see the module notes).
pub fn scheduling_view(p: &Pipeline, max_jobs: u32) -> (Pipeline, Vec<u32>, u32) {
    let mut q = p.clone();
    for inst in &mut q.instances {
        inst.resources.gpus = inst.resources.gpus.min(1);
        inst.resources.cpus = 1;
    }
    let n = max_jobs.max(1);
    (q, (0..n).collect(), n)
}

/// `sbatch` when it is on PATH, else an error naming PATH and the way out.
pub fn find_sbatch() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("sbatch");
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(format!(
        "`--executor slurm` needs `sbatch`, `squeue`, `scancel` and `scontrol`, but `sbatch` is not on PATH ({})\nhint: run on a SLURM login node (or load the slurm module), or use `--executor local`",
        path.to_string_lossy()
    ))
}

/// Nodes in `partition` (the default partition when `None`), from `sinfo`.
pub fn partition_nodes(partition: Option<&str>) -> Result<u32, String> {
    let mut c = Command::new("sinfo");
    c.args(["-h", "-o", "%P %D"]);
    if let Some(p) = partition {
        c.args(["-p", p]);
    }
    let out = c.output().map_err(|e| format!("cannot run `sinfo`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`sinfo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0u32;
    let mut seen = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(name), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        // Without -p, only the default partition (marked `*`) counts.
        if partition.is_none() && !name.ends_with('*') {
            continue;
        }
        seen = true;
        total += n.parse::<u32>().unwrap_or(0);
    }
    if !seen {
        return Err(match partition {
            Some(p) => format!("SLURM partition `{p}` does not exist (sinfo lists none)\nhint: fix `executor.slurm.partition` or `resources.slurm.partition`; `sinfo -s` lists the partitions"),
            None => "SLURM has no default partition\nhint: set `executor: {kind: slurm, slurm: {partition: ...}}`".to_string(),
        });
    }
    Ok(total)
}

/// Whether `path` is node-local storage: under /tmp, /var/tmp, /dev/shm or /run, or on tmpfs.
// `f_type`'s integer type differs between libc targets, hence the casts.
#[allow(clippy::unnecessary_cast)]
pub fn is_node_local(path: &Path) -> bool {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if ["/tmp", "/var/tmp", "/dev/shm", "/run"]
        .iter()
        .any(|l| p.starts_with(l))
    {
        return true;
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    r == 0 && s.f_type as i64 == libc::TMPFS_MAGIC as i64
}

/// Jobs run on other nodes and write into the cache's run and work dirs, so the cache must be
/// shared. A node-local path is refused only when some partition this pipeline uses has more
/// than one node (on a one-node cluster every path is "shared").
pub fn check_shared_root(root: &Path, partitions: &[Option<String>]) -> Result<(), String> {
    if !is_node_local(root) {
        return Ok(());
    }
    for part in partitions {
        let n = partition_nodes(part.as_deref())?;
        if n > 1 {
            return Err(format!(
                "the cache root {} is node-local storage (/tmp-like or tmpfs), but SLURM partition `{}` has {n} nodes: jobs on other nodes could not read their inputs or write their outputs\nhint: put the cache on a shared filesystem (home, project or scratch space) with `--cache-dir` or ORCHESTRATOR_CACHE",
                root.display(),
                part.as_deref().unwrap_or("(default)")
            ));
        }
    }
    Ok(())
}

/// The `sbatch` options of one stage: `defaults` (the pipeline's `executor.slurm`), then the stage's
/// `resources.slurm`, each key `k` becoming `--k=v`.
pub fn merged_options(
    defaults: &BTreeMap<String, String>,
    ask: &Ask,
) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for (k, v) in defaults.iter().chain(ask.slurm.iter()) {
        let key = k.replace('_', "-");
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("`{k}` is not an sbatch option name (expected e.g. `partition`, `account`, `qos`, `constraint`)"));
        }
        if RESERVED.contains(&key.as_str()) {
            return Err(format!("sbatch option `{k}` is set by the orchestrator itself and cannot be overridden\nhint: remove it from `slurm:`"));
        }
        m.insert(key, v.clone());
    }
    Ok(m)
}

/// The `sbatch` command line for one attempt (without the script path).
pub fn sbatch_args(spec: &JobSpec, ask: &Ask, opts: &BTreeMap<String, String>) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=orch:{}", spec.stage_id),
        format!("--output={}", spec.log.display()),
        "--open-mode=append".into(),
        "--requeue".into(),
    ];
    a.push(format!("--chdir={}", spec.cwd.display()));
    if ask.gpus > 0 && !opts.contains_key("gres") && !opts.contains_key("gpus") {
        a.push(format!("--gres=gpu:{}", ask.gpus));
    }
    if !opts.contains_key("cpus-per-task") {
        a.push(format!("--cpus-per-task={}", ask.cpus.max(1)));
    }
    if let (Some(gb), false) = (ask.mem_gb, opts.contains_key("mem")) {
        a.push(format!("--mem={}M", (gb * 1024.0).ceil().max(1.0) as u64));
    }
    if let (Some(t), false) = (ask.time_min, opts.contains_key("time")) {
        a.push(format!("--time={}", t.max(1)));
    }
    for (k, v) in opts {
        a.push(format!("--{k}={v}"));
    }
    a
}

/// The batch script: the same command and environment as a local run; a GPU stage keeps the
/// `CUDA_VISIBLE_DEVICES` SLURM gives it.
pub fn batch_script(spec: &JobSpec, gpus: u32) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!(
        "# generated by orchestrator for stage `{}`; submitted with the options in sbatch.args\n",
        spec.stage_id
    ));
    s.push_str(&format!(
        "cd {} || exit 1\n",
        shell_quote(&spec.cwd.to_string_lossy())
    ));
    for (k, v) in &spec.env {
        if gpus > 0 && k == "CUDA_VISIBLE_DEVICES" {
            continue;
        }
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str(
        "echo \"[orchestrator] SLURM job ${SLURM_JOB_ID} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES}\"\n",
    );
    s.push_str("exec");
    for a in &spec.argv {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s.push('\n');
    s
}

fn records_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("slurm").join("jobs")
}

/// Run dirs are `<root>/runs/<key>.<millis>`.
fn key_of_run_dir(run_dir: &Path) -> Option<String> {
    run_dir
        .file_name()?
        .to_str()?
        .split('.')
        .next()
        .map(str::to_string)
}

/// A job an earlier orchestrator process submitted for fingerprint `key` and did not see end:
/// the attempt as it was prepared then, and the job id. The scheduler offers it to the backend's
/// `reattach` before submitting anew.
pub fn recorded_attempt(
    cache: &Cache,
    key: &str,
    job: JobId,
    stage_id: &str,
    grant: &Grant,
) -> Option<(Prepared, String)> {
    let text = std::fs::read_to_string(records_dir(&cache.root).join(key)).ok()?;
    let mut lines = text.lines();
    let id = lines.next()?.trim().to_string();
    let run_dir = PathBuf::from(lines.next()?.trim());
    if id.is_empty() || !run_dir.is_dir() {
        return None;
    }
    let cuda = !grant.gpus.is_empty();
    let spec = JobSpec {
        job,
        stage_id: stage_id.to_string(),
        argv: Vec::new(),
        env: Vec::new(),
        cwd: run_dir.clone(),
        log: run_dir.join("log"),
        run_dir: run_dir.clone(),
        outputs: BTreeMap::new(),
        timeout: None,
    };
    let prepared = Prepared {
        spec,
        out_dir: run_dir.join("out"),
        work_dir: cache.work_dir(key),
        progress: run_dir.join("progress.jsonl"),
        run_dir,
        device: if cuda { grant.device() } else { "cpu".into() },
    };
    Some((prepared, id))
}

/// One job as the poller follows it.
struct Tracked {
    slurm_id: String,
    stage_id: String,
    events: UnboundedSender<BackendEvent>,
    log: PathBuf,
    record: Option<PathBuf>,
    /// Set when we asked for the cancel (so the message says so).
    cancelled: bool,
    /// Consecutive polls in a state that may still turn into a requeue.
    odd_polls: u32,
    /// Consecutive polls where squeue no longer knew the job.
    missing_polls: u32,
}

struct Shared {
    jobs: Mutex<HashMap<JobId, Tracked>>,
    stop: AtomicBool,
}

/// What one poll concluded about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Waiting,
    /// A state that requeue may still leave (node failure, preemption, boot failure).
    MaybeRequeued(String),
    Ended(String),
}

/// SLURM job states (long names, as `squeue -o %T` prints them) by what they mean here.
pub fn classify(state: &str) -> Seen {
    let s = state.trim().trim_end_matches('+');
    let s = s.split_whitespace().next().unwrap_or("");
    match s {
        "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" => Seen::MaybeRequeued(s.to_string()),
        "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "OUT_OF_MEMORY" | "DEADLINE"
        | "SPECIAL_EXIT" | "REVOKED" => Seen::Ended(s.to_string()),
        _ => Seen::Waiting,
    }
}

/// `id|STATE|reason` lines from `squeue -o '%i|%T|%r'`.
pub fn parse_squeue(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split('|');
            Some((it.next()?.trim().to_string(), it.next()?.trim().to_string()))
        })
        .filter(|(id, _)| !id.is_empty())
        .collect()
}

/// `JobState` and `ExitCode` (`code:signal`) from `scontrol show job -o` output.
pub fn parse_scontrol(text: &str) -> (Option<String>, Option<(i32, i32)>) {
    let mut state = None;
    let mut exit = None;
    for tok in text.split_whitespace() {
        if let Some(v) = tok.strip_prefix("JobState=") {
            state = Some(v.to_string());
        } else if let Some(v) = tok.strip_prefix("ExitCode=") {
            let mut it = v.split(':');
            if let (Some(c), Some(s)) = (
                it.next().and_then(|c| c.parse().ok()),
                it.next().and_then(|s| s.parse().ok()),
            ) {
                exit = Some((c, s));
            }
        }
    }
    (state, exit)
}

fn scontrol(id: &str) -> (Option<String>, Option<(i32, i32)>) {
    match Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
    {
        Ok(o) if o.status.success() => parse_scontrol(&String::from_utf8_lossy(&o.stdout)),
        _ => (None, None),
    }
}

/// The exit status the scheduler gets for a job that ended in `state`.
fn ended_status(t: &Tracked, state: &str) -> ExitStatus {
    let (_, exit) = scontrol(&t.slurm_id);
    let (code, sig) = exit.unwrap_or((0, 0));
    let job = &t.slurm_id;
    let log = t.log.display();
    match state {
        "COMPLETED" if code == 0 && sig == 0 => ExitStatus::Success,
        "CANCELLED" if t.cancelled => ExitStatus::Backend(format!("SLURM job {job} was cancelled by the orchestrator (log: {log})")),
        "CANCELLED" => ExitStatus::Backend(format!("SLURM job {job} was cancelled outside the orchestrator (scancel or an administrator; log: {log})")),
        "TIMEOUT" => ExitStatus::Backend(format!("SLURM job {job} reached its time limit (`resources.time_min`; log: {log})")),
        "OUT_OF_MEMORY" => ExitStatus::Backend(format!("SLURM job {job} ran out of memory (raise `resources.mem_gb`; log: {log})")),
        _ if sig != 0 => ExitStatus::Backend(format!("SLURM job {job} ended {state}, killed by signal {sig} (log: {log})")),
        _ => ExitStatus::Backend(format!("SLURM job {job} ended {state} with exit code {code} (log: {log})")),
    }
}

impl Shared {
    /// One poll: a single `squeue` call for every job we follow.
    fn poll(&self) {
        let ids: Vec<String> = {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.values().map(|t| t.slurm_id.clone()).collect()
        };
        if ids.is_empty() {
            return;
        }
        let out = Command::new("squeue")
            .args(["-h", "--states=all", "-o", "%i|%T|%r", "-j", &ids.join(",")])
            .output();
        let states = match out {
            Ok(o) if o.status.success() => parse_squeue(&String::from_utf8_lossy(&o.stdout)),
            // slurmctld may be briefly unreachable; try again next poll.
            Ok(o) => {
                tracing::warn!(
                    "squeue failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
            Err(e) => {
                tracing::warn!("cannot run squeue: {e}");
                return;
            }
        };
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = Vec::new();
        for (&job, t) in jobs.iter_mut() {
            let seen = match states.get(&t.slurm_id) {
                Some(s) => {
                    t.missing_polls = 0;
                    classify(s)
                }
                None => {
                    // Purged from slurmctld's memory: ask scontrol, then give up after a few polls.
                    t.missing_polls += 1;
                    match scontrol(&t.slurm_id).0 {
                        Some(s) => classify(&s),
                        None if t.missing_polls >= 3 => {
                            ended.push((
                                job,
                                ExitStatus::Backend(format!(
                                    "SLURM job {} is no longer known to slurmctld (squeue and scontrol do not list it; log: {})",
                                    t.slurm_id,
                                    t.log.display()
                                )),
                            ));
                            continue;
                        }
                        None => Seen::Waiting,
                    }
                }
            };
            match seen {
                Seen::Waiting => t.odd_polls = 0,
                Seen::MaybeRequeued(s) => {
                    t.odd_polls += 1;
                    if t.odd_polls >= 2 {
                        ended.push((
                            job,
                            ExitStatus::Backend(format!(
                                "SLURM job {} ended {s} and was not requeued (log: {})",
                                t.slurm_id,
                                t.log.display()
                            )),
                        ));
                    }
                }
                Seen::Ended(s) => ended.push((job, ended_status(t, &s))),
            }
        }
        for (job, status) in ended {
            if let Some(t) = jobs.remove(&job) {
                tracing::debug!(
                    "stage {}: SLURM job {} ended: {status}",
                    t.stage_id,
                    t.slurm_id
                );
                if let Some(r) = &t.record {
                    let _ = std::fs::remove_file(r);
                }
                let _ = t.events.send(BackendEvent::Exited { job, status });
            }
        }
    }
}

/// The SLURM [`Backend`]; see the module notes.
pub struct SlurmBackend {
    asks: Vec<Ask>,
    options: Vec<BTreeMap<String, String>>,
    cache_root: PathBuf,
    min_gap: Duration,
    last_submit: Option<Instant>,
    shared: Arc<Shared>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl SlurmBackend {
    /// Checks that SLURM is there, every stage's options are valid and the cache root is shared.
    /// `p` is the pipeline as written (real resources), not the scheduling view.
    pub fn new(p: &Pipeline, cache_root: &Path, o: &SlurmOptions) -> Result<SlurmBackend, String> {
        find_sbatch()?;
        let mut options = Vec::with_capacity(p.instances.len());
        for inst in &p.instances {
            options.push(
                merged_options(&p.executor.slurm, &inst.resources)
                    .map_err(|e| format!("stage `{}` ({}): {e}", inst.id, inst.location))?,
            );
        }
        let mut partitions: Vec<Option<String>> = options
            .iter()
            .map(|o| o.get("partition").cloned())
            .collect();
        partitions.sort();
        partitions.dedup();
        check_shared_root(cache_root, &partitions)?;
        let dir = records_dir(cache_root);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let shared = Arc::new(Shared {
            jobs: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let s2 = shared.clone();
        let poll = o.poll.max(Duration::from_millis(50));
        let poller = std::thread::Builder::new()
            .name("slurm-poll".into())
            .spawn(move || {
                while !s2.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(poll);
                    s2.poll();
                }
            })
            .map_err(|e| format!("cannot start the SLURM poller: {e}"))?;
        let rate = if o.submit_rate > 0.0 {
            o.submit_rate
        } else {
            f64::INFINITY
        };
        Ok(SlurmBackend {
            asks: p.instances.iter().map(|i| i.resources.clone()).collect(),
            options,
            cache_root: cache_root.to_path_buf(),
            min_gap: Duration::from_secs_f64(1.0 / rate),
            last_submit: None,
            shared,
            poller: Some(poller),
        })
    }

    fn track(&self, job: JobId, t: Tracked) {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, t);
    }
}

impl Drop for SlurmBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.poller.take() {
            let _ = h.join();
        }
    }
}

impl Backend for SlurmBackend {
    fn submit(
        &mut self,
        spec: JobSpec,
        events: UnboundedSender<BackendEvent>,
    ) -> Result<String, String> {
        let ask = self.asks.get(spec.job).cloned().unwrap_or_default();
        let opts = self.options.get(spec.job).cloned().unwrap_or_default();
        let script = spec.run_dir.join("job.sbatch");
        std::fs::write(&script, batch_script(&spec, ask.gpus))
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let args = sbatch_args(&spec, &ask, &opts);
        let _ = std::fs::write(spec.run_dir.join("sbatch.args"), args.join("\n") + "\n");
        if let Some(last) = self.last_submit {
            let wait = self.min_gap.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        self.last_submit = Some(Instant::now());
        let out = Command::new("sbatch")
            .args(&args)
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run `sbatch`: {e}\nhint: use `--executor local` where SLURM is not installed"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `id` or `id;cluster`.
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if !out.status.success()
            || id.is_empty()
            || !id.chars().all(|c| c.is_ascii_digit() || c == '_')
        {
            let mut why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if why.is_empty() {
                why = stdout.trim().to_string();
            }
            return Err(format!(
                "SLURM rejected stage `{}`: {why}\n  resources: gpus {}, cpus {}, mem_gb {}, time_min {}\n  sbatch {} {}\nhint: ask for what a node of the partition has (`sinfo -o '%P %D %c %m %G'`), or change the stage's `resources`",
                spec.stage_id,
                ask.gpus,
                ask.cpus.max(1),
                ask.mem_gb.map_or("-".to_string(), |g| g.to_string()),
                ask.time_min.map_or("-".to_string(), |t| t.to_string()),
                args.join(" "),
                script.display()
            ));
        }
        let _ = std::fs::write(spec.run_dir.join("slurm-job-id"), format!("{id}\n"));
        let record = key_of_run_dir(&spec.run_dir).map(|k| records_dir(&self.cache_root).join(k));
        if let Some(r) = &record {
            let _ = std::fs::write(r, format!("{id}\n{}\n", spec.run_dir.display()));
        }
        self.track(
            spec.job,
            Tracked {
                slurm_id: id.clone(),
                stage_id: spec.stage_id,
                events,
                log: spec.log,
                record,
                cancelled: false,
                odd_polls: 0,
                missing_polls: 0,
            },
        );
        Ok(id)
    }

    fn cancel(&mut self, job: JobId, _hard: bool) {
        // scancel sends SIGTERM, then SIGKILL after the cluster's KillWait: the stage may
        // checkpoint either way, so soft and hard are the same here.
        let id = {
            let mut jobs = self.shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(t) = jobs.get_mut(&job) else { return };
            t.cancelled = true;
            t.slurm_id.clone()
        };
        match Command::new("scancel").arg(&id).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                "scancel {id} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("cannot run scancel {id}: {e}"),
        }
    }

    /// Follow a recorded job if SLURM still has it queued, running, or finished successfully;
    /// an unknown or failed one is forgotten so that the stage is submitted afresh.
    fn reattach(
        &mut self,
        spec: &JobSpec,
        recorded_id: &str,
        events: UnboundedSender<BackendEvent>,
    ) -> bool {
        // Two instances with the same fingerprint in one run: the job is the other one's.
        let ours = self
            .shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|t| t.slurm_id == recorded_id);
        if ours {
            return false;
        }
        let record = key_of_run_dir(&spec.run_dir).map(|k| records_dir(&self.cache_root).join(k));
        let (state, exit) = scontrol(recorded_id);
        let usable = match state.as_deref().map(classify) {
            Some(Seen::Waiting) => true,
            Some(Seen::Ended(s)) => s == "COMPLETED" && exit == Some((0, 0)),
            _ => false,
        };
        if !usable {
            if let Some(r) = &record {
                let _ = std::fs::remove_file(r);
            }
            return false;
        }
        self.track(
            spec.job,
            Tracked {
                slurm_id: recorded_id.to_string(),
                stage_id: spec.stage_id.clone(),
                events,
                log: spec.log.clone(),
                record,
                cancelled: false,
                odd_polls: 0,
                missing_polls: 0,
            },
        );
        true
    }

    fn cancels_on_interrupt(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            job: 0,
            stage_id: "train[lr=0.1]".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
            env: vec![
                ("CUDA_VISIBLE_DEVICES".into(), "0".into()),
                ("ORCHESTRATOR_DEVICE".into(), "cuda".into()),
            ],
            cwd: PathBuf::from("/proj"),
            log: PathBuf::from("/c/runs/k.1/log"),
            run_dir: PathBuf::from("/c/runs/k.1"),
            outputs: BTreeMap::new(),
            timeout: None,
        }
    }

    #[test]
    fn states_map_to_outcomes() {
        assert_eq!(classify("PENDING"), Seen::Waiting);
        assert_eq!(classify("RUNNING"), Seen::Waiting);
        assert_eq!(classify("COMPLETING"), Seen::Waiting);
        assert_eq!(classify("REQUEUED"), Seen::Waiting);
        assert_eq!(classify("COMPLETED"), Seen::Ended("COMPLETED".into()));
        assert_eq!(classify("CANCELLED+"), Seen::Ended("CANCELLED".into()));
        assert_eq!(classify("CANCELLED by 0"), Seen::Ended("CANCELLED".into()));
        assert_eq!(classify("TIMEOUT"), Seen::Ended("TIMEOUT".into()));
        assert_eq!(
            classify("NODE_FAIL"),
            Seen::MaybeRequeued("NODE_FAIL".into())
        );
        assert_eq!(
            classify("PREEMPTED"),
            Seen::MaybeRequeued("PREEMPTED".into())
        );
    }

    #[test]
    fn parses_squeue_and_scontrol() {
        let m = parse_squeue("12|RUNNING|None\n13|PENDING|Resources\n\n");
        assert_eq!(m.get("12").map(String::as_str), Some("RUNNING"));
        assert_eq!(m.get("13").map(String::as_str), Some("PENDING"));
        let (s, e) = parse_scontrol(
            "JobId=3 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 Requeue=1",
        );
        assert_eq!(s.as_deref(), Some("FAILED"));
        assert_eq!(e, Some((3, 0)));
    }

    #[test]
    fn sbatch_args_carry_resources_and_options() {
        let ask = Ask {
            gpus: 2,
            cpus: 4,
            mem_gb: Some(1.5),
            time_min: Some(30),
            slurm: BTreeMap::new(),
        };
        let mut o = BTreeMap::new();
        o.insert("partition".to_string(), "gpu".to_string());
        let a = sbatch_args(&spec(), &ask, &o);
        for want in [
            "--parsable",
            "--gres=gpu:2",
            "--cpus-per-task=4",
            "--mem=1536M",
            "--time=30",
            "--partition=gpu",
            "--output=/c/runs/k.1/log",
            "--job-name=orch:train[lr=0.1]",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let cpu = Ask {
            gpus: 0,
            cpus: 0,
            ..Default::default()
        };
        let a = sbatch_args(&spec(), &cpu, &BTreeMap::new());
        assert!(!a.iter().any(|x| x.starts_with("--gres")));
        assert!(a.iter().any(|x| x == "--cpus-per-task=1"));
    }

    #[test]
    fn gpu_scripts_keep_slurms_devices_and_quote_the_command() {
        let s = batch_script(&spec(), 1);
        assert!(!s.contains("export CUDA_VISIBLE_DEVICES"), "{s}");
        assert!(s.contains("export ORCHESTRATOR_DEVICE='cuda'"));
        assert!(s.contains(r"exec 'sh' '-c' 'echo '\''hi'\'''"), "{s}");
        let s = batch_script(&spec(), 0);
        assert!(s.contains("export CUDA_VISIBLE_DEVICES='0'"));
    }

    #[test]
    fn reserved_and_malformed_options_are_refused() {
        let mut p = BTreeMap::new();
        p.insert("partition".to_string(), "debug".to_string());
        let mut ask = Ask::default();
        ask.slurm.insert("output".into(), "x".into());
        assert!(merged_options(&p, &ask)
            .unwrap_err()
            .contains("cannot be overridden"));
        let mut ask = Ask::default();
        ask.slurm.insert("qos".into(), "high".into());
        ask.slurm.insert("partition".into(), "gpu".into());
        let m = merged_options(&p, &ask).unwrap();
        assert_eq!(
            m.get("partition").map(String::as_str),
            Some("gpu"),
            "the stage wins"
        );
        let mut ask = Ask::default();
        ask.slurm.insert("a b".into(), "x".into());
        assert!(merged_options(&p, &ask).is_err());
    }

    #[test]
    fn node_local_paths_are_recognised_and_keys_come_from_run_dirs() {
        assert!(is_node_local(Path::new("/tmp/x")));
        assert!(is_node_local(Path::new("/dev/shm")));
        assert_eq!(
            key_of_run_dir(Path::new("/c/runs/abc123.1700000000000-1")).as_deref(),
            Some("abc123")
        );
    }
}
