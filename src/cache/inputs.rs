//! What a stage is given to read, and the checks that it (or anyone) did not change it while the
//! stage ran: [`Cache::private_input`], [`Cache::external_identity`], [`Cache::check_guards`].
//!
//! The input-immutability mechanism (ARCHITECTURE.md): a stored object never changes, whatever a
//! stage does with the paths it is given, root included (root writes through a 0444 mode).
//! - A store object reaches a stage as a private file in its run dir (`in/<input>/...`): a
//!   reflink where the filesystem has them (btrfs, XFS: any size, no bytes copied), else a copy
//!   for files up to [`PRIVATE_COPY_MAX`]. A stage may scribble on those; nobody else sees it.
//! - A bigger object (a 4 GB packed dataset) is a read-only hardlink, never copied; its stat
//!   tuple (size, mtime, inode, ctime) is recorded, and after the stage it is compared (a
//!   re-hash only when it changed). A stage that wrote to it fails, naming the input; the damaged
//!   object is removed from the store with every manifest that names it, so the stage that made
//!   it runs again and nothing ever reads the changed bytes as the original.
//! - An external input (read in place) has its identity (the stat tuples of its files) recorded
//!   at launch, after a check that its content is still the one in the fingerprint; a change by
//!   the time the stage ends fails the stage: its result is not committed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash::hash_file;
use super::{Cache, CacheError, ObjKind, Result};

/// Store objects up to this size are copied into a stage's run dir; bigger ones are hardlinked
/// and checked after the stage (reflinks, where available, are used at any size).
pub const PRIVATE_COPY_MAX: u64 = 16 << 20;

