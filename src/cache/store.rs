//! [`Store`]: the content-addressed object store. Blobs are file contents named by their blake3
//! digest; a folder is a [`TreeObject`] (sorted relative path, digest, mode) stored as a JSON blob.
//! Objects are immutable and read-only (0444); they enter the store by `rename`, so a reader never
//! sees a half-written object.
//!
//! How stages read inputs: through `views/<digest>/<name>`, a hardlink of the blob (a file) or a
//! folder of hardlinks (a tree), made once per digest and name. Hardlinks cost no space or copy
//! time, keep the read-only mode, and the stage sees a normal file or folder with its declared
//! name (tools that care about file extensions keep working). Executable files inside trees are
//! copied instead (the shared blob inode is read-only).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash::{hash_bytes, hash_file};
use super::manifest::Manifest;
use super::{CacheError, ObjKind, Result};

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// `/`-separated path relative to the folder.
    pub path: String,
    pub digest: String,
    /// 0o644 or 0o755 (only the executable bit is kept).
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeObject {
    /// Marks the blob as a tree (and its format version).
    pub tree: u32,
    pub entries: Vec<TreeEntry>,
    /// Folders with nothing inside (kept so an output folder round-trips exactly).
    pub empty_dirs: Vec<String>,
}

impl TreeObject {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tree always serializes")
    }
    pub fn digest(&self) -> String {
        hash_bytes(&self.to_bytes())
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn object_path(&self, digest: &str) -> PathBuf {
        let (a, b) = digest.split_at(digest.len().min(2));
        self.root.join("objects").join(a).join(b)
    }

    pub fn has(&self, digest: &str) -> bool {
        self.object_path(digest).is_file()
    }

    /// A unique path under `tmp/` (same filesystem as the store, so renames are atomic).
    pub fn tmp_path(&self, hint: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{hint}.{}.{n}", std::process::id()))
    }

    /// Move the file `src`, which the engine owns (a stage's output with no other name, or a
    /// private copy), into the store (it must be on the cache's filesystem) and return its
    /// digest. When an object of that digest exists and `existing_ok` confirms it is intact, `src`
    /// is dropped (views stay hardlinks of the object); a corrupt one is replaced and its views go.
    pub fn ingest_file(
        &self,
        src: &Path,
        existing_ok: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<String> {
        let digest = hash_file(src).map_err(CacheError::io("cannot read output", src))?;
        let dst = self.object_path(&digest);
        if dst.is_file() {
            if existing_ok(&digest) {
                let _ = std::fs::remove_file(src);
                return Ok(digest);
            }
            self.remove_views(&digest);
        }
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(CacheError::io("cannot create", parent))?;
        }
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o444))
            .map_err(CacheError::io("cannot chmod", src))?;
        if fsync_enabled() {
            if let Ok(f) = std::fs::File::open(src) {
                let _ = f.sync_all();
            }
        }
        std::fs::rename(src, &dst).map_err(CacheError::io("cannot move into the store", &dst))?;
        Ok(digest)
    }

    /// Store the content of `src` without touching `src` (a file the engine does not own: what
    /// an output symlink points to, or a file with other hard links).
    fn ingest_copy(
        &self,
        src: &Path,
        existing_ok: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<String> {
        let digest = hash_file(src).map_err(CacheError::io("cannot read output", src))?;
        if self.object_path(&digest).is_file() && existing_ok(&digest) {
            return Ok(digest);
        }
        let tmp = self.tmp_path("copy");
        if let Err(e) = std::fs::copy(src, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(CacheError::io("cannot copy output into the store", &tmp)(e));
        }
        let r = self.ingest_file(&tmp, existing_ok);
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    /// Store one file output as the stage left it at `src` (`shown` names it in errors), under
    /// the symlink rule (see ARCHITECTURE.md): a symlink is stored as the file it points to when
    /// that lies inside one of `roots` (the stage's run dir and work dir, canonical) and refused
    /// otherwise; a file with other hard links (`ln ~/x ${outputs.y}`) is copied, never moved or
    /// chmod'ed; a plain file is moved.
    pub fn ingest_output_file(
        &self,
        src: &Path,
        shown: &str,
        roots: &[PathBuf],
        existing_ok: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(src).map_err(CacheError::io("cannot read", src))?;
        if meta.file_type().is_symlink() {
            let target = resolve_output_link(src, shown, roots)?;
            return self.ingest_copy(&target, existing_ok);
        }
        if !meta.is_file() {
            return Err(not_regular(shown));
        }
        if meta.nlink() > 1 {
            self.ingest_copy(src, existing_ok)
        } else {
            self.ingest_file(src, existing_ok)
        }
    }

    /// Store raw bytes as an object (trees, metrics written by the engine).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = hash_bytes(bytes);
        let dst = self.object_path(&digest);
        let tmp = self.tmp_path("obj");
        write_durable(&tmp, bytes)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
            .map_err(CacheError::io("cannot chmod", &tmp))?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(CacheError::io("cannot create", parent))?;
        }
        std::fs::rename(&tmp, &dst).map_err(CacheError::io("cannot move into the store", &dst))?;
        Ok(digest)
    }

    /// Store the output folder `src` and return its tree: every file in it, under the symlink
    /// rule of [`Store::ingest_output_file`] (a symlink to a folder inside `roots` is stored as
    /// that folder's content; a loop is an error). Names that are not UTF-8 are kept byte for
    /// byte ([`encode_name`]).
    pub fn ingest_output_dir(
        &self,
        src: &Path,
        shown: &str,
        roots: &[PathBuf],
        existing_ok: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(String, TreeObject)> {
        use rayon::prelude::*;
        let src = src
            .canonicalize()
            .map_err(CacheError::io("cannot read output", src))?;
        let mut walk = OutputWalk {
            shown,
            roots,
            chain: vec![src.clone()],
            files: Vec::new(),
            empty_dirs: Vec::new(),
        };
        walk.dir(&src, "", false)?;
        let OutputWalk {
            files,
            mut empty_dirs,
            ..
        } = walk;
        // What symlinks reach is copied first: the files they point at may be moved after.
        let (copies, moves): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.copy);
        let ingest = |f: &OutFile| -> Result<TreeEntry> {
            let shown = format!("{shown}: {}", display_rel(&f.rel));
            let digest = if f.copy {
                self.ingest_copy(&f.path, existing_ok)?
            } else {
                self.ingest_output_file(&f.path, &shown, roots, existing_ok)?
            };
            Ok(TreeEntry {
                path: f.rel.clone(),
                digest,
                mode: f.mode,
            })
        };
        let mut entries = copies.par_iter().map(ingest).collect::<Result<Vec<_>>>()?;
        entries.extend(moves.par_iter().map(ingest).collect::<Result<Vec<_>>>()?);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        empty_dirs.sort();
        let tree = TreeObject {
            tree: 1,
            entries,
            empty_dirs,
        };
        let digest = self.put_bytes(&tree.to_bytes())?;
        Ok((digest, tree))
    }

    /// Walk `dir` and build its tree; `digest_of` gives each file's digest (hashing through the
    /// stat cache for external inputs, or ingesting for outputs). Files are hashed in parallel.
    pub fn tree_of_dir(
        &self,
        dir: &Path,
        digest_of: &(dyn Fn(&Path, &std::fs::Metadata) -> Result<String> + Sync),
    ) -> Result<TreeObject> {
        use rayon::prelude::*;
        let mut files = Vec::new();
        let mut empty_dirs = Vec::new();
        walk(dir, "", &mut files, &mut empty_dirs)?;
        let mut entries = files
            .par_iter()
            .map(|(rel, abs)| {
                let meta = std::fs::metadata(abs).map_err(CacheError::io("cannot read", abs))?;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let link_meta =
                    std::fs::symlink_metadata(abs).map_err(CacheError::io("cannot read", abs))?;
                Ok(TreeEntry {
                    path: rel.clone(),
                    digest: digest_of(abs, &link_meta)?,
                    mode,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        empty_dirs.sort();
        Ok(TreeObject {
            tree: 1,
            entries,
            empty_dirs,
        })
    }

    pub fn read_tree(&self, digest: &str) -> Result<TreeObject> {
        let p = self.object_path(digest);
        let bytes = std::fs::read(&p).map_err(CacheError::io("cannot read tree", &p))?;
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
            what: "tree object",
            path: p,
            message: e.to_string(),
        })
    }

    /// Where [`Store::view`] puts `digest` named `name` (no file-system access).
    pub fn view_path(&self, digest: &str, name: &str) -> PathBuf {
        let name = if name.is_empty() { "data" } else { name };
        self.root.join("views").join(digest).join(name)
    }

    /// The path a stage reads: `views/<digest>/<name>`, materialised once.
    pub fn view(&self, digest: &str, kind: ObjKind, name: &str) -> Result<PathBuf> {
        let dst = self.view_path(digest, name);
        if std::fs::symlink_metadata(&dst).is_ok() {
            return Ok(dst);
        }
        let parent = dst.parent().expect("views path has a parent");
        std::fs::create_dir_all(parent).map_err(CacheError::io("cannot create", parent))?;
        // A file's view is a hard link, which appears whole: made in place, no rename needed.
        if kind == ObjKind::File {
            match std::fs::hard_link(self.object_path(digest), &dst) {
                Ok(()) => return Ok(dst),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(dst),
                Err(_) => {} // another file system, or a missing object: as below
            }
        }
        let tmp = self.tmp_path("view");
        match kind {
            ObjKind::File => link_or_copy(&self.object_path(digest), &tmp, 0o644)?,
            ObjKind::Dir => {
                let tree = self.read_tree(digest)?;
                std::fs::create_dir_all(&tmp).map_err(CacheError::io("cannot create", &tmp))?;
                for d in &tree.empty_dirs {
                    let p = tmp.join(decode_path(d));
                    std::fs::create_dir_all(&p).map_err(CacheError::io("cannot create", &p))?;
                }
                for e in &tree.entries {
                    let p = tmp.join(decode_path(&e.path));
                    if let Some(pp) = p.parent() {
                        std::fs::create_dir_all(pp).map_err(CacheError::io("cannot create", pp))?;
                    }
                    link_or_copy(&self.object_path(&e.digest), &p, e.mode)?;
                }
            }
        }
        if let Err(e) = std::fs::rename(&tmp, &dst) {
            // Someone else made it first (a folder cannot replace a non-empty folder).
            let _ = remove_any(&tmp);
            if std::fs::symlink_metadata(&dst).is_err() {
                return Err(CacheError::io("cannot create view", &dst)(e));
            }
        }
        Ok(dst)
    }

    pub fn remove_views(&self, digest: &str) {
        let _ = remove_any(&self.root.join("views").join(digest));
    }

    pub fn remove_object(&self, digest: &str) {
        let _ = std::fs::remove_file(self.object_path(digest));
        self.remove_views(digest);
    }

    pub fn manifest_path(&self, key: &str) -> PathBuf {
        self.root.join("manifests").join(format!("{key}.json"))
    }

    /// Write the manifest with an atomic rename: this is the commit point of a stage run.
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let tmp = self.tmp_path("manifest");
        write_durable(&tmp, &m.to_bytes())?;
        let dst = self.manifest_path(&m.key);
        std::fs::rename(&tmp, &dst).map_err(CacheError::io("cannot commit manifest", &dst))?;
        if fsync_enabled() {
            if let Ok(d) = std::fs::File::open(self.root.join("manifests")) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    pub fn read_manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let p = self.manifest_path(key);
        match std::fs::read(&p) {
            Ok(b) => match Manifest::from_bytes(&b) {
                Ok(m) if m.key == key => Ok(Some(m)),
                // An unreadable manifest is a miss: the stage runs again and rewrites it.
                _ => Ok(None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io("cannot read manifest", p)(e)),
        }
    }

    pub fn remove_manifest(&self, key: &str) -> Result<()> {
        match std::fs::remove_file(self.manifest_path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(
                "cannot remove manifest",
                self.manifest_path(key),
            )(e)),
        }
    }

    pub fn manifest_keys(&self) -> Result<Vec<String>> {
        let dir = self.root.join("manifests");
        let mut keys = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(CacheError::io("cannot list", &dir))? {
            let e = e.map_err(CacheError::io("cannot list", &dir))?;
            if let Some(k) = e.file_name().to_str().and_then(|n| n.strip_suffix(".json")) {
                keys.push(k.to_string());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Every object digest in the store, with its size.
    pub fn all_objects(&self) -> Result<Vec<(String, u64)>> {
        let dir = self.root.join("objects");
        let mut out = Vec::new();
        for a in std::fs::read_dir(&dir).map_err(CacheError::io("cannot list", &dir))? {
            let a = a.map_err(CacheError::io("cannot list", &dir))?;
            let an = a.file_name().to_string_lossy().into_owned();
            if !a.path().is_dir() {
                continue;
            }
            for b in std::fs::read_dir(a.path()).map_err(CacheError::io("cannot list", a.path()))? {
                let b = b.map_err(CacheError::io("cannot list", a.path()))?;
                let size = b.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((format!("{an}{}", b.file_name().to_string_lossy()), size));
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Every file under `dir` (following symlinks, as inputs are read): (tree name, path).
pub(crate) fn walk_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    walk(dir, "", &mut files, &mut Vec::new())?;
    Ok(files)
}

fn walk(
    dir: &Path,
    rel: &str,
    files: &mut Vec<(String, PathBuf)>,
    empty: &mut Vec<String>,
) -> Result<()> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).map_err(CacheError::io("cannot list", dir))? {
        let e = e.map_err(CacheError::io("cannot list", dir))?;
        n += 1;
        let name = encode_name(&e.file_name());
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        // Inputs: follow symlinks to folders; a dangling link is an error naming it.
        let meta =
            std::fs::metadata(&p).map_err(CacheError::io("cannot read (dangling symlink?)", &p))?;
        if meta.is_dir() {
            walk(&p, &r, files, empty)?;
        } else {
            files.push((r, p));
        }
    }
    if n == 0 && !rel.is_empty() {
        empty.push(rel.to_string());
    }
    Ok(())
}

/// One file of an output folder: where it is, its name in the tree, and whether it must be
/// copied (reached through a symlink: its real path may be stored too, or lie in the work dir).
struct OutFile {
    rel: String,
    path: PathBuf,
    copy: bool,
    mode: u32,
}

struct OutputWalk<'a> {
    shown: &'a str,
    roots: &'a [PathBuf],
    /// Canonical folders being walked, outermost first (a symlink to one of them is a loop).
    chain: Vec<PathBuf>,
    files: Vec<OutFile>,
    empty_dirs: Vec<String>,
}

impl OutputWalk<'_> {
    fn dir(&mut self, dir: &Path, rel: &str, via_link: bool) -> Result<()> {
        let mut n = 0;
        for e in std::fs::read_dir(dir).map_err(CacheError::io("cannot list", dir))? {
            let e = e.map_err(CacheError::io("cannot list", dir))?;
            n += 1;
            let name = encode_name(&e.file_name());
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).map_err(CacheError::io("cannot read", &p))?;
            let shown = || format!("{}: {}", self.shown, display_rel(&r));
            if meta.file_type().is_symlink() {
                let target = resolve_output_link(&p, &shown(), self.roots)?;
                let tm =
                    std::fs::metadata(&target).map_err(CacheError::io("cannot read", &target))?;
                if tm.is_dir() {
                    if self.chain.contains(&target) {
                        return Err(CacheError::Refused(format!(
                            "{} is a symlink to {}, a folder that contains it (a loop)\nhint: remove the link, or make it point at a file",
                            shown(),
                            target.display()
                        )));
                    }
                    self.chain.push(target.clone());
                    self.dir(&target, &r, true)?;
                    self.chain.pop();
                } else if tm.is_file() {
                    self.files.push(OutFile {
                        rel: r,
                        path: target,
                        copy: true,
                        mode: exec_mode(&tm),
                    });
                } else {
                    return Err(not_regular(&shown()));
                }
            } else if meta.is_dir() {
                self.chain.push(p.clone());
                self.dir(&p, &r, via_link)?;
                self.chain.pop();
            } else if meta.is_file() {
                self.files.push(OutFile {
                    rel: r,
                    path: p,
                    copy: via_link,
                    mode: exec_mode(&meta),
                });
            } else {
                return Err(not_regular(&shown()));
            }
        }
        if n == 0 && !rel.is_empty() {
            self.empty_dirs.push(rel.to_string());
        }
        Ok(())
    }
}

fn exec_mode(m: &std::fs::Metadata) -> u32 {
    if m.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn not_regular(shown: &str) -> CacheError {
    CacheError::Refused(format!(
        "{shown} is not a regular file, folder or symlink (a fifo, socket or device cannot be stored)\nhint: remove it from the output"
    ))
}

/// Where the output symlink `link` points, canonical; an error naming the link and its target
/// when that is missing or outside `roots` (the stage's run dir and work dir).
fn resolve_output_link(link: &Path, shown: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let text = std::fs::read_link(link).unwrap_or_default();
    let target = link.canonicalize().map_err(|e| {
        CacheError::Refused(format!(
            "{shown} is a symlink to {}, which cannot be read ({e})\nhint: a symlink in an output must point at a file or folder the stage wrote",
            text.display()
        ))
    })?;
    if !roots.iter().any(|r| target.starts_with(r)) {
        return Err(CacheError::Refused(format!(
            "{shown} is a symlink to {}, outside the stage's run dir\nhint: copy what it points to into the output (`cp -rL`); to read that data, declare it as an input",
            target.display()
        )));
    }
    Ok(target)
}

/// A tree name for a file name: itself when it is UTF-8, else NUL (which no Unix file name
/// holds) followed by the hex of its bytes, so that names round-trip byte for byte and two
/// distinct names never share an entry.
pub fn encode_name(name: &std::ffi::OsStr) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    match name.to_str() {
        Some(s) => s.to_string(),
        None => {
            let mut out = String::from("\0");
            for b in name.as_bytes() {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
    }
}

/// The relative path of a tree entry (`/`-separated, [`encode_name`]d components).
pub fn decode_path(rel: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    rel.split('/')
        .map(|c| match c.strip_prefix('\0') {
            Some(hex) => std::ffi::OsString::from_vec(
                (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect(),
            ),
            None => std::ffi::OsString::from(c),
        })
        .collect()
}

fn display_rel(rel: &str) -> String {
    decode_path(rel).display().to_string()
}

fn link_or_copy(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    if mode & 0o111 == 0 && std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dst).map_err(CacheError::io("cannot materialise", dst))?;
    let m = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m))
        .map_err(CacheError::io("cannot chmod", dst))
}

/// Whether commits fsync (`ORCHESTRATOR_FSYNC=1`). Off by default: a process crash (`kill -9`,
/// OOM, Ctrl-C) cannot lose data that reached the page cache, and after a power cut a truncated
/// object fails the digest check made before every use, so the worst case is a rerun of that
/// stage; an fsync per file would cost ~4 ms per stage on typical disks.
pub fn fsync_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("ORCHESTRATOR_FSYNC").is_some_and(|v| v != "0" && !v.is_empty())
    })
}

pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(CacheError::io("cannot write", path))?;
    f.write_all(bytes)
        .map_err(CacheError::io("cannot write", path))?;
    if fsync_enabled() {
        f.sync_all().map_err(CacheError::io("cannot sync", path))?;
    }
    Ok(())
}

pub(crate) fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        for d in ["objects", "manifests", "views", "tmp"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let s = Store::new(t.path());
        (t, s)
    }

    #[test]
    fn ingest_file_is_content_addressed_and_read_only() {
        let (t, s) = store();
        let src = t.path().join("tmp/a");
        std::fs::write(&src, b"hello").unwrap();
        let d = s.ingest_file(&src, &|_| true).unwrap();
        assert_eq!(d, hash_bytes(b"hello"));
        assert!(!src.exists());
        let mode = std::fs::metadata(s.object_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        // same content again: deduplicated, source removed
        std::fs::write(&src, b"hello").unwrap();
        assert_eq!(s.ingest_file(&src, &|_| true).unwrap(), d);
        assert!(!src.exists());
    }

    #[test]
    fn dir_round_trips_through_a_view() {
        let (t, s) = store();
        let src = t.path().join("tmp/out");
        std::fs::create_dir_all(src.join("sub/empty")).unwrap();
        std::fs::write(src.join("a.txt"), b"A").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"B").unwrap();
        let (d, tree) = s
            .ingest_output_dir(&src, "out", &[t.path().canonicalize().unwrap()], &|_| true)
            .unwrap();
        assert_eq!(tree.entries.len(), 2);
        assert_eq!(tree.empty_dirs, vec!["sub/empty".to_string()]);
        let v = s.view(&d, ObjKind::Dir, "out").unwrap();
        assert_eq!(std::fs::read(v.join("sub/b.txt")).unwrap(), b"B");
        assert!(v.join("sub/empty").is_dir());
        // the same content elsewhere has the same tree digest
        let other = t.path().join("other");
        std::fs::create_dir_all(other.join("sub/empty")).unwrap();
        std::fs::write(other.join("a.txt"), b"A").unwrap();
        std::fs::write(other.join("sub/b.txt"), b"B").unwrap();
        let t2 = s
            .tree_of_dir(&other, &|p, _| Ok(hash_file(p).unwrap()))
            .unwrap();
        assert_eq!(t2.digest(), d);
    }
}
