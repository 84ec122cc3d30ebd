//! Pipeline files: YAML -> validated, expanded [`Pipeline`] (pure: reads files, spawns nothing).
//!
//! [`load`] is the entry point; it returns every error at once as [`Diagnostics`]. The format is
//! defined once, by the typed raw structs of [`raw`], read from the located tree of [`yaml`]
//! through [`de`]. Loading is a short sequence of passes over them (`Loader::build`):
//! [`files`] (the file and what it `extend`s, `--set`), [`sections`] (name, params, matrix,
//! executor, report), [`stage`] (static checks of each stage, with [`templates`]), [`eval`]
//! (each stage per matrix cell, with [`paths`] for external inputs), [`expand`] (order,
//! instances). The rest: [`interp`] (`${...}`
//! templates), [`matrix`] (cells), [`diagnostics`] (rendering, did-you-mean), [`schema`] (the
//! JSON schema, derived from [`raw`]).

mod de;
pub mod diagnostics;
mod eval;
mod expand;
mod files;
pub mod interp;
mod loader;
pub mod matrix;
mod model;
mod paths;
pub mod raw;
pub mod schema;
mod sections;
mod select;
mod stage;
mod templates;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use eval::METRICS;
pub use loader::normalize;
pub use model::*;
pub use raw::{MAX_CPUS, MAX_GPUS, MAX_MEM_GB, MAX_RETRY, MAX_TIME_MIN};
pub use select::TargetError;

use de::{Checked, MapEntry};
use interp::{Ns, Template};
use loader::Loader;
use raw::{RawPipeline, RawStage, TOP_KEYS};
use stage::StageDef;
use yaml::{Loc, Node, Value};

/// Stage instances (and matrix cells) a pipeline may expand to unless told otherwise: far more
/// than any sweep of this workflow, far less than what fills memory by a typo in a matrix.
pub const DEFAULT_MAX_INSTANCES: usize = 100_000;

/// How to load a pipeline.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--set NAME=VALUE` overrides of the pipeline's `params` (values are YAML scalars or flow
    /// collections; relative paths resolve against the current directory).
    pub overrides: Vec<String>,
    /// `--matrix AXIS=V1,V2` replacements of the values of matrix axes.
    pub matrix: Vec<String>,
    /// More stage instances (or matrix cells) than this is an error, found before they are built.
    pub max_instances: usize,
    /// Look for symlink loops inside external input folders (lists them whole), not only at
    /// the paths themselves.
    pub walk_inputs: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            overrides: Vec::new(),
            matrix: Vec::new(),
            max_instances: DEFAULT_MAX_INSTANCES,
            walk_inputs: true,
        }
    }
}

/// Load, validate and expand the pipeline at `path`.
pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
    load_opts(path, &LoadOptions::default())
}

/// [`load`] with `--set NAME=VALUE` overrides of the pipeline's `params`.
pub fn load_with(path: &Path, overrides: &[String]) -> Result<Pipeline, Diagnostics> {
    let opts = LoadOptions {
        overrides: overrides.to_vec(),
        ..LoadOptions::default()
    };
    load_opts(path, &opts)
}

pub fn load_opts(path: &Path, opts: &LoadOptions) -> Result<Pipeline, Diagnostics> {
    let mut l = Loader::new(opts.walk_inputs);
    match l.build(path, opts) {
        Some(p) if l.errors.is_empty() => Ok(p),
        _ => Err(l.into_diagnostics(path.display().to_string())),
    }
}

