//! What the cluster is: `sbatch` on PATH, partition sizes (`sinfo`), and whether the cache root
//! is storage every node sees.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `sbatch` when it is on PATH, else an error naming PATH and the way out.
pub fn find_sbatch() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("sbatch");
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(format!(
        "`--executor slurm` needs `sbatch`, `squeue`, `scancel` and `scontrol`, but `sbatch` is not on PATH ({})\nhint: run on a SLURM login node (or load the slurm module), or use `--executor local`",
        path.to_string_lossy()
    ))
}

/// Nodes in `partition` (the default partition when `None`), from `sinfo`.
pub fn partition_nodes(partition: Option<&str>) -> Result<u32, String> {
    let mut c = Command::new("sinfo");
    c.args(["-h", "-o", "%P %D"]);
    if let Some(p) = partition {
        c.args(["-p", p]);
    }
    let out = c.output().map_err(|e| format!("cannot run `sinfo`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`sinfo` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0u32;
    let mut seen = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(name), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        // Without -p, only the default partition (marked `*`) counts.
        if partition.is_none() && !name.ends_with('*') {
            continue;
        }
        seen = true;
        total += n.parse::<u32>().unwrap_or(0);
    }
    if !seen {
        return Err(match partition {
            Some(p) => format!("SLURM partition `{p}` does not exist (sinfo lists none)\nhint: fix `executor.slurm.partition` or `resources.slurm.partition`; `sinfo -s` lists the partitions"),
            None => "SLURM has no default partition\nhint: set `executor: {kind: slurm, slurm: {partition: ...}}`".to_string(),
        });
    }
    Ok(total)
}

/// Whether `path` is node-local storage: under /tmp, /var/tmp, /dev/shm or /run, or on tmpfs.
// `f_type`'s integer type differs between libc targets, hence the casts.
#[allow(clippy::unnecessary_cast)]
pub fn is_node_local(path: &Path) -> bool {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if ["/tmp", "/var/tmp", "/dev/shm", "/run"]
        .iter()
        .any(|l| p.starts_with(l))
    {
        return true;
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    r == 0 && s.f_type as i64 == libc::TMPFS_MAGIC as i64
}

/// Jobs run on other nodes and write into the cache's run and work dirs, so the cache must be
/// shared. A node-local path is refused only when some partition this pipeline uses has more
/// than one node (on a one-node cluster every path is "shared").
pub fn check_shared_root(root: &Path, partitions: &[Option<String>]) -> Result<(), String> {
    if !is_node_local(root) {
        return Ok(());
    }
    for part in partitions {
        let n = partition_nodes(part.as_deref())?;
        if n > 1 {
            return Err(format!(
                "the cache root {} is node-local storage (/tmp-like or tmpfs), but SLURM partition `{}` has {n} nodes: jobs on other nodes could not read their inputs or write their outputs\nhint: put the cache on a shared filesystem (home, project or scratch space) with `--cache-dir` or ORCHESTRATOR_CACHE",
                root.display(),
                part.as_deref().unwrap_or("(default)")
            ));
        }
    }
    Ok(())
}
