//! [`Pipeline`]: the expanded, validated form of a pipeline file that everything after parsing
//! works on. One [`Instance`] per stage and matrix cell it depends on, in topological order.
//!
//! Invariants (checked by the loader, relied on everywhere else):
//! - `instances` is topologically sorted: every `Input::Upstream { instance, .. }` points to an
//!   earlier index, and that instance declares the output named.
//! - instance ids are unique; a stage that depends on no matrix axis has exactly one instance,
//!   shared by every cell.
//! - builtin params are resolved (every default filled in) and valid for their kind.
//! - external input paths are absolute (relative ones resolved against the pipeline's folder).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A small map kept as one sorted `Vec` (an instance's inputs and cell: a few entries each, a
/// million instances in a big sweep; a `BTreeMap` would allocate a node of 11 slots per map).
pub use litemap::LiteMap;

/// A cell as a `BTreeMap`, for what is serialized (an empty `LiteMap` serializes to `[]` in
/// JSON, not `{}`: digests and `index.json` keep the map form).
pub fn cell_map(cell: &LiteMap<String, String>) -> BTreeMap<String, String> {
    (cell.iter()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

use orchestrator_stages::KindSpec;

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub name: String,
    /// Absolute path of the pipeline file.
    pub file: PathBuf,
    /// Folder of the pipeline file: relative paths resolve here.
    pub dir: PathBuf,
    /// Matrix axes in file order (empty without a matrix).
    pub matrix_axes: Vec<String>,
    /// Every cell of the matrix (axis -> rendered value), in expansion order. Without a matrix,
    /// one empty cell.
    pub cells: CellTable,
    pub instances: Vec<Instance>,
    pub executor: ExecutorConfig,
    pub report: ReportConfig,
    /// `describe:` of the file: param -> what it is.
    pub param_docs: BTreeMap<String, String>,
    /// (stage, input) -> the param the input's value is (`source: "${params.casia}"`), so
    /// that a message about a missing path can say how to set it (`--set casia=PATH`).
    pub input_params: BTreeMap<(String, String), String>,
}

impl Pipeline {
    pub fn instance(&self, id: &str) -> Option<(usize, &Instance)> {
        self.instances.iter().enumerate().find(|(_, i)| i.id == id)
    }

    /// Instances of stage `stage` (all its cells).
    pub fn instances_of<'a>(
        &'a self,
        stage: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Instance)> + 'a {
        self.instances
            .iter()
            .enumerate()
            .filter(move |(_, i)| i.stage == stage)
    }

    /// What an external input of `inst` is, for messages about it: the param it comes from
    /// (if its value is one) and a description (the param's `describe:`, else the kind's port).
    pub fn input_help(&self, inst: &Instance, input: &str) -> InputHelp {
        let param = self
            .input_params
            .get(&(inst.stage.clone(), input.to_string()))
            .cloned();
        let what = param
            .as_ref()
            .and_then(|p| self.param_docs.get(p).cloned())
            .or_else(|| match &inst.action {
                Action::Builtin { kind, .. } => kind
                    .input(input)
                    .map(|port| format!("{} (input `{input}` of kind `{}`)", port.doc, kind.name)),
                Action::Shell { .. } => None,
            });
        InputHelp { param, what }
    }
}

/// See [`Pipeline::input_help`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputHelp {
    pub param: Option<String>,
    pub what: Option<String>,
}

/// The cells of a matrix, stored as one value index per axis and cell (4 bytes each); a cell
/// becomes a map (axis -> the value's name in instance ids) when asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellTable {
    axes: Vec<String>,
    /// Per axis, the name of each value.
    names: Vec<Vec<String>>,
    n: usize,
    flat: Vec<u32>,
}

