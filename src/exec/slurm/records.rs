//! What survives the orchestrator process, under `<cache>/slurm/`:
//!
//! - `batches/<batch>/`: one per `sbatch` call: `i` -> the run dir of task `i` (a link),
//!   `job.sbatch`, `sbatch.args`, and `job-id` once `sbatch` answered.
//! - `jobs/<fingerprint key>`: `<batch>` and `<i>`, written *before* `sbatch` runs and removed
//!   only after the attempt's outcome is committed (or given up on). A restarted orchestrator reads
//!   them ([`recover`]) and follows what is still running or finished, so `kill -9` at any
//!   instant never makes it submit finished work again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where task `index` of batch `batch` is recorded for one fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub batch: String,
    pub index: usize,
}

fn records_dir(root: &Path) -> PathBuf {
    root.join("slurm").join("jobs")
}

fn batches_dir(root: &Path) -> PathBuf {
    root.join("slurm").join("batches")
}

pub fn write_record(root: &Path, key: &str, r: &Record) -> std::io::Result<()> {
    let dir = records_dir(root);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, format!("{}\n{}\n", r.batch, r.index))?;
    std::fs::rename(tmp, dir.join(key))
}

pub fn remove_record(root: &Path, key: &str) {
    let _ = std::fs::remove_file(records_dir(root).join(key));
}

/// Every record (key, record); unreadable ones (older formats) are dropped.
pub fn read_records(root: &Path) -> Vec<(String, Record)> {
    let dir = records_dir(root);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let key = e.file_name().to_string_lossy().into_owned();
        if key.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = text.lines();
        match (
            lines.next(),
            lines.next().and_then(|i| i.trim().parse().ok()),
        ) {
            (Some(batch), Some(index)) if !batch.trim().is_empty() => out.push((
                key,
                Record {
                    batch: batch.trim().to_string(),
                    index,
                },
            )),
            _ => {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    out
}

/// One submission's folder.
#[derive(Debug, Clone)]
pub struct Batch {
    pub name: String,
    pub dir: PathBuf,
}

impl Batch {
    pub fn open(root: &Path, name: &str) -> Batch {
        Batch {
            name: name.to_string(),
            dir: batches_dir(root).join(name),
        }
    }

    /// A new, uniquely named batch folder.
    pub fn create(root: &Path) -> std::io::Result<Batch> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let base = batches_dir(root);
        std::fs::create_dir_all(&base)?;
        let mut n = 0u32;
        loop {
            let name = format!("{ms}-{}-{n}", std::process::id());
            let dir = base.join(&name);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Batch { name, dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn link_task(&self, index: usize, run_dir: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(run_dir, self.dir.join(index.to_string()))
    }

    pub fn run_dir(&self, index: usize) -> Option<PathBuf> {
        std::fs::read_link(self.dir.join(index.to_string())).ok()
    }

    /// `id` is the job id `sbatch` printed; `array`: whether the tasks are `id_i`.
    pub fn write_job_id(&self, id: &str, array: bool) -> std::io::Result<()> {
        let tmp = self.dir.join(".job-id.tmp");
        let kind = if array { "array" } else { "job" };
        std::fs::write(&tmp, format!("{id}\n{kind}\n"))?;
        std::fs::rename(tmp, self.dir.join("job-id"))
    }

    /// The SLURM id of task `index`, once `sbatch` has answered.
    pub fn task_id(&self, index: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("job-id")).ok()?;
        let mut lines = text.lines();
        let id = lines.next()?.trim();
        match lines.next()?.trim() {
            "array" => Some(format!("{id}_{index}")),
            _ => Some(id.to_string()),
        }
    }
}

/// Batch folders no record refers to any more (their jobs are all committed or given up on).
pub fn remove_unreferenced_batches(root: &Path) {
    let live: Vec<String> = read_records(root)
        .into_iter()
        .map(|(_, r)| r.batch)
        .collect();
    for e in std::fs::read_dir(batches_dir(root))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            // The links to run dirs are removed, not followed.
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The exit code `job.sh` wrote when the stage's command returned, if it did.
pub fn exit_status(run_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(run_dir.join(super::script::EXIT_STATUS))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A recorded attempt as found on startup, before SLURM is asked about it.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: Record,
    pub run_dir: PathBuf,
    /// `None` when the orchestrator died before writing down what `sbatch` answered.
    pub task_id: Option<String>,
}

/// Records whose attempt may still be followed: their run dir exists and their fingerprint is not
/// committed yet (`committed(key)`); the others are removed.
pub fn recover(root: &Path, committed: impl Fn(&str) -> bool) -> HashMap<String, Found> {
    let mut out = HashMap::new();
    for (key, record) in read_records(root) {
        let batch = Batch::open(root, &record.batch);
        let run_dir = batch.run_dir(record.index).filter(|d| d.is_dir());
        match run_dir {
            Some(run_dir) if !committed(&key) => {
                let task_id = batch.task_id(record.index);
                out.insert(
                    key,
                    Found {
                        record,
                        run_dir,
                        task_id,
                    },
                );
            }
            _ => remove_record(root, &key),
        }
    }
    out
}
