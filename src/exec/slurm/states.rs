//! SLURM job states and the text of `squeue` and `scontrol`: what a state means here, and the
//! exit status the scheduler gets.

use std::collections::HashMap;
use std::process::Command;

use super::super::backend::ExitStatus;
use super::poll::Tracked;

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

pub(super) fn scontrol(id: &str) -> (Option<String>, Option<(i32, i32)>) {
    match Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
    {
        Ok(o) if o.status.success() => parse_scontrol(&String::from_utf8_lossy(&o.stdout)),
        _ => (None, None),
    }
}

/// The exit status the scheduler gets for a job that ended in `state`.
pub(super) fn ended_status(t: &Tracked, state: &str) -> ExitStatus {
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
