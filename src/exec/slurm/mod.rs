//! [`SlurmBackend`]: runs stage attempts as `sbatch` jobs on a SLURM cluster, each running exactly
//! the command line the local backend would run (a `job.sh` in the attempt's run dir). The
//! backend itself only validates and forwards: the [`actor::Actor`] task submits, polls and
//! cancels without blocking the scheduler loop.
//!
//! Decisions:
//! - Before the first submission the cluster is read once ([`cluster::ClusterInfo`]) and every
//!   stage's request checked against the largest node of its partition: an impossible request is
//!   bad input (exit 2), found before anything is queued.
//! - Ready attempts of the same stage with the same resources become one job array (`--array`,
//!   throttled to `--max-jobs` running at once); each task runs its own attempt, and re-attach,
//!   requeue, cancel and logs work per task (`1234_5`).
//! - A record per fingerprint (`<cache>/slurm/jobs/<key>`, see [`records`]) is written before
//!   `sbatch` runs and removed only after the attempt's outcome is committed. A restarted
//!   orchestrator asks SLURM about every record and follows the jobs still queued, running or
//!   finished successfully; when SLURM has forgotten a job, the exit status its `job.sh` wrote
//!   decides. So `kill -9` at any instant never submits finished work again.
//! - Only the orchestrator process writes the cache index; jobs write only their run dir and work
//!   dir, so the cache root must be on a filesystem the nodes share
//!   ([`cluster::check_shared_root`]).
//! - Node failure and preemption requeue the job (`--requeue`, log opened in append mode); it
//!   then runs again with the same work dir, so a stage resumes from its checkpoint. These states
//!   fail the stage only if SLURM leaves the job in them (seen on two polls in a row).
//! - Final states, exit codes, run time, node, GPUs and MaxRSS come from `sacct` where accounting
//!   is configured, else from `scontrol` ([`JobAccounting`] in the run's history).
//! - Scheduler slots do not model the cluster: every stage holds one slot (a GPU stage one fake
//!   GPU slot, so it still gets `device: cuda`), up to `--slurm-max-queued` attempts queued or
//!   running; the real GPUs come from `--gres=gpu:N`, and SLURM keeps the rest pending.

mod actor;
mod cluster;
mod records;
mod script;
mod states;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};

use super::backend::{Adopted, Backend, BackendEvent, ExitStatus, JobAccounting, JobId, JobSpec};
use crate::cache::Cache;
use crate::pipeline::{Pipeline, Resources as Ask};

use actor::{Actor, Cmd, Follow, Task};
pub use cluster::{check_requests, find_sbatch, is_node_local, ClusterInfo};
pub use script::{merged_options, resource_args};
pub use states::{classify, parse_sacct, parse_scontrol, parse_squeue, Seen};

/// Why a SLURM run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The pipeline asks for something this cluster cannot give (exit 2).
    #[error("{0}")]
    Request(String),
    /// SLURM is missing or unusable here (exit 3).
    #[error("{0}")]
    Environment(String),
}

/// Knobs from the command line.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub poll: Duration,
    /// At most this many `sbatch` calls per second.
    pub submit_rate: f64,
    /// At most this many tasks of one job array run at once (`--array=...%N`).
    pub max_jobs: u32,
    /// At most this many attempts of this run queued or running at once.
    pub max_queued: u32,
}

/// What the scheduler should be given for a SLURM run: the pipeline with every stage's slot ask
/// reduced to one slot, and the slots themselves (see the module notes).
pub fn scheduling_view(p: &Pipeline, max_queued: u32) -> (Pipeline, Vec<u32>, u32) {
    let mut q = p.clone();
    for inst in &mut q.instances {
        inst.resources.gpus = inst.resources.gpus.min(1);
        inst.resources.cpus = 1;
    }
    let n = max_queued.max(1);
    (q, (0..n).collect(), n)
}

/// A recorded attempt this run may follow instead of submitting its fingerprint again.
#[derive(Debug, Clone)]
enum Adoptable {
    /// SLURM still has it queued or running, or it completed successfully.
    Follow { task_id: String, run_dir: PathBuf },
    /// SLURM has forgotten it, and its `job.sh` recorded exit status 0.
    Finished { task_id: String, run_dir: PathBuf },
}

/// The SLURM [`Backend`]; see the module notes.
pub struct SlurmBackend {
    root: PathBuf,
    stages: Vec<String>,
    asks: Vec<Ask>,
    cpus: Vec<u32>,
    resources: Vec<Vec<String>>,
    adoptable: HashMap<String, Adoptable>,
    /// The fingerprint key of each job this run submitted or adopted, for `release`.
    keys: HashMap<JobId, String>,
    opts: SlurmOptions,
    info: ClusterInfo,
    events: Option<UnboundedSender<BackendEvent>>,
    cmd: Option<UnboundedSender<Cmd>>,
}

