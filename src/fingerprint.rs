//! [`Fingerprint`]: the cache key of a stage instance, a serializable struct hashed with blake3.
//!
//! It holds everything that determines a stage's outputs and nothing else: the kind and the
//! kind's own version (not the binary's hash, so a rebuild keeps a 34-epoch training), the resolved
//! params with every default filled in, the command of a `run:` stage, the declared outputs, and
//! the content digest of every input. Device ids, absolute paths of the cache and timestamps are
//! never part of it. `serde_json::Value` maps are BTreeMaps, so the encoding is canonical.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Action, Instance};

/// Bumped when the fingerprint's structure or encoding changes: every key changes with it.
pub const FINGERPRINT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub version: u32,
    /// Built-in kind name, or `run` for a shell stage.
    pub kind: String,
    pub kind_version: u32,
    /// Resolved params of a built-in kind; `null` for a shell stage.
    pub params: serde_json::Value,
    /// The interpolated command of a shell stage (with `${inputs.x}` placeholders), else empty.
    pub command: String,
    /// Environment of a shell stage.
    pub env: BTreeMap<String, String>,
    /// Declared outputs: name -> relative path (a trailing `/` marks a folder).
    pub outputs: BTreeMap<String, String>,
    /// Input name -> blake3 content digest (hex) of the file or folder it points at.
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The fingerprint of `inst` given the content digests of its inputs.
    pub fn of(inst: &Instance, input_digests: BTreeMap<String, String>) -> Fingerprint {
        let outputs = inst
            .outputs
            .iter()
            .map(|o| (o.name.clone(), if o.is_dir { format!("{}/", o.rel_path) } else { o.rel_path.clone() }))
            .collect();
        let (kind, kind_version, params, command, env) = match &inst.action {
            Action::Builtin { kind, params } => (kind.name.to_string(), kind.version, params.clone(), String::new(), BTreeMap::new()),
            Action::Shell { command, env } => ("run".to_string(), 0, serde_json::Value::Null, command.clone(), env.clone()),
        };
        Fingerprint { version: FINGERPRINT_VERSION, kind, kind_version, params, command, env, outputs, inputs: input_digests }
    }

    /// The canonical encoding that is hashed.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a fingerprint always serializes")
    }

    /// The cache key: blake3 of the canonical encoding, hex.
    pub fn key(&self) -> String {
        blake3::hash(&self.canonical()).to_hex().to_string()
    }

    /// Dotted names of the fields that differ from `old` (e.g. `params.epochs`, `inputs.train`,
    /// `kind_version`), for `plan --explain`.
    pub fn changed_fields(&self, old: &Fingerprint) -> Vec<String> {
        let a = serde_json::to_value(old).unwrap_or_default();
        let b = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        diff_values("", &a, &b, &mut out);
        out
    }
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(ma), Object(mb)) => {
            let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => diff_values(&p, x, y, out),
                    _ => out.push(p),
                }
            }
        }
        _ if a != b => out.push(if path.is_empty() { "(whole)".into() } else { path.to_string() }),
        _ => {}
    }
}
