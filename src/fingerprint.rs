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
    /// Input name -> absolute path, for the external inputs a kind reads in place (`in_place`
    /// ports, e.g. `recordio`'s `source`): its output refers to that place, so two places with
    /// the same content are different work. Absent (not serialized) when empty, so no other key
    /// depends on it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locations: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The fingerprint of `inst` given the content digests of its inputs.
    pub fn of(inst: &Instance, input_digests: BTreeMap<String, String>) -> Fingerprint {
        let outputs = inst
            .outputs
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    if o.is_dir {
                        format!("{}/", o.rel_path)
                    } else {
                        o.rel_path.clone()
                    },
                )
            })
            .collect();
        let locations = match &inst.action {
            Action::Builtin { kind, .. } => inst
                .inputs
                .iter()
                .filter(|(name, _)| kind.in_place.contains(&name.as_str()))
                .filter_map(|(name, input)| match input {
                    crate::pipeline::Input::External { path } => {
                        Some((name.clone(), path.to_string_lossy().into_owned()))
                    }
                    crate::pipeline::Input::Upstream { .. }
                    | crate::pipeline::Input::Gather { .. } => None,
                })
                .collect(),
            Action::Shell { .. } => BTreeMap::new(),
        };
        let (kind, kind_version, params, command, env) = match &inst.action {
            Action::Builtin { kind, params } => (
                kind.name.to_string(),
                kind.version,
                params.clone(),
                String::new(),
                BTreeMap::new(),
            ),
            Action::Shell { command, env } => (
                "run".to_string(),
                0,
                serde_json::Value::Null,
                command.clone(),
                env.clone(),
            ),
        };
        Fingerprint {
            version: FINGERPRINT_VERSION,
            kind,
            kind_version,
            params,
            command,
            env,
            outputs,
            inputs: input_digests,
            locations,
        }
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
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => diff_values(&p, x, y, out),
                    _ => out.push(p),
                }
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            "(whole)".into()
        } else {
            path.to_string()
        }),
        _ => {}
    }
}

/// The fingerprint of every instance as far as the pipeline file alone determines it: each
/// upstream input's digest is replaced by `static:<upstream's static key>/<output>` and each
/// external input's by `path:<absolute path>`. Equal static fingerprints mean equal work for
/// equal external data, so a param change shows here exactly where it reruns stages (what
/// `validate --format json` prints). At run time the real content digests replace these.
pub fn static_fingerprints(p: &crate::pipeline::Pipeline) -> Vec<Fingerprint> {
    let mut keys: Vec<String> = Vec::with_capacity(p.instances.len());
    let mut out = Vec::with_capacity(p.instances.len());
    for inst in &p.instances {
        let digests = inst
            .inputs
            .iter()
            .map(|(name, input)| {
                let d = match input {
                    crate::pipeline::Input::Upstream { instance, output } => {
                        format!("static:{}/{output}", keys[*instance])
                    }
                    crate::pipeline::Input::External { path } => format!("path:{}", path.display()),
                    crate::pipeline::Input::Gather { output, from } => {
                        let ups: Vec<String> = from
                            .iter()
                            .map(|g| format!("{}={}", g.entry, keys[g.instance]))
                            .collect();
                        let h = crate::cache::hash_bytes(ups.join(";").as_bytes());
                        format!("static-gather:{output}:{h}")
                    }
                };
                (name.clone(), d)
            })
            .collect();
        let fp = Fingerprint::of(inst, digests);
        keys.push(fp.key());
        out.push(fp);
    }
    out
}

#[cfg(test)]
mod tests {
    //! One "changing X changes the key" test per field, and the things that must not matter.

    use super::*;
    use crate::pipeline::{Input, LiteMap, Output, Resources};
    use orchestrator_stages::kinds::{self, KindSpec};
    use std::path::PathBuf;

    fn prune_params() -> serde_json::Value {
        (kinds::prune::PRUNE.resolve)(&serde_json::json!({"target_ratio": 0.5})).unwrap()
    }

    fn builtin(kind: &'static KindSpec, params: serde_json::Value) -> Instance {
        Instance {
            id: "prune[ratio=0.5]".into(),
            stage: "prune".into(),
            cell: LiteMap::from_iter([("ratio".to_string(), "0.5".to_string())]),
            action: Action::Builtin { kind, params },
            inputs: LiteMap::from_iter([
                (
                    "scores".to_string(),
                    Input::Upstream {
                        instance: 3,
                        output: "scores".into(),
                    },
                ),
                (
                    "train".to_string(),
                    Input::External {
                        path: PathBuf::from("/data/train"),
                    },
                ),
            ]),
            outputs: kind.outputs.iter().map(Output::of_port).collect(),
            resources: Resources {
                gpus: 0,
                cpus: 1,
                ..Default::default()
            },
            retry: 0,
            location: "p.yaml:3:3".into(),
        }
    }

