//! [`Cache`]: the content-addressed store of stage outputs, its sled index, run and work dirs,
//! the run history and the one-scheduler lock, all under one root folder.
//!
//! Layout of a cache root (see README "Cache layout"):
//! ```text
//! lock                      pid + host of the scheduler holding the cache (flock)
//! objects/ab/cdef…          immutable, read-only blobs (file contents) and tree objects (folders)
//! manifests/<fp-key>.json   committed output manifests; the rename of this file IS the commit
//! index/                    sled: fp-key -> manifest, stat cache, last key per instance
//! views/<digest>/<name>     what a stage reads: a blob or tree materialised as hardlinks
//! runs/<fp-key>.<ms>/       one attempt: invocation.json, log, progress.jsonl, out/
//! work/<fp-key>/            survives interruption (checkpoints); removed after a commit
//! history/<pipeline>.jsonl  started / ok / failed / cached records, for status, logs, show, gc
//! history/runs/<pipeline>.jsonl  one start and one end line per `run` (who, where, counts)
//! tmp/                      staging for atomic renames
//! ```
//! Invariants: an object's file name is the blake3 of its bytes; a manifest only names objects
//! that were in the store before the manifest was renamed into place; the sled index is a cache of
//! `manifests/` (a miss falls back to the file, `cache rebuild-index` recreates it).

mod gc;
mod hash;
mod history;
mod index;
mod lock;
mod manifest;
mod runs;
mod store;
mod verify;

use std::path::{Path, PathBuf};

pub use gc::{gc, GcReport};
pub use hash::{hash_bytes, hash_file, HASH_CHUNK_HINT};
pub use history::{History, RunRecord, RunStatus};
pub use index::{Index, StatEntry};
pub use lock::{hostname, CacheLock};
pub use manifest::{Manifest, ObjKind, OutputEntry, MANIFEST_VERSION};
pub use runs::{RunEnd, RunEvent, RunLog, RunStart};
pub use store::{Store, TreeEntry, TreeObject};
pub use verify::{rebuild_index, verify, VerifyReport};

/// Everything that can go wrong with the cache; each renders with a `hint:` for the fix.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {root} is not writable: {source}\nhint: pass a writable folder with --cache-dir or ORCHESTRATOR_CACHE, or fix its permissions")]
    NotWritable {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("the cache {root} is in use by another `orchestrator run` (pid {pid} on {host})\nhint: wait for it to finish, or use another --cache-dir")]
    Locked {
        root: PathBuf,
        pid: String,
        host: String,
    },
    #[error("cannot open the cache index {path}: {message}\nhint: if no other orchestrator uses this cache, run `orchestrator cache rebuild-index`")]
    Index { path: PathBuf, message: String },
    #[error("{op} {path}: {source}{hint}", hint = io_hint(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt {what} {path}: {message}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "\nhint: the disk is full; free space (e.g. `orchestrator gc`) or use another --cache-dir",
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            "\nhint: the cache folder is read-only; pass a writable --cache-dir or fix its permissions"
        }
        _ => "",
    }
}

impl CacheError {
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { op, path, source }
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// An opened cache root. Cheap to share across threads (`Index` is a sled handle).
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
    pub store: Store,
    pub index: Index,
}

impl Cache {
    /// Open (creating the layout) for use by one scheduler or maintenance command. The caller
    /// should hold a [`CacheLock`] first when it writes.
    pub fn open(root: &Path) -> Result<Cache> {
        let root = Self::prepare_layout(root)?;
        let index = Index::open(&root.join("index"))?;
        Ok(Cache {
            store: Store::new(&root),
            root,
            index,
        })
    }

    /// Open for writing: the layout is checked, the one-scheduler lock taken (a clear error when a
    /// live process holds it), and only then the index opened.
    pub fn open_locked(root: &Path) -> Result<(Cache, CacheLock)> {
        let root = Self::prepare_layout(root)?;
        let lock = CacheLock::acquire(&root)?;
        let index = Index::open(&root.join("index"))?;
        Ok((
            Cache {
                store: Store::new(&root),
                root,
                index,
            },
            lock,
        ))
    }

    /// Create (if needed) and check the folder layout; returns the canonical root.
    pub fn prepare_layout(root: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(root).map_err(|source| CacheError::NotWritable {
            root: root.to_path_buf(),
            source,
        })?;
        let root = root
            .canonicalize()
            .map_err(CacheError::io("cannot resolve", root))?;
        for sub in [
            "objects",
            "manifests",
            "views",
            "runs",
            "work",
            "history",
            "tmp",
        ] {
            let p = root.join(sub);
            if !p.is_dir() {
                std::fs::create_dir_all(&p).map_err(|source| CacheError::NotWritable {
                    root: root.clone(),
                    source,
                })?;
            }
        }
        check_writable(&root)?;
        Ok(root)
    }