impl SlurmBackend {
    /// Checks that SLURM is there, every stage's options and request are valid for the cluster
    /// and the cache root is shared; finds the jobs an earlier process left. `p` is the pipeline
    /// as written (real resources), not the scheduling view.
    pub fn new(p: &Pipeline, cache: &Cache, o: &SlurmOptions) -> Result<SlurmBackend, SlurmError> {
        find_sbatch()?;
        let mut options = Vec::with_capacity(p.instances.len());
        for inst in &p.instances {
            options.push(
                merged_options(&p.executor.slurm, &inst.resources).map_err(|e| {
                    SlurmError::Request(format!("stage `{}` ({}): {e}", inst.id, inst.location))
                })?,
            );
        }
        let info = ClusterInfo::read()?;
        check_requests(&info, p, &options)?;
        let mut partitions: Vec<Option<String>> = options
            .iter()
            .map(|o| o.get("partition").cloned())
            .collect();
        partitions.sort();
        partitions.dedup();
        cluster::check_shared_root(&cache.root, &info, &partitions)?;
        let found = records::recover(&cache.root, |key| {
            cache.manifest(key).ok().flatten().is_some()
        });
        let adoptable = resolve(&cache.root, found, info.accounting);
        records::remove_unreferenced_batches(&cache.root);
        Ok(SlurmBackend {
            root: cache.root.clone(),
            stages: p.instances.iter().map(|i| i.stage.clone()).collect(),
            asks: p.instances.iter().map(|i| i.resources.clone()).collect(),
            cpus: p
                .instances
                .iter()
                .zip(&options)
                .map(|(i, o)| script::cpus_of(&i.resources, o))
                .collect(),
            resources: p
                .instances
                .iter()
                .zip(&options)
                .map(|(i, o)| resource_args(&i.resources, o))
                .collect(),
            adoptable,
            keys: HashMap::new(),
            opts: o.clone(),
            info,
            events: None,
            cmd: None,
        })
    }

    fn send(&self, c: Cmd) {
        if let Some(tx) = &self.cmd {
            let _ = tx.send(c);
        }
    }
}

/// Ask SLURM about the recorded attempts (one `squeue`, one `squeue --me` for attempts whose job
/// id was never written down, one accounting query for the ended ones): which may be followed.
/// The rest (failed, cancelled, never submitted) lose their record and run afresh.
fn resolve(
    root: &Path,
    found: HashMap<String, records::Found>,
    accounting: bool,
) -> HashMap<String, Adoptable> {
    if found.is_empty() {
        return HashMap::new();
    }
    let mut found = found;
    if found.values().any(|f| f.task_id.is_none()) {
        let by_comment = jobs_by_comment();
        for f in found.values_mut().filter(|f| f.task_id.is_none()) {
            f.task_id = by_comment
                .get(&(f.record.batch.clone(), f.record.index))
                .cloned();
        }
    }
    let mut bases: Vec<String> = found
        .values()
        .filter_map(|f| f.task_id.as_deref())
        .map(|t| states::base_id(t).to_string())
        .collect();
    bases.sort();
    bases.dedup();
    let queued = if bases.is_empty() {
        HashMap::new()
    } else {
        states::run_now("squeue", &states::squeue_args(&bases))
            .map(|t| parse_squeue(&t))
            .unwrap_or_default()
    };
    let ended: Vec<String> = found
        .values()
        .filter_map(|f| f.task_id.clone())
        .filter(|t| !matches!(queued.get(t).map(|s| classify(s)), Some(Seen::Waiting)))
        .collect();
    let facts = accounting_now(&ended, accounting);
    let mut out = HashMap::new();
    for (key, f) in found {
        let state = f.task_id.as_ref().and_then(|t| {
            queued
                .get(t)
                .cloned()
                .or_else(|| facts.get(t).and_then(|a| a.state.clone()))
        });
        let ok_end = |t: &String| {
            facts
                .get(t)
                .is_some_and(|a| a.exit_code == Some(0) && a.signal.is_none())
        };
        let adopt = match (&f.task_id, state.as_deref().map(classify)) {
            (Some(t), Some(Seen::Waiting | Seen::MaybeRequeued(_))) => Some(Adoptable::Follow {
                task_id: t.clone(),
                run_dir: f.run_dir.clone(),
            }),
            (Some(t), Some(Seen::Ended(s))) if s == "COMPLETED" && ok_end(t) => {
                Some(Adoptable::Follow {
                    task_id: t.clone(),
                    run_dir: f.run_dir.clone(),
                })
            }
            (_, None) if records::exit_status(&f.run_dir) == Some(0) => Some(Adoptable::Finished {
                task_id: f.task_id.clone().unwrap_or_else(|| "(unknown id)".into()),
                run_dir: f.run_dir.clone(),
            }),
            _ => None,
        };
        match adopt {
            Some(a) => {
                out.insert(key, a);
            }
            None => records::remove_record(root, &key),
        }
    }
    out
}