    fn shell() -> Instance {
        let mut i = builtin(&kinds::prune::PRUNE, serde_json::Value::Null);
        i.action = Action::Shell {
            command: "python3 ${inputs.script} > ${outputs.report}".into(),
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
        };
        i.outputs = [Output {
            name: "report".into(),
            rel_path: "report".into(),
            is_dir: false,
            required: true,
        }]
        .into();
        i
    }

    fn digests() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("scores".to_string(), "aa".repeat(32)),
            ("train".to_string(), "bb".repeat(32)),
        ])
    }

    fn key(i: &Instance) -> String {
        Fingerprint::of(i, digests()).key()
    }

    /// The encoding is pinned: these keys change only with a deliberate `FINGERPRINT_VERSION`
    /// bump (which reruns every user's stages), never by accident (a renamed field, a reordered
    /// map, another serializer). Update the literals in the same commit as the bump.
    #[test]
    fn keys_are_pinned_to_the_encoding() {
        assert_eq!(FINGERPRINT_VERSION, 1, "a bump changes the literals below");
        assert_eq!(
            key(&shell()),
            "3f2af16483e2ce750c17a42656e756ef6395d221150dcbbef1e81837d055b299"
        );
        let builtin = Fingerprint {
            version: FINGERPRINT_VERSION,
            kind: "prune".into(),
            kind_version: 2,
            params: serde_json::json!({"min_per_id": 5, "target_ratio": 0.5, "threshold": null}),
            command: String::new(),
            env: BTreeMap::new(),
            outputs: BTreeMap::from([("kept".to_string(), "kept.txt".to_string())]),
            inputs: digests(),
            // Empty: not serialized, so keys of kinds without in-place inputs are unchanged.
            locations: BTreeMap::new(),
        };
        assert_eq!(
            builtin.key(),
            "e8d8fe9ece5c78ab9c8c20e61f805c1173d942c41dc67ad9320b8d62debe0abd"
        );
    }

    #[test]
    fn changing_the_kind_changes_the_key() {
        let a = builtin(&kinds::prune::PRUNE, prune_params());
        let b = builtin(&kinds::prune::SCORE, prune_params());
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn changing_the_kind_version_changes_the_key() {
        let p = &kinds::prune::PRUNE;
        let bumped: &'static KindSpec = Box::leak(Box::new(KindSpec {
            name: p.name,
            worker: p.worker,
            version: p.version + 1,
            summary: p.summary,
            inputs: p.inputs,
            outputs: p.outputs,
            in_place: p.in_place,
            default_gpus: p.default_gpus,
            gathers: p.gathers,
            resolve: p.resolve,
            param_names: p.param_names,
            schema: p.schema,
        }));
        let a = builtin(p, prune_params());
        let b = builtin(bumped, prune_params());
        assert_ne!(key(&a), key(&b));
        assert_eq!(
            Fingerprint::of(&b, digests()).changed_fields(&Fingerprint::of(&a, digests())),
            ["kind_version"]
        );
    }

    #[test]
    fn changing_any_param_changes_the_key() {
        let base = prune_params();
        let a = builtin(&kinds::prune::PRUNE, base.clone());
        let names = (kinds::prune::PRUNE.param_names)();
        assert!(names.len() >= 5);
        for name in names {
            let mut p = base.clone();
            let v = &mut p[&name];
            *v = match v.clone() {
                serde_json::Value::Null => serde_json::json!(0.25),
                serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap() + 1.0),
                serde_json::Value::Bool(b) => serde_json::json!(!b),
                serde_json::Value::String(s) => serde_json::json!(format!("{s}x")),
                other => serde_json::json!([other]),
            };
            let b = builtin(&kinds::prune::PRUNE, p);
            assert_ne!(key(&a), key(&b), "param {name}");
            assert_eq!(
                Fingerprint::of(&b, digests()).changed_fields(&Fingerprint::of(&a, digests())),
                [format!("params.{name}")]
            );
        }
    }

    #[test]
    fn changing_the_command_changes_the_key() {
        let a = shell();
        let mut b = shell();
        if let Action::Shell { command, .. } = &mut b.action {
            command.push_str(" --verbose");
        }
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn changing_the_env_changes_the_key() {
        let a = shell();
        let mut b = shell();
        if let Action::Shell { env, .. } = &mut b.action {
            env.insert("A".into(), "2".into());
        }
        assert_ne!(key(&a), key(&b));
        let mut c = shell();
        if let Action::Shell { env, .. } = &mut c.action {
            env.insert("B".into(), "1".into());
        }
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn moving_an_input_read_in_place_changes_the_key_and_others_ignore_paths() {
        let recordio = |path: &str| {
            let mut i = builtin(&kinds::data::RECORDIO, serde_json::json!({}));
            i.inputs =
                LiteMap::from_iter([("source".to_string(), Input::External { path: path.into() })]);
            i
        };
        let d = BTreeMap::from([("source".to_string(), "cc".repeat(32))]);
        let a = Fingerprint::of(&recordio("/data/srcA"), d.clone());
        let b = Fingerprint::of(&recordio("/data/srcB"), d.clone());
        assert_ne!(a.key(), b.key(), "same content, another place");
        assert_eq!(b.changed_fields(&a), ["locations.source"]);
        // A kind that reads its inputs as content only: the path is not in the key.
        let mut moved = builtin(&kinds::prune::PRUNE, prune_params());
        moved.inputs.insert(
            "train".into(),
            Input::External {
                path: PathBuf::from("/elsewhere/train"),
            },
        );
        assert_eq!(
            key(&moved),
            key(&builtin(&kinds::prune::PRUNE, prune_params()))
        );
    }

    #[test]
    fn changing_the_outputs_changes_the_key() {
        let a = shell();
        let changed = |f: &dyn Fn(&mut Vec<Output>)| {
            let mut i = shell();
            let mut outputs = i.outputs.to_vec();
            f(&mut outputs);
            i.outputs = outputs.into();
            i
        };
        let renamed = changed(&|o| o[0].name = "summary".into());
        let moved = changed(&|o| o[0].rel_path = "report.txt".into());
        let folder = changed(&|o| o[0].is_dir = true);
        let more = changed(&|o| {
            o.push(Output {
                name: "plots".into(),
                rel_path: "plots".into(),
                is_dir: true,
                required: true,
            })
        });
        for b in [renamed, moved, folder, more] {
            assert_ne!(key(&a), key(&b), "{:?}", b.outputs);
        }
    }

    #[test]
    fn changing_each_input_digest_changes_the_key() {
        let i = builtin(&kinds::prune::PRUNE, prune_params());
        let a = Fingerprint::of(&i, digests());
        for name in ["scores", "train"] {
            let mut d = digests();
            d.insert(name.into(), "cc".repeat(32));
            let b = Fingerprint::of(&i, d);
            assert_ne!(a.key(), b.key(), "{name}");
            assert_eq!(b.changed_fields(&a), [format!("inputs.{name}")]);
        }
        let mut extra = digests();
        extra.insert("flags".into(), "dd".repeat(32));
        assert_ne!(a.key(), Fingerprint::of(&i, extra).key());
        // The same content under another input name is a different job.
        let mut renamed = digests();
        let v = renamed.remove("train").unwrap();
        renamed.insert("labels".into(), v);
        assert_ne!(a.key(), Fingerprint::of(&i, renamed).key());
    }

    #[test]
    fn changing_the_fingerprint_version_changes_the_key() {
        let i = builtin(&kinds::prune::PRUNE, prune_params());
        let a = Fingerprint::of(&i, digests());
        assert_eq!(a.version, FINGERPRINT_VERSION);
        let mut b = a.clone();
        b.version += 1;
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn devices_paths_ids_and_retries_are_not_part_of_the_key() {
        let a = builtin(&kinds::prune::PRUNE, prune_params());
        let mut b = a.clone();
        b.resources = Resources {
            gpus: 4,
            cpus: 8,
            mem_gb: Some(64.0),
            time_min: Some(30),
            slurm: BTreeMap::from([("partition".to_string(), "gpu".to_string())]),
        };
        b.retry = 3;
        b.id = "other[x=1]".into();
        b.stage = "other".into();
        b.cell = LiteMap::new();
        b.location = "elsewhere.yaml:9:9".into();
        // Where an external input lives does not matter, only its content digest.
        b.inputs.insert(
            "train".into(),
            Input::External {
                path: PathBuf::from("/mnt/other/copy/of/train"),
            },
        );
        b.inputs.insert(
            "scores".into(),
            Input::Upstream {
                instance: 17,
                output: "scores".into(),
            },
        );
        assert_eq!(key(&a), key(&b));
        let text = String::from_utf8(Fingerprint::of(&b, digests()).canonical()).unwrap();
        for absent in ["/mnt", "gpu", "cache", "CUDA", "elsewhere", "other"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn canonical_encoding_is_sorted_and_round_trips() {
        let f = Fingerprint::of(&builtin(&kinds::prune::PRUNE, prune_params()), digests());
        let text = String::from_utf8(f.canonical()).unwrap();
        let back: Fingerprint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.key(), f.key());
        let p = text.find("\"min_per_id\"").unwrap();
        let q = text.find("\"target_ratio\"").unwrap();
        assert!(p < q, "params sorted: {text}");
    }
}