    pub fn history(&self, pipeline: &str) -> History {
        History::new(&self.root, pipeline)
    }

    /// Where the per-pipeline results folder lives: `results/` beside the cache root.
    pub fn results_dir(&self, pipeline: &str) -> PathBuf {
        results_dir(&self.root, pipeline)
    }

    pub fn work_dir(&self, key: &str) -> PathBuf {
        self.root.join("work").join(key)
    }

    /// A fresh run dir for one attempt of fingerprint `key`.
    pub fn new_run_dir(&self, key: &str) -> Result<PathBuf> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut n = 0u32;
        loop {
            let p = self.root.join("runs").join(format!(
                "{key}.{ms}{}",
                if n == 0 {
                    String::new()
                } else {
                    format!("-{n}")
                }
            ));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(CacheError::io("cannot create run dir", p)(e)),
            }
        }
    }

    /// The committed manifest of `key`, from the index or (after a crash between the manifest
    /// rename and the index write, or a lost index) from `manifests/`.
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>> {
        if let Some(m) = self.index.get_manifest(key)? {
            return Ok(Some(m));
        }
        match self.store.read_manifest(key)? {
            Some(m) => {
                self.index.put_manifest(&m)?;
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }

    /// Commit point: manifest file renamed into place, then the index entry, then stat entries
    /// for its objects (just hashed; saves a re-hash on the first cache hit).
    pub fn commit_manifest(&self, m: &Manifest) -> Result<()> {
        self.store.write_manifest(m)?;
        self.index.put_manifest(m)?;
        let mut blobs: Vec<String> = m.metrics.iter().cloned().collect();
        for o in m.outputs.values() {
            blobs.push(o.digest.clone());
            if o.kind == ObjKind::Dir {
                if let Ok(t) = self.store.read_tree(&o.digest) {
                    blobs.extend(t.entries.into_iter().map(|e| e.digest));
                }
            }
        }
        for d in blobs {
            let p = self.store.object_path(&d);
            if let Ok(meta) = std::fs::metadata(&p) {
                self.index
                    .put_stat(&p.to_string_lossy(), &StatEntry::of(&meta, d))?;
            }
        }
        Ok(())
    }

    /// Forget a manifest whose objects are gone or corrupt, so the stage simply runs again.
    pub fn drop_manifest(&self, key: &str) -> Result<()> {
        self.index.remove_manifest(key)?;
        self.store.remove_manifest(key)
    }

    /// Check that every object `m` names is present and intact (stat-cached: a rehash only when
    /// the file's size, mtime or inode changed). Returns what is wrong, `None` when usable.
    /// With `repair`, corrupt objects and their views are deleted.
    pub fn check_manifest(&self, m: &Manifest, repair: bool) -> Result<Option<String>> {
        for (name, out) in &m.outputs {
            if let Some(problem) = self.check_object(&out.digest, out.kind, repair)? {
                return Ok(Some(format!("output `{name}` {problem}")));
            }
        }
        if let Some(d) = &m.metrics {
            if let Some(problem) = self.check_object(d, ObjKind::File, repair)? {
                return Ok(Some(format!("metrics.json {problem}")));
            }
        }
        Ok(None)
    }

    fn check_object(&self, digest: &str, kind: ObjKind, repair: bool) -> Result<Option<String>> {
        if let Some(p) = self.check_blob(digest, repair)? {
            return Ok(Some(p));
        }
        if kind == ObjKind::Dir {
            let tree = match self.store.read_tree(digest) {
                Ok(t) => t,
                Err(e) => return Ok(Some(format!("tree object {digest} unreadable: {e}"))),
            };
            for e in &tree.entries {
                if let Some(p) = self.check_blob(&e.digest, repair)? {
                    if repair {
                        self.store.remove_views(digest);
                    }
                    return Ok(Some(format!("file `{}`: {p}", e.path)));
                }
            }
        }
        Ok(None)
    }

    /// Move an output file into the store (see [`Store::ingest_file`]); an existing object of
    /// the same digest is trusted only after the stat-cached check.
    pub fn ingest_file(&self, src: &Path) -> Result<String> {
        self.store
            .ingest_file(src, &|d| matches!(self.check_blob(d, false), Ok(None)))
    }

    pub fn ingest_dir(&self, src: &Path) -> Result<(String, TreeObject)> {
        self.store
            .ingest_dir(src, &|d| matches!(self.check_blob(d, false), Ok(None)))
    }

    fn check_blob(&self, digest: &str, repair: bool) -> Result<Option<String>> {
        let path = self.store.object_path(digest);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(format!("object {digest} is missing")))
            }
            Err(e) => return Err(CacheError::io("cannot stat", path)(e)),
        };
        let stat = StatEntry::of(&meta, String::new());
        let key = path.to_string_lossy();
        if let Some(old) = self.index.get_stat(&key)? {
            if old.same_object_file(&stat) && old.digest == digest {
                return Ok(None);
            }
        }
        let actual = hash_file(&path).map_err(CacheError::io("cannot read", &path))?;
        if actual == digest {
            self.index.put_stat(
                &key,
                &StatEntry {
                    digest: actual,
                    ..stat
                },
            )?;
            return Ok(None);
        }
        if repair {
            self.store.remove_object(digest);
            self.index.remove_stat(&key)?;
        }
        Ok(Some(format!(
            "object {} is corrupt (its content hashes to {actual})",
            path.display()
        )))
    }

    /// Content digest of an external input (file: blob digest; folder: tree digest), through the
    /// stat cache so an unchanged 4 GB file is hashed once.
    pub fn digest_external(&self, path: &Path) -> Result<String> {
        let meta = std::fs::metadata(path).map_err(CacheError::io("cannot read input", path))?;
        if meta.is_dir() {
            let tree = self
                .store
                .tree_of_dir(path, &|p, m| self.digest_external_file(p, m))?;
            Ok(tree.digest())
        } else {
            self.digest_external_file(path, &meta)
        }
    }

    fn digest_external_file(&self, path: &Path, meta: &std::fs::Metadata) -> Result<String> {
        let key = path.to_string_lossy();
        let stat = StatEntry::of(meta, String::new());
        if let Some(old) = self.index.get_stat(&key)? {
            if old.same_external_file(&stat) {
                return Ok(old.digest);
            }
        }
        let digest = hash_file(path).map_err(CacheError::io("cannot read input", path))?;
        self.index.put_stat(
            &key,
            &StatEntry {
                digest: digest.clone(),
                ..stat
            },
        )?;
        Ok(digest)
    }
}