impl Loader {
    fn build(&mut self, path: &Path, opts: &LoadOptions) -> Option<Pipeline> {
        let (mut root, abs) = self.read_tree(path)?;
        if !opts.overrides.is_empty() {
            self.apply_overrides(&mut root, &opts.overrides)?;
        }
        if !opts.matrix.is_empty() {
            self.apply_matrix_overrides(&mut root, &opts.matrix)?;
        }
        self.params_into_axes(&mut root);
        let mut de_errors = Vec::new();
        let raw: Option<RawPipeline> = de::from_node(&root, "", &mut de_errors);
        self.de_errors(de_errors);
        let raw = raw?;

        let name = self.pipeline_name(raw.name.as_ref(), &abs);
        let matrix = self.read_matrix(raw.matrix.as_ref());
        self.check_cell_count(&matrix, opts.max_instances)?;
        let cells = self.cells(&matrix);
        let params = self.read_params(raw.params.as_ref(), &matrix);
        let param_docs = self.read_describe(raw.describe.as_ref(), &params);
        let executor = self.read_executor(raw.executor.as_ref());
        let stages = self.stage_entries(&raw, &root);
        let names: Vec<String> = stages.iter().map(|e| e.key.clone()).collect();
        let report = self.read_report(raw.report.as_ref(), &names, &cells.axes);

        let defs: Vec<StageDef> = stages
            .iter()
            .map(|e| self.stage_def(e, &params, &matrix))
            .collect();
        let evaluated = self.evaluate(&defs, &params, &cells);
        let order = self.topo_order(&defs, &evaluated.edges)?;
        if !self.errors.is_empty() {
            return None;
        }
        let full_axes = Self::full_axes(&defs, &evaluated, &order);
        self.check_pinned(&defs, &evaluated, &full_axes, &cells)?;
        let count = self.check_instance_count(&defs, &full_axes, &cells, opts.max_instances)?;
        let instances = self.instances(&defs, evaluated, &order, &full_axes, &cells, count)?;
        Some(Pipeline {
            name,
            file: abs.clone(),
            dir: abs.parent().map(Path::to_path_buf).unwrap_or_default(),
            matrix_axes: cells.axes.clone(),
            cells: CellTable::new(
                cells.axes.clone(),
                cells.rendered,
                cells.index.len(),
                cells.index.into_flat(),
            ),
            instances,
            executor,
            report,
            param_docs,
            input_params: input_params(&defs),
        })
    }

    /// The stages of the file; none (after saying why) when `stages:` is missing or empty.
    fn stage_entries<'r>(
        &mut self,
        raw: &'r RawPipeline,
        root: &Node,
    ) -> &'r [MapEntry<Checked<RawStage>>] {
        let example = "a pipeline needs at least one stage, e.g. `stages: { data: { uses: synthetic-faces } }`";
        let Some(stages) = &raw.stages else {
            // A misspelt `stages` is reported as such; "no stages" would only repeat it.
            let misspelt = root.as_map().unwrap_or(&[]).iter().any(|e| {
                !TOP_KEYS.contains(&e.key.as_str())
                    && diagnostics::did_you_mean(&e.key, TOP_KEYS).as_deref() == Some("stages")
            });
            if !misspelt {
                let loc = Loc {
                    file: root.loc.file,
                    line: 1,
                    col: 1,
                    len: 1,
                };
                self.err(Some(loc), "no `stages:`", "stages", Some(example.into()));
            }
            return &[];
        };
        match &stages.value {
            Checked::Valid(m) if !m.is_empty() => &m.entries,
            Checked::Valid(_) => {
                self.err(
                    Some(stages.loc),
                    "`stages` is empty",
                    "stages",
                    Some(example.into()),
                );
                &[]
            }
            Checked::Invalid => &[],
        }
    }
}

