//! The registry of built-in stage kinds: [`KindSpec`] per kind (name, version, params, ports).
//!
//! This is the half of each kind that the engine needs without libtorch: it validates `with:`
//! params (unknown keys are errors, defaults filled in), knows the inputs and outputs for the DAG,
//! contributes `version` to the fingerprint, and says which [`Worker`] runs it.
//!
//! The set of kinds is closed: [`Kind`] has one variant per kind, declared once in the `kinds!`
//! list below next to its [`KindSpec`]. Adding a kind = a params type and a `KindSpec` static in a
//! submodule, one line in that list; the compiler then points at every exhaustive `match` on
//! [`Kind`] that must handle it (the workers' dispatch in [`crate::run`] and `torch::run`).
//!
//! Bump a kind's `version` when its semantics change (its outputs for the same inputs would
//! differ); never for refactors. Cached results of the old version are then recomputed.

pub mod data;
pub mod eval;
pub mod prune;
pub mod report;
pub mod train;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};

/// One input or output port of a kind.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    pub name: &'static str,
    /// Inputs: whether the stage must be given it. Outputs: always produced when true.
    pub required: bool,
    /// Outputs: the file or folder name inside the stage's out dir (a trailing `/` = folder).
    /// Inputs: empty.
    pub path: &'static str,
    pub doc: &'static str,
}

impl Port {
    pub const fn input(name: &'static str, required: bool, doc: &'static str) -> Port {
        Port {
            name,
            required,
            path: "",
            doc,
        }
    }
    pub const fn output(name: &'static str, path: &'static str, doc: &'static str) -> Port {
        Port {
            name,
            required: true,
            path,
            doc,
        }
    }
    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
    /// The output's path relative to the out dir, without the folder marker.
    pub fn rel_path(&self) -> &'static str {
        self.path.trim_end_matches('/')
    }
}

/// A param error: the key path inside `with:` (e.g. `target_ratio`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// Dotted path inside the params, empty for the whole map.
    pub path: String,
    pub message: String,
    /// A likely fix, shown as `hint:`.
    pub hint: Option<String>,
}

impl ParamError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Params of one kind: serde with `deny_unknown_fields` + `default`, a JSON schema, and the
/// semantic checks that types alone cannot express (ranges, exclusive options).
pub trait Params: DeserializeOwned + Serialize + JsonSchema + Default {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        Ok(())
    }
}

/// The process that runs a kind: pure-Rust kinds run in `orchestrator-stage-lite` (built with the
/// engine, without libtorch: it starts in milliseconds); the others in `orchestrator-stage`, which
/// also runs every pure-Rust kind (the fallback when the lite worker is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Lite,
    Torch,
}

impl Worker {
    /// The worker's binary name.
    pub fn binary(self) -> &'static str {
        match self {
            Worker::Lite => "orchestrator-stage-lite",
            Worker::Torch => "orchestrator-stage",
        }
    }
}

/// Everything the engine knows about one built-in kind.
pub struct KindSpec {
    pub name: &'static str,
    /// The worker that runs it (the dispatch of each worker must agree: a test checks).
    pub worker: Worker,
    /// Part of every fingerprint of this kind; bump when semantics change.
    pub version: u32,
    pub summary: &'static str,
    pub inputs: &'static [Port],
    pub outputs: &'static [Port],
    /// Inputs read in place, never copied (a RecordIO folder): what the stage writes refers to
    /// them by path, so their location is part of the fingerprint, not only their content.
    pub in_place: &'static [&'static str],
    /// GPUs a stage of this kind asks for when the pipeline does not say (`resources.gpus`).
    pub default_gpus: u32,
    /// Non-empty: the kind reads gathers (`stage.OUTPUT[*]`, folders of many results) of these
    /// outputs under input names of the pipeline's choosing, and nothing else; `inputs` is then
    /// empty. Empty: it reads one result per declared port and never a gather.
    pub gathers: &'static [&'static str],
    /// Validate `with:` and return the resolved params (every default filled in).
    pub resolve: fn(&serde_json::Value) -> Result<serde_json::Value, Vec<ParamError>>,
    /// Names of the params (for did-you-mean).
    pub param_names: fn() -> Vec<String>,
    /// JSON schema of the params.
    pub schema: fn(&mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema,
}

impl std::fmt::Debug for KindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl KindSpec {
    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&Port> {
        self.outputs.iter().find(|p| p.name == name)
    }
}

/// Deserialize `with:` into `P` (unknown keys and wrong types are errors with their key path),
/// run `P::validate`, and serialize back: the resolved params with every default present.
pub fn resolve<P: Params>(value: &serde_json::Value) -> Result<serde_json::Value, Vec<ParamError>> {
    let value = if value.is_null() {
        serde_json::json!({})
    } else {
        value.clone()
    };
    let p: P = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![ParamError::new(path, e.into_inner().to_string())]
    })?;
    p.validate()?;
    serde_json::to_value(&p).map_err(|e| vec![ParamError::new("", e.to_string())])
}

