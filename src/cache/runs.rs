//! [`RunLog`]: one line when `orchestrator run` starts on a pipeline and one when it ends
//! (`history/runs/<pipeline>.jsonl`), so that the dashboard can list the runs of a pipeline with
//! who started them, where, and what they did. Per-instance records stay in [`super::History`];
//! a run's records are those written between its start and its end (one scheduler per cache).
//! A run killed with `kill -9` has a start and no end.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{sanitize, CacheError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum RunEvent {
    Start(RunStart),
    End(RunEnd),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// `<unix ms>-<pid>`: unique per cache (one scheduler at a time).
    pub run: String,
    /// Unix seconds.
    pub at: u64,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// `local` or `slurm`.
    pub executor: String,
    /// The command line, for "what was run".
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub run: String,
    /// Unix seconds.
    pub at: u64,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: bool,
    /// Set when the run stopped on an error of its own (not a stage failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunLog {
    path: PathBuf,
}

impl RunLog {
    pub fn new(root: &Path, pipeline: &str) -> RunLog {
        RunLog {
            path: root
                .join("history")
                .join("runs")
                .join(format!("{}.jsonl", sanitize(pipeline))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One `write` of one line with O_APPEND (as [`super::History::append`]).
    pub fn append(&self, e: &RunEvent) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(CacheError::io("cannot create", dir))?;
        }
        let mut line = serde_json::to_vec(e).expect("a run event serializes");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(CacheError::io("cannot write run log", &self.path))?;
        f.write_all(&line)
            .map_err(CacheError::io("cannot write run log", &self.path))
    }

    /// Every event, oldest first; torn or foreign lines are skipped.
    pub fn read(&self) -> Result<Vec<RunEvent>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CacheError::io("cannot read run log", &self.path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

impl RunStart {
    /// A start record for this process, now.
    pub fn now(executor: &str) -> RunStart {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let pid = std::process::id();
        RunStart {
            run: format!("{ms}-{pid}"),
            at: super::now_unix(),
            user: user_name(),
            host: super::lock::hostname(),
            pid,
            executor: executor.to_string(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// The login name of this process's user (`$USER`, else the uid).
fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_torn_lines_are_skipped() {
        let t = tempfile::tempdir().unwrap();
        let log = RunLog::new(t.path(), "a/b");
        assert!(log.read().unwrap().is_empty());
        let start = RunStart::now("local");
        log.append(&RunEvent::Start(start.clone())).unwrap();
        let end = RunEnd {
            run: start.run.clone(),
            at: start.at,
            ran: 2,
            cached: 1,
            failed: 0,
            skipped: 0,
            interrupted: false,
            error: None,
        };
        log.append(&RunEvent::End(end.clone())).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"{\"event\":\"sta")
            .unwrap();
        assert_eq!(
            log.read().unwrap(),
            [RunEvent::Start(start), RunEvent::End(end)]
        );
        assert!(log.path().ends_with("history/runs/a_b.jsonl"));
    }
}
