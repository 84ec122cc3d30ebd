//! [`Index`]: the sled database of the cache (the only file that imports sled). Trees:
//! `manifests` (fingerprint key -> manifest JSON; a cache of `manifests/*.json`), `stat`
//! (absolute path -> [`StatEntry`], so unchanged external inputs and store objects are not
//! re-hashed), `last` (pipeline + instance id -> the fingerprint it last ran or hit under).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::{CacheError, Result};
use crate::fingerprint::Fingerprint;

/// The sled index, or a detached one (no database: reads find nothing, writes are dropped),
/// which read-only commands use while a run holds the cache and its database.
#[derive(Debug, Clone)]
pub struct Index {
    path: PathBuf,
    trees: Option<Trees>,
}

#[derive(Debug, Clone)]
struct Trees {
    db: sled::Db,
    manifests: sled::Tree,
    stat: sled::Tree,
    last: sled::Tree,
}

/// What the stat cache remembers about a file whose digest it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub ctime_ns: i128,
    pub digest: String,
}

impl StatEntry {
    pub fn of(m: &std::fs::Metadata, digest: String) -> StatEntry {
        StatEntry {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ino: m.ino(),
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            digest,
        }
    }

    /// External inputs: any change of size, mtime, inode or ctime means "hash again".
    pub fn same_external_file(&self, now: &StatEntry) -> bool {
        self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && self.ino == now.ino
            && self.ctime_ns == now.ctime_ns
    }

    /// Store objects: ctime is left out because making a hardlinked view changes it; a write to
    /// the object still changes its mtime (or its inode, when replaced).
    pub fn same_object_file(&self, now: &StatEntry) -> bool {
        self.size == now.size && self.mtime_ns == now.mtime_ns && self.ino == now.ino
    }
}

fn err(path: &Path, e: sled::Error) -> CacheError {
    CacheError::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Index {
    /// Open (or create) the index at `path`. An index that is corrupt (a crash or a full disk
    /// in the middle of a write) is replaced by a new, empty one with a warning; the second
    /// value is then `true` and the caller refills it from `manifests/` (the index is only a
    /// cache of them). A full disk is an error that says so.
    pub fn open(path: &Path) -> Result<(Index, bool)> {
        match Self::open_trees(path) {
            Ok(trees) => Ok((
                Index {
                    path: path.to_path_buf(),
                    trees: Some(trees),
                },
                false,
            )),
            Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))) => {
                tracing::warn!(
                    "the cache index {} is unreadable ({e}); replacing it with a new one rebuilt from the committed manifests",
                    path.display()
                );
                std::fs::remove_dir_all(path)
                    .map_err(CacheError::io("cannot remove the corrupt index", path))?;
                let trees = Self::open_trees(path).map_err(|e| Self::error(path, e))?;
                Ok((
                    Index {
                        path: path.to_path_buf(),
                        trees: Some(trees),
                    },
                    true,
                ))
            }
            Err(e) => Err(Self::error(path, e)),
        }
    }

    fn open_trees(path: &Path) -> sled::Result<Trees> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Trees {
            manifests: db.open_tree("manifests")?,
            stat: db.open_tree("stat")?,
            last: db.open_tree("last")?,
            db,
        })
    }

    fn error(path: &Path, e: sled::Error) -> CacheError {
        match e {
            sled::Error::Io(source)
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                ) =>
            {
                CacheError::Io {
                    op: "cannot write the cache index",
                    path: path.to_path_buf(),
                    source,
                }
            }
            e => err(path, e),
        }
    }

    /// An index with no database behind it (see the type's doc).
    pub fn detached(path: &Path) -> Index {
        Index {
            path: path.to_path_buf(),
            trees: None,
        }
    }

    pub fn is_detached(&self) -> bool {
        self.trees.is_none()
    }

    pub fn get_manifest(&self, key: &str) -> Result<Option<Manifest>> {
        let Some(t) = &self.trees else {
            return Ok(None);
        };
        match t.manifests.get(key).map_err(|e| err(&self.path, e))? {
            // An undecodable entry is treated as absent: the file in `manifests/` is the truth.
            Some(v) => Ok(Manifest::from_bytes(&v).ok().filter(|m| m.key == key)),
            None => Ok(None),
        }
    }

    pub fn has_manifest(&self, key: &str) -> Result<bool> {
        let Some(t) = &self.trees else {
            return Ok(false);
        };
        t.manifests
            .contains_key(key)
            .map_err(|e| err(&self.path, e))
    }

    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        let compact = serde_json::to_vec(m).expect("a manifest always serializes");
        t.manifests
            .insert(m.key.as_bytes(), compact)
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    pub fn remove_manifest(&self, key: &str) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        t.manifests.remove(key).map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    pub fn manifest_keys(&self) -> Result<Vec<String>> {
        let Some(t) = &self.trees else {
            return Ok(Vec::new());
        };
        t.manifests
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| err(&self.path, e))
            })
            .collect()
    }

    pub fn clear_manifests(&self) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        t.manifests.clear().map_err(|e| err(&self.path, e))
    }

    pub fn get_stat(&self, path: &str) -> Result<Option<StatEntry>> {
        let Some(t) = &self.trees else {
            return Ok(None);
        };
        Ok(t.stat
            .get(path)
            .map_err(|e| err(&self.path, e))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn put_stat(&self, path: &str, s: &StatEntry) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        let v = serde_json::to_vec(s).expect("stat entry serializes");
        t.stat
            .insert(path.as_bytes(), v)
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    pub fn remove_stat(&self, path: &str) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        t.stat.remove(path).map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    fn last_key(pipeline: &str, instance: &str) -> Vec<u8> {
        let mut k = pipeline.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(instance.as_bytes());
        k
    }

    /// The fingerprint this instance last ran (or hit) under, for `plan --explain`.
    pub fn get_last(&self, pipeline: &str, instance: &str) -> Result<Option<Fingerprint>> {
        let Some(t) = &self.trees else {
            return Ok(None);
        };
        let v = t
            .last
            .get(Self::last_key(pipeline, instance))
            .map_err(|e| err(&self.path, e))?;
        Ok(v.and_then(|v| {
            let nl = v.iter().position(|&b| b == b'\n')?;
            serde_json::from_slice(&v[nl + 1..]).ok()
        }))
    }

    /// Only the key of [`Index::get_last`] (no JSON parsing: the no-op rerun path).
    pub fn get_last_key(&self, pipeline: &str, instance: &str) -> Result<Option<String>> {
        let Some(t) = &self.trees else {
            return Ok(None);
        };
        let v = t
            .last
            .get(Self::last_key(pipeline, instance))
            .map_err(|e| err(&self.path, e))?;
        Ok(v.and_then(|v| {
            let nl = v.iter().position(|&b| b == b'\n')?;
            std::str::from_utf8(&v[..nl]).ok().map(String::from)
        }))
    }

    /// Stored as `key\nfingerprint-json`.
    pub fn put_last(&self, pipeline: &str, instance: &str, fp: &Fingerprint) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        let mut v = fp.key().into_bytes();
        v.push(b'\n');
        v.extend_from_slice(&fp.canonical());
        t.last
            .insert(Self::last_key(pipeline, instance), v)
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        let Some(t) = &self.trees else {
            return Ok(());
        };
        t.db.flush().map_err(|e| err(&self.path, e))?;
        Ok(())
    }
}
