//! The pipeline format, defined once: [`RawPipeline`] and the structs below it say which keys
//! exist where (serde `deny_unknown_fields`), what each holds, and document it; the loader reads
//! them through [`super::de`] and the JSON schema ([`super::schema`]) is derived from them.
//!
//! Values that may hold `${...}` (and so are only known per matrix cell) are kept as located
//! [`Node`]s and checked by the passes that evaluate them; their schema is given here.
//!
//! Messages: a struct's or map's `expecting` text is the message for a value of the wrong
//! shape, `got a list` appended: `{name}` stands for the last key of the value's path, `{key}`
//! for the whole path, and ` | hint: ` starts the hint. [`render`] turns a [`DeError`] into a
//! [`Diagnostic`].

use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::de::{Checked, DeError, DeErrorKind, Located, Map, MapKind};
use super::diagnostics::{suggest, Diagnostic};
use super::yaml::{Loc, Node, Sources};

/// More than any single machine (or SLURM node) offers; a typo like `gpus: 100` fails early.
pub const MAX_GPUS: i64 = 64;
pub const MAX_CPUS: i64 = 1024;
pub const MAX_MEM_GB: f64 = 16384.0;
/// One year.
pub const MAX_TIME_MIN: i64 = 525_600;
pub const MAX_RETRY: i64 = 100;

/// A pipeline file of `orchestrator`: stages of built-in kinds (`uses:`) or shell commands
/// (`run:`), wired by `stage.output` references, swept over an optional `matrix`. Unknown keys
/// are errors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a pipeline file must be a map | hint: start with `name:` and `stages:`"
)]
pub struct RawPipeline {
    /// Names the results folder. Default: the file name without extension.
    #[serde(default)]
    #[schemars(schema_with = "name_schema")]
    pub name: Option<Node>,
    /// Another pipeline file (relative to this one) that this file is deep-merged over: maps
    /// merge key by key, this file wins, a `null` removes the key (e.g. `stages: { old: null }`),
    /// lists are replaced. Paths stay relative to the file that wrote them.
    #[serde(default)]
    #[schemars(with = "String")]
    pub extend: Option<Node>,
    /// Named values for `${params.NAME}`. A param may use `${matrix.AXIS}` (not other params).
    #[serde(default)]
    pub params: Option<Checked<Params>>,
    /// What a param is (a phrase, e.g. `the CASIA-WebFace RecordIO folder`), for the messages
    /// about an input that comes from it (`plan` and `run` when the path does not exist).
    #[serde(default)]
    pub describe: Option<Checked<Describe>>,
    #[serde(default)]
    #[schemars(schema_with = "matrix_schema")]
    pub matrix: Option<Located<Checked<RawMatrix>>>,
    #[serde(default)]
    pub executor: Option<Checked<RawExecutor>>,
    #[serde(default)]
    pub report: Option<Checked<RawReport>>,
    #[serde(default)]
    #[schemars(schema_with = "stages_schema")]
    pub stages: Option<Located<Checked<Stages>>>,
}

/// The top-level keys, in the order the format lists them.
pub const TOP_KEYS: &[&str] = &[
    "name", "extend", "params", "describe", "matrix", "executor", "report", "stages",
];