/// Param names of `P`: the keys of its serialized default.
pub fn param_names<P: Params>() -> Vec<String> {
    match serde_json::to_value(P::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

pub fn schema<P: Params>(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    gen.subschema_for::<P>()
}

/// Build a [`KindSpec`] for a params type.
#[macro_export]
macro_rules! kind_spec {
    ($params:ty, name: $name:expr, worker: $worker:ident, version: $version:expr, summary: $summary:expr,
     inputs: $inputs:expr, outputs: $outputs:expr, default_gpus: $gpus:expr $(,)?) => {
        $crate::kind_spec!($params, name: $name, worker: $worker, version: $version,
            summary: $summary, inputs: $inputs, outputs: $outputs, default_gpus: $gpus,
            in_place: &[])
    };
    ($params:ty, name: $name:expr, worker: $worker:ident, version: $version:expr, summary: $summary:expr,
     inputs: $inputs:expr, outputs: $outputs:expr, default_gpus: $gpus:expr,
     in_place: $in_place:expr $(,)?) => {
        $crate::kind_spec!($params, name: $name, worker: $worker, version: $version,
            summary: $summary, inputs: $inputs, outputs: $outputs, default_gpus: $gpus,
            in_place: $in_place, gathers: &[])
    };
    ($params:ty, name: $name:expr, worker: $worker:ident, version: $version:expr, summary: $summary:expr,
     inputs: $inputs:expr, outputs: $outputs:expr, default_gpus: $gpus:expr,
     in_place: $in_place:expr, gathers: $gathers:expr $(,)?) => {
        $crate::kinds::KindSpec {
            name: $name,
            worker: $crate::kinds::Worker::$worker,
            version: $version,
            summary: $summary,
            inputs: $inputs,
            outputs: $outputs,
            in_place: $in_place,
            default_gpus: $gpus,
            gathers: $gathers,
            resolve: $crate::kinds::resolve::<$params>,
            param_names: $crate::kinds::param_names::<$params>,
            schema: $crate::kinds::schema::<$params>,
        }
    };
}

/// The closed set of kinds: `Variant => spec static`, in the order the docs list them. Generates
/// [`Kind`] (with [`Kind::ALL`] and [`Kind::spec`]) and [`ALL`] from this one list.
macro_rules! kinds {
    ($($variant:ident => $spec:path),+ $(,)?) => {
        /// One built-in kind. Matches on it are exhaustive: a new kind cannot be left undispatched.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($variant),+
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            pub fn spec(self) -> &'static KindSpec {
                match self {
                    $(Kind::$variant => &$spec),+
                }
            }
        }

        /// Every built-in kind's spec, in the order of [`Kind::ALL`].
        pub static ALL: &[&KindSpec] = &[$(&$spec),+];
    };
}

kinds! {
    SyntheticFaces => data::SYNTHETIC_FACES,
    Recordio => data::RECORDIO,
    ImageFolder => data::IMAGE_FOLDER,
    Train => train::TRAIN,
    EvalTrainset => train::EVAL_TRAINSET,
    Score => prune::SCORE,
    Prune => prune::PRUNE,
    Clean => prune::CLEAN,
    Relabel => prune::RELABEL,
    Verify => eval::VERIFY,
    Ijbc => eval::IJBC,
    Report => report::REPORT,
}

impl Kind {
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

pub fn lookup(name: &str) -> Option<&'static KindSpec> {
    ALL.iter().copied().find(|k| k.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|k| k.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_resolves_its_defaults_or_names_what_is_missing() {
        for k in ALL {
            // Either the defaults are valid, or the error names a param.
            match (k.resolve)(&serde_json::json!({})) {
                Ok(v) => assert!(v.is_object(), "{}", k.name),
                Err(errs) => assert!(!errs.is_empty(), "{}", k.name),
            }
            assert!(
                !(k.param_names)().is_empty() || k.name == "relabel" || k.name == "clean",
                "{}",
                k.name
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut n = names();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), ALL.len());
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        assert_eq!(Kind::ALL.len(), ALL.len());
        for (&k, spec) in Kind::ALL.iter().zip(ALL) {
            assert!(std::ptr::eq(k.spec(), *spec), "{k:?}");
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("nope"), None);
    }

    #[test]
    fn unknown_param_is_an_error_with_its_path() {
        let errs = (PRUNE_SPEC.resolve)(&serde_json::json!({"treshold": 0.1})).unwrap_err();
        assert!(
            errs[0].message.contains("unknown field `treshold`"),
            "{:?}",
            errs
        );
    }
    use prune::PRUNE as PRUNE_SPEC;

    /// `stage.metrics[*]` gathers a stage's metrics.json unless the stage declares an output
    /// named `metrics`; a built-in kind never does, so the gather's meaning is the same in every
    /// cell (an optional `metrics` output absent in one cell would otherwise fall back).
    #[test]
    fn no_kind_declares_an_output_named_metrics() {
        for k in ALL {
            assert!(k.output("metrics").is_none(), "{}", k.name);
        }
    }

    /// A kind that reads gathers takes input names of the pipeline's choosing: it declares no
    /// ports.
    #[test]
    fn a_gathering_kind_declares_no_input_ports() {
        for k in ALL.iter().filter(|k| !k.gathers.is_empty()) {
            assert!(k.inputs.is_empty(), "{}", k.name);
        }
    }
}