impl CellTable {
    /// `n` cells of `axes.len()` indices each into `names`.
    pub fn new(axes: Vec<String>, names: Vec<Vec<String>>, n: usize, flat: Vec<u32>) -> Self {
        debug_assert_eq!(flat.len(), n * axes.len());
        CellTable {
            axes,
            names,
            n,
            flat,
        }
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Cell `c` as axis -> value name.
    pub fn get(&self, c: usize) -> BTreeMap<String, String> {
        let k = self.axes.len();
        self.flat[c * k..(c + 1) * k]
            .iter()
            .enumerate()
            .map(|(a, v)| (self.axes[a].clone(), self.names[a][*v as usize].clone()))
            .collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = BTreeMap<String, String>> + '_ {
        (0..self.n).map(|c| self.get(c))
    }
}

impl serde::Serialize for CellTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    /// Readable, stable id: `prune[method=diffprob,ratio=0.5]`, or the stage name alone when the
    /// stage depends on no matrix axis.
    pub id: String,
    /// Stage name in the file.
    pub stage: String,
    /// The matrix values this instance depends on (directly or through its inputs).
    pub cell: LiteMap<String, String>,
    pub action: Action,
    pub inputs: LiteMap<String, Input>,
    /// Shared by every instance of the stage.
    pub outputs: std::sync::Arc<[Output]>,
    pub resources: Resources,
    /// Extra attempts after a failure.
    pub retry: u32,
    /// Where the stage is defined (`file:line:col`), for messages at run time.
    pub location: std::sync::Arc<str>,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// A built-in kind run by the stage worker.
    Builtin {
        kind: &'static KindSpec,
        params: serde_json::Value,
    },
    /// `run:` a shell command. `${inputs.x}` and `${outputs.x}` are substituted at run time with
    /// absolute paths (shell-quoted); everything else was interpolated at load time.
    Shell {
        command: String,
        env: BTreeMap<String, String>,
    },
}

impl Action {
    /// `run` for shell stages, else the kind name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Action::Builtin { kind, .. } => kind.name,
            Action::Shell { .. } => "run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An output of an earlier instance (index into `Pipeline::instances`).
    Upstream { instance: usize, output: String },
    /// A file or folder outside the store, hashed by content (absolute path).
    External { path: PathBuf },
    /// `stage.output[*]` or `stage.output[axis=value,...]`: that output of every matching
    /// instance (in matrix order), given to the stage as one folder with an entry per instance
    /// and an `index.json` (made at launch, see `exec::gather`).
    Gather { output: String, from: Vec<Gathered> },
}

/// One instance a gather reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    /// Index into `Pipeline::instances`.
    pub instance: usize,
    /// Its entry's name in the gathered folder (its axis values, `method=rand,ratio=0.5`).
    pub entry: String,
    /// Its axis values (axis -> value name), as `index.json` lists them.
    pub cell: LiteMap<String, String>,
    /// Its stage's kind (`verify`, `run` for a shell stage), as `index.json` names it: what its
    /// metrics mean. Part of the gather's digest.
    pub kind: &'static str,
}

impl Input {
    /// The instances this input reads (none for an external path).
    pub fn upstreams(&self) -> Vec<usize> {
        match self {
            Input::Upstream { instance, .. } => vec![*instance],
            Input::External { .. } => Vec::new(),
            Input::Gather { from, .. } => from.iter().map(|g| g.instance).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    /// Path relative to the stage's out dir.
    pub rel_path: String,
    pub is_dir: bool,
    /// A required output missing after a successful exit fails the stage.
    pub required: bool,
}

impl Output {
    /// The output a built-in kind's port declares.
    pub fn of_port(p: &orchestrator_stages::kinds::Port) -> Output {
        Output {
            name: p.name.to_string(),
            rel_path: p.rel_path().to_string(),
            is_dir: p.is_dir(),
            required: p.required,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// GPUs the stage asks for. On a machine with no GPUs at all, such a stage runs on the CPU.
    pub gpus: u32,
    /// CPU slots (counted against `--jobs`).
    pub cpus: u32,
    pub mem_gb: Option<f64>,
    /// Wall-time limit in minutes (SLURM `--time`; locally a timeout).
    pub time_min: Option<u32>,
    /// Per-stage SLURM overrides: partition, account, qos, constraint, ...
    pub slurm: BTreeMap<String, String>,
}

/// `executor:` section: defaults for where stages run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutorConfig {
    /// `local` (default) or `slurm`; the CLI's `--executor` wins.
    pub kind: Option<String>,
    /// Pipeline-wide SLURM defaults (partition, account, qos, constraint, ...).
    pub slurm: BTreeMap<String, String>,
}

/// `report:` section: how `orchestrator report` pivots metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportConfig {
    /// Stages whose metrics make the columns (e.g. `verify`, `ijbc`, `prune`).
    pub stages: Vec<String>,
    /// Stages that hold the full-data baseline (not matrix-dependent), for the "vs baseline" columns.
    pub baseline: Vec<String>,
    /// Matrix axes averaged over (repeats, e.g. `seed`): mean ± std and n per remaining cell.
    pub aggregate: Vec<String>,
}
