//! [`History`]: the append-only record of what happened to each stage instance of a pipeline
//! (`history/<pipeline>.jsonl`). Plain files on purpose: `status`, `logs` and `show` read it
//! while a run holds the cache (and its index).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{sanitize, CacheError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Started,
    Ok,
    Failed,
    /// A cache hit under a different fingerprint than the instance's previous record.
    Cached,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub instance: String,
    pub key: String,
    pub status: RunStatus,
    /// Unix seconds.
    pub at: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub device: String,
    /// The attempt's run dir, relative to the cache root (`runs/<key>.<ms>`) so that a moved or
    /// copied cache keeps it; resolve it with [`History::run_dir`]. (Records written before
    /// this held absolute paths; those resolve by their last component.)
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub message: Option<String>,
    /// The backend's account of the job that ran this attempt (SLURM jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobAccounting>,
}

/// What a backend's accounting says about the job that ran an attempt: SLURM's `sacct` where
/// accounting is configured, else `scontrol` (which forgets a job minutes after it ends).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobAccounting {
    /// The backend's id: `1234` for a job, `1234_5` for a task of an array.
    pub id: String,
    /// The final state (`COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, ...).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that ended the job, when one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Time the job ran (not the time it waited in the queue).
    #[serde(default)]
    pub elapsed_s: Option<f64>,
    /// Peak resident memory of the job's processes (only with accounting).
    #[serde(default)]
    pub max_rss_mb: Option<f64>,
    #[serde(default)]
    pub node: Option<String>,
    /// GPUs allocated to the job (`gres/gpu` of its TRES).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// `sacct` or `scontrol`.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct History {
    root: PathBuf,
    path: PathBuf,
}

impl History {
    pub fn new(root: &Path, pipeline: &str) -> History {
        History {
            root: root.to_path_buf(),
            path: root
                .join("history")
                .join(format!("{}.jsonl", sanitize(pipeline))),
        }
    }

    /// Where the run dir of `r` is in this cache now, wherever the cache was when `r` was
    /// written.
    pub fn run_dir(&self, r: &RunRecord) -> Option<PathBuf> {
        run_dir_in(&self.root, r)
    }

    /// `history/<pipeline>.jsonl` (for readers that follow the file themselves).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One `write` of one line with O_APPEND: records never interleave. A run dir is stored
    /// relative to the cache root.
    pub fn append(&self, r: &RunRecord) -> Result<()> {
        let relative;
        let r = match &r.run_dir {
            Some(d) if d.is_absolute() => {
                relative = RunRecord {
                    run_dir: d.file_name().map(|n| Path::new("runs").join(n)),
                    ..r.clone()
                };
                &relative
            }
            _ => r,
        };
        let mut line = serde_json::to_vec(r).expect("record serializes");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(CacheError::io("cannot write history", &self.path))?;
        f.write_all(&line)
            .map_err(CacheError::io("cannot write history", &self.path))
    }

    /// Every record, oldest first; a torn last line (crash mid-write) is skipped.
    pub fn read(&self) -> Result<Vec<RunRecord>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CacheError::io("cannot read history", &self.path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The latest record per instance.
    pub fn latest(&self) -> Result<BTreeMap<String, RunRecord>> {
        let mut m = BTreeMap::new();
        for r in self.read()? {
            m.insert(r.instance.clone(), r);
        }
        Ok(m)
    }

    /// The latest record per instance that left usable outputs (ok or cached).
    pub fn latest_committed(&self) -> Result<BTreeMap<String, RunRecord>> {
        let mut m = BTreeMap::new();
        for r in self.read()? {
            if matches!(r.status, RunStatus::Ok | RunStatus::Cached) {
                m.insert(r.instance.clone(), r);
            }
        }
        Ok(m)
    }

    /// Every history file of the cache.
    pub fn all(root: &Path) -> Result<Vec<History>> {
        let dir = root.join("history");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(CacheError::io("cannot list", &dir))? {
            let e = e.map_err(CacheError::io("cannot list", &dir))?;
            if e.path().extension().is_some_and(|x| x == "jsonl") {
                out.push(History {
                    root: root.to_path_buf(),
                    path: e.path(),
                });
            }
        }
        Ok(out)
    }
}

/// The run dir of record `r` inside the cache at `root` (records keep `runs/<name>`, or an
/// absolute path from before caches were relocatable: only its name counts).
pub fn run_dir_in(root: &Path, r: &RunRecord) -> Option<PathBuf> {
    let d = r.run_dir.as_ref()?;
    Some(root.join("runs").join(d.file_name()?))
}
