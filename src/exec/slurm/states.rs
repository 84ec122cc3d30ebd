//! SLURM job states and the text of `squeue`, `scontrol` and `sacct`: what a state means here,
//! a job's accounting ([`JobAccounting`]), and the exit status the scheduler gets. Also the one
//! place that runs these commands (blocking before the loop starts, async inside it).

use std::collections::HashMap;

use super::super::backend::{ExitStatus, JobAccounting};
use super::cluster::gres_gpus;

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

/// `squeue -h -r --states=all -o '%i|%T'`: task id (`12`, `12_3`) -> state.
pub fn squeue_args(base_ids: &[String]) -> Vec<String> {
    vec![
        "-h".into(),
        "-r".into(),
        "--states=all".into(),
        "-o".into(),
        "%i|%T".into(),
        "-j".into(),
        base_ids.join(","),
    ]
}

pub fn parse_squeue(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split('|');
            Some((it.next()?.trim().to_string(), it.next()?.trim().to_string()))
        })
        .filter(|(id, _)| !id.is_empty())
        .collect()
}

/// The job id of a task id (`12_3` -> `12`), for `squeue -j`.
pub fn base_id(task_id: &str) -> &str {
    task_id.split('_').next().unwrap_or(task_id)
}

/// `[D-]HH:MM:SS` or `MM:SS` (sacct `Elapsed`, scontrol `RunTime`) in seconds.
pub fn parse_elapsed(s: &str) -> Option<f64> {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let mut secs = 0.0;
    for part in rest.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(days * 86_400.0 + secs)
}

/// A `MaxRSS` like `123456K`, `1.5G`, `2048` (KiB) in MiB.
pub fn parse_rss_mb(s: &str) -> Option<f64> {
    let s = s.trim();
    let last = s.chars().last()?;
    let (num, kib) = match last {
        'K' => (&s[..s.len() - 1], 1.0),
        'M' => (&s[..s.len() - 1], 1024.0),
        'G' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        'T' => (&s[..s.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|n| n * kib / 1024.0)
}

/// `code:signal` as SLURM prints an exit code.
fn parse_exit(v: &str) -> Option<(i32, i32)> {
    let (c, s) = v.split_once(':')?;
    Some((c.parse().ok()?, s.parse().ok()?))
}

/// `gres/gpu=2` (or `gres/gpu:a100=2`) in a TRES list.
fn tres_gpus(tres: &str) -> Option<u32> {
    tres.split(',')
        .filter_map(|t| t.split_once('='))
        .filter(|(k, _)| *k == "gres/gpu" || k.starts_with("gres/gpu:"))
        .map(|(_, v)| v.parse::<u32>().unwrap_or(0))
        .reduce(|a, b| a.max(b))
}

/// `scontrol show job -o ID`: the job's state, exit code, run time, node and GPUs.
pub fn parse_scontrol(id: &str, text: &str) -> Option<JobAccounting> {
    let mut a = JobAccounting {
        id: id.to_string(),
        source: "scontrol".into(),
        ..Default::default()
    };
    for tok in text.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        match k {
            "JobState" => a.state = Some(v.to_string()),
            "ExitCode" => {
                if let Some((c, s)) = parse_exit(v) {
                    a.exit_code = Some(c);
                    a.signal = (s != 0).then_some(s);
                }
            }
            "RunTime" => a.elapsed_s = parse_elapsed(v),
            "NodeList" if v != "(null)" => a.node = Some(v.to_string()),
            "TRES" => a.gpus = tres_gpus(v).or(Some(0)),
            "Gres" | "TresPerNode" if a.gpus.is_none() => a.gpus = gres_gpus(v),
            _ => {}
        }
    }
    a.state.is_some().then_some(a)
}

/// Fields asked of `sacct`, in this order.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,Elapsed,MaxRSS,NodeList,AllocTRES";

pub fn sacct_args(task_ids: &[String]) -> Vec<String> {
    vec![
        "-n".into(),
        "-P".into(),
        "-o".into(),
        SACCT_FORMAT.into(),
        "-j".into(),
        task_ids.join(","),
    ]
}

/// `sacct -n -P -o JobID,State,ExitCode,Elapsed,MaxRSS,NodeList,AllocTRES`: per job (or array
/// task) its allocation line, with the largest `MaxRSS` of its steps.
pub fn parse_sacct(text: &str) -> HashMap<String, JobAccounting> {
    let mut out: HashMap<String, JobAccounting> = HashMap::new();
    let mut rss: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 7 || f[0].is_empty() {
            continue;
        }
        if let Some((job, _step)) = f[0].split_once('.') {
            if let Some(mb) = parse_rss_mb(f[4]) {
                let e = rss.entry(job.to_string()).or_insert(0.0);
                *e = e.max(mb);
            }
            continue;
        }
        let (exit_code, signal) = match parse_exit(f[2]) {
            Some((c, s)) => (Some(c), (s != 0).then_some(s)),
            None => (None, None),
        };
        out.insert(
            f[0].to_string(),
            JobAccounting {
                id: f[0].to_string(),
                state: Some(f[1].split_whitespace().next().unwrap_or("").to_string()),
                exit_code,
                signal,
                elapsed_s: parse_elapsed(f[3]),
                max_rss_mb: parse_rss_mb(f[4]),
                node: (!f[5].is_empty() && f[5] != "None assigned").then(|| f[5].to_string()),
                gpus: tres_gpus(f[6]).or(Some(0)),
                source: "sacct".into(),
            },
        );
    }
    for (job, mb) in rss {
        if let Some(a) = out.get_mut(&job) {
            a.max_rss_mb = Some(a.max_rss_mb.unwrap_or(0.0).max(mb));
        }
    }
    out
}

/// Only the records of jobs that have ended: slurmdbd learns of an end a moment after slurmctld,
/// and until then `sacct` still says RUNNING.
pub fn ended_only(mut m: HashMap<String, JobAccounting>) -> HashMap<String, JobAccounting> {
    m.retain(|_, a| {
        a.state
            .as_deref()
            .is_some_and(|s| !matches!(classify(s), Seen::Waiting))
    });
    m
}

/// The exit status the scheduler gets for a job that ended in `state`.
pub fn ended_status(id: &str, state: &str, a: Option<&JobAccounting>) -> ExitStatus {
    let code = a.and_then(|a| a.exit_code).unwrap_or(0);
    let sig = a.and_then(|a| a.signal).unwrap_or(0);
    match state {
        "COMPLETED" if code == 0 && sig == 0 => ExitStatus::Success,
        "CANCELLED" => ExitStatus::Backend(format!(
            "SLURM job {id} was cancelled (scancel or an administrator)"
        )),
        "TIMEOUT" => ExitStatus::Backend(format!(
            "SLURM job {id} reached its time limit (`resources.time_min`)"
        )),
        "OUT_OF_MEMORY" => ExitStatus::Backend(format!(
            "SLURM job {id} ran out of memory (raise `resources.mem_gb`)"
        )),
        _ if sig != 0 => ExitStatus::Backend(format!(
            "SLURM job {id} ended {state}, killed by signal {sig}"
        )),
        _ => ExitStatus::Backend(format!(
            "SLURM job {id} ended {state} with exit code {code}"
        )),
    }
}

/// stdout of a SLURM command that succeeded, run to completion on the calling thread (used
/// before the scheduler loop starts).
pub fn run_now(cmd: &str, args: &[String]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// stdout of a SLURM command that succeeded; awaits the process without blocking the thread.
pub async fn run_async(cmd: &str, args: &[String]) -> Result<String, String> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
