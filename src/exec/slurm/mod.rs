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

mod cluster;
mod poll;
mod records;
mod script;
mod states;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::backend::{Backend, BackendEvent, JobId, JobSpec};
use crate::pipeline::{Pipeline, Resources as Ask};

pub use cluster::{check_shared_root, find_sbatch, is_node_local, partition_nodes};
use poll::{Shared, Tracked};
pub use records::recorded_attempt;
use records::{key_of_run_dir, records_dir};
pub use script::{batch_script, merged_options, sbatch_args};
use states::scontrol;
pub use states::{classify, parse_scontrol, parse_squeue, Seen};

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
mod tests;
