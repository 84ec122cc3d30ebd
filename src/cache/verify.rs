//! `cache verify [--repair]` ([`verify`]): re-hash every object, check that every manifest's
//! objects exist; `--repair` deletes what is corrupt and the manifests that need it, so those
//! stages simply run again. [`rebuild_index`] recreates the sled index from `manifests/`.

use std::collections::BTreeSet;

use rayon::prelude::*;

use super::hash::hash_file;
use super::{Cache, ObjKind, Result};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub objects: usize,
    pub bytes: u64,
    pub manifests: usize,
    /// (object path, problem)
    pub corrupt_objects: Vec<(String, String)>,
    /// (manifest key, instance, problem)
    pub broken_manifests: Vec<(String, String, String)>,
    pub repaired: bool,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt_objects.is_empty() && self.broken_manifests.is_empty()
    }
}

pub fn verify(cache: &Cache, repair: bool) -> Result<VerifyReport> {
    let mut rep = VerifyReport {
        repaired: repair,
        ..Default::default()
    };
    let objects = cache.store.all_objects()?;
    rep.objects = objects.len();
    rep.bytes = objects.iter().map(|(_, s)| s).sum();
    let bad: Vec<(String, String)> = objects
        .par_iter()
        .filter_map(|(digest, _)| {
            let p = cache.store.object_path(digest);
            match hash_file(&p) {
                Ok(actual) if &actual == digest => None,
                Ok(actual) => Some((
                    digest.clone(),
                    format!("{}: content hashes to {actual}", p.display()),
                )),
                Err(e) => Some((digest.clone(), format!("{}: {e}", p.display()))),
            }
        })
        .collect();
    let bad_set: BTreeSet<&str> = bad.iter().map(|(d, _)| d.as_str()).collect();
    for key in cache.store.manifest_keys()? {
        rep.manifests += 1;
        let Some(m) = cache.store.read_manifest(&key)? else {
            rep.broken_manifests
                .push((key.clone(), String::new(), "unreadable manifest".into()));
            if repair {
                cache.drop_manifest(&key)?;
            }
            continue;
        };
        let mut problem = None;
        let mut check = |d: &str, what: &str| {
            if problem.is_none() {
                if bad_set.contains(d) {
                    problem = Some(format!("{what}: object {d} is corrupt"));
                } else if !cache.store.has(d) {
                    problem = Some(format!("{what}: object {d} is missing"));
                }
            }
        };
        for (name, o) in &m.outputs {
            check(&o.digest, &format!("output `{name}`"));
            if o.kind == ObjKind::Dir
                && cache.store.has(&o.digest)
                && !bad_set.contains(o.digest.as_str())
            {
                match cache.store.read_tree(&o.digest) {
                    Ok(t) => {
                        for e in &t.entries {
                            check(&e.digest, &format!("output `{name}` file `{}`", e.path));
                        }
                    }
                    Err(e) => check("", &format!("output `{name}` tree: {e}")),
                }
            }
        }
        if let Some(d) = &m.metrics {
            check(d, "metrics.json");
        }
        if let Some(p) = problem {
            rep.broken_manifests
                .push((key.clone(), m.instance.clone(), p));
            if repair {
                cache.drop_manifest(&key)?;
            }
        }
    }
    if repair {
        for (d, _) in &bad {
            cache.store.remove_object(d);
            cache.index.remove_stat(&Cache::object_stat_key(d))?;
        }
        cache.index.flush()?;
    }
    rep.corrupt_objects = bad
        .into_iter()
        .map(|(d, msg)| (cache.store.object_path(&d).display().to_string(), msg))
        .collect();
    Ok(rep)
}

/// Recreate the manifest index from `manifests/`; returns how many entries it holds.
pub fn rebuild_index(cache: &Cache) -> Result<usize> {
    cache.index.clear_manifests()?;
    let mut n = 0;
    for key in cache.store.manifest_keys()? {
        if let Some(m) = cache.store.read_manifest(&key)? {
            cache.index.put_manifest(&m)?;
            n += 1;
        }
    }
    cache.index.flush()?;
    Ok(n)
}
