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
//! names/<pipeline>          the pipeline file that owns the name (one file per name)
//! tmp/                      staging for atomic renames
//! ```
//! Every path stored here is relative to the root, so a moved or copied cache keeps working.
//! Invariants: an object's file name is the blake3 of its bytes; a manifest only names objects
//! that were in the store before the manifest was renamed into place; the sled index is a cache of
//! `manifests/` (a miss falls back to the file, `cache rebuild-index` recreates it).

mod gc;
mod hash;
mod history;
mod index;
mod inputs;
mod lock;
mod manifest;
mod runs;
mod store;
mod verify;

use std::path::{Path, PathBuf};

pub use gc::{gc, GcReport};
pub use hash::{hash_bytes, hash_file, HASH_CHUNK_HINT};
pub use history::{run_dir_in, History, JobAccounting, RunRecord, RunStatus};
pub use index::{Index, StatEntry};
pub use inputs::{Guard, Guards};
pub use lock::{hostname, CacheLock};
pub use manifest::{Manifest, ObjKind, OutputEntry, MANIFEST_VERSION};
pub use runs::{RunEnd, RunEvent, RunLog, RunStart};
pub use store::{decode_path, encode_name, Store, TreeEntry, TreeObject};
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
    /// Something a stage left that the store will not take (a symlink out of its run dir...);
    /// the message names it and says what to do.
    #[error("{0}")]
    Refused(String),
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
        Self::with_index(root)
    }

    fn with_index(root: PathBuf) -> Result<Cache> {
        let (index, rebuilt) = Index::open(&root.join("index"))?;
        let cache = Cache {
            store: Store::new(&root),
            root,
            index,
        };
        if rebuilt {
            verify::rebuild_index(&cache)?;
        }
        Ok(cache)
    }

    /// Open for writing: the layout is checked, the one-scheduler lock taken (a clear error when a
    /// live process holds it), and only then the index opened.
    pub fn open_locked(root: &Path) -> Result<(Cache, CacheLock)> {
        let root = Self::prepare_layout(root)?;
        let lock = CacheLock::acquire(&root)?;
        Ok((Self::with_index(root)?, lock))
    }

    /// Open for a read-only command (`plan`, `report`, `show`): with the lock and the index when
    /// no run holds them; while a run does, with a detached index, so that answers come from
    /// the committed manifests (and external inputs are hashed without the stat cache).
    pub fn open_shared(root: &Path) -> Result<(Cache, Option<CacheLock>)> {
        let detached = |root: PathBuf| Cache {
            store: Store::new(&root),
            index: Index::detached(&root.join("index")),
            root,
        };
        let root = match Self::prepare_layout(root) {
            Ok(r) => r,
            // A cache someone else owns (read-only mount, another user's): still readable.
            Err(CacheError::NotWritable { .. }) if root.join("manifests").is_dir() => {
                let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
                return Ok((detached(root), None));
            }
            Err(e) => return Err(e),
        };
        match CacheLock::acquire(&root) {
            Ok(lock) => Ok((Self::with_index(root)?, Some(lock))),
            Err(CacheError::Locked { pid, host, .. }) => {
                tracing::info!(
                    "a run holds the cache (pid {pid} on {host}): reading its committed manifests"
                );
                Ok((detached(root), None))
            }
            Err(e) => Err(e),
        }
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

    /// Where the per-pipeline results folder lives (see [`results_dir`]).
    pub fn results_dir(&self, pipeline: &str) -> PathBuf {
        results_dir(&self.root, pipeline)
    }

    /// Point `results/<pipeline>/<instance>/<output>` (and `metrics.json`) at the views of the
    /// objects of a manifest's [`result_links`], with links relative to the cache so that a
    /// moved project keeps them. Done as each instance commits or hits, so the folder follows
    /// the run.
    pub fn link_results(&self, pipeline: &str, instance: &str, links: Vec<ResultLink>) {
        let inst_dir = self.results_dir(pipeline).join(sanitize(instance));
        for (name, digest, kind, base) in links {
            let link = inst_dir.join(sanitize(&name));
            let want = relative_to(&self.store.view_path(&digest, &base), &inst_dir);
            // An unchanged link whose view still exists (repair and gc remove views) is done.
            if std::fs::read_link(&link).is_ok_and(|t| t == want)
                && std::fs::symlink_metadata(inst_dir.join(&want)).is_ok()
            {
                continue;
            }
            if self.store.view(&digest, kind, &base).is_err() {
                continue;
            }
            let _ = std::fs::create_dir_all(&inst_dir);
            // A new link is made in place; one to replace goes through a rename (atomic).
            if std::os::unix::fs::symlink(&want, &link).is_ok() {
                continue;
            }
            let tmp = inst_dir.join(format!(".{name}.tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            if std::os::unix::fs::symlink(&want, &tmp).is_ok() {
                let _ = std::fs::rename(&tmp, &link);
            }
        }
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

    /// The committed manifest of `key`. `manifests/<key>.json` is the truth (its rename is the
    /// commit point): a missing file is a miss whatever the index says, and a file that does not
    /// parse or names another key is a miss with a warning (the stage runs again and rewrites
    /// it). The index copy is refreshed when it lags.
    pub fn manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let path = self.store.manifest_path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.index.remove_manifest(key)?;
                return Ok(None);
            }
            Err(e) => return Err(CacheError::io("cannot read manifest", path)(e)),
        };
        match Manifest::from_bytes(&bytes) {
            Ok(m) if m.key == key => {
                if !self.index.has_manifest(key)? {
                    self.index.put_manifest(&m)?;
                }
                Ok(Some(m))
            }
            Ok(m) => {
                tracing::warn!(
                    "cache manifest {} holds the entry of another key ({}): treated as absent, the stage runs again",
                    path.display(),
                    m.key
                );
                self.index.remove_manifest(key)?;
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    "cache manifest {} is unreadable ({e}): treated as absent, the stage runs again",
                    path.display()
                );
                self.index.remove_manifest(key)?;
                Ok(None)
            }
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
                    .put_stat(&Self::object_stat_key(&d), &StatEntry::of(&meta, d))?;
            }
        }
        Ok(())
    }

    /// The stat-cache key of a store object: relative to the cache (`objects/ab/cd...`), so a
    /// moved cache keeps its stat cache. External inputs are keyed by their absolute path.
    pub fn object_stat_key(digest: &str) -> String {
        format!("objects/{digest}")
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

    /// Store a file output (see [`Store::ingest_output_file`]); an existing object of the same
    /// digest is trusted only after the stat-cached check.
    pub fn ingest_output_file(&self, src: &Path, shown: &str, roots: &[PathBuf]) -> Result<String> {
        self.store.ingest_output_file(src, shown, roots, &|d| {
            matches!(self.check_blob(d, false), Ok(None))
        })
    }

    /// Store a folder output (see [`Store::ingest_output_dir`]).
    pub fn ingest_output_dir(
        &self,
        src: &Path,
        shown: &str,
        roots: &[PathBuf],
    ) -> Result<(String, TreeObject)> {
        self.store.ingest_output_dir(src, shown, roots, &|d| {
            matches!(self.check_blob(d, false), Ok(None))
        })
    }

    fn check_blob(&self, digest: &str, repair: bool) -> Result<Option<String>> {
        let path = self.store.object_path(digest);
        match std::fs::metadata(&path) {
            Ok(m) => self.check_blob_stat(digest, &m, repair),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Some(format!("object {digest} is missing")))
            }
            Err(e) => Err(CacheError::io("cannot stat", path)(e)),
        }
    }

    /// [`Self::check_blob`] of an object whose `stat` the caller has.
    fn check_blob_stat(
        &self,
        digest: &str,
        meta: &std::fs::Metadata,
        repair: bool,
    ) -> Result<Option<String>> {
        let path = self.store.object_path(digest);
        let stat = StatEntry::of(meta, String::new());
        let key = Self::object_stat_key(digest);
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
        // A full disk is not a read-only cache: what is cached can still be served.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            let _ = std::fs::remove_file(&probe);
            tracing::warn!(
                "the disk of the cache {} is full: cached results are served, nothing new can be stored",
                root.display()
            );
            Ok(())
        }
        Err(source) => Err(CacheError::NotWritable {
            root: root.to_path_buf(),
            source,
        }),
    }
}

