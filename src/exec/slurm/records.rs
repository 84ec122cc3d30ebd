//! Re-attach records: `<cache>/slurm/jobs/<fingerprint key>` holds the job id and run dir of a
//! submitted attempt, so that a restarted orchestrator follows it instead of submitting again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::super::backend::{JobId, JobSpec};
use super::super::job::Prepared;
use super::super::resources::Grant;
use crate::cache::Cache;

pub(super) fn records_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("slurm").join("jobs")
}

/// Run dirs are `<root>/runs/<key>.<millis>`.
pub(super) fn key_of_run_dir(run_dir: &Path) -> Option<String> {
    run_dir
        .file_name()?
        .to_str()?
        .split('.')
        .next()
        .map(str::to_string)
}

/// A job an earlier orchestrator process submitted for fingerprint `key` and did not see end:
/// the attempt as it was prepared then, and the job id. The scheduler offers it to the backend's
/// `reattach` before submitting anew.
pub fn recorded_attempt(
    cache: &Cache,
    key: &str,
    job: JobId,
    stage_id: &str,
    grant: &Grant,
) -> Option<(Prepared, String)> {
    let text = std::fs::read_to_string(records_dir(&cache.root).join(key)).ok()?;
    let mut lines = text.lines();
    let id = lines.next()?.trim().to_string();
    let run_dir = PathBuf::from(lines.next()?.trim());
    if id.is_empty() || !run_dir.is_dir() {
        return None;
    }
    let cuda = !grant.gpus.is_empty();
    let spec = JobSpec {
        job,
        stage_id: stage_id.to_string(),
        argv: Vec::new(),
        env: Vec::new(),
        cwd: run_dir.clone(),
        log: run_dir.join("log"),
        run_dir: run_dir.clone(),
        outputs: BTreeMap::new(),
        timeout: None,
    };
    let prepared = Prepared {
        spec,
        out_dir: run_dir.join("out"),
        work_dir: cache.work_dir(key),
        progress: run_dir.join("progress.jsonl"),
        run_dir,
        device: if cuda { grant.device() } else { "cpu".into() },
    };
    Some((prepared, id))
}
