//! The poller: one `squeue` call per poll for every job the backend follows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use tokio::sync::mpsc::UnboundedSender;

use super::super::backend::{BackendEvent, ExitStatus, JobId};
use super::states::{classify, ended_status, parse_squeue, scontrol, Seen};

/// One job as the poller follows it.
pub(super) struct Tracked {
    pub(super) slurm_id: String,
    pub(super) stage_id: String,
    pub(super) events: UnboundedSender<BackendEvent>,
    pub(super) log: PathBuf,
    pub(super) record: Option<PathBuf>,
    /// Set when we asked for the cancel (so the message says so).
    pub(super) cancelled: bool,
    /// Consecutive polls in a state that may still turn into a requeue.
    pub(super) odd_polls: u32,
    /// Consecutive polls where squeue no longer knew the job.
    pub(super) missing_polls: u32,
}

pub(super) struct Shared {
    pub(super) jobs: Mutex<HashMap<JobId, Tracked>>,
    pub(super) stop: AtomicBool,
}

impl Shared {
    /// One poll: a single `squeue` call for every job we follow.
    pub(super) fn poll(&self) {
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