/// `results/<pipeline>`: beside the cache when its folder is named `cache` (the default
/// `<project>/cache` -> `<project>/results`), inside it otherwise (`--cache-dir other` ->
/// `other/results`), so two caches never share a results folder.
pub fn results_dir(root: &Path, pipeline: &str) -> PathBuf {
    let base = match root.parent() {
        Some(parent) if root.file_name().is_some_and(|n| n == "cache") => parent.join("results"),
        _ => root.join("results"),
    };
    base.join(sanitize(pipeline))
}

/// One link of `results/<pipeline>/<instance>/`: (name, digest, kind, file name of the view).
pub type ResultLink = (String, String, ObjKind, String);

/// The links a manifest's instance gets: each output, and `metrics.json` when it wrote one.
pub fn result_links(m: &Manifest) -> Vec<ResultLink> {
    let mut links: Vec<ResultLink> = Vec::new();
    for (name, o) in &m.outputs {
        let base = o.rel_path.rsplit('/').next().unwrap_or(name).to_string();
        links.push((name.clone(), o.digest.clone(), o.kind, base));
    }
    if let Some(d) = &m.metrics {
        links.push((
            "metrics.json".into(),
            d.clone(),
            ObjKind::File,
            "metrics.json".into(),
        ));
    }
    links
}

