//! [`Actor`]: the SLURM backend's own task, beside the scheduler loop on the same runtime. It owns
//! the submission queue and every job it follows; the backend sends it [`Cmd`]s and it answers
//! with [`BackendEvent`]s. Every SLURM command runs as an awaited child process, so neither this
//! task nor the scheduler loop ever blocks on one.
//!
//! - Submission: whenever the rate limit allows (`--slurm-submit-rate`), the first queued attempt
//!   and every other queued attempt of the same stage with the same `sbatch` options go out as one
//!   `sbatch` call, a job array when there are several (`%N` = `--max-jobs`). Attempts queued
//!   while waiting for the rate limit join the next array, so a burst never becomes a burst of
//!   `sbatch` calls. A cancel drops queued attempts at once.
//! - Cancel: one `scancel` call for all the jobs asked about.
//! - Poll: one `squeue` call for all followed jobs; the jobs that ended get their accounting from
//!   one `sacct` call (or `scontrol` without accounting) and are reported. Their records stay:
//!   the scheduler releases them after the commit.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::super::backend::{BackendEvent, ExitStatus, JobAccounting, JobId, JobSpec};
use super::records::{self, Batch, Record};
use super::script::{self, Submission};
use super::states::{self, classify, Seen};

/// One attempt waiting for `sbatch`.
pub struct Task {
    pub job: JobId,
    pub key: String,
    pub stage: String,
    pub spec: JobSpec,
    pub gpus: u32,
    pub cpus: u32,
    /// Its sizing options; attempts of one stage with equal ones share an array.
    pub resources: Vec<String>,
}

/// A job an earlier orchestrator process submitted, now followed by this one.
pub struct Follow {
    pub job: JobId,
    pub task_id: String,
    pub run_dir: PathBuf,
}

pub enum Cmd {
    Submit(Vec<Task>),
    Follow(Follow),
    Cancel(Vec<JobId>),
}

/// One job as the poller follows it.
struct Tracked {
    task_id: String,
    run_dir: PathBuf,
    /// Set when this run asked for the cancel.
    cancelled: bool,
    /// Consecutive polls in a state that may still turn into a requeue.
    odd_polls: u32,
    /// Consecutive polls where squeue no longer knew the job.
    missing_polls: u32,
    /// Polls since it ended without `sacct` knowing it yet.
    acct_polls: u32,
}

pub struct Actor {
    pub root: PathBuf,
    pub events: UnboundedSender<BackendEvent>,
    pub gap: Duration,
    pub poll: Duration,
    pub max_jobs: u32,
    pub max_array: usize,
    pub accounting: bool,
    queue: VecDeque<Task>,
    tracked: HashMap<JobId, Tracked>,
    next_submit: Instant,
    squeue_failing: bool,
}

impl Actor {
    pub fn new(
        root: PathBuf,
        events: UnboundedSender<BackendEvent>,
        gap: Duration,
        poll: Duration,
        max_jobs: u32,
        max_array: usize,
        accounting: bool,
    ) -> Actor {
        Actor {
            root,
            events,
            gap,
            poll,
            max_jobs,
            max_array: max_array.max(1),
            accounting,
            queue: VecDeque::new(),
            tracked: HashMap::new(),
            next_submit: Instant::now(),
            squeue_failing: false,
        }
    }