/// Resolve the cache root: `--cache-dir` / `ORCHESTRATOR_CACHE`, else `cache/` of the project that
/// holds the pipeline (nearest folder above it with a `cache/` folder or a `Cargo.toml`), else
/// `cache/` in the pipeline's folder.
pub fn resolve_root(explicit: Option<&Path>, pipeline_file: &Path) -> PathBuf {
    let abs = pipeline_file
        .canonicalize()
        .unwrap_or_else(|_| pipeline_file.to_path_buf());
    let start = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    find_root(explicit, &start)
}

/// [`resolve_root`] for commands without a pipeline file, starting at folder `start`.
pub fn find_root(explicit: Option<&Path>, start: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if d.join("cache").is_dir() || d.join("Cargo.toml").is_file() {
            return d.join("cache");
        }
        dir = d.parent();
    }
    start.join("cache")
}

/// A file-name-safe form of an instance id or pipeline name (`/` and NUL are the only bytes a
/// Unix file name cannot hold; `..` is defused too).
pub fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if t == "." || t == ".." || t.is_empty() {
        format!("_{t}")
    } else {
        t
    }
}

fn check_writable(root: &Path) -> Result<()> {
    let probe = root
        .join("tmp")
        .join(format!(".probe-{}", std::process::id()));
    match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(CacheError::NotWritable {
            root: root.to_path_buf(),
            source,
        }),
    }
}

/// `results/<pipeline>` beside the cache root `root`.
pub fn results_dir(root: &Path, pipeline: &str) -> PathBuf {
    root.parent()
        .unwrap_or(root)
        .join("results")
        .join(sanitize(pipeline))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolution_prefers_project_with_cache_folder() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proj/cache")).unwrap();
        std::fs::create_dir_all(t.path().join("proj/pipelines")).unwrap();
        std::fs::write(t.path().join("proj/pipelines/p.yaml"), "x").unwrap();
        let r = resolve_root(None, &t.path().join("proj/pipelines/p.yaml"));
        assert_eq!(r, t.path().join("proj/cache").canonicalize().unwrap());
        assert_eq!(
            resolve_root(Some(Path::new("/x")), Path::new("p.yaml")),
            PathBuf::from("/x")
        );
    }

    #[test]
    fn sanitize_defuses_separators() {
        assert_eq!(sanitize("a/b"), "a_b");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize("train[ratio=0.5]"), "train[ratio=0.5]");
    }
}