/// `FICLONE` (`_IOW(0x94, 9, int)`): make `dst` share `src`'s extents, copy-on-write.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// What is checked after a stage ends (written to `<run dir>/guards.json` at launch).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Guards {
    pub inputs: Vec<Guard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Guard {
    /// A store object the stage got as a shared, read-only hardlink.
    Object {
        input: String,
        path: PathBuf,
        digest: String,
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

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let p = Self::path(run_dir);
        let bytes = serde_json::to_vec_pretty(self).expect("guards serialize");
        std::fs::write(&p, bytes).map_err(CacheError::io("cannot write", &p))
    }

    /// The guards of an attempt (none when the file is missing: an attempt of an older build).
    pub fn read(run_dir: &Path) -> Guards {
        // (Internally tagged enums cannot hold i128: the times are i64 nanoseconds.)
        std::fs::read(Self::path(run_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
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

    /// Give input `input` of a stage, the object `digest` (a blob or a tree) named `base`, a path
    /// of its own under `dir` (see the module doc); shared hardlinks are added to `guards`.
    pub fn private_input(
        &self,
        dir: &Path,
        input: &str,
        digest: &str,
        kind: ObjKind,
        base: &str,
        guards: &mut Vec<Guard>,
    ) -> Result<PathBuf> {
        let dst = dir.join(base);
        std::fs::create_dir_all(dir).map_err(CacheError::io("cannot create", dir))?;
        match kind {
            ObjKind::File => {
                self.private_file(input, digest, &dst, 0o644, guards)?;
            }
            ObjKind::Dir => {
                let tree = self.store.read_tree(digest)?;
                std::fs::create_dir_all(&dst).map_err(CacheError::io("cannot create", &dst))?;
                for d in &tree.empty_dirs {
                    let p = dst.join(super::decode_path(d));
                    std::fs::create_dir_all(&p).map_err(CacheError::io("cannot create", &p))?;
                }
                for e in &tree.entries {
                    let p = dst.join(super::decode_path(&e.path));
                    if let Some(pp) = p.parent() {
                        std::fs::create_dir_all(pp).map_err(CacheError::io("cannot create", pp))?;
                    }
                    self.private_file(input, &e.digest, &p, e.mode, guards)?;
                }
            }
        }
        Ok(dst)
    }

    fn private_file(
        &self,
        input: &str,
        digest: &str,
        dst: &Path,
        mode: u32,
        guards: &mut Vec<Guard>,
    ) -> Result<()> {
        let obj = self.store.object_path(digest);
        let meta = std::fs::metadata(&obj).map_err(CacheError::io("cannot read", &obj))?;
        let read_only = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
        let private = reflink(&obj, dst)
            || (meta.len() <= PRIVATE_COPY_MAX || read_only == 0o555) && {
                std::fs::copy(&obj, dst).map_err(CacheError::io("cannot copy input to", dst))?;
                true
            };
        if private {
            return std::fs::set_permissions(dst, std::fs::Permissions::from_mode(read_only))
                .map_err(CacheError::io("cannot chmod", dst));
        }
        std::fs::hard_link(&obj, dst).map_err(CacheError::io("cannot link input to", dst))?;
        // Taken after the link (which changes the ctime).
        let m = std::fs::metadata(dst).map_err(CacheError::io("cannot read", dst))?;
        let (size, mtime_ns, ino, ctime_ns) = stat_tuple(&m);
        guards.push(Guard::Object {
            input: input.to_string(),
            path: dst.to_path_buf(),
            digest: digest.to_string(),
            size,
            mtime_ns,
            ino,
            ctime_ns,
        });
        Ok(())
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

    /// Check what `guards` recorded; `Some(message)` names the first input that changed (and a
    /// damaged store object is forgotten, see the module doc).
    pub fn check_guards(&self, stage: &str, guards: &Guards) -> Result<Option<String>> {
        for g in &guards.inputs {
            match g {
                Guard::Object {
                    input,
                    path,
                    digest,
                    size,
                    mtime_ns,
                    ino,
                    ctime_ns,
                } => {
                    let Ok(m) = std::fs::metadata(path) else {
                        // Removed (the link only): the object itself is untouched.
                        continue;
                    };
                    if stat_tuple(&m) == (*size, *mtime_ns, *ino, *ctime_ns) {
                        continue;
                    }
                    let obj = self.store.object_path(digest);
                    let intact = hash_file(&obj).is_ok_and(|d| &d == digest);
                    if intact {
                        continue;
                    }
                    let dropped = self.forget_object(digest)?;
                    return Ok(Some(format!(
                        "stage `{stage}` modified its input `{input}` ({}), a read-only file shared with the store; the damaged object was removed from the store{}, so the stage that produced it runs again\nhint: a stage must not write to its inputs: copy one before changing it",
                        path.display(),
                        if dropped.is_empty() {
                            String::new()
                        } else {
                            format!(" with the results of {}", dropped.join(", "))
                        }
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
    /// names it, so those stages run again. Returns the instances whose results were dropped.
    pub fn forget_object(&self, digest: &str) -> Result<Vec<String>> {
        self.store.remove_object(digest);
        self.index.remove_stat(&Self::object_stat_key(digest))?;
        let mut dropped = Vec::new();
        for key in self.store.manifest_keys()? {
            let Some(m) = self.store.read_manifest(&key)? else {
                continue;
            };
            let mut names = m.metrics.iter().any(|d| d == digest);
            for o in m.outputs.values() {
                names |= o.digest == digest;
                if o.kind == ObjKind::Dir && !names {
                    if let Ok(t) = self.store.read_tree(&o.digest) {
                        names |= t.entries.iter().any(|e| e.digest == digest);
                    }
                }
            }
            if names {
                self.drop_manifest(&key)?;
                dropped.push(format!("`{}`", m.instance));
            }
        }
        Ok(dropped)
    }
}

/// A copy-on-write clone of `src` at `dst` (false where the filesystem cannot).
fn reflink(src: &Path, dst: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let (Ok(s), Ok(d)) = (
        std::fs::File::open(src),
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst),
    ) else {
        return false;
    };
    // SAFETY: two open file descriptors; FICLONE reads nothing else.
    let ok = unsafe { libc::ioctl(d.as_raw_fd(), FICLONE as _, s.as_raw_fd()) } == 0;
    drop(d);
    if !ok {
        let _ = std::fs::remove_file(dst);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_round_trip_through_their_file() {
        let t = tempfile::tempdir().unwrap();
        let g = Guards {
            inputs: vec![
                Guard::Object {
                    input: "x".into(),
                    path: t.path().join("in/x/out"),
                    digest: "ab".into(),
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