macro_rules! map_kind {
    ($(#[$doc:meta])* $name:ident, $expecting:expr, $description:expr $(, $pattern:expr $(, $vtype:expr)?)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name;
        impl MapKind for $name {
            const EXPECTING: &'static str = $expecting;
            const DESCRIPTION: &'static str = $description;
            $(const KEY_PATTERN: Option<&'static str> = Some($pattern);
            $(const VALUE_TYPE: Option<&'static str> = Some($vtype);)?)?
        }
    };
}

const NAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";

map_kind!(
    ParamsKind,
    "`params` must be a map of name -> value",
    "Named values for `${params.NAME}`. A param may use `${matrix.AXIS}` (not other params).",
    NAME_PATTERN
);
map_kind!(
    DescribeKind,
    "`describe` must be a map of param -> description",
    "Param name -> what it is, for messages about a missing input that comes from it.",
    NAME_PATTERN,
    "string"
);
map_kind!(
    MatrixKind,
    "`matrix` must be a map of axis -> list of values",
    MATRIX_DOC
);
map_kind!(StagesKind, "`stages` must be a non-empty map of stage name -> stage",
    "Stage name -> stage. Names are letters, digits, `_` and `-`. Order does not matter: the graph comes from the inputs.");
map_kind!(
    InputsKind,
    "`inputs` must be a map of name -> `stage.output` or path",
    "Input name -> `stage.output` or path."
);
map_kind!(
    WithKind,
    "`with` must be a map of param -> value",
    "The kind's params."
);
map_kind!(
    EnvKind,
    "`env` must be a map of variable -> value",
    "Environment variables of the command."
);
map_kind!(
    OptionsKind,
    "`{key}` must be a map of option -> value | hint: e.g. `{ partition: gpu, account: lab }`",
    "`sbatch` options: partition, account, qos, constraint, ..."
);

pub type Params = Map<Node, ParamsKind>;
pub type Describe = Map<Node, DescribeKind>;
/// Axis name -> values, plus `include` and `exclude` (read by the matrix pass).
pub type RawMatrix = Map<Node, MatrixKind>;
pub type Stages = Map<Checked<RawStage>, StagesKind>;
pub type Inputs = Map<Node, InputsKind>;
pub type With = Map<Node, WithKind>;
pub type Env = Map<Node, EnvKind>;
/// Scheduler options passed through (SLURM `sbatch` options).
pub type Options = Map<Node, OptionsKind>;

/// Where stages run by default (the command line's `--executor` wins).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`executor` must be a map | hint: e.g. `executor: { kind: slurm, slurm: { partition: gpu } }`"
)]
#[schemars(rename = "executor")]
pub struct RawExecutor {
    /// `local` (default) or `slurm`.
    #[serde(default)]
    #[schemars(schema_with = "executor_kind_schema")]
    pub kind: Option<Node>,
    /// Pipeline-wide `sbatch` options: partition, account, qos, constraint, ...
    #[serde(default)]
    #[schemars(schema_with = "string_map_schema")]
    pub slurm: Option<Checked<Options>>,
}

pub const EXECUTOR_KINDS: &[&str] = &["local", "slurm"];

/// How `orchestrator report` builds its table.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`report` must be a map | hint: e.g. `report: { stages: [verify, prune] }`"
)]
#[schemars(rename = "report")]
pub struct RawReport {
    /// Stages whose metrics make the columns.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub stages: Option<Node>,
    /// Stages that hold the full-data baseline.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub baseline: Option<Node>,
    /// Matrix axes averaged in the report (repeats such as `seed`): each row is the mean ± std
    /// over that axis's values, with n.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub aggregate: Option<Node>,
}

/// A stage: a built-in kind (`uses:` with its params under `with:`) or a shell command
/// (`run:` with declared `outputs:`), its inputs, resources and retries.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "stage `{name}` must be a map | hint: e.g. `{ uses: train, with: { epochs: 2 } }` or `{ run: \"...\", outputs: [out] }`"
)]
pub struct RawStage {
    /// A built-in kind (see `orchestrator schema` for each kind's params and ports).
    #[serde(default)]
    #[schemars(with = "String")]
    pub uses: Option<Located<Node>>,
    /// A shell command (`sh -c`). `${inputs.NAME}` and `${outputs.NAME}` become shell-quoted
    /// absolute paths when the stage runs; `${params.x}` and `${matrix.x}` are filled in when
    /// the file is loaded.
    #[serde(default)]
    #[schemars(schema_with = "run_schema")]
    pub run: Option<Node>,
    /// The kind's params.
    #[serde(default)]
    pub with: Option<Located<Checked<With>>>,
    /// Input name -> `stage.output` (an output of another stage) or a path.
    #[serde(default)]
    #[schemars(schema_with = "inputs_schema")]
    pub inputs: Option<Checked<Inputs>>,
    /// Output names (a trailing `/` marks a folder the command creates), or name -> path inside
    /// the stage's folder.
    #[serde(default)]
    #[schemars(schema_with = "outputs_schema")]
    pub outputs: Option<Located<Node>>,
    /// Environment variables of the command (part of its fingerprint).
    #[serde(default)]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<Located<Checked<Env>>>,
    #[serde(default)]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<Checked<RawResources>>,
    /// Extra attempts after a failure.
    #[serde(default)]
    #[schemars(schema_with = "retry_schema")]
    pub retry: Option<Node>,
}

