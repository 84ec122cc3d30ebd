//! What the cluster is, read once before the first submission ([`ClusterInfo::read`]: one `sinfo`
//! and one `scontrol show config`): the nodes of each partition with their CPUs, memory and GPUs,
//! the partitions' time limits, the largest job array, whether accounting (`sacct`) is on. Every
//! stage's request is checked against it ([`check_requests`]) and the cache root against the
//! partitions' sizes ([`check_shared_root`]), so an impossible request fails before anything is
//! submitted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::SlurmError;
use crate::pipeline::{Pipeline, Resources as Ask};

/// `sbatch` when it is on PATH, else an error naming PATH and the way out.
pub fn find_sbatch() -> Result<PathBuf, SlurmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("sbatch");
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(SlurmError::Environment(format!(
        "`--executor slurm` needs `sbatch`, `squeue`, `scancel` and `scontrol`, but `sbatch` is not on PATH ({})\nhint: run on a SLURM login node (or load the slurm module), or use `--executor local`",
        path.to_string_lossy()
    )))
}

/// One node as a partition offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub cpus: u32,
    pub mem_mb: u64,
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub name: String,
    pub default: bool,
    pub nodes: Vec<NodeInfo>,
    /// `MaxTime` in minutes; `None` = unlimited.
    pub max_time_min: Option<u64>,
}

impl Partition {
    /// The node with the most of `what`, and that amount.
    fn largest(&self, what: impl Fn(&NodeInfo) -> u64) -> Option<(&NodeInfo, u64)> {
        self.nodes.iter().map(|n| (n, what(n))).max_by_key(|x| x.1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    pub partitions: Vec<Partition>,
    /// `MaxArraySize`: array indices run from 0 to this minus one.
    pub max_array_size: usize,
    /// `AccountingStorageType` is not `none`: `sacct` knows finished jobs.
    pub accounting: bool,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, SlurmError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| SlurmError::Environment(format!("cannot run `{cmd}`: {e}")))?;
    if !out.status.success() {
        return Err(SlurmError::Environment(format!(
            "`{cmd} {}` failed: {}\nhint: is slurmctld up? (`scontrol ping`)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl ClusterInfo {
    pub fn read() -> Result<ClusterInfo, SlurmError> {
        let nodes = run("sinfo", &["-h", "-N", "-o", "%P|%N|%c|%m|%G|%l"])?;
        let config = run("scontrol", &["show", "config"])?;
        let (max_array_size, accounting) = parse_config(&config);
        Ok(ClusterInfo {
            partitions: parse_sinfo(&nodes),
            max_array_size,
            accounting,
        })
    }

    /// The partition a job with `--partition=name` (or none: the default one) goes to.
    pub fn partition(&self, name: Option<&str>) -> Result<&Partition, SlurmError> {
        let found = match name {
            Some(n) => self.partitions.iter().find(|p| p.name == n),
            None => self.partitions.iter().find(|p| p.default),
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = self.partitions.iter().map(|p| p.name.as_str()).collect();
            SlurmError::Request(match name {
                Some(n) => format!("SLURM partition `{n}` does not exist (the cluster has: {})\nhint: fix `executor.slurm.partition` or `resources.slurm.partition`", names.join(", ")),
                None => format!("SLURM has no default partition (the cluster has: {})\nhint: set `executor: {{kind: slurm, slurm: {{partition: ...}}}}`", names.join(", ")),
            })
        })
    }
}

/// `sinfo -h -N -o '%P|%N|%c|%m|%G|%l'`: one line per node and partition; the default partition
/// ends in `*`; GRES like `gpu:4`, `gpu:a100:4(S:0-1)`, `(null)`.
pub fn parse_sinfo(text: &str) -> Vec<Partition> {
    let mut parts: Vec<Partition> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() < 6 || f[0].is_empty() {
            continue;
        }
        let default = f[0].ends_with('*');
        let name = f[0].trim_end_matches('*').to_string();
        let node = NodeInfo {
            name: f[1].to_string(),
            cpus: f[2].trim_end_matches('+').parse().unwrap_or(0),
            mem_mb: f[3].trim_end_matches('+').parse().unwrap_or(0),
            gpus: gres_gpus(f[4]).unwrap_or(0),
        };
        let i = match parts.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                parts.push(Partition {
                    name,
                    default,
                    nodes: Vec::new(),
                    max_time_min: parse_time_min(f[5]),
                });
                parts.len() - 1
            }
        };
        if !parts[i].nodes.iter().any(|n| n.name == node.name) {
            parts[i].nodes.push(node);
        }
    }
    parts
}

/// `MaxArraySize` and whether accounting is on, from `scontrol show config`.
pub fn parse_config(text: &str) -> (usize, bool) {
    let mut max_array = 1001;
    let mut accounting = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "MaxArraySize" => max_array = v.trim().parse().unwrap_or(max_array),
            "AccountingStorageType" => accounting = !v.trim().ends_with("/none"),
            _ => {}
        }
    }
    (max_array, accounting)
}

