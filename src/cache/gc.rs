//! `orchestrator gc` ([`gc`]): keep what the latest record of every instance in every
//! pipeline's history reaches (its manifest, objects, views, latest run dir, work dir); remove
//! the rest. The caller holds the cache lock, so no run is writing meanwhile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::history::History;
use super::store::remove_any;
use super::{Cache, ObjKind, Result};

#[derive(Debug, Default)]
pub struct GcReport {
    pub kept_manifests: usize,
    pub removed_manifests: usize,
    pub kept_objects: usize,
    pub removed_objects: usize,
    pub removed_bytes: u64,
    pub kept_bytes: u64,
    pub removed_run_dirs: usize,
    pub removed_work_dirs: usize,
    pub removed_views: usize,
    pub dry_run: bool,
}

pub fn gc(cache: &Cache, dry_run: bool) -> Result<GcReport> {
    let mut rep = GcReport {
        dry_run,
        ..Default::default()
    };
    let mut keep_keys = BTreeSet::new();
    let mut keep_runs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut keep_work = BTreeSet::new();
    for h in History::all(&cache.root)? {
        for r in h.latest_committed()?.values() {
            keep_keys.insert(r.key.clone());
            keep_runs.extend(h.run_dir(r));
        }
        for r in h.latest()?.values() {
            keep_work.insert(r.key.clone());
            keep_runs.extend(h.run_dir(r));
        }
    }
    let mut keep_objects = BTreeSet::new();
    for key in cache.store.manifest_keys()? {
        let m = if keep_keys.contains(&key) {
            cache.store.read_manifest(&key)?
        } else {
            None
        };
        match m {
            Some(m) => {
                rep.kept_manifests += 1;
                for o in m.outputs.values() {
                    keep_objects.insert(o.digest.clone());
                    if o.kind == ObjKind::Dir {
                        if let Ok(t) = cache.store.read_tree(&o.digest) {
                            keep_objects.extend(t.entries.into_iter().map(|e| e.digest));
                        }
                    }
                }
                keep_objects.extend(m.metrics);
            }
            None => {
                rep.removed_manifests += 1;
                if !dry_run {
                    cache.drop_manifest(&key)?;
                }
            }
        }
    }
    rep.removed_views = sweep(&cache.root.join("views"), dry_run, |name, _| {
        keep_objects.contains(name)
    });
    for (digest, size) in cache.store.all_objects()? {
        if keep_objects.contains(&digest) {
            rep.kept_objects += 1;
            rep.kept_bytes += size;
        } else {
            rep.removed_objects += 1;
            rep.removed_bytes += size;
            if !dry_run {
                cache.store.remove_object(&digest);
                cache.index.remove_stat(&Cache::object_stat_key(&digest))?;
            }
        }
    }
    rep.removed_run_dirs = sweep(&cache.root.join("runs"), dry_run, |_, p| {
        keep_runs.contains(p)
    });
    rep.removed_work_dirs = sweep(&cache.root.join("work"), dry_run, |name, _| {
        keep_work.contains(name)
    });
    sweep(&cache.root.join("tmp"), dry_run, |_, _| false);
    if !dry_run {
        cache.index.flush()?;
    }
    Ok(rep)
}

/// Remove the entries of `dir` that `keep(name, path)` rejects; returns how many.
fn sweep(dir: &Path, dry_run: bool, keep: impl Fn(&str, &Path) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if !keep(&name, &p) {
            n += 1;
            if !dry_run {
                let _ = remove_any(&p);
            }
        }
    }
    n
}
