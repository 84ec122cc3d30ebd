//! [`Manifest`]: what one committed stage run produced: output name -> object digest, plus the
//! fingerprint it was run under, how long it took and where.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;

/// Bumped when the manifest's shape changes incompatibly (old manifests are then misses).
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjKind {
    File,
    Dir,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// Blob digest (file) or tree digest (folder).
    pub digest: String,
    pub kind: ObjKind,
    /// Path relative to the stage's out dir, as declared.
    pub rel_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// `fingerprint.key()`: the index key and the manifest's file name.
    pub key: String,
    pub fingerprint: Fingerprint,
    pub outputs: BTreeMap<String, OutputEntry>,
    /// Digest of the `metrics.json` the stage wrote, if any.
    #[serde(default)]
    pub metrics: Option<String>,
    pub duration_ms: u64,
    /// `cpu`, `cuda:0,1`, ...
    pub device: String,
    /// Unix seconds at commit.
    pub finished_at: u64,
    /// Pipeline and instance that produced it (informational: the same fingerprint may serve many).
    pub pipeline: String,
    pub instance: String,
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    pub fn from_bytes(b: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if m.version != MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} (this build reads {MANIFEST_VERSION})",
                m.version
            ));
        }
        Ok(m)
    }
}
