//! Reading the cache's files safely and cheaply: [`open_inside`] (nothing outside the cache is
//! ever opened, whatever a URL or a planted symlink says), [`Stamp`] (has a file changed, for the
//! stat poll), [`JsonlTail`] (follow an append-only JSON-lines file), [`read_tail`] / [`read_from`]
//! (bounded pieces of a log of any size) and [`read_object`] (a small store object, checked
//! against its digest).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A store object or fingerprint key: 64 lowercase hex digits (blake3). Anything else in a URL
/// or a manifest never reaches the filesystem.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Open `path` for reading only if the file actually opened lies inside `root` (canonical).
/// The check is made on the opened descriptor (`/proc/self/fd`), so a symlink anywhere on the
/// way, even one swapped in after a check, cannot lead out of the cache. Errors are NotFound.
pub fn open_inside(root: &Path, path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::open(path)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .or_else(|_| path.canonicalize())?;
    if real.starts_with(root) && f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a file inside the cache", path.display()),
        ))
    }
}

/// What the stat poll compares: size, mtime and inode (None: the file does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp(Option<(u64, i64, i64, u64)>);

impl Stamp {
    pub fn of(path: &Path) -> Stamp {
        Stamp(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino())),
        )
    }
    /// Modification time, unix seconds.
    pub fn mtime(&self) -> Option<i64> {
        self.0.map(|s| s.1)
    }
}

/// Follows an append-only JSON-lines file: each [`JsonlTail::poll`] parses only the bytes added
/// since the last one; a torn last line waits for its end; undecodable lines are skipped; a file
/// that shrank or was replaced is read again from the start.
#[derive(Debug)]
pub struct JsonlTail<T> {
    /// Only files inside this folder are opened (see [`open_inside`]).
    root: PathBuf,
    path: PathBuf,
    offset: u64,
    ino: Option<u64>,
    partial: Vec<u8>,
    pub items: Vec<T>,
}