/// `target` as seen from the folder `from` (both absolute): `../../cache/views/...`.
pub fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// Who a pipeline name belongs to in a cache: one pipeline file per name, so that two files
/// (a pipeline and a copy that `extend`s it without its own `name:`) never share history, GC
/// roots or `results/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOwner {
    /// Nobody yet (or this file).
    Free,
    /// Another file that still exists.
    Taken(PathBuf),
    /// A file that no longer exists (renamed or deleted): the name can be taken over.
    Gone(PathBuf),
}

fn name_record(root: &Path, name: &str) -> PathBuf {
    root.join("names").join(sanitize(name))
}

/// Who owns `name` in the cache at `root`, seen from the pipeline file `file`. Owners are
/// recorded relative to the cache's parent folder (the project) when they live under it, so a
/// project moved with its cache keeps them.
pub fn name_owner(root: &Path, name: &str, file: &Path) -> NameOwner {
    let Ok(text) = std::fs::read(name_record(root, name)) else {
        return NameOwner::Free;
    };
    use std::os::unix::ffi::OsStrExt;
    let recorded = PathBuf::from(std::ffi::OsStr::from_bytes(text.trim_ascii_end()));
    let project = root.parent().unwrap_or(root);
    let owner = project.join(&recorded);
    let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    match owner.canonicalize() {
        Ok(o) if o == file => NameOwner::Free,
        Ok(o) => NameOwner::Taken(o),
        Err(_) => NameOwner::Gone(owner),
    }
}

/// Record `file` as the owner of `name` (after [`name_owner`] said it may).
pub fn claim_name(root: &Path, name: &str, file: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    let project = root.parent().unwrap_or(root);
    let shown = file.strip_prefix(project).unwrap_or(&file);
    let path = name_record(root, name);
    if std::fs::read(&path).is_ok_and(|t| t.trim_ascii_end() == shown.as_os_str().as_bytes()) {
        return Ok(());
    }
    let dir = root.join("names");
    std::fs::create_dir_all(&dir).map_err(CacheError::io("cannot create", &dir))?;
    let tmp = root
        .join("tmp")
        .join(format!(".name.{}", std::process::id()));
    let mut bytes = shown.as_os_str().as_bytes().to_vec();
    bytes.push(b'\n');
    store::write_durable(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path).map_err(CacheError::io("cannot write", &path))
}

/// Below this much free space, the cache's disk counts as full (a failing stage is then
/// reported as out of space and its partial outputs are removed).
pub const FULL_BELOW: u64 = 1 << 20;

/// Bytes available to us on the filesystem that holds `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string and an out-parameter of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Bytes in the files under `path` (0 when it is missing).
pub fn du(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
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
