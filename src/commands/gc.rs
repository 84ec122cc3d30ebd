//! `orchestrator gc`: remove what no pipeline's latest runs reach; report sizes.

use std::path::PathBuf;

use super::Global;
use crate::exit::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// A pipeline file, only to find its cache (default: from the current folder upwards).
    pub pipeline: Option<PathBuf>,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let root = super::cache_root_here(g, args.pipeline.as_deref());
    let (cache, _lock) = super::open_locked(&root)?;
    let r = crate::cache::gc(&cache, args.dry_run)?;
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} objects ({}), {} manifests, {} run dirs, {} work dirs, {} views",
        r.removed_objects,
        human_bytes(r.removed_bytes),
        r.removed_manifests,
        r.removed_run_dirs,
        r.removed_work_dirs,
        r.removed_views
    );
    println!(
        "kept {} objects ({}), {} manifests in {}",
        r.kept_objects,
        human_bytes(r.kept_bytes),
        r.kept_manifests,
        cache.root.display()
    );
    Ok(0)
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}
