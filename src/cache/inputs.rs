//! The input-immutability mechanism (ARCHITECTURE.md): a stored object never changes, whatever
//! a stage does with the paths it is given, root included (root writes through a 0444 mode).
//!
//! - Prevention, on request (`ORCHESTRATOR_READONLY_INPUTS=1`) where the system allows it: a
//!   local stage runs in a mount namespace of its own in which the cache's `views/` and
//!   `objects/` are read-only bind mounts, so a write to an input fails with `EROFS` whoever
//!   runs it (see `exec::reaper`; needs CAP_SYS_ADMIN).
//! - Detection, always (`guard_inputs` at launch, `check_guards` when the stage ends): every
//!   input a stage reads is a shared, read-only view (`views/<digest>/<name>`, hardlinks of the
//!   objects). At launch each file is checked against its digest (through the stat cache) and
//!   its stat tuple (size, mtime, inode, ctime) recorded; when the stage ends it is compared
//!   (a re-hash only when it changed). A stage whose input changed fails, naming it; a damaged
//!   object is removed from the store with every manifest that produced or consumed it, so
//!   those stages run again and nothing ever takes the changed bytes for the original (a stage
//!   that read it concurrently fails its own check). A replaced or deleted view is rebuilt.
//!   Nothing is copied or created per stage, so this costs two `stat`s per input file.
//! - An external input (read in place): at launch its content is checked against the
//!   fingerprint (through the stat cache) and its identity (the stat tuples of its files)
//!   recorded; a change by the time the stage ends fails the stage, nothing is committed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash::hash_file;
use super::{Cache, CacheError, ObjKind, Result};

/// What is checked when a stage ends (written to `<run dir>/guards.json` at launch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Guards {
    pub inputs: Vec<Guard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Guard {
    /// One file of a store view the stage read: its content digest, whether it is the object
    /// itself (a hardlink) or a copy (executables), and its stat tuple at launch. (Times are i64
    /// nanoseconds: internally tagged enums cannot hold i128.)
    View {
        input: String,
        /// The view the input names (`views/<digest>/<name>`), rebuilt when damaged.
        view: PathBuf,
        path: PathBuf,
        digest: String,
        shared: bool,
        size: u64,
        mtime_ns: i64,
        ino: u64,
        ctime_ns: i64,
    },
    /// An external input read in place: the identity of its files at launch.
    External {
        input: String,
        path: PathBuf,
        identity: String,
    },
}