/// (stage, input) -> param, for inputs whose value is exactly `${params.NAME}`.
fn input_params(defs: &[StageDef]) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for d in defs {
        let inputs = d
            .raw
            .and_then(|r| r.inputs.as_ref())
            .and_then(Checked::valid);
        for kv in inputs.into_iter().flat_map(|m| m.iter()) {
            let Value::Str(s) = &kv.value.value else {
                continue;
            };
            let Ok(t) = Template::parse(s) else { continue };
            if let Some(r) = t
                .whole_ref()
                .filter(|r| r.ns == Ns::Params && r.path.len() == 1)
            {
                out.insert((d.name.clone(), kv.key.clone()), r.path[0].clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name: t
params: { ratio: "${matrix.ratio}", epochs: 2, tag: "r${matrix.ratio}" }
matrix:
  method: [{name: diffprob, flags: clean.flags}, {name: rand, flags: null}]
  ratio: [0.5, 0.25]
  include: [{method: {name: rand, flags: null}, ratio: 0.75}]
  exclude: [{ratio: 0.25, method: {name: rand, flags: null}}]
executor: { kind: slurm, slurm: { partition: gpu } }
report: { stages: [prune], baseline: [train] }
stages:
  data:  { uses: synthetic-faces, with: { identities: 20 } }
  train: { uses: train, inputs: { train: data.train }, with: { epochs: "${params.epochs}", network: iresnet-tiny }, resources: { gpus: 2 } }
  evalt: { uses: eval-trainset, inputs: { model: train.model, train: data.train } }
  clean: { uses: clean, inputs: { predictions: evalt.predictions, train: data.train } }
  score: { uses: score, inputs: { probs: evalt.probs, train: data.train }, with: { method: "${matrix.method.name}" } }
  prune: { uses: prune, inputs: { scores: score.scores, train: data.train, flags: "${matrix.method.flags}" }, with: { target_ratio: "${params.ratio}" }, retry: 1 }
  check: { run: "cat ${inputs.kept} > ${outputs.out} # ${params.tag}", inputs: { kept: prune.kept, extra: ../x/y }, outputs: [out, plots/], env: { R: "${params.ratio}" } }
"#;

    fn load_text(text: &str) -> Result<Pipeline, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub").join("p.yaml");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, text).unwrap();
        load(&f)
    }

    #[test]
    fn a_good_pipeline_expands() {
        let p = load_text(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.matrix_axes, ["method", "ratio"]);
        // 2 x 2 - 1 excluded + 1 included.
        assert_eq!(p.cells.len(), 4);
        let ids: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "data",
                "train",
                "evalt",
                "clean",
                "score[method=diffprob]",
                "score[method=rand]",
                "prune[method=diffprob,ratio=0.5]",
                "prune[method=diffprob,ratio=0.25]",
                "prune[method=rand,ratio=0.5]",
                "prune[method=rand,ratio=0.75]",
                "check[method=diffprob,ratio=0.5]",
                "check[method=diffprob,ratio=0.25]",
                "check[method=rand,ratio=0.5]",
                "check[method=rand,ratio=0.75]",
            ]
        );
        let (_, train) = p.instance("train").unwrap();
        assert_eq!(train.resources.gpus, 2);
        match &train.action {
            Action::Builtin { kind, params } => {
                assert_eq!(kind.name, "train");
                assert_eq!(params["epochs"], serde_json::json!(2));
            }
            other => panic!("{other:?}"),
        }
        let (_, chk) = p.instance("check[method=rand,ratio=0.75]").unwrap();
        match &chk.action {
            Action::Shell { command, env } => {
                assert_eq!(command, "cat ${inputs.kept} > ${outputs.out} # r0.75");
                assert_eq!(env["R"], "0.75");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            chk.outputs[1],
            Output {
                name: "plots".into(),
                rel_path: "plots".into(),
                is_dir: true,
                required: true
            }
        );
        match &chk.inputs.get("extra").expect("input `extra`") {
            Input::External { path } => assert!(
                path.ends_with("x/y") && !path.to_string_lossy().contains("sub"),
                "{path:?}"
            ),
            other => panic!("{other:?}"),
        }
        let (pi, _) = p.instance("prune[method=rand,ratio=0.75]").unwrap();
        assert!(
            !p.instances[pi].inputs.contains_key("flags"),
            "null flags = no input"
        );
        assert_eq!(p.instances[pi].retry, 1);
        // Topological order: every upstream index is smaller.
        for (i, inst) in p.instances.iter().enumerate() {
            for input in inst.inputs.values() {
                for instance in input.upstreams() {
                    assert!(instance < i);
                }
                if let Input::Upstream { instance, output } = input {
                    assert!(p.instances[*instance]
                        .outputs
                        .iter()
                        .any(|o| &o.name == output));
                }
            }
        }
        assert_eq!(p.executor.kind.as_deref(), Some("slurm"));
        assert_eq!(p.report.stages, ["prune"]);
        assert_eq!(
            crate::dag::topological_order(&p).map(|v| v.len()),
            Ok(p.instances.len())
        );
    }

    #[test]
    fn id_collisions_between_matrix_values_are_errors() {
        let e =
            load_text("matrix: { v: [\"1\", 1] }\nstages:\n  a: { run: \"echo ${matrix.v}\" }\n")
                .unwrap_err();
        assert!(e.to_string().contains("would both be named `1`"), "{e}");
    }

    /// Every truncation and every one-line deletion of a good file loads or fails with
    /// diagnostics; none panics.
    #[test]
    fn mangled_files_never_panic() {
        let lines: Vec<&str> = GOOD.lines().collect();
        for i in 0..lines.len() {
            let mut l = lines.clone();
            l.remove(i);
            let _ = load_text(&l.join("\n"));
        }
        let chars: Vec<char> = GOOD.chars().collect();
        for cut in (0..chars.len()).step_by(11) {
            let text: String = chars[..cut].iter().collect();
            if let Err(e) = load_text(&text) {
                assert!(!e.items.is_empty());
            }
        }
    }
}