/// Our jobs SLURM still lists, by the batch and index their comment and task id name.
fn jobs_by_comment() -> HashMap<(String, usize), String> {
    let args: Vec<String> = ["-h", "-r", "--me", "--states=all", "-o", "%i|%k"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = states::run_now("squeue", &args).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((id, comment)) = line.split_once('|') else {
            continue;
        };
        let Some(batch) = comment.trim().strip_prefix("orch:") else {
            continue;
        };
        let index = id
            .split_once('_')
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0);
        out.insert((batch.to_string(), index), id.trim().to_string());
    }
    out
}

/// Accounting of `ids`, run to completion before the loop starts: `sacct`, then `scontrol`.
fn accounting_now(ids: &[String], accounting: bool) -> HashMap<String, JobAccounting> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return out;
    }
    if accounting {
        if let Some(text) = states::run_now("sacct", &states::sacct_args(ids)) {
            out = states::ended_only(parse_sacct(&text));
        }
    }
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        let args = ["show".to_string(), "job".into(), "-o".into(), id.clone()];
        if let Some(a) = states::run_now("scontrol", &args).and_then(|t| parse_scontrol(id, &t)) {
            out.insert(id.clone(), a);
        }
    }
    out
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

impl Drop for SlurmBackend {
    fn drop(&mut self) {
        records::remove_unreferenced_batches(&self.root);
    }
}

impl Backend for SlurmBackend {
    fn attach(&mut self, events: UnboundedSender<BackendEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let rate = if self.opts.submit_rate > 0.0 {
            self.opts.submit_rate
        } else {
            f64::INFINITY
        };
        let actor = Actor::new(
            self.root.clone(),
            events.clone(),
            Duration::from_secs_f64(1.0 / rate),
            self.opts.poll.max(Duration::from_millis(50)),
            self.opts.max_jobs.max(1),
            self.info.max_array_size,
            self.info.accounting,
        );
        tokio::spawn(actor.run(rx));
        self.events = Some(events);
        self.cmd = Some(tx);
    }

    fn submit(&mut self, specs: Vec<JobSpec>) {
        let mut tasks = Vec::with_capacity(specs.len());
        for spec in specs {
            let job = spec.job;
            let key = key_of_run_dir(&spec.run_dir).unwrap_or_default();
            self.keys.insert(job, key.clone());
            tasks.push(Task {
                job,
                key,
                stage: self.stages.get(job).cloned().unwrap_or_default(),
                gpus: self.asks.get(job).map_or(0, |a| a.gpus),
                cpus: self.cpus.get(job).copied().unwrap_or(1),
                resources: self.resources.get(job).cloned().unwrap_or_default(),
                spec,
            });
        }
        self.send(Cmd::Submit(tasks));
    }

    fn cancel(&mut self, jobs: &[JobId], _hard: bool) {
        // scancel sends SIGTERM, then SIGKILL after the cluster's KillWait: the stage may
        // checkpoint either way, so soft and hard are the same here.
        self.send(Cmd::Cancel(jobs.to_vec()));
    }

    fn adopt(&mut self, job: JobId, key: &str) -> Option<Adopted> {
        let a = self.adoptable.remove(key)?;
        self.keys.insert(job, key.to_string());
        match a {
            Adoptable::Follow { task_id, run_dir } => {
                self.send(Cmd::Follow(Follow {
                    job,
                    task_id: task_id.clone(),
                    run_dir: run_dir.clone(),
                }));
                Some(Adopted {
                    id: task_id,
                    run_dir,
                })
            }
            Adoptable::Finished { task_id, run_dir } => {
                if let Some(events) = &self.events {
                    let _ = events.send(BackendEvent::Exited {
                        job,
                        status: ExitStatus::Success,
                        accounting: None,
                    });
                }
                Some(Adopted {
                    id: task_id,
                    run_dir,
                })
            }
        }
    }

    fn release(&mut self, job: JobId) {
        if let Some(key) = self.keys.remove(&job) {
            records::remove_record(&self.root, &key);
        }
    }

    fn cancels_on_interrupt(&self) -> bool {
        true
    }

    fn placement(&self, gpu: bool) -> Option<String> {
        Some(if gpu { "gpu@slurm" } else { "cpu@slurm" }.into())
    }
}

#[cfg(test)]
mod tests;