impl RawStage {
    /// Keys only a `run:` stage may have (besides `run`).
    pub const RUN_ONLY: &'static [&'static str] = &["outputs", "env"];
    /// Keys only a built-in stage may have (besides `uses`).
    pub const BUILTIN_ONLY: &'static [&'static str] = &["with"];
    pub const KEYS: &'static [&'static str] = &[
        "uses",
        "run",
        "with",
        "inputs",
        "outputs",
        "env",
        "resources",
        "retry",
    ];

    /// Where the keys among `keys` that this stage writes are written.
    pub fn key_locs(&self, keys: &[&str]) -> Vec<(&'static str, Loc)> {
        let all: [(&'static str, Option<Loc>); 3] = [
            ("with", self.with.as_ref().and_then(|l| l.key_loc)),
            ("outputs", self.outputs.as_ref().and_then(|l| l.key_loc)),
            ("env", self.env.as_ref().and_then(|l| l.key_loc)),
        ];
        all.into_iter()
            .filter(|(k, _)| keys.contains(k))
            .filter_map(|(k, l)| Some((k, l?)))
            .collect()
    }
}

/// What a stage needs to run.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "`resources` must be a map | hint: e.g. `resources: { gpus: 1, mem_gb: 16 }`"
)]
pub struct RawResources {
    /// GPUs (one machine's); default: the kind's, 0 for `run:` stages. Without GPUs on the
    /// machine, the stage runs on the CPU.
    #[serde(default)]
    #[schemars(schema_with = "gpus_schema")]
    pub gpus: Option<Node>,
    /// CPU slots, counted against `--jobs` (default 1).
    #[serde(default)]
    #[schemars(schema_with = "cpus_schema")]
    pub cpus: Option<Node>,
    /// Memory (SLURM `--mem`).
    #[serde(default)]
    #[schemars(schema_with = "mem_schema")]
    pub mem_gb: Option<Node>,
    /// Wall-time limit in minutes (SLURM `--time`; locally a timeout).
    #[serde(default)]
    #[schemars(schema_with = "time_schema")]
    pub time_min: Option<Node>,
    /// Per-stage `sbatch` options over the executor's.
    #[serde(default)]
    #[schemars(schema_with = "string_map_schema")]
    pub slurm: Option<Checked<Options>>,
}

impl RawResources {
    /// The numeric resources written, by name.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, &Node)> {
        [
            ("gpus", &self.gpus),
            ("cpus", &self.cpus),
            ("mem_gb", &self.mem_gb),
            ("time_min", &self.time_min),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_ref()?)))
    }
}

// ----- messages -----------------------------------------------------------------------------

/// The diagnostic for an error found while reading the raw structs.
pub fn render(e: &DeError, sources: &Sources) -> Diagnostic {
    let (parent, last) = match e.path.rsplit_once('.') {
        Some((p, l)) => (p, l),
        None => ("", e.path.as_str()),
    };
    let (message, hint) = match &e.kind {
        DeErrorKind::UnknownKey { key, expected } => {
            let segs: Vec<&str> = if parent.is_empty() {
                Vec::new()
            } else {
                parent.split('.').collect()
            };
            let message = match segs.as_slice() {
                [] => format!("unknown top-level key `{key}`"),
                ["stages", stage] => format!("unknown key `{key}` in stage `{stage}`"),
                ["stages", _, "resources"] => format!("unknown resource `{key}`"),
                _ => format!("unknown key `{key}` in `{parent}`"),
            };
            (message, suggest(key, expected, "expected one of"))
        }
        DeErrorKind::WrongType { expected, got } => {
            let (what, hint) = match expected.split_once(" | hint: ") {
                Some((w, h)) => (w, Some(h.to_string())),
                None => (expected.as_str(), None),
            };
            let what = what.replace("{name}", last).replace("{key}", &e.path);
            (format!("{what}, got {got}"), hint)
        }
        DeErrorKind::Other(m) => (m.clone(), None),
    };
    Diagnostic::new(message)
        .at(sources.span(e.loc))
        .key(&e.path)
        .hint_opt(hint)
}

// ----- schema of the values kept as nodes ---------------------------------------------------

