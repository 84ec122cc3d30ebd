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
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn new(root: &Path, pipeline: &str) -> History {
        History {
            path: root
                .join("history")
                .join(format!("{}.jsonl", sanitize(pipeline))),
        }
    }

    /// `history/<pipeline>.jsonl` (for readers that follow the file themselves).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One `write` of one line with O_APPEND: records never interleave.
    pub fn append(&self, r: &RunRecord) -> Result<()> {
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
                out.push(History { path: e.path() });
            }
        }
        Ok(out)
    }
}
