//! `orchestrator cache ...`: verify (and repair) the store, rebuild the index from it.

use std::path::PathBuf;

use super::Global;
use crate::cache::{verify, Cache};
use crate::exit::{CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-hash every object, check every manifest; report what is corrupt or missing.
    Verify {
        /// Delete corrupt objects and the manifests that need them (those stages run again).
        #[arg(long)]
        repair: bool,
        /// A pipeline file, only to find its cache (default: from the current folder upwards).
        pipeline: Option<PathBuf>,
    },
    /// Recreate the index from the manifests in the store (after a lost or corrupt index).
    RebuildIndex {
        /// A pipeline file, only to find its cache.
        pipeline: Option<PathBuf>,
    },
}

pub fn run(c: Command, g: &Global) -> CliResult<u8> {
    match c {
        Command::Verify { repair, pipeline } => {
            let root = super::cache_root_here(g, pipeline.as_deref());
            let (cache, _lock) = super::open_locked(&root)?;
            let r = verify(&cache, repair)?;
            for (path, msg) in &r.corrupt_objects {
                println!("corrupt object {path}: {msg}");
            }
            for (key, inst, msg) in &r.broken_manifests {
                println!("broken manifest {key} ({inst}): {msg}");
            }
            let size = super::gc::human_bytes(r.bytes);
            if r.is_clean() {
                println!(
                    "ok: {} objects ({size}) and {} manifests verified",
                    r.objects, r.manifests
                );
                return Ok(0);
            }
            if repair {
                println!(
                    "repaired: removed {} corrupt objects and {} manifests; those stages will run again",
                    r.corrupt_objects.len(),
                    r.broken_manifests.len()
                );
                return Ok(0);
            }
            Err(CliError::environment(format!(
                "error: {} corrupt objects, {} broken manifests in {}\nhint: `orchestrator cache verify --repair` removes them so the stages run again",
                r.corrupt_objects.len(),
                r.broken_manifests.len(),
                cache.root.display()
            )))
        }
        Command::RebuildIndex { pipeline } => {
            let root = super::cache_root_here(g, pipeline.as_deref());
            let root = Cache::prepare_layout(&root)?;
            let lock = crate::cache::CacheLock::acquire(&root)?;
            // The index may be unreadable: start from nothing, the manifests are the truth.
            let index_dir = root.join("index");
            let _ = std::fs::remove_dir_all(&index_dir);
            drop(lock);
            let (cache, _lock) = super::open_locked(&root)?;
            let n = crate::cache::rebuild_index(&cache)?;
            println!(
                "rebuilt the index of {} from {n} manifests",
                cache.root.display()
            );
            Ok(0)
        }
    }
}