    /// Serve commands until the backend is dropped.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Cmd>) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_submit;
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Submit(tasks)) => self.queue.extend(tasks),
                    Some(Cmd::Follow(f)) => self.follow(f.job, f.task_id, f.run_dir),
                    Some(Cmd::Cancel(jobs)) => self.cancel(&jobs).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(wake), if !self.queue.is_empty() => self.submit_next().await,
                _ = tick.tick() => self.poll().await,
            }
        }
    }

    fn follow(&mut self, job: JobId, task_id: String, run_dir: PathBuf) {
        self.tracked.insert(
            job,
            Tracked {
                task_id,
                run_dir,
                cancelled: false,
                odd_polls: 0,
                missing_polls: 0,
                acct_polls: 0,
            },
        );
    }

    fn exited(&self, job: JobId, status: ExitStatus, accounting: Option<JobAccounting>) {
        let _ = self.events.send(BackendEvent::Exited {
            job,
            status,
            accounting,
        });
    }

    /// The next `sbatch` call: the first queued attempt and its kin.
    async fn submit_next(&mut self) {
        let Some(first) = self.queue.front() else {
            return;
        };
        // Each task's `job.sh` changes into its own run dir, so the attempts of one stage with
        // the same sizing options share an array whatever their working directories.
        let kin = (first.stage.clone(), first.resources.clone());
        let mut group = Vec::new();
        let mut rest = VecDeque::new();
        for t in self.queue.drain(..) {
            if group.len() < self.max_array && (&t.stage, &t.resources) == (&kin.0, &kin.1) {
                group.push(t);
            } else {
                rest.push_back(t);
            }
        }
        self.queue = rest;
        self.next_submit = Instant::now() + self.gap;
        match self.sbatch(&group).await {
            Ok(id) => {
                let array = group.len() > 1;
                for (i, t) in group.into_iter().enumerate() {
                    let task_id = if array {
                        format!("{id}_{i}")
                    } else {
                        id.clone()
                    };
                    let _ = std::fs::write(t.spec.run_dir.join("slurm-job-id"), &task_id);
                    self.follow(t.job, task_id, t.spec.run_dir);
                }
            }
            Err(message) => {
                for t in group {
                    records::remove_record(&self.root, &t.key);
                    self.exited(t.job, ExitStatus::Backend(message.clone()), None);
                }
            }
        }
    }

    /// Write the batch (scripts, links, records), then run `sbatch`; the job id it printed.
    async fn sbatch(&self, group: &[Task]) -> Result<String, String> {
        let first = &group[0];
        let io = |what: &str, e: std::io::Error| format!("cannot write {what}: {e}");
        let batch = Batch::create(&self.root).map_err(|e| io("a SLURM batch folder", e))?;
        for (i, t) in group.iter().enumerate() {
            let script = t.spec.run_dir.join("job.sh");
            std::fs::write(&script, script::task_script(&t.spec, t.gpus, t.cpus))
                .map_err(|e| io(&script.display().to_string(), e))?;
            batch
                .link_task(i, &t.spec.run_dir)
                .map_err(|e| io(&batch.dir.display().to_string(), e))?;
            let record = Record {
                batch: batch.name.clone(),
                index: i,
            };
            records::write_record(&self.root, &t.key, &record)
                .map_err(|e| io("a SLURM job record", e))?;
        }
        let script = batch.dir.join("job.sbatch");
        std::fs::write(
            &script,
            script::batch_script(&first.stage, &batch.dir, group.len()),
        )
        .map_err(|e| io(&script.display().to_string(), e))?;
        let args = script::sbatch_args(&Submission {
            stage: &first.stage,
            batch: &batch.dir,
            batch_name: &batch.name,
            cwd: &first.spec.cwd,
            tasks: group.len(),
            max_running: self.max_jobs,
            resources: &first.resources,
        });
        let _ = std::fs::write(batch.dir.join("sbatch.args"), args.join("\n") + "\n");
        let out = tokio::process::Command::new("sbatch")
            .args(&args)
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run `sbatch`: {e}\nhint: use `--executor local` where SLURM is not installed"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `id` or `id;cluster`.
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if out.status.success() && !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
            let _ = batch.write_job_id(&id, group.len() > 1);
            if group.len() > 1 {
                let _ = self.events.send(BackendEvent::Note {
                    message: format!(
                        "SLURM: {} attempts of `{}` submitted as job array {id} (at most {} running at once)",
                        group.len(),
                        first.stage,
                        self.max_jobs.min(group.len() as u32)
                    ),
                });
            }
            return Ok(id);
        }
        let _ = std::fs::remove_dir_all(&batch.dir);
        let mut why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if why.is_empty() {
            why = stdout.trim().to_string();
        }
        Err(format!(
            "SLURM rejected the job: {why}\n  sbatch {} {}\nhint: check the stage's `resources` and `resources.slurm` options against the cluster (`sinfo -o '%P %D %c %m %G'`)",
            args.join(" "),
            script.display()
        ))
    }

    /// Drop queued attempts, and `scancel` the submitted ones in one call.
    async fn cancel(&mut self, jobs: &[JobId]) {
        let mut ids = Vec::new();
        for &job in jobs {
            if let Some(pos) = self.queue.iter().position(|t| t.job == job) {
                self.queue.remove(pos);
                let why = "cancelled before it was submitted".to_string();
                self.exited(job, ExitStatus::Backend(why), None);
            } else if let Some(t) = self.tracked.get_mut(&job) {
                if !t.cancelled {
                    t.cancelled = true;
                    ids.push(t.task_id.clone());
                }
            }
        }
        // scancel fails for a job that has just ended; the poll reports those as they ended.
        for chunk in ids.chunks(1000) {
            if let Err(e) = states::run_async("scancel", chunk).await {
                tracing::debug!("{e}");
            }
        }
    }

    /// One `squeue` for every followed job; report those that ended.
    async fn poll(&mut self) {
        if self.tracked.is_empty() {
            return;
        }
        let mut bases: Vec<String> = self
            .tracked
            .values()
            .map(|t| states::base_id(&t.task_id).to_string())
            .collect();
        bases.sort();
        bases.dedup();
        let found = match states::run_async("squeue", &states::squeue_args(&bases)).await {
            Ok(text) => states::parse_squeue(&text),
            // Every id purged from slurmctld's memory.
            Err(e) if e.contains("Invalid job id") => HashMap::new(),
            Err(e) => {
                // slurmctld may be briefly unreachable; try again next poll.
                if !self.squeue_failing {
                    let _ = self.events.send(BackendEvent::Note {
                        message: format!("SLURM: {e}; still trying"),
                    });
                }
                self.squeue_failing = true;
                return;
            }
        };
        self.squeue_failing = false;
        let mut ended: Vec<(JobId, String)> = Vec::new();
        let mut missing: Vec<JobId> = Vec::new();
        for (&job, t) in self.tracked.iter_mut() {
            let Some(state) = found.get(&t.task_id) else {
                t.missing_polls += 1;
                missing.push(job);
                continue;
            };
            t.missing_polls = 0;
            match classify(state) {
                Seen::Waiting => t.odd_polls = 0,
                Seen::MaybeRequeued(s) => {
                    t.odd_polls += 1;
                    if t.odd_polls >= 2 {
                        ended.push((job, s));
                    }
                }
                Seen::Ended(s) => ended.push((job, s)),
            }
        }
        if ended.is_empty() && missing.is_empty() {
            return;
        }
        let ids: Vec<String> = ended
            .iter()
            .map(|(j, _)| *j)
            .chain(missing.iter().copied())
            .map(|j| self.tracked[&j].task_id.clone())
            .collect();
        let mut facts = self.accounting_of(&ids).await;
        for (job, state) in ended {
            let id = self.tracked[&job].task_id.clone();
            let a = facts.remove(&id);
            let t = self.tracked.get_mut(&job).expect("tracked");
            if self.accounting && !t.cancelled && a.as_ref().is_none_or(|a| a.source != "sacct") {
                // slurmdbd learns of a job's end a moment after slurmctld: wait one poll for
                // the full record (MaxRSS) before settling for slurmctld's.
                t.acct_polls += 1;
                if t.acct_polls < 2 {
                    continue;
                }
            }
            self.report(job, &state, a);
        }
        for job in missing {
            let t = &self.tracked[&job];
            match facts.remove(&t.task_id) {
                Some(a) => match a.state.as_deref().map(classify) {
                    Some(Seen::Ended(s)) | Some(Seen::MaybeRequeued(s)) => {
                        self.report(job, &s, Some(a))
                    }
                    _ => {}
                },
                None if t.missing_polls >= 3 => self.vanished(job),
                None => {}
            }
        }
    }

    /// Accounting of ended jobs: one `sacct` call where accounting is on, `scontrol` for what it
    /// does not know (yet).
    async fn accounting_of(&self, ids: &[String]) -> HashMap<String, JobAccounting> {
        let mut out = HashMap::new();
        if self.accounting {
            if let Ok(text) = states::run_async("sacct", &states::sacct_args(ids)).await {
                out = states::ended_only(states::parse_sacct(&text));
            }
        }
        for id in ids {
            if out.contains_key(id) {
                continue;
            }
            let args = ["show".to_string(), "job".into(), "-o".into(), id.clone()];
            if let Ok(text) = states::run_async("scontrol", &args).await {
                if let Some(a) = states::parse_scontrol(id, &text) {
                    out.insert(id.clone(), a);
                }
            }
        }
        out
    }

    fn report(&mut self, job: JobId, state: &str, a: Option<JobAccounting>) {
        let Some(t) = self.tracked.remove(&job) else {
            return;
        };
        let status = if t.cancelled && state == "CANCELLED" {
            ExitStatus::Backend(format!(
                "SLURM job {} was cancelled by the orchestrator",
                t.task_id
            ))
        } else {
            states::ended_status(&t.task_id, state, a.as_ref())
        };
        tracing::debug!("SLURM job {} ended: {status}", t.task_id);
        self.exited(job, status, a);
    }

    /// A job no SLURM command knows any more (purged, no accounting): its own exit status file
    /// says how it ended, if it got that far.
    fn vanished(&mut self, job: JobId) {
        let Some(t) = self.tracked.remove(&job) else {
            return;
        };
        let status = match records::exit_status(&t.run_dir) {
            Some(0) => ExitStatus::Success,
            Some(c) => ExitStatus::Backend(format!(
                "SLURM job {} ended with exit code {c} (SLURM no longer lists it)",
                t.task_id
            )),
            None => ExitStatus::Backend(format!(
                "SLURM job {} is no longer known to slurmctld (squeue and scontrol do not list it) and left no exit status",
                t.task_id
            )),
        };
        self.exited(job, status, None);
    }
}