impl<T: DeserializeOwned> JsonlTail<T> {
    pub fn new(root: PathBuf, path: PathBuf) -> Self {
        JsonlTail {
            root,
            path,
            offset: 0,
            ino: None,
            partial: Vec::new(),
            items: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what was appended; returns how many new items were parsed (`usize::MAX`-free: a
    /// restart from scratch counts as its full length).
    pub fn poll(&mut self) -> usize {
        let Ok(mut f) = open_inside(&self.root, &self.path) else {
            let had = !self.items.is_empty();
            self.reset();
            return usize::from(had);
        };
        let Ok(meta) = f.metadata() else { return 0 };
        if meta.len() < self.offset || self.ino.is_some_and(|i| i != meta.ino()) {
            self.reset();
        }
        self.ino = Some(meta.ino());
        if meta.len() == self.offset {
            return 0;
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut buf = Vec::with_capacity((meta.len() - self.offset) as usize);
        if (&mut f)
            .take(meta.len() - self.offset)
            .read_to_end(&mut buf)
            .is_err()
        {
            return 0;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let before = self.items.len();
        for line in self.partial[..last_nl].split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice(line) {
                self.items.push(v);
            }
        }
        self.partial.drain(..=last_nl);
        self.items.len() - before
    }

    fn reset(&mut self) {
        self.offset = 0;
        self.ino = None;
        self.partial.clear();
        self.items.clear();
    }
}

/// A piece of a text file: bytes `start..end` of a file of `size` bytes, as lossy UTF-8.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Piece {
    pub size: u64,
    pub start: u64,
    pub end: u64,
    pub text: String,
}

/// The last `max` bytes of `f` (at most), starting at a line start when the cut falls inside
/// the file. Never reads more than `max` bytes, whatever the file's size.
pub fn read_tail(f: &mut std::fs::File, max: u64) -> std::io::Result<Piece> {
    let size = f.metadata()?.len();
    let mut start = size.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    (&mut *f).take(size - start).read_to_end(&mut buf)?;
    if start > 0 {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=nl);
            start += nl as u64 + 1;
        }
    }
    let end = start + buf.len() as u64;
    Ok(Piece {
        size,
        start,
        end,
        text: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// Up to `max` bytes of `f` from `from`, cut after the last newline when there is one (so lines
/// arrive whole) or else at a UTF-8 character boundary.
pub fn read_from(f: &mut std::fs::File, from: u64, max: u64) -> std::io::Result<Piece> {
    let size = f.metadata()?.len();
    let from = from.min(size);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    (&mut *f).take(max.min(size - from)).read_to_end(&mut buf)?;
    let whole = (from + buf.len() as u64) == size;
    if !whole {
        let cut = match buf.iter().rposition(|&b| b == b'\n') {
            Some(nl) => nl + 1,
            None => utf8_boundary(&buf),
        };
        buf.truncate(cut);
    }
    Ok(Piece {
        size,
        start: from,
        end: from + buf.len() as u64,
        text: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// The longest prefix of `b` that does not end inside a UTF-8 character.
fn utf8_boundary(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => b.len(),
    }
}

/// Why a store object could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectError {
    Missing,
    TooBig(u64),
    Corrupt(String),
    Io(String),
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectError::Missing => write!(f, "the object is missing from the store (removed by `gc`, or lost); `orchestrator cache verify` says more"),
            ObjectError::TooBig(n) => write!(f, "the object is {n} bytes, too big to show here; download it"),
            ObjectError::Corrupt(actual) => write!(f, "the object is corrupt (its bytes hash to {actual}); `orchestrator cache verify --repair` removes it and the stage runs again"),
            ObjectError::Io(e) => write!(f, "cannot read the object: {e}"),
        }
    }
}

/// Read a store object of at most `max` bytes, checking it against its digest.
pub fn read_object(root: &Path, digest: &str, max: u64) -> Result<Vec<u8>, ObjectError> {
    if !is_digest(digest) {
        return Err(ObjectError::Missing);
    }
    let path = crate::cache::Store::new(root).object_path(digest);
    let mut f = open_inside(root, &path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ObjectError::Missing,
        _ => ObjectError::Io(e.to_string()),
    })?;
    let len = f
        .metadata()
        .map_err(|e| ObjectError::Io(e.to_string()))?
        .len();
    if len > max {
        return Err(ObjectError::TooBig(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.read_to_end(&mut bytes)
        .map_err(|e| ObjectError::Io(e.to_string()))?;
    let actual = crate::cache::hash_bytes(&bytes);
    if actual != digest {
        return Err(ObjectError::Corrupt(actual));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn digests_are_64_lowercase_hex() {
        assert!(is_digest(&"a".repeat(64)));
        assert!(!is_digest(&"A".repeat(64)));
        assert!(!is_digest("../../etc/passwd"));
        assert!(!is_digest(&format!("{}/", "a".repeat(63))));
    }

    #[test]
    fn nothing_outside_the_root_opens_even_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cache");
        std::fs::create_dir_all(root.join("runs")).unwrap();
        std::fs::write(t.path().join("secret"), "x").unwrap();
        std::fs::write(root.join("runs/log"), "ok").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("runs/link")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(open_inside(&root, &root.join("runs/log")).is_ok());
        let e = open_inside(&root, &root.join("runs/link")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(open_inside(&root, &root.join("runs/../../secret")).is_err());
        assert!(open_inside(&root, &root.join("runs")).is_err());
    }

    #[test]
    fn jsonl_tail_reads_only_new_complete_lines() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let p = root.join("h.jsonl");
        let mut tail: JsonlTail<serde_json::Value> = JsonlTail::new(root, p.clone());
        assert_eq!(tail.poll(), 0);
        std::fs::write(&p, "{\"a\":1}\nnot json\n{\"a\":").unwrap();
        assert_eq!(tail.poll(), 1);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2}\n").unwrap();
        assert_eq!(tail.poll(), 1);
        assert_eq!(tail.items.len(), 2);
        std::fs::write(&p, "{\"b\":1}\n").unwrap();
        assert_eq!(tail.poll(), 1);
        assert_eq!(tail.items, [serde_json::json!({"b": 1})]);
    }

    #[test]
    fn pieces_are_bounded_and_cut_at_lines() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log");
        std::fs::write(&p, "one\ntwo\nthree\nfour").unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        let tail = read_tail(&mut f, 9).unwrap();
        assert_eq!(
            (tail.text.as_str(), tail.start, tail.size),
            ("four", 14, 18)
        );
        let piece = read_from(&mut f, 4, 8).unwrap();
        assert_eq!((piece.text.as_str(), piece.end), ("two\n", 8));
        let rest = read_from(&mut f, 8, 100).unwrap();
        assert_eq!(rest.text, "three\nfour");
        std::fs::write(&p, "é".repeat(4)).unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        assert_eq!(read_from(&mut f, 0, 3).unwrap().text, "é");
    }

    #[test]
    fn objects_are_checked_against_their_digest() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let store = crate::cache::Store::new(&root);
        let d = crate::cache::hash_bytes(b"{}");
        let path = store.object_path(&d);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        assert_eq!(read_object(&root, &d, 10).unwrap(), b"{}");
        assert_eq!(read_object(&root, &d, 1), Err(ObjectError::TooBig(2)));
        std::fs::write(&path, b"{x").unwrap();
        assert!(matches!(
            read_object(&root, &d, 10),
            Err(ObjectError::Corrupt(_))
        ));
        assert_eq!(
            read_object(&root, &"0".repeat(64), 10),
            Err(ObjectError::Missing)
        );
    }
}