pub const MATRIX_DOC: &str = "Sweep axes: each key is an axis with a non-empty list of values (scalars, or maps whose \
keys are read as `${matrix.AXIS.KEY}`). Cells are the cartesian product in axis order (the first axis varies \
slowest); then every `exclude` entry removes the cells it matches (an entry matches when each key it gives has \
that value; keys it omits match anything); then every `include` entry adds its cell unless an identical one \
exists. Unlike GitHub Actions, an include entry is a whole cell: it must give a value for every axis and nothing \
else. A stage depends on the axes it references (directly or through `params`) and on its upstream stages' axes, \
and has one instance per distinct combination of those values, with the id `stage[axis=value,...]` (a map value \
is named by its `name` key if it has one, else by its values joined with `+`; two values of an axis may not get \
the same name); a stage that depends on no axis has one instance, shared by every cell. An axis may take its values \
from a param whose value is a literal list (`ratio: ${params.ratios}`); `--matrix AXIS=V1,V2` replaces an axis's \
values from the command line.";

pub const INTERP_DOC: &str = "`${params.NAME}` or `${matrix.AXIS}` (`.KEY` reaches into a map). A value that is \
exactly one reference keeps the referenced value's type; inside a longer string the value is rendered. \
`$${` is a literal `${`.";

pub const INPUT_DOC: &str = "`stage.output` (an output of another stage), `stage[axis=value,...].output` (that \
output of one instance of a matrix stage), `stage.output[*]` or `stage.output[axis=value,...]` (a gather, `run:` \
stages only: one folder with that output of every matching instance and an `index.json`), or a path starting with \
`./`, `../` or `/` (a file or folder outside the pipeline, relative to the file that writes it, hashed by content; \
its existence is checked when the stage runs). May interpolate `${params.x}` / `${matrix.x}`; a value that comes out null or empty \
means \"no such input\" (only for optional ports).";

fn schema(v: serde_json::Value) -> Schema {
    serde_json::from_value(v).unwrap_or(Schema::Bool(true))
}

fn name_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}))
}

fn matrix_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "type": "object",
        "description": MATRIX_DOC,
        "properties": {
            "include": {"type": "array", "items": {"type": "object", "minProperties": 1}, "description": "Cells to add: a value for every axis."},
            "exclude": {"type": "array", "items": {"type": "object", "minProperties": 1}, "description": "Cells to remove: an entry matches every cell that has all of its values."}
        },
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": {"anyOf": [
            {"type": "array", "minItems": 1},
            {"type": "string", "pattern": "^\\$\\{params\\.[A-Za-z0-9_-]+\\}$", "description": "A param whose value is a literal list of the axis's values."}
        ]}
    }))
}

fn stages_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "type": "object",
        "minProperties": 1,
        "description": StagesKind::DESCRIPTION,
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": {"anyOf": [{"$ref": "#/definitions/stage"}, {"type": "null", "description": "In a file that `extend`s another: remove the stage."}]}
    }))
}

fn executor_kind_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({ "enum": EXECUTOR_KINDS }))
}

fn string_map_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"$ref": "#/definitions/string-map"}))
}

fn run_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"type": "string", "minLength": 1}))
}

fn inputs_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"type": "object", "additionalProperties": {"$ref": "#/definitions/input"}}))
}

fn outputs_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "anyOf": [
            {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]+/?$"}},
            {"type": "object", "additionalProperties": {"type": "string"}}
        ]
    }))
}

fn env_schema(_: &mut SchemaGenerator) -> Schema {
    schema(
        json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}),
    )
}

fn resources_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"$ref": "#/definitions/resources"}))
}

fn retry_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({"$ref": "#/definitions/retry"}))
}

fn int_or_interp(min: i64, max: i64) -> Schema {
    schema(
        json!({"anyOf": [{"type": "integer", "minimum": min, "maximum": max}, {"$ref": "#/definitions/interpolation"}]}),
    )
}

fn gpus_schema(_: &mut SchemaGenerator) -> Schema {
    int_or_interp(0, MAX_GPUS)
}

fn cpus_schema(_: &mut SchemaGenerator) -> Schema {
    int_or_interp(1, MAX_CPUS)
}

fn time_schema(_: &mut SchemaGenerator) -> Schema {
    int_or_interp(1, MAX_TIME_MIN)
}

fn mem_schema(_: &mut SchemaGenerator) -> Schema {
    schema(
        json!({"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEM_GB}, {"$ref": "#/definitions/interpolation"}]}),
    )
}

/// `retry`: extra attempts.
pub fn retry_definition() -> serde_json::Value {
    json!({"description": "Extra attempts after a failure.", "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_RETRY}, {"$ref": "#/definitions/interpolation"}]})
}