/// GPUs in a GRES list (`gpu:4`, `gpu:a100:2,nic:1`, `gpu:a100:4(S:0-1)`); `None` when it names
/// none.
pub fn gres_gpus(gres: &str) -> Option<u32> {
    let mut total = None;
    for item in gres.split(',') {
        let item = item.split('(').next().unwrap_or("").trim();
        let mut f = item.split(':');
        if f.next() != Some("gpu") {
            continue;
        }
        let n = match f.next_back() {
            Some(last) => last.parse().unwrap_or(1),
            None => 1,
        };
        total = Some(total.unwrap_or(0) + n);
    }
    total
}

/// A SLURM time (`infinite`, `30`, `30:00`, `2:00:00`, `1-12:00:00`) in whole minutes.
pub fn parse_time_min(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("infinite") || s.eq_ignore_ascii_case("unlimited") {
        return None;
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, s),
    };
    let f: Vec<u64> = rest
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let secs = match (s.contains('-'), f.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (_, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some((days * 86_400 + secs).div_ceil(60))
}

/// A `--mem` value (`4000`, `4000M`, `4G`, `1T`) in MB.
fn parse_mem_mb(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1.0 / 1024.0),
        'M' | 'm' => (&s[..s.len() - 1], 1.0),
        'G' | 'g' => (&s[..s.len() - 1], 1024.0),
        'T' | 't' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|n| (n * mult).ceil() as u64)
}

/// What one stage asks of a node, with its `slurm:` options taking precedence over `resources`.
struct Request {
    gpus: u32,
    cpus: u32,
    mem_mb: Option<u64>,
    time_min: Option<u64>,
}

fn request(ask: &Ask, opts: &BTreeMap<String, String>) -> Request {
    let gpus = match (opts.get("gres"), opts.get("gpus")) {
        (Some(g), _) => gres_gpus(g).unwrap_or(0),
        (None, Some(g)) => g
            .rsplit(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        (None, None) => ask.gpus,
    };
    Request {
        gpus,
        cpus: opts
            .get("cpus-per-task")
            .and_then(|c| c.parse().ok())
            .unwrap_or(ask.cpus.max(1)),
        mem_mb: match opts.get("mem") {
            Some(m) => parse_mem_mb(m),
            None => ask.mem_gb.map(|g| (g * 1024.0).ceil() as u64),
        },
        time_min: match opts.get("time") {
            Some(t) => parse_time_min(t),
            None => ask.time_min.map(u64::from),
        },
    }
}

/// Every stage's request against the nodes of the partition it goes to: all the stages that ask
/// for more than the largest node has (or a longer time than the partition allows), each named
/// with its location and that node.
pub fn check_requests(
    info: &ClusterInfo,
    p: &Pipeline,
    options: &[BTreeMap<String, String>],
) -> Result<(), SlurmError> {
    let mut problems = Vec::new();
    for (inst, opts) in p.instances.iter().zip(options) {
        let part = info.partition(opts.get("partition").map(String::as_str))?;
        let r = request(&inst.resources, opts);
        let mut over = |what: &str, asked: u64, most: Option<(&NodeInfo, u64)>, key: &str| {
            if let Some((node, has)) = most.filter(|(_, has)| asked > *has) {
                problems.push(format!(
                    "stage `{}` ({}) asks for {asked} {what}, but the largest node of SLURM partition `{}` ({}) has {has}\nhint: lower its `resources.{key}` to at most {has}, or send it to a partition with bigger nodes (`resources.slurm.partition`; `sinfo -N -o '%P %N %c %m %G'` lists them)",
                    inst.id, inst.location, part.name, node.name
                ));
            }
        };
        over(
            "GPUs",
            r.gpus.into(),
            part.largest(|n| n.gpus.into()),
            "gpus",
        );
        over(
            "CPUs",
            r.cpus.into(),
            part.largest(|n| n.cpus.into()),
            "cpus",
        );
        if let Some(mb) = r.mem_mb {
            over("MB of memory", mb, part.largest(|n| n.mem_mb), "mem_gb");
        }
        if let (Some(t), Some(max)) = (r.time_min, part.max_time_min) {
            if t > max {
                problems.push(format!(
                    "stage `{}` ({}) asks for {t} minutes, but SLURM partition `{}` allows at most {max}\nhint: lower its `resources.time_min`, or send it to a partition with a longer limit (`sinfo -o '%P %l'`)",
                    inst.id, inst.location, part.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SlurmError::Request(problems.join("\nerror: ")))
    }
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
pub fn check_shared_root(
    root: &Path,
    info: &ClusterInfo,
    partitions: &[Option<String>],
) -> Result<(), SlurmError> {
    if !is_node_local(root) {
        return Ok(());
    }
    for name in partitions {
        let part = info.partition(name.as_deref())?;
        let n = part.nodes.len();
        if n > 1 {
            return Err(SlurmError::Environment(format!(
                "the cache root {} is node-local storage (/tmp-like or tmpfs), but SLURM partition `{}` has {n} nodes: jobs on other nodes could not read their inputs or write their outputs\nhint: put the cache on a shared filesystem (home, project or scratch space) with `--cache-dir` or ORCHESTRATOR_CACHE",
                root.display(),
                part.name
            )));
        }
    }
    Ok(())
}