/// (size, mtime ns, inode, ctime ns): what any write, replace or `touch` changes.
fn stat_tuple(m: &std::fs::Metadata) -> (u64, i64, u64, i64) {
    (
        m.len(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ino(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

impl Guards {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("guards.json")
    }

    /// Written only when there is something to check (a stage with no inputs writes nothing).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        if self.inputs.is_empty() {
            return Ok(());
        }
        let p = Self::path(run_dir);
        let bytes = serde_json::to_vec(self).expect("guards serialize");
        std::fs::write(&p, bytes).map_err(CacheError::io("cannot write", &p))
    }

    /// The guards of an attempt (none when the file is missing: an attempt of an older build).
    pub fn read(run_dir: &Path) -> Guards {
        std::fs::read(Self::path(run_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Only the guards of store views (what a failed attempt is still checked for).
    pub fn views_only(self) -> Guards {
        Guards {
            inputs: self
                .inputs
                .into_iter()
                .filter(|g| matches!(g, Guard::View { .. }))
                .collect(),
        }
    }
}

impl Cache {
    /// The digest of the view `path` (`<root>/views/<digest>/<name>`), when it is one.
    pub fn view_digest(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(self.root.join("views")).ok()?;
        let mut c = rest.components();
        let digest = c.next()?.as_os_str().to_str()?.to_string();
        (c.next().is_some() && c.next().is_none()).then_some(digest)
    }

    /// Check the store view `view` (object `digest`) that input `input` of `stage` reads, and
    /// add its files to `guards`. A view whose files were replaced or removed is rebuilt; an
    /// object that is damaged is forgotten (see [`Cache::forget_object`]) and an error says so.
    pub fn guard_view(
        &self,
        stage: &str,
        input: &str,
        view: &Path,
        digest: &str,
        guards: &mut Vec<Guard>,
    ) -> Result<()> {
        let kind = if view.is_dir() {
            ObjKind::Dir
        } else {
            ObjKind::File
        };
        let name = view.file_name().and_then(|n| n.to_str()).unwrap_or("data");
        let files = |c: &Cache| -> Result<Vec<(PathBuf, String)>> {
            Ok(match kind {
                ObjKind::File => vec![(view.to_path_buf(), digest.to_string())],
                ObjKind::Dir => c
                    .store
                    .read_tree(digest)?
                    .entries
                    .into_iter()
                    .map(|e| (view.join(super::decode_path(&e.path)), e.digest))
                    .collect(),
            })
        };
        // Each view file and its object, stated once.
        let stats = |list: &[(PathBuf, String)]| -> Vec<_> {
            (list.iter())
                .map(|(p, d)| {
                    let obj = std::fs::metadata(self.store.object_path(d));
                    (std::fs::symlink_metadata(p), obj)
                })
                .collect()
        };
        let mut list = files(self)?;
        let mut metas = stats(&list);
        // Views are shared: one a user or a stage broke (a file replaced, removed, or a
        // copied executable changed) is rebuilt from the objects before anyone reads it.
        if metas.iter().any(|(v, o)| !Self::view_file_sound(v, o)) {
            let _ = super::store::remove_any(view);
            self.store.view(digest, kind, name)?;
            list = files(self)?;
            metas = stats(&list);
        }
        for ((path, d), (m, obj)) in list.into_iter().zip(metas) {
            let m = m.map_err(CacheError::io("cannot read", &path))?;
            let obj = obj.ok().filter(|o| o.ino() == m.ino());
            let shared = obj.is_some();
            if let Some(obj) = obj {
                if let Some(problem) = self.check_blob_stat(&d, &obj, false)? {
                    let dropped = self.forget_object(&d)?;
                    return Err(CacheError::Refused(format!(
                        "input `{input}` of stage `{stage}` is damaged in the store ({problem}); it was removed{}, and the stage that produced it runs again next time\nhint: run again",
                        dropped_suffix(&dropped)
                    )));
                }
            } else if !hash_file(&path).is_ok_and(|h| h == d) {
                return Err(CacheError::Refused(format!(
                    "input `{input}` of stage `{stage}`: {} does not hold its content\nhint: run again",
                    path.display()
                )));
            }
            let (size, mtime_ns, ino, ctime_ns) = stat_tuple(&m);
            guards.push(Guard::View {
                input: input.to_string(),
                view: view.to_path_buf(),
                path,
                digest: d,
                shared,
                size,
                mtime_ns,
                ino,
                ctime_ns,
            });
        }
        Ok(())
    }

    /// A view file (its `lstat`) that is still a regular file: its object (`stat`) itself, or
    /// a copy of it (cheap checks only; contents are checked by the caller).
    fn view_file_sound(
        view: &std::io::Result<std::fs::Metadata>,
        obj: &std::io::Result<std::fs::Metadata>,
    ) -> bool {
        let Ok(m) = view else {
            return false;
        };
        if !m.file_type().is_file() {
            return false;
        }
        match obj {
            Ok(o) if o.ino() == m.ino() => true,
            // A copy (executables are copied so that their mode can differ): same size at least.
            Ok(o) => m.nlink() == 1 && o.len() == m.len(),
            Err(_) => true,
        }
    }

    /// The identity of an external input now: blake3 over the (path, size, mtime, inode, ctime)
    /// of every file in it (stats only, nothing is read). Any write, replace or `touch` changes
    /// it, even one that restores the content.
    pub fn external_identity(&self, path: &Path) -> Result<String> {
        let meta = std::fs::metadata(path).map_err(CacheError::io("cannot read input", path))?;
        let mut h = blake3::Hasher::new();
        let mut add = |rel: &str, m: &std::fs::Metadata| {
            let (size, mtime, ino, ctime) = stat_tuple(m);
            h.update(rel.as_bytes());
            h.update(&[0]);
            h.update(&size.to_le_bytes());
            h.update(&mtime.to_le_bytes());
            h.update(&ino.to_le_bytes());
            h.update(&ctime.to_le_bytes());
        };
        if meta.is_dir() {
            let mut files = super::store::walk_files(path)?;
            files.sort();
            for (rel, abs) in files {
                let m =
                    std::fs::metadata(&abs).map_err(CacheError::io("cannot read input", &abs))?;
                add(&rel, &m);
            }
        } else {
            add("", &meta);
        }
        Ok(h.finalize().to_hex().to_string())
    }

    /// Check what `guards` recorded; `Some(message)` names the first input that changed (a
    /// damaged object is forgotten, a damaged view rebuilt; see the module doc).
    pub fn check_guards(&self, stage: &str, guards: &Guards) -> Result<Option<String>> {
        for g in &guards.inputs {
            match g {
                Guard::View {
                    input,
                    view,
                    path,
                    digest,
                    shared,
                    size,
                    mtime_ns,
                    ino,
                    ctime_ns,
                } => {
                    let obj = self.store.object_path(digest);
                    if *shared && !obj.is_file() {
                        return Ok(Some(format!(
                            "stage `{stage}`: its input `{input}` was found damaged in the store while it ran (by another stage), so its result is not committed\nhint: run again"
                        )));
                    }
                    let now = std::fs::symlink_metadata(path).ok();
                    let (same_file, unchanged) = match &now {
                        Some(m) => (
                            m.file_type().is_file() && m.ino() == *ino,
                            stat_tuple(m) == (*size, *mtime_ns, *ino, *ctime_ns),
                        ),
                        None => (false, false),
                    };
                    if unchanged {
                        continue;
                    }
                    if !same_file {
                        let _ = super::store::remove_any(view);
                        return Ok(Some(format!(
                            "stage `{stage}` removed or replaced its input `{input}` ({}), a read-only file shared with other stages; the view was rebuilt, and the result is not committed\nhint: a stage must not change its inputs: copy one before changing it",
                            path.display()
                        )));
                    }
                    // Same inode, new stat: a write, or only a new hard link (ctime).
                    if hash_file(path).is_ok_and(|h| &h == digest) {
                        continue;
                    }
                    let what = if *shared {
                        let dropped = self.forget_object(digest)?;
                        format!(
                            "the damaged object was removed from the store{}, so the stage that produced it runs again",
                            dropped_suffix(&dropped)
                        )
                    } else {
                        let _ = super::store::remove_any(view);
                        "the view was rebuilt".to_string()
                    };
                    return Ok(Some(format!(
                        "stage `{stage}` modified its input `{input}` ({}), a read-only file shared with the store; {what}\nhint: a stage must not write to its inputs: copy one before changing it",
                        path.display()
                    )));
                }
                Guard::External {
                    input,
                    path,
                    identity,
                } => {
                    let now = self.external_identity(path).unwrap_or_default();
                    if &now != identity {
                        return Ok(Some(format!(
                            "stage `{stage}`: input `{input}` ({}) changed while the stage ran, so its result is not committed (it may have read a mix of old and new content)\nhint: run again once the input no longer changes",
                            path.display()
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Remove a damaged object (its file, views and stat entry) and drop every manifest that
    /// produced it (as an output, or a file of an output folder) or consumed it (its
    /// fingerprint's inputs), so those stages run again. Returns their instances.
    pub fn forget_object(&self, digest: &str) -> Result<Vec<String>> {
        self.store.remove_object(digest);
        self.index.remove_stat(&Self::object_stat_key(digest))?;
        let mut manifests = Vec::new();
        for key in self.store.manifest_keys()? {
            if let Some(m) = self.store.read_manifest(&key)? {
                manifests.push(m);
            }
        }
        // The damaged digest, and every folder (tree) that holds it.
        let mut gone = std::collections::BTreeSet::from([digest.to_string()]);
        for m in &manifests {
            for o in m.outputs.values() {
                if o.kind == ObjKind::Dir {
                    if let Ok(t) = self.store.read_tree(&o.digest) {
                        if t.entries.iter().any(|e| e.digest == digest) {
                            gone.insert(o.digest.clone());
                        }
                    }
                }
            }
        }
        let mut dropped = Vec::new();
        for m in manifests {
            let names = m.metrics.iter().any(|d| gone.contains(d))
                || m.outputs.values().any(|o| gone.contains(&o.digest))
                || m.fingerprint.inputs.values().any(|d| gone.contains(d));
            if names {
                self.drop_manifest(&m.key)?;
                dropped.push(format!("`{}`", m.instance));
            }
        }
        Ok(dropped)
    }
}

fn dropped_suffix(dropped: &[String]) -> String {
    if dropped.is_empty() {
        String::new()
    } else {
        format!(" with the results of {}", dropped.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_round_trip_through_their_file() {
        let t = tempfile::tempdir().unwrap();
        let g = Guards {
            inputs: vec![
                Guard::View {
                    input: "x".into(),
                    view: t.path().join("views/ab/out"),
                    path: t.path().join("views/ab/out"),
                    digest: "ab".into(),
                    shared: true,
                    size: 3,
                    mtime_ns: 1_796_212_063_809_779_381,
                    ino: 7,
                    ctime_ns: 1_796_212_063_851_759_513,
                },
                Guard::External {
                    input: "cfg".into(),
                    path: "/data/cfg.txt".into(),
                    identity: "cd".into(),
                },
            ],
        };
        g.write(t.path()).unwrap();
        assert_eq!(Guards::read(t.path()).inputs, g.inputs);
    }
}
