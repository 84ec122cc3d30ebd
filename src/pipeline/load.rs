//! [`Loader`]: one pipeline file (and what it `extend`s) -> the expanded [`Pipeline`], or every
//! error found, as [`Diagnostics`].
//!
//! Order of work: read + parse + merge `extend` chains into one located [`Node`] tree; read the
//! top-level sections (params, matrix, executor, report); check each stage's shape statically
//! (keys, kind, ports, interpolation names) and find the matrix axes it uses directly; evaluate
//! each stage once per distinct value of those axes (interpolation, the kind's `resolve`,
//! references); order stages topologically (cycles reported with their path); then create one
//! instance per distinct projection of the matrix cells on the axes a stage depends on
//! (its own plus its upstream stages'), wiring inputs to upstream instance indices.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use orchestrator_stages::kinds::{self, KindSpec};
use serde_json::Value as J;

use super::diagnostics::{did_you_mean, suggest, Diagnostic, Diagnostics};
use super::interp::{self, Ns, Piece, Ref, Template};
use super::matrix::{render_id_value, Matrix};
use super::model::*;
use super::yaml::{self, Entry, Loc, Node, SourceFile, Sources, Value};

const TOP_KEYS: [&str; 7] = [
    "name", "extend", "params", "matrix", "executor", "report", "stages",
];
const STAGE_KEYS: [&str; 8] = [
    "uses",
    "run",
    "with",
    "inputs",
    "outputs",
    "env",
    "resources",
    "retry",
];
const RESOURCE_KEYS: [&str; 5] = ["gpus", "cpus", "mem_gb", "time_min", "slurm"];
/// More than any single machine (or SLURM node) offers; a typo like `gpus: 100` fails early.
pub const MAX_GPUS: i64 = 64;
pub const MAX_CPUS: i64 = 1024;
pub const MAX_MEM_GB: f64 = 16384.0;
/// One year.
pub const MAX_TIME_MIN: i64 = 525_600;
pub const MAX_RETRY: i64 = 100;

/// Load, validate and expand the pipeline at `path`.
pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
    load_with(path, &[])
}

/// [`load`] with `--set NAME=VALUE` overrides of the pipeline's `params` (values are YAML
/// scalars or flow collections; relative paths resolve against the current directory).
pub fn load_with(path: &Path, overrides: &[String]) -> Result<Pipeline, Diagnostics> {
    let mut l = Loader::default();
    let display = path.display().to_string();
    let result = l.run(path, overrides);
    let mut items = std::mem::take(&mut l.errors);
    match result {
        Some(p) if items.is_empty() => Ok(p),
        _ => {
            if items.is_empty() {
                items.push(Diagnostic::new("the pipeline could not be loaded"));
            }
            items.sort_by_key(|d| {
                d.span
                    .as_ref()
                    .map(|s| (l.file_rank(&s.file), s.line, s.col))
                    .unwrap_or((usize::MAX, 0, 0))
            });
            Err(Diagnostics {
                file: display,
                items,
            })
        }
    }
}

#[derive(Default)]
struct Loader {
    sources: Sources,
    errors: Vec<Diagnostic>,
    /// (position, message) of errors already reported: a stage evaluated in many cells reports
    /// each distinct problem once.
    seen: HashSet<(u32, u32, u32, String)>,
    /// Matrix value (JSON text) -> its name in instance ids, rendered from the YAML node so
    /// that map values keep the order the file wrote them in.
    id_names: HashMap<String, String>,
    /// Axes with errors of their own: references to them are not errors again, but the stages
    /// that use them are not evaluated.
    broken_axes: Vec<String>,
    /// Set by `check_templates` when it meets a broken axis.
    uses_broken_axis: bool,
}

/// A stage after the static checks.
struct StageDef<'a> {
    name: String,
    key_loc: Loc,
    node: &'a Node,
    kind: Option<&'static KindSpec>,
    is_run: bool,
    outputs: Vec<Output>,
    /// Declared input names (`run:` stages: for `${inputs.x}`).
    input_names: Vec<String>,
    /// Axis indices the stage's own text references (directly or through params).
    direct_axes: BTreeSet<usize>,
    /// False when the shape is so wrong that evaluating it would only repeat errors.
    ok: bool,
}

/// One evaluation of a stage for one projection of the cells on its direct axes.
struct StageEval {
    action: Action,
    inputs: Vec<(String, InRef)>,
    resources: Resources,
    retry: u32,
}

enum InRef {
    Upstream { stage: usize, output: String },
    External(PathBuf),
}

/// Values of the matrix as indices (each axis' distinct values are numbered).
struct Cells {
    axes: Vec<String>,
    /// Per axis, its distinct values.
    values: Vec<Vec<J>>,
    /// Per axis, the rendered id of each value.
    rendered: Vec<Vec<String>>,
    /// Each cell as value indices.
    cells: Vec<Vec<u32>>,
}

impl Cells {
    fn value(&self, axis: usize, cell: &[u32]) -> &J {
        &self.values[axis][cell[axis] as usize]
    }
}

/// What `${...}` can see while evaluating one stage in one cell.
struct Ctx<'a> {
    params: &'a BTreeMap<String, &'a Node>,
    cells: &'a Cells,
    cell: &'a [u32],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `${inputs.x}` / `${outputs.x}` are errors.
    Value,
    /// A `run:` command: `${inputs.x}` / `${outputs.x}` stay for the executor.
    Command,
    /// A param's value: only `${matrix.x}`.
    Param,
}

impl Loader {
    fn file_rank(&self, display: &str) -> usize {
        self.sources
            .files
            .iter()
            .position(|f| f.display == display)
            .unwrap_or(usize::MAX)
    }

    fn err(
        &mut self,
        loc: Option<Loc>,
        message: impl Into<String>,
        key: &str,
        hint: Option<String>,
    ) {
        let message = message.into();
        if let Some(l) = loc {
            if !self.seen.insert((l.file, l.line, l.col, message.clone())) {
                return;
            }
        }
        let d = Diagnostic::new(message)
            .at(loc.and_then(|l| self.sources.span(l)))
            .key(key)
            .hint_opt(hint);
        self.errors.push(d);
    }

    fn err_note(
        &mut self,
        loc: Loc,
        message: impl Into<String>,
        key: &str,
        hint: Option<String>,
        note: Option<String>,
    ) {
        let message = message.into();
        if !self
            .seen
            .insert((loc.file, loc.line, loc.col, message.clone()))
        {
            return;
        }
        let mut d = Diagnostic::new(message)
            .at(self.sources.span(loc))
            .key(key)
            .hint_opt(hint);
        if let Some(n) = note {
            d = d.note(n);
        }
        self.errors.push(d);
    }

    fn run(&mut self, path: &Path, overrides: &[String]) -> Option<Pipeline> {
        let abs = normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        let mut stack = Vec::new();
        let mut root = self.read_file(path.display().to_string(), abs.clone(), &mut stack, None)?;
        if !overrides.is_empty() {
            self.apply_overrides(&mut root, overrides)?;
        }
        self.build(&root, &abs)
    }

    /// Replace `params` entries by `--set NAME=VALUE` overrides. The overrides are parsed as a
    /// YAML document of their own (shown as `--set` in messages), so errors point at them.
    fn apply_overrides(&mut self, root: &mut Node, overrides: &[String]) -> Option<()> {
        let mut text = String::new();
        for o in overrides {
            match o.split_once('=') {
                Some((k, v)) if valid_ident(k.trim()) => {
                    text.push_str(&format!("{}: {}\n", k.trim(), v.trim()))
                }
                _ => {
                    self.err(
                        None,
                        format!("bad `--set {o}`"),
                        "",
                        Some("write `--set NAME=VALUE` with a param name of the pipeline, e.g. `--set ratio=0.25`".into()),
                    );
                    return None;
                }
            }
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        let file = self.sources.files.len() as u32;
        self.sources.files.push(SourceFile {
            display: "--set".into(),
            abs: cwd.join("--set"),
            text: text.clone(),
        });
        let set = match yaml::parse(&text, file, &self.sources) {
            Ok(n) => n,
            Err(errs) => {
                self.errors.extend(errs);
                return None;
            }
        };
        let Value::Map(new) = set.value else {
            return None;
        };
        let Value::Map(entries) = &mut root.value else {
            return None;
        };
        let Some(params) = entries.iter_mut().find(|e| e.key == "params") else {
            self.err(
                None,
                "`--set` overrides params, but the pipeline has no `params`",
                "params",
                None,
            );
            return None;
        };
        let Value::Map(params) = &mut params.value.value else {
            return None;
        };
        let mut ok = true;
        for n in new {
            match params.iter_mut().find(|p| p.key == n.key) {
                Some(p) => p.value = n.value,
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.key.as_str()).collect();
                    let hint =
                        crate::pipeline::diagnostics::suggest(&n.key, &names, "its params are");
                    self.err(
                        Some(n.key_loc),
                        format!("`--set {}`: the pipeline has no param `{}`", n.key, n.key),
                        "params",
                        hint,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(())
    }

    // ----- files and `extend` -------------------------------------------------------------

    fn read_file(
        &mut self,
        display: String,
        abs: PathBuf,
        stack: &mut Vec<(PathBuf, String)>,
        from: Option<(Loc, String)>,
    ) -> Option<Node> {
        if let Some(pos) = stack.iter().position(|(p, _)| *p == abs) {
            let mut chain: Vec<String> = stack[pos..].iter().map(|(_, d)| d.clone()).collect();
            chain.push(display.clone());
            let loc = from.map(|(l, _)| l);
            self.err(
                loc,
                format!("`extend` cycle: {}", chain.join(" -> ")),
                "extend",
                Some("a file cannot extend itself, directly or through others".into()),
            );
            return None;
        }
        let text = match std::fs::read_to_string(&abs) {
            Ok(t) => t,
            Err(e) => {
                match from {
                    Some((loc, _)) => self.err(
                        Some(loc),
                        format!("cannot read `{display}`: {}", io_reason(&e)),
                        "extend",
                        Some("`extend` takes a path relative to the file that writes it, e.g. `./base.yaml`".into()),
                    ),
                    None => self.err(None, format!("cannot read `{display}`: {}", io_reason(&e)), "", None),
                }
                return None;
            }
        };
        let file = self.sources.files.len() as u32;
        self.sources.files.push(SourceFile {
            display: display.clone(),
            abs: abs.clone(),
            text,
        });
        let text = self.sources.files[file as usize].text.clone();
        let root = match yaml::parse(&text, file, &self.sources) {
            Ok(n) => n,
            Err(errs) => {
                self.errors.extend(errs);
                return None;
            }
        };
        let Value::Map(entries) = &root.value else {
            self.err(
                Some(root.loc),
                format!("a pipeline file must be a map, got {}", root.type_name()),
                "",
                Some("start with `name:` and `stages:`".into()),
            );
            return None;
        };
        let Some(ext) = entries.iter().find(|e| e.key == "extend") else {
            return Some(root);
        };
        let Some(rel) = ext.value.as_str() else {
            self.err(
                Some(ext.value.loc),
                format!("`extend` must be a path, got {}", ext.value.type_name()),
                "extend",
                Some("e.g. `extend: ./base.yaml`".into()),
            );
            return None;
        };
        let base_display = if Path::new(rel).is_absolute() {
            rel.to_string()
        } else {
            normalize(
                &Path::new(&display)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(rel),
            )
            .display()
            .to_string()
        };
        let base_abs = normalize(&abs.parent().unwrap_or(Path::new("/")).join(rel));
        stack.push((abs, display));
        let base = self.read_file(
            base_display,
            base_abs,
            stack,
            Some((ext.value.loc, rel.to_string())),
        );
        stack.pop();
        let base = base?;
        let mut merged = base;
        let over: Vec<Entry> = entries
            .iter()
            .filter(|e| e.key != "extend")
            .cloned()
            .collect();
        merge_into(
            &mut merged,
            Node {
                value: Value::Map(over),
                loc: root.loc,
            },
        );
        Some(merged)
    }

    // ----- the whole file -----------------------------------------------------------------

    fn build(&mut self, root: &Node, abs: &Path) -> Option<Pipeline> {
        let entries = root.as_map().unwrap_or(&[]);
        let mut stages_misspelt = false;
        for e in entries {
            if !TOP_KEYS.contains(&e.key.as_str()) {
                stages_misspelt |= did_you_mean(&e.key, TOP_KEYS).as_deref() == Some("stages");
                self.err(
                    Some(e.key_loc),
                    format!("unknown top-level key `{}`", e.key),
                    &e.key,
                    suggest(&e.key, &TOP_KEYS, "expected one of"),
                );
            }
        }
        let name = match root.get("name") {
            None => abs
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into()),
            Some(e) => match e.value.as_str() {
                Some(s) if valid_name(s) => s.to_string(),
                _ => {
                    self.err(
                        Some(e.value.loc),
                        "`name` must be a non-empty name of letters, digits, `_`, `-` and `.`",
                        "name",
                        Some("it names the results folder, e.g. `name: diffprob_50`".into()),
                    );
                    String::new()
                }
            },
        };

        let (matrix, _matrix_ok) = self.read_matrix(root.get("matrix"));
        let cells = self.cells(&matrix, root.get("matrix"));
        let params = self.read_params(root.get("params"), &matrix);
        let executor = self.read_executor(root.get("executor"));

        let stages_entry = root.get("stages");
        let stage_entries: &[Entry] = match stages_entry {
            None if stages_misspelt => &[],
            None => {
                let loc = Loc {
                    file: root.loc.file,
                    line: 1,
                    col: 1,
                    len: 1,
                };
                self.err(Some(loc), "no `stages:`", "stages", Some("a pipeline needs at least one stage, e.g. `stages: { data: { uses: synthetic-faces } }`".into()));
                &[]
            }
            Some(e) => match &e.value.value {
                Value::Map(m) if !m.is_empty() => m,
                Value::Map(_) | Value::Null => {
                    self.err(Some(e.value.loc), "`stages` is empty", "stages", Some("a pipeline needs at least one stage, e.g. `stages: { data: { uses: synthetic-faces } }`".into()));
                    &[]
                }
                _ => {
                    self.err(
                        Some(e.value.loc),
                        format!(
                            "`stages` must be a non-empty map of stage name -> stage, got {}",
                            e.value.type_name()
                        ),
                        "stages",
                        None,
                    );
                    &[]
                }
            },
        };
        let stage_names: Vec<String> = stage_entries.iter().map(|e| e.key.clone()).collect();
        let report = self.read_report(root.get("report"), &stage_names);

        let defs: Vec<StageDef> = stage_entries
            .iter()
            .map(|e| self.stage_def(e, &params, &matrix))
            .collect();
        // Declared input names of run stages are needed before evaluation; done in stage_def.
        let cells = cells?;

        // Evaluate each stage once per distinct projection on its direct axes.
        let mut evals: Vec<HashMap<Vec<u32>, Option<Rc<StageEval>>>> =
            Vec::with_capacity(defs.len());
        let mut edges: Vec<BTreeMap<usize, Loc>> = vec![BTreeMap::new(); defs.len()];
        for si in 0..defs.len() {
            let mut map: HashMap<Vec<u32>, Option<Rc<StageEval>>> = HashMap::new();
            if defs[si].ok {
                let axes: Vec<usize> = defs[si].direct_axes.iter().copied().collect();
                for cell in &cells.cells {
                    let key: Vec<u32> = axes.iter().map(|a| cell[*a]).collect();
                    if map.contains_key(&key) {
                        continue;
                    }
                    let ctx = Ctx {
                        params: &params,
                        cells: &cells,
                        cell,
                    };
                    let ev = self.eval_stage(&defs, si, &ctx, &axes, &mut edges[si]);
                    map.insert(key, ev.map(Rc::new));
                }
            }
            evals.push(map);
        }

        let order = self.topo_order(&defs, &edges)?;
        if !self.errors.is_empty() {
            return None;
        }

        // Axes each stage depends on: its own plus its upstream stages'.
        let mut full_axes: Vec<BTreeSet<usize>> =
            defs.iter().map(|d| d.direct_axes.clone()).collect();
        for &si in &order {
            let mut acc = full_axes[si].clone();
            for up in edges[si].keys() {
                acc.extend(full_axes[*up].iter().copied());
            }
            full_axes[si] = acc;
        }

        let mut instances: Vec<Instance> = Vec::new();
        let mut index: Vec<HashMap<Vec<u32>, usize>> = vec![HashMap::new(); defs.len()];
        for &si in &order {
            let d = &defs[si];
            let axes: Vec<usize> = full_axes[si].iter().copied().collect();
            let direct: Vec<usize> = d.direct_axes.iter().copied().collect();
            let location = self.sources.position(d.key_loc);
            for cell in &cells.cells {
                let key: Vec<u32> = axes.iter().map(|a| cell[*a]).collect();
                if index[si].contains_key(&key) {
                    continue;
                }
                let dkey: Vec<u32> = direct.iter().map(|a| cell[*a]).collect();
                let Some(Some(ev)) = evals[si].get(&dkey) else {
                    return None;
                };
                let mut inputs = BTreeMap::new();
                for (name, r) in &ev.inputs {
                    let input = match r {
                        InRef::External(p) => Input::External { path: p.clone() },
                        InRef::Upstream { stage, output } => {
                            let ukey: Vec<u32> =
                                full_axes[*stage].iter().map(|a| cell[*a]).collect();
                            let instance = *index[*stage].get(&ukey)?;
                            Input::Upstream {
                                instance,
                                output: output.clone(),
                            }
                        }
                    };
                    inputs.insert(name.clone(), input);
                }
                let id = if axes.is_empty() {
                    d.name.clone()
                } else {
                    let parts: Vec<String> = axes
                        .iter()
                        .map(|a| {
                            format!(
                                "{}={}",
                                cells.axes[*a], cells.rendered[*a][cell[*a] as usize]
                            )
                        })
                        .collect();
                    format!("{}[{}]", d.name, parts.join(","))
                };
                let cell_map = axes
                    .iter()
                    .map(|a| {
                        (
                            cells.axes[*a].clone(),
                            cells.rendered[*a][cell[*a] as usize].clone(),
                        )
                    })
                    .collect();
                index[si].insert(key, instances.len());
                instances.push(Instance {
                    id,
                    stage: d.name.clone(),
                    cell: cell_map,
                    action: ev.action.clone(),
                    inputs,
                    outputs: d.outputs.clone(),
                    resources: ev.resources.clone(),
                    retry: ev.retry,
                    location: location.clone(),
                });
            }
        }

        let cell_maps = cells
            .cells
            .iter()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(a, v)| {
                        (
                            cells.axes[a].clone(),
                            cells.rendered[a][*v as usize].clone(),
                        )
                    })
                    .collect()
            })
            .collect();
        Some(Pipeline {
            name,
            file: abs.to_path_buf(),
            dir: abs.parent().map(Path::to_path_buf).unwrap_or_default(),
            matrix_axes: cells.axes.clone(),
            cells: cell_maps,
            instances,
            executor,
            report,
        })
    }

    // ----- params -------------------------------------------------------------------------

    fn read_params<'n>(
        &mut self,
        entry: Option<&'n Entry>,
        matrix: &Matrix,
    ) -> BTreeMap<String, &'n Node> {
        let mut out = BTreeMap::new();
        let Some(e) = entry else { return out };
        match &e.value.value {
            Value::Null => {}
            Value::Map(m) => {
                for p in m {
                    if !valid_ident(&p.key) {
                        self.err(
                            Some(p.key_loc),
                            format!("bad param name `{}`", p.key),
                            &format!("params.{}", p.key),
                            Some("names are letters, digits, `_` and `-`".into()),
                        );
                        continue;
                    }
                    self.check_templates(
                        &p.value,
                        &format!("params.{}", p.key),
                        Mode::Param,
                        matrix,
                        &BTreeMap::new(),
                        &[],
                        &[],
                        &mut BTreeSet::new(),
                    );
                    out.insert(p.key.clone(), &p.value);
                }
            }
            _ => self.err(
                Some(e.value.loc),
                format!(
                    "`params` must be a map of name -> value, got {}",
                    e.value.type_name()
                ),
                "params",
                None,
            ),
        }
        out
    }

    // ----- matrix -------------------------------------------------------------------------

    /// The matrix and whether it is usable.
    fn read_matrix(&mut self, entry: Option<&Entry>) -> (Matrix, bool) {
        let mut mx = Matrix::default();
        let Some(e) = entry else { return (mx, true) };
        let entries = match &e.value.value {
            Value::Null => return (mx, true),
            Value::Map(m) => m,
            _ => {
                self.err(
                    Some(e.value.loc),
                    format!(
                        "`matrix` must be a map of axis -> list of values, got {}",
                        e.value.type_name()
                    ),
                    "matrix",
                    None,
                );
                return (mx, false);
            }
        };
        let mut ok = true;
        for a in entries
            .iter()
            .filter(|a| a.key != "include" && a.key != "exclude")
        {
            let key = format!("matrix.{}", a.key);
            if !valid_ident(&a.key) {
                self.err(
                    Some(a.key_loc),
                    format!("bad matrix axis name `{}`", a.key),
                    &key,
                    Some("names are letters, digits, `_` and `-`".into()),
                );
                self.broken_axes.push(a.key.clone());
                ok = false;
                continue;
            }
            match &a.value.value {
                Value::Seq(items) if !items.is_empty() => {
                    let mut vals: Vec<J> = Vec::new();
                    for (i, it) in items.iter().enumerate() {
                        let v = it.to_json();
                        if contains_template(it) {
                            self.err(Some(it.loc), "matrix values cannot use `${...}`", &format!("{key}[{i}]"), Some("matrix values are literal; put computed values in `params:` and reference `${matrix.AXIS}` there".into()));
                            ok = false;
                        }
                        if vals.contains(&v) {
                            self.err(
                                Some(it.loc),
                                format!("value listed twice in matrix axis `{}`", a.key),
                                &format!("{key}[{i}]"),
                                Some("remove the duplicate".into()),
                            );
                            ok = false;
                        }
                        self.id_names
                            .entry(v.to_string())
                            .or_insert_with(|| render_node_id(it));
                        vals.push(v);
                    }
                    mx.axes.push((a.key.clone(), vals));
                }
                Value::Seq(_) | Value::Null => {
                    self.broken_axes.push(a.key.clone());
                    self.err(
                        Some(a.value.loc),
                        format!("matrix axis `{}` has no values", a.key),
                        &key,
                        Some(format!(
                            "list at least one value, e.g. `{}: [a, b]`, or remove the axis",
                            a.key
                        )),
                    );
                    ok = false;
                }
                _ => {
                    self.broken_axes.push(a.key.clone());
                    self.err(
                        Some(a.value.loc),
                        format!(
                            "matrix axis `{}` must be a list of values, got {}",
                            a.key,
                            a.value.type_name()
                        ),
                        &key,
                        Some(format!("write `{}: [{}]`", a.key, scalar_text(&a.value))),
                    );
                    ok = false;
                }
            }
        }
        let names = mx.axis_names();
        for which in ["exclude", "include"] {
            let Some(list) = e.value.get(which) else {
                continue;
            };
            let items: &[Node] = match &list.value.value {
                Value::Seq(v) => v,
                Value::Null => &[],
                _ => {
                    self.err(
                        Some(list.value.loc),
                        format!(
                            "`matrix.{which}` must be a list of maps (axis -> value), got {}",
                            list.value.type_name()
                        ),
                        &format!("matrix.{which}"),
                        None,
                    );
                    ok = false;
                    continue;
                }
            };
            for (i, it) in items.iter().enumerate() {
                let key = format!("matrix.{which}[{i}]");
                let Some(m) = it.as_map() else {
                    self.err(
                        Some(it.loc),
                        format!(
                            "each `{which}` entry must be a map of axis -> value, got {}",
                            it.type_name()
                        ),
                        &key,
                        None,
                    );
                    ok = false;
                    continue;
                };
                let mut cell = BTreeMap::new();
                for kv in m {
                    if !names.contains(&kv.key) {
                        self.err(
                            Some(kv.key_loc),
                            format!("`{which}` names an unknown matrix axis `{}`", kv.key),
                            &format!("{key}.{}", kv.key),
                            suggest(&kv.key, &names, "the axes are"),
                        );
                        ok = false;
                        continue;
                    }
                    let v = kv.value.to_json();
                    self.id_names
                        .entry(v.to_string())
                        .or_insert_with(|| render_node_id(&kv.value));
                    cell.insert(kv.key.clone(), v);
                }
                if m.is_empty() {
                    self.err(
                        Some(it.loc),
                        format!("empty `{which}` entry"),
                        &key,
                        Some(if which == "exclude" {
                            "an empty entry would match every cell".into()
                        } else {
                            "give a value for every axis".into()
                        }),
                    );
                    ok = false;
                }
                if which == "include" {
                    let missing: Vec<String> = names
                        .iter()
                        .filter(|n| !cell.contains_key(*n))
                        .map(|n| format!("`{n}`"))
                        .collect();
                    if !missing.is_empty() && !m.is_empty() {
                        self.err(
                            Some(it.loc),
                            format!("`include` entry gives no value for {}", missing.join(", ")),
                            &key,
                            Some(
                                "an include entry is a whole cell: give a value for every axis"
                                    .into(),
                            ),
                        );
                        ok = false;
                    }
                    mx.include.push(cell);
                } else {
                    mx.exclude.push(cell);
                }
            }
        }
        (mx, ok)
    }

    /// The cells, numbered. When `exclude` removes everything, the error is reported and the
    /// stages are still checked over the whole product.
    fn cells(&mut self, mx: &Matrix, entry: Option<&Entry>) -> Option<Cells> {
        let mut raw = mx.cells();
        if raw.is_empty() {
            self.err(
                entry.map(|e| e.key_loc),
                "the matrix has no cells: `exclude` removes every combination",
                "matrix",
                Some("remove an `exclude` entry, or add cells with `include`".into()),
            );
            raw = Matrix {
                axes: mx.axes.clone(),
                ..Default::default()
            }
            .cells();
        }
        let axes = mx.axis_names();
        let mut values: Vec<Vec<J>> = vec![Vec::new(); axes.len()];
        let mut cells = Vec::with_capacity(raw.len());
        for c in &raw {
            let mut idx = Vec::with_capacity(c.len());
            for (a, v) in c.iter().enumerate() {
                let i = match values[a].iter().position(|x| x == v) {
                    Some(i) => i,
                    None => {
                        values[a].push(v.clone());
                        values[a].len() - 1
                    }
                };
                idx.push(i as u32);
            }
            cells.push(idx);
        }
        let mut rendered: Vec<Vec<String>> = Vec::new();
        let mut ok = true;
        for (a, vals) in values.iter().enumerate() {
            let r: Vec<String> = vals
                .iter()
                .map(|v| {
                    self.id_names
                        .get(&v.to_string())
                        .cloned()
                        .unwrap_or_else(|| render_id_value(v))
                })
                .collect();
            for i in 0..r.len() {
                if let Some(j) = (0..i).find(|j| r[*j] == r[i]) {
                    let loc = entry.and_then(|e| e.value.get(&axes[a])).map(|e| e.key_loc);
                    self.err(
                        loc,
                        format!("matrix axis `{}`: values {} and {} would both be named `{}` in instance ids", axes[a], vals[j], vals[i], r[i]),
                        &format!("matrix.{}", axes[a]),
                        Some("make the values differ in what they list (map values are named by their values joined with `+`)".into()),
                    );
                    ok = false;
                }
            }
            rendered.push(r);
        }
        let _ = ok;
        Some(Cells {
            axes,
            values,
            rendered,
            cells,
        })
    }

    // ----- executor / report --------------------------------------------------------------

    fn read_executor(&mut self, entry: Option<&Entry>) -> ExecutorConfig {
        let mut cfg = ExecutorConfig::default();
        let Some(e) = entry else { return cfg };
        let Some(m) = e.value.as_map() else {
            if !e.value.is_null() {
                self.err(
                    Some(e.value.loc),
                    format!("`executor` must be a map, got {}", e.value.type_name()),
                    "executor",
                    Some("e.g. `executor: { kind: slurm, slurm: { partition: gpu } }`".into()),
                );
            }
            return cfg;
        };
        for kv in m {
            match kv.key.as_str() {
                "kind" => match kv.value.as_str() {
                    Some(k @ ("local" | "slurm")) => cfg.kind = Some(k.to_string()),
                    _ => {
                        let got = scalar_text(&kv.value);
                        self.err(
                            Some(kv.value.loc),
                            format!("unknown executor `{got}`"),
                            "executor.kind",
                            suggest(&got, &["local", "slurm"], "expected one of"),
                        );
                    }
                },
                "slurm" => cfg.slurm = self.string_map(&kv.value, "executor.slurm"),
                other => self.err(
                    Some(kv.key_loc),
                    format!("unknown key `{other}` in `executor`"),
                    &format!("executor.{other}"),
                    suggest(other, &["kind", "slurm"], "expected one of"),
                ),
            }
        }
        cfg
    }

    fn read_report(&mut self, entry: Option<&Entry>, stages: &[String]) -> ReportConfig {
        let mut cfg = ReportConfig::default();
        let Some(e) = entry else { return cfg };
        let Some(m) = e.value.as_map() else {
            if !e.value.is_null() {
                self.err(
                    Some(e.value.loc),
                    format!("`report` must be a map, got {}", e.value.type_name()),
                    "report",
                    Some("e.g. `report: { stages: [verify, prune] }`".into()),
                );
            }
            return cfg;
        };
        for kv in m {
            let key = format!("report.{}", kv.key);
            let target = match kv.key.as_str() {
                "stages" => &mut cfg.stages,
                "baseline" => &mut cfg.baseline,
                other => {
                    self.err(
                        Some(kv.key_loc),
                        format!("unknown key `{other}` in `report`"),
                        &key,
                        suggest(other, &["stages", "baseline"], "expected one of"),
                    );
                    continue;
                }
            };
            let items: Vec<&Node> = match &kv.value.value {
                Value::Seq(v) => v.iter().collect(),
                Value::Null => Vec::new(),
                _ => vec![&kv.value],
            };
            for (i, it) in items.iter().enumerate() {
                match it.as_str() {
                    Some(s) if stages.iter().any(|n| n == s) => target.push(s.to_string()),
                    _ => {
                        let got = scalar_text(it);
                        self.err(
                            Some(it.loc),
                            format!("`{key}` names an unknown stage `{got}`"),
                            &format!("{key}[{i}]"),
                            suggest(&got, stages, "the stages are"),
                        );
                    }
                }
            }
        }
        cfg
    }

    fn string_map(&mut self, n: &Node, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &n.value {
            Value::Null => {}
            Value::Map(m) => {
                for kv in m {
                    match &kv.value.value {
                        Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                            out.insert(kv.key.clone(), interp::render(&kv.value.to_json()));
                        }
                        _ => self.err(
                            Some(kv.value.loc),
                            format!(
                                "`{key}.{}` must be a string or number, got {}",
                                kv.key,
                                kv.value.type_name()
                            ),
                            &format!("{key}.{}", kv.key),
                            None,
                        ),
                    }
                }
            }
            _ => self.err(
                Some(n.loc),
                format!(
                    "`{key}` must be a map of option -> value, got {}",
                    n.type_name()
                ),
                key,
                Some("e.g. `{ partition: gpu, account: lab }`".into()),
            ),
        }
        out
    }

    // ----- stages: static checks ----------------------------------------------------------

    fn stage_def<'n>(
        &mut self,
        e: &'n Entry,
        params: &BTreeMap<String, &Node>,
        matrix: &Matrix,
    ) -> StageDef<'n> {
        let name = e.key.clone();
        let sk = format!("stages.{name}");
        let mut d = StageDef {
            name: name.clone(),
            key_loc: e.key_loc,
            node: &e.value,
            kind: None,
            is_run: false,
            outputs: Vec::new(),
            input_names: Vec::new(),
            direct_axes: BTreeSet::new(),
            ok: true,
        };
        if !valid_ident(&name) {
            self.err(Some(e.key_loc), format!("bad stage name `{name}`"), &sk, Some("stage names are letters, digits, `_` and `-` (a `.` would make `stage.output` references ambiguous)".into()));
            d.ok = false;
        }
        let Some(m) = e.value.as_map() else {
            self.err(Some(e.value.loc), format!("stage `{name}` must be a map, got {}", e.value.type_name()), &sk, Some("e.g. `{ uses: train, with: { epochs: 2 } }` or `{ run: \"...\", outputs: [out] }`".into()));
            d.ok = false;
            return d;
        };
        for kv in m {
            if !STAGE_KEYS.contains(&kv.key.as_str()) {
                self.err(
                    Some(kv.key_loc),
                    format!("unknown key `{}` in stage `{name}`", kv.key),
                    &format!("{sk}.{}", kv.key),
                    suggest(&kv.key, &STAGE_KEYS, "expected one of"),
                );
            }
        }
        let uses = e.value.get("uses");
        let run = e.value.get("run");
        match (uses, run) {
            (Some(u), Some(_)) => {
                self.err(
                    Some(u.key_loc),
                    format!("stage `{name}` has both `uses` and `run`"),
                    &sk,
                    Some(
                        "a stage is either a built-in kind (`uses:`) or a shell command (`run:`)"
                            .into(),
                    ),
                );
                d.ok = false;
            }
            (None, None) => {
                self.err(
                    Some(e.key_loc),
                    format!("stage `{name}` has neither `uses` nor `run`"),
                    &sk,
                    Some(format!(
                        "add `uses: KIND` (one of {}) or `run: COMMAND`",
                        kinds::names().join(", ")
                    )),
                );
                d.ok = false;
            }
            (Some(u), None) => match u.value.as_str() {
                Some(k) => match kinds::lookup(k) {
                    Some(spec) => d.kind = Some(spec),
                    None => {
                        self.err(
                            Some(u.value.loc),
                            format!("unknown kind `{k}`"),
                            &format!("{sk}.uses"),
                            suggest(k, &kinds::names(), "the built-in kinds are"),
                        );
                        d.ok = false;
                    }
                },
                None => {
                    self.err(
                        Some(u.value.loc),
                        format!("`uses` must name a kind, got {}", u.value.type_name()),
                        &format!("{sk}.uses"),
                        suggest("", &kinds::names(), "the built-in kinds are"),
                    );
                    d.ok = false;
                }
            },
            (None, Some(r)) => {
                d.is_run = true;
                if r.value.as_str().is_none_or(|s| s.trim().is_empty()) {
                    self.err(
                        Some(r.value.loc),
                        format!(
                            "`run` must be a non-empty command, got {}",
                            r.value.type_name()
                        ),
                        &format!("{sk}.run"),
                        Some("e.g. `run: \"python3 ${inputs.script} > ${outputs.report}\"`".into()),
                    );
                    d.ok = false;
                }
            }
        }

        // Outputs.
        if let Some(kind) = d.kind {
            d.outputs = kind
                .outputs
                .iter()
                .map(|p| Output {
                    name: p.name.to_string(),
                    rel_path: p.rel_path().to_string(),
                    is_dir: p.is_dir(),
                    required: p.required,
                })
                .collect();
            for key in ["outputs", "env"] {
                if let Some(kv) = e.value.get(key) {
                    let hint = if key == "outputs" {
                        let names: Vec<&str> = kind.outputs.iter().map(|p| p.name).collect();
                        format!("kind `{}` always writes {}", kind.name, names.join(", "))
                    } else {
                        "`env` is for `run:` stages".into()
                    };
                    self.err(
                        Some(kv.key_loc),
                        format!("`{key}` is only for `run:` stages"),
                        &format!("{sk}.{key}"),
                        Some(hint),
                    );
                }
            }
        } else if d.is_run {
            d.outputs = self.run_outputs(e.value.get("outputs"), &sk);
            if let Some(kv) = e.value.get("with") {
                self.err(
                    Some(kv.key_loc),
                    "`with` is only for built-in kinds (`uses:`)",
                    &format!("{sk}.with"),
                    Some("pass values to a command through `${params.x}` or `env:`".into()),
                );
            }
        }

        // Inputs (shape; the values are checked per cell).
        if let Some(kv) = e.value.get("inputs") {
            match &kv.value.value {
                Value::Null => {}
                Value::Map(m) => {
                    for inp in m {
                        d.input_names.push(inp.key.clone());
                        if let Some(kind) = d.kind {
                            if kind.input(&inp.key).is_none() {
                                let ports: Vec<&str> = kind.inputs.iter().map(|p| p.name).collect();
                                let hint = if ports.is_empty() {
                                    Some(format!("kind `{}` takes no inputs", kind.name))
                                } else {
                                    suggest(
                                        &inp.key,
                                        &ports,
                                        &format!("the inputs of `{}` are", kind.name),
                                    )
                                };
                                self.err(
                                    Some(inp.key_loc),
                                    format!("kind `{}` has no input `{}`", kind.name, inp.key),
                                    &format!("{sk}.inputs.{}", inp.key),
                                    hint,
                                );
                            }
                        } else if !valid_ident(&inp.key) {
                            self.err(
                                Some(inp.key_loc),
                                format!("bad input name `{}`", inp.key),
                                &format!("{sk}.inputs.{}", inp.key),
                                Some("names are letters, digits, `_` and `-`".into()),
                            );
                        }
                    }
                }
                _ => {
                    self.err(
                        Some(kv.value.loc),
                        format!(
                            "`inputs` must be a map of name -> `stage.output` or path, got {}",
                            kv.value.type_name()
                        ),
                        &format!("{sk}.inputs"),
                        None,
                    );
                    d.ok = false;
                }
            }
        }
        if let Some(kind) = d.kind {
            let missing: Vec<&str> = kind
                .inputs
                .iter()
                .filter(|p| p.required && !d.input_names.iter().any(|n| n == p.name))
                .map(|p| p.name)
                .collect();
            for p in missing {
                let doc = kind.input(p).map(|x| x.doc).unwrap_or("");
                self.err(
                    Some(e.key_loc),
                    format!("stage `{name}` (kind `{}`) needs input `{p}`", kind.name),
                    &format!("{sk}.inputs"),
                    Some(format!("add `inputs: {{ {p}: STAGE.OUTPUT }}` ({doc})")),
                );
            }
            // `with:` keys: unknown params with a did-you-mean (before the kind's own checks).
            if let Some(w) = e.value.get("with") {
                match &w.value.value {
                    Value::Null => {}
                    Value::Map(m) => {
                        let names = (kind.param_names)();
                        for p in m {
                            if !names.contains(&p.key) {
                                let hint = if names.is_empty() {
                                    Some(format!("kind `{}` takes no params", kind.name))
                                } else {
                                    suggest(
                                        &p.key,
                                        &names,
                                        &format!("the params of `{}` are", kind.name),
                                    )
                                };
                                self.err(
                                    Some(p.key_loc),
                                    format!("unknown param `{}` for kind `{}`", p.key, kind.name),
                                    &format!("{sk}.with.{}", p.key),
                                    hint,
                                );
                            }
                        }
                    }
                    _ => {
                        self.err(
                            Some(w.value.loc),
                            format!(
                                "`with` must be a map of param -> value, got {}",
                                w.value.type_name()
                            ),
                            &format!("{sk}.with"),
                            None,
                        );
                        d.ok = false;
                    }
                }
            }
        }
        if let Some(kv) = e.value.get("env") {
            if !matches!(kv.value.value, Value::Map(_) | Value::Null) {
                self.err(
                    Some(kv.value.loc),
                    format!(
                        "`env` must be a map of variable -> value, got {}",
                        kv.value.type_name()
                    ),
                    &format!("{sk}.env"),
                    None,
                );
                d.ok = false;
            }
        }

        // Interpolations: names exist, io refs only in `run`; collect the axes used.
        let outputs: Vec<String> = d.outputs.iter().map(|o| o.name.clone()).collect();
        let mut axes = BTreeSet::new();
        for kv in m {
            if kv.key == "uses" || kv.key == "outputs" {
                continue;
            }
            let mode = if kv.key == "run" {
                Mode::Command
            } else {
                Mode::Value
            };
            self.uses_broken_axis = false;
            self.check_templates(
                &kv.value,
                &format!("{sk}.{}", kv.key),
                mode,
                matrix,
                params,
                &d.input_names,
                &outputs,
                &mut axes,
            );
            // Template errors alone do not stop evaluation (failed lookups evaluate to
            // nothing, silently), so the rest of the stage is still checked.
            if self.uses_broken_axis {
                d.ok = false;
            }
        }
        d.direct_axes = axes;
        d
    }

    fn run_outputs(&mut self, entry: Option<&Entry>, sk: &str) -> Vec<Output> {
        let mut out: Vec<Output> = Vec::new();
        let Some(e) = entry else { return out };
        let mut add = |this: &mut Self, name: &str, path: &str, loc: Loc, key: String| {
            let is_dir = path.ends_with('/');
            let name = name.trim_end_matches('/');
            let rel = path.trim_end_matches('/');
            if !valid_ident(name) {
                this.err(
                    Some(loc),
                    format!("bad output name `{name}`"),
                    &key,
                    Some(
                        "names are letters, digits, `_` and `-`; a trailing `/` marks a folder"
                            .into(),
                    ),
                );
                return;
            }
            if rel.is_empty()
                || rel.starts_with('/')
                || rel.split('/').any(|c| c == ".." || c == ".")
            {
                this.err(
                    Some(loc),
                    format!(
                        "output path `{path}` must be relative and stay inside the stage's folder"
                    ),
                    &key,
                    None,
                );
                return;
            }
            if out.iter().any(|o| o.name == name) {
                this.err(
                    Some(loc),
                    format!("output `{name}` declared twice"),
                    &key,
                    None,
                );
                return;
            }
            out.push(Output {
                name: name.to_string(),
                rel_path: rel.to_string(),
                is_dir,
                required: true,
            });
        };
        match &e.value.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    match it.as_str() {
                        Some(s) => add(self, s, s, it.loc, format!("{sk}.outputs[{i}]")),
                        None => self.err(
                            Some(it.loc),
                            format!(
                                "an output is a name (a trailing `/` marks a folder), got {}",
                                it.type_name()
                            ),
                            &format!("{sk}.outputs[{i}]"),
                            None,
                        ),
                    }
                }
            }
            Value::Map(m) => {
                for kv in m {
                    match kv.value.as_str() {
                        Some(p) => {
                            let n = if p.ends_with('/') {
                                format!("{}/", kv.key)
                            } else {
                                kv.key.clone()
                            };
                            add(
                                self,
                                &n,
                                p,
                                kv.value.loc,
                                format!("{sk}.outputs.{}", kv.key),
                            )
                        }
                        None => self.err(
                            Some(kv.value.loc),
                            format!(
                                "an output path must be a string, got {}",
                                kv.value.type_name()
                            ),
                            &format!("{sk}.outputs.{}", kv.key),
                            None,
                        ),
                    }
                }
            }
            Value::Null => {}
            _ => self.err(
                Some(e.value.loc),
                format!(
                    "`outputs` must be a list of names, got {}",
                    e.value.type_name()
                ),
                &format!("{sk}.outputs"),
                Some("e.g. `outputs: [report, plots/]`".into()),
            ),
        }
        out
    }

    /// Parse every string below `n`, report syntax errors and unknown names, and collect the
    /// matrix axes referenced (through params too).
    #[allow(clippy::too_many_arguments)]
    fn check_templates(
        &mut self,
        n: &Node,
        key: &str,
        mode: Mode,
        matrix: &Matrix,
        params: &BTreeMap<String, &Node>,
        inputs: &[String],
        outputs: &[String],
        axes: &mut BTreeSet<usize>,
    ) {
        match &n.value {
            Value::Str(s) if !Template::is_plain(s) => {
                let t = match Template::parse(s) {
                    Ok(t) => t,
                    Err(e) => {
                        let loc = self.sub_loc(n, e.offset, e.len);
                        self.err(Some(loc), e.message, key, e.hint);
                        return;
                    }
                };
                let names = matrix.axis_names();
                for r in t.refs() {
                    let loc = self.sub_loc(n, r.offset, r.len);
                    let first = &r.path[0];
                    match r.ns {
                        Ns::Matrix => match names.iter().position(|a| a == first) {
                            Some(i) => {
                                axes.insert(i);
                            }
                            None if self.broken_axes.contains(first) => {
                                self.uses_broken_axis = true
                            }
                            None => {
                                let hint = if names.is_empty() {
                                    Some("this pipeline has no `matrix:`".into())
                                } else {
                                    suggest(first, &names, "the axes are")
                                };
                                self.err(
                                    Some(loc),
                                    format!("unknown matrix axis `{first}` in `{}`", r.text()),
                                    key,
                                    hint,
                                );
                            }
                        },
                        Ns::Params if mode == Mode::Param => {
                            self.err(
                                Some(loc),
                                format!("a param cannot use another param (`{}`)", r.text()),
                                key,
                                Some("params may use `${matrix.AXIS}`; write the value out".into()),
                            );
                        }
                        Ns::Params => match params.get(first) {
                            Some(pn) => {
                                let mut sub = BTreeSet::new();
                                if collect_matrix_axes(pn, &names, &mut sub) {
                                    self.uses_broken_axis = true;
                                }
                                axes.extend(sub);
                            }
                            None => {
                                let pnames: Vec<&str> = params.keys().map(String::as_str).collect();
                                let hint = if pnames.is_empty() {
                                    Some("this pipeline has no `params:`".into())
                                } else {
                                    suggest(first, &pnames, "the params are")
                                };
                                self.err(
                                    Some(loc),
                                    format!("unknown param `{first}` in `{}`", r.text()),
                                    key,
                                    hint,
                                );
                            }
                        },
                        Ns::Inputs | Ns::Outputs if mode != Mode::Command => {
                            self.err(
                                Some(loc),
                                format!("`{}` is only allowed in a `run:` command", r.text()),
                                key,
                                Some("built-in kinds get their inputs through `inputs:`; write `$${` for a literal `${`".into()),
                            );
                        }
                        Ns::Inputs | Ns::Outputs => {
                            let (declared, what) = if r.ns == Ns::Inputs {
                                (inputs, "input")
                            } else {
                                (outputs, "output")
                            };
                            if r.path.len() > 1 {
                                self.err(
                                    Some(loc),
                                    format!("`{}`: an {what} is a path, it has no keys", r.text()),
                                    key,
                                    Some(format!("write `${{{}.{first}}}`", r.ns.name())),
                                );
                            } else if !declared.iter().any(|d| d == first) {
                                let hint = if declared.is_empty() {
                                    Some(format!(
                                        "declare it: `{}: {}`",
                                        if what == "input" { "inputs" } else { "outputs" },
                                        if what == "input" {
                                            format!("{{ {first}: STAGE.OUTPUT }}")
                                        } else {
                                            format!("[{first}]")
                                        }
                                    ))
                                } else {
                                    suggest(first, declared, &format!("the declared {what}s are"))
                                };
                                self.err(
                                    Some(loc),
                                    format!("`{}` names an undeclared {what}", r.text()),
                                    key,
                                    hint,
                                );
                            }
                        }
                    }
                }
            }
            Value::Seq(v) => {
                for (i, it) in v.iter().enumerate() {
                    self.check_templates(
                        it,
                        &format!("{key}[{i}]"),
                        mode,
                        matrix,
                        params,
                        inputs,
                        outputs,
                        axes,
                    );
                }
            }
            Value::Map(m) => {
                for kv in m {
                    self.check_templates(
                        &kv.value,
                        &format!("{key}.{}", kv.key),
                        mode,
                        matrix,
                        params,
                        inputs,
                        outputs,
                        axes,
                    );
                }
            }
            _ => {}
        }
    }

    /// The location of chars `offset..offset+len` of the string scalar `n`, when it sits on one
    /// line; else the scalar itself.
    fn sub_loc(&self, n: &Node, offset: usize, len: usize) -> Loc {
        let Some(f) = self.sources.files.get(n.loc.file as usize) else {
            return n.loc;
        };
        let line = f
            .text
            .lines()
            .nth(n.loc.line.saturating_sub(1) as usize)
            .unwrap_or("");
        let first = line.chars().nth(n.loc.col.saturating_sub(1) as usize);
        let quote = matches!(first, Some('"') | Some('\'')) as usize;
        let s = n.as_str().unwrap_or("");
        let fits = (n.loc.len as usize) >= s.chars().count()
            && !s.contains('\n')
            && (quote == 0 || !line.contains('\\'));
        if !fits {
            return n.loc;
        }
        Loc {
            file: n.loc.file,
            line: n.loc.line,
            col: n.loc.col + (quote + offset) as u32,
            len: len as u32,
        }
    }

    // ----- stages: per-cell evaluation ----------------------------------------------------

    fn cell_note(&self, ctx: &Ctx, axes: &[usize]) -> Option<String> {
        if axes.is_empty() {
            return None;
        }
        let parts: Vec<String> = axes
            .iter()
            .map(|a| {
                format!(
                    "{}={}",
                    ctx.cells.axes[*a], ctx.cells.rendered[*a][ctx.cell[*a] as usize]
                )
            })
            .collect();
        Some(format!("in matrix cell {}", parts.join(",")))
    }

    fn eval_stage(
        &mut self,
        defs: &[StageDef],
        si: usize,
        ctx: &Ctx,
        axes: &[usize],
        edges: &mut BTreeMap<usize, Loc>,
    ) -> Option<StageEval> {
        let d = &defs[si];
        let sk = format!("stages.{}", d.name);
        let note = self.cell_note(ctx, axes);
        let before = self.errors.len();

        let action = self.eval_action(d, ctx, &sk, &note);

        // Inputs.
        let mut inputs = Vec::new();
        if let Some(e) = d.node.get("inputs") {
            for kv in e.value.as_map().unwrap_or(&[]) {
                let key = format!("{sk}.inputs.{}", kv.key);
                let Some(v) = self.interp(&kv.value, ctx, Mode::Value, &key, &note) else {
                    continue;
                };
                let s = match &v {
                    J::Null => String::new(),
                    J::String(s) => s.trim().to_string(),
                    other => {
                        self.err_note(kv.value.loc, format!("an input must be `stage.output` or a path, got {}", json_type(other)), &key, Some("e.g. `data.train`, or `./data/faces` for a file or folder outside the pipeline".into()), note.clone());
                        continue;
                    }
                };
                if s.is_empty() {
                    let required = match d.kind {
                        Some(k) => k.input(&kv.key).is_some_and(|p| p.required),
                        None => true,
                    };
                    if required {
                        let hint = if d.kind.is_some() {
                            "a required input needs a value in every cell"
                        } else {
                            "inputs of a `run:` stage cannot be empty; remove the input or give it a value"
                        };
                        self.err_note(
                            kv.value.loc,
                            format!("input `{}` is empty", kv.key),
                            &key,
                            Some(hint.into()),
                            note.clone(),
                        );
                    }
                    continue;
                }
                if s.starts_with("./") || s.starts_with("../") || s.starts_with('/') {
                    let base = self
                        .sources
                        .files
                        .get(kv.value.loc.file as usize)
                        .and_then(|f| f.abs.parent().map(Path::to_path_buf))
                        .unwrap_or_default();
                    inputs.push((kv.key.clone(), InRef::External(normalize(&base.join(&s)))));
                    continue;
                }
                let Some((stage, output)) = s.split_once('.') else {
                    self.err_note(
                        kv.value.loc,
                        format!("input `{}`: `{s}` is neither `stage.output` nor a path", kv.key),
                        &key,
                        Some(format!("a file or folder outside the pipeline starts with `./`, `../` or `/` (e.g. `./{s}`)")),
                        note.clone(),
                    );
                    continue;
                };
                let Some(ui) = defs.iter().position(|x| x.name == stage) else {
                    let names: Vec<&str> = defs.iter().map(|x| x.name.as_str()).collect();
                    self.err_note(
                        kv.value.loc,
                        format!("input `{}` refers to an unknown stage `{stage}`", kv.key),
                        &key,
                        suggest(stage, &names, "the stages are"),
                        note.clone(),
                    );
                    continue;
                };
                let up = &defs[ui];
                if up.kind.is_none() && !up.is_run {
                    continue; // its own errors are reported
                }
                if !up.outputs.iter().any(|o| o.name == output) {
                    let outs: Vec<&str> = up.outputs.iter().map(|o| o.name.as_str()).collect();
                    let hint = if outs.is_empty() {
                        Some(format!("stage `{stage}` declares no outputs"))
                    } else {
                        suggest(output, &outs, &format!("the outputs of `{stage}` are"))
                    };
                    self.err_note(
                        kv.value.loc,
                        format!("stage `{stage}` has no output `{output}`"),
                        &key,
                        hint,
                        note.clone(),
                    );
                    continue;
                }
                edges.entry(ui).or_insert(kv.value.loc);
                inputs.push((
                    kv.key.clone(),
                    InRef::Upstream {
                        stage: ui,
                        output: output.to_string(),
                    },
                ));
            }
        }

        let resources = self.eval_resources(d, ctx, &sk, &note);
        let retry = match d.node.get("retry") {
            None => 0,
            Some(r) => match self.interp(&r.value, ctx, Mode::Value, &format!("{sk}.retry"), &note)
            {
                Some(J::Number(n)) if n.as_i64().is_some_and(|i| (0..=MAX_RETRY).contains(&i)) => {
                    n.as_i64().unwrap_or(0) as u32
                }
                Some(v) => {
                    self.err_note(r.value.loc, format!("`retry` must be a whole number of extra attempts in 0..={MAX_RETRY}, got {}", show(&v)), &format!("{sk}.retry"), None, note.clone());
                    0
                }
                None => 0,
            },
        };
        if self.errors.len() > before {
            return None;
        }
        Some(StageEval {
            action: action?,
            inputs,
            resources: resources?,
            retry,
        })
    }

    /// The stage's action in one cell: interpolated, and resolved by its kind.
    fn eval_action(
        &mut self,
        d: &StageDef,
        ctx: &Ctx,
        sk: &str,
        note: &Option<String>,
    ) -> Option<Action> {
        let action = if let Some(kind) = d.kind {
            let with_entry = d.node.get("with");
            let with = match with_entry {
                Some(w) => self.interp(&w.value, ctx, Mode::Value, &format!("{sk}.with"), note)?,
                None => J::Object(Default::default()),
            };
            // Unknown keys were reported statically; the kind checks the rest.
            let names = (kind.param_names)();
            let with = match with {
                J::Object(m) => {
                    J::Object(m.into_iter().filter(|(k, _)| names.contains(k)).collect())
                }
                other => other,
            };
            match (kind.resolve)(&with) {
                Ok(params) => Action::Builtin { kind, params },
                Err(errs) => {
                    for pe in errs {
                        let (loc, key) = match with_entry {
                            Some(w) => {
                                let (node, entry, _) = w.value.find_path(&pe.path);
                                let loc = if pe.path.is_empty() {
                                    w.key_loc
                                } else {
                                    entry
                                        .filter(|e| std::ptr::eq(&e.value, node))
                                        .map(|_| node.loc)
                                        .unwrap_or(node.loc)
                                };
                                (
                                    loc,
                                    if pe.path.is_empty() {
                                        format!("{sk}.with")
                                    } else {
                                        format!("{sk}.with.{}", pe.path)
                                    },
                                )
                            }
                            None => (d.key_loc, format!("{sk}.with")),
                        };
                        let msg = if pe.path.is_empty() {
                            format!("params of `{}`: {}", kind.name, pe.message)
                        } else {
                            format!("param `{}` of `{}`: {}", pe.path, kind.name, pe.message)
                        };
                        self.err_note(loc, msg, &key, pe.hint, note.clone());
                    }
                    return None;
                }
            }
        } else {
            let r = d.node.get("run")?;
            let cmd = self.interp(&r.value, ctx, Mode::Command, &format!("{sk}.run"), note)?;
            let mut env = BTreeMap::new();
            if let Some(e) = d.node.get("env") {
                for kv in e.value.as_map().unwrap_or(&[]) {
                    let key = format!("{sk}.env.{}", kv.key);
                    match self.interp(&kv.value, ctx, Mode::Value, &key, note) {
                        Some(v @ (J::String(_) | J::Number(_) | J::Bool(_))) => {
                            env.insert(kv.key.clone(), interp::render(&v));
                        }
                        Some(v) => self.err_note(
                            kv.value.loc,
                            format!(
                                "an env value must be a string or number, got {}",
                                json_type(&v)
                            ),
                            &key,
                            None,
                            note.clone(),
                        ),
                        None => {}
                    }
                }
            }
            Action::Shell {
                command: interp::render(&cmd),
                env,
            }
        };
        Some(action)
    }

    fn eval_resources(
        &mut self,
        d: &StageDef,
        ctx: &Ctx,
        sk: &str,
        note: &Option<String>,
    ) -> Option<Resources> {
        let mut r = Resources {
            gpus: d.kind.map(|k| k.default_gpus).unwrap_or(0),
            cpus: 1,
            ..Default::default()
        };
        let Some(e) = d.node.get("resources") else {
            return Some(r);
        };
        let m = match &e.value.value {
            Value::Null => return Some(r),
            Value::Map(m) => m,
            _ => {
                self.err(
                    Some(e.value.loc),
                    format!("`resources` must be a map, got {}", e.value.type_name()),
                    &format!("{sk}.resources"),
                    Some("e.g. `resources: { gpus: 1, mem_gb: 16 }`".into()),
                );
                return None;
            }
        };
        let mut ok = true;
        for kv in m {
            let key = format!("{sk}.resources.{}", kv.key);
            if !RESOURCE_KEYS.contains(&kv.key.as_str()) {
                self.err(
                    Some(kv.key_loc),
                    format!("unknown resource `{}`", kv.key),
                    &key,
                    suggest(&kv.key, &RESOURCE_KEYS, "expected one of"),
                );
                ok = false;
                continue;
            }
            if kv.key == "slurm" {
                r.slurm = self.string_map(&kv.value, &key);
                continue;
            }
            let Some(v) = self.interp(&kv.value, ctx, Mode::Value, &key, note) else {
                ok = false;
                continue;
            };
            let int = v.as_i64();
            let loc = kv.value.loc;
            match kv.key.as_str() {
                "gpus" => match int {
                    Some(g) if (0..=MAX_GPUS).contains(&g) => r.gpus = g as u32,
                    Some(g) if g > MAX_GPUS => {
                        self.err_note(
                            loc,
                            format!(
                                "`gpus: {g}` is more than any machine has (at most {MAX_GPUS})"
                            ),
                            &key,
                            Some(
                                "a stage runs on one machine; ask for the GPUs of one node".into(),
                            ),
                            note.clone(),
                        );
                        ok = false;
                    }
                    _ => {
                        self.err_note(
                            loc,
                            format!(
                                "`gpus` must be a whole number in 0..={MAX_GPUS}, got {}",
                                show(&v)
                            ),
                            &key,
                            None,
                            note.clone(),
                        );
                        ok = false;
                    }
                },
                "cpus" => match int {
                    Some(c) if (1..=MAX_CPUS).contains(&c) => r.cpus = c as u32,
                    _ => {
                        self.err_note(
                            loc,
                            format!(
                                "`cpus` must be a whole number in 1..={MAX_CPUS}, got {}",
                                show(&v)
                            ),
                            &key,
                            None,
                            note.clone(),
                        );
                        ok = false;
                    }
                },
                "mem_gb" => match v.as_f64() {
                    Some(x) if x > 0.0 && x <= MAX_MEM_GB => r.mem_gb = Some(x),
                    _ => {
                        self.err_note(
                            loc,
                            format!(
                                "`mem_gb` must be a number in (0, {MAX_MEM_GB}], got {}",
                                show(&v)
                            ),
                            &key,
                            None,
                            note.clone(),
                        );
                        ok = false;
                    }
                },
                "time_min" => match int {
                    Some(t) if (1..=MAX_TIME_MIN).contains(&t) => r.time_min = Some(t as u32),
                    _ => {
                        self.err_note(loc, format!("`time_min` must be a whole number of minutes in 1..={MAX_TIME_MIN}, got {}", show(&v)), &key, None, note.clone());
                        ok = false;
                    }
                },
                _ => {}
            }
        }
        ok.then_some(r)
    }

    /// Evaluate every `${...}` below `n` in `ctx`. Errors found here depend on the cell (a map
    /// value without the key asked for); names were checked statically.
    fn interp(
        &mut self,
        n: &Node,
        ctx: &Ctx,
        mode: Mode,
        key: &str,
        note: &Option<String>,
    ) -> Option<J> {
        match &n.value {
            Value::Str(s) if !Template::is_plain(s) => {
                let t = Template::parse(s).ok()?;
                if let Some(r) = t.whole_ref() {
                    if matches!(r.ns, Ns::Params | Ns::Matrix) {
                        return self.lookup(r, n, ctx, key, note);
                    }
                }
                let mut out = String::new();
                for p in &t.pieces {
                    match p {
                        Piece::Lit(l) => {
                            // Keep `$${` escapes for the shell only where the executor
                            // substitutes again (commands); elsewhere it is the final text.
                            if mode == Mode::Command {
                                out.push_str(&l.replace("${", "$${"));
                            } else {
                                out.push_str(l);
                            }
                        }
                        Piece::Ref(r) => match r.ns {
                            Ns::Params | Ns::Matrix => {
                                out.push_str(&interp::render(&self.lookup(r, n, ctx, key, note)?))
                            }
                            // Reported statically outside commands; nothing to evaluate to.
                            Ns::Inputs | Ns::Outputs if mode != Mode::Command => return None,
                            Ns::Inputs | Ns::Outputs => out.push_str(&r.text()),
                        },
                    }
                }
                Some(J::String(out))
            }
            Value::Seq(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, it) in v.iter().enumerate() {
                    out.push(self.interp(it, ctx, mode, &format!("{key}[{i}]"), note)?);
                }
                Some(J::Array(out))
            }
            Value::Map(m) => {
                let mut out = serde_json::Map::new();
                for kv in m {
                    out.insert(
                        kv.key.clone(),
                        self.interp(&kv.value, ctx, mode, &format!("{key}.{}", kv.key), note)?,
                    );
                }
                Some(J::Object(out))
            }
            _ => Some(n.to_json()),
        }
    }

    fn lookup(
        &mut self,
        r: &Ref,
        n: &Node,
        ctx: &Ctx,
        key: &str,
        note: &Option<String>,
    ) -> Option<J> {
        let first = &r.path[0];
        let root = match r.ns {
            Ns::Matrix => {
                let a = ctx.cells.axes.iter().position(|x| x == first)?;
                ctx.cells.value(a, ctx.cell).clone()
            }
            Ns::Params => {
                let pn = *ctx.params.get(first)?;
                self.interp(pn, ctx, Mode::Param, &format!("params.{first}"), note)?
            }
            _ => return None,
        };
        let mut cur = &root;
        for (i, seg) in r.path.iter().enumerate().skip(1) {
            match cur.get(seg) {
                Some(v) => cur = v,
                None => {
                    let at = r.path[..i].join(".");
                    let loc = self.sub_loc(n, r.offset, r.len);
                    let keys: Vec<String> = cur
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    let hint = if keys.is_empty() {
                        Some(format!(
                            "`{}.{at}` is {}, not a map",
                            r.ns.name(),
                            json_type(cur)
                        ))
                    } else {
                        suggest(seg, &keys, "its keys are")
                    };
                    self.err_note(
                        loc,
                        format!("`{}`: `{}.{at}` has no key `{seg}`", r.text(), r.ns.name()),
                        key,
                        hint,
                        note.clone(),
                    );
                    return None;
                }
            }
        }
        Some(cur.clone())
    }

    // ----- ordering -----------------------------------------------------------------------

    /// Stages in dependency order (file order among the ready ones), or a cycle error.
    fn topo_order(
        &mut self,
        defs: &[StageDef],
        edges: &[BTreeMap<usize, Loc>],
    ) -> Option<Vec<usize>> {
        let adj: Vec<Vec<usize>> = edges.iter().map(|e| e.keys().copied().collect()).collect();
        if let Some(cycle) = crate::dag::find_cycle(&adj) {
            let names: Vec<&str> = cycle.iter().map(|i| defs[*i].name.as_str()).collect();
            let loc = edges[cycle[0]].get(&cycle[1 % cycle.len()]).copied();
            let path = format!("{} -> {}", names.join(" -> "), names[0]);
            self.err(
                loc,
                format!("dependency cycle: {path}"),
                &format!("stages.{}.inputs", names[0]),
                Some("a stage cannot use its own outputs, directly or through other stages".into()),
            );
            return None;
        }
        let n = defs.len();
        let mut indeg: Vec<usize> = adj.iter().map(Vec::len).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ups) in adj.iter().enumerate() {
            for u in ups {
                users[*u].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|i| indeg[*i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for u in &users[i] {
                indeg[*u] -= 1;
                if indeg[*u] == 0 {
                    ready.insert(*u);
                }
            }
        }
        Some(order)
    }
}

// ----- helpers --------------------------------------------------------------------------

/// Deep merge: maps merge key by key (the override wins; a `null` in the override removes the
/// key), anything else is replaced.
fn merge_into(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(bm), Value::Map(om)) => {
            for oe in om {
                match bm.iter().position(|b| b.key == oe.key) {
                    Some(i) if oe.value.is_null() => {
                        bm.remove(i);
                    }
                    Some(i) => {
                        bm[i].key_loc = oe.key_loc;
                        merge_into(&mut bm[i].value, oe.value);
                    }
                    None if oe.value.is_null() => {}
                    None => bm.push(oe),
                }
            }
            base.loc = over.loc;
        }
        (_, v) => {
            base.value = v;
            base.loc = over.loc;
        }
    }
}

/// A matrix value's name in instance ids (see [`render_id_value`]), map keys in file order.
fn render_node_id(n: &Node) -> String {
    match &n.value {
        Value::Seq(v) => v.iter().map(render_node_id).collect::<Vec<_>>().join("+"),
        Value::Map(m) => match m.iter().find(|e| {
            e.key == "name" && !matches!(e.value.value, Value::Map(_) | Value::Seq(_) | Value::Null)
        }) {
            Some(e) => render_node_id(&e.value),
            None => m
                .iter()
                .filter(|e| !e.value.is_null())
                .map(|e| render_node_id(&e.value))
                .collect::<Vec<_>>()
                .join("+"),
        },
        _ => render_id_value(&n.to_json()),
    }
}

fn contains_template(n: &Node) -> bool {
    match &n.value {
        Value::Str(s) => !Template::is_plain(s),
        Value::Seq(v) => v.iter().any(contains_template),
        Value::Map(m) => m.iter().any(|e| contains_template(&e.value)),
        _ => false,
    }
}

/// Adds the axes `n` references to `out`; true when it references an axis not in `names`.
fn collect_matrix_axes(n: &Node, names: &[String], out: &mut BTreeSet<usize>) -> bool {
    match &n.value {
        Value::Str(s) if !Template::is_plain(s) => {
            let mut unknown = false;
            if let Ok(t) = Template::parse(s) {
                for r in t.refs().filter(|r| r.ns == Ns::Matrix) {
                    match names.iter().position(|a| *a == r.path[0]) {
                        Some(i) => {
                            out.insert(i);
                        }
                        None => unknown = true,
                    }
                }
            }
            unknown
        }
        Value::Seq(v) => v
            .iter()
            .fold(false, |u, x| collect_matrix_axes(x, names, out) | u),
        Value::Map(m) => m
            .iter()
            .fold(false, |u, e| collect_matrix_axes(&e.value, names, out) | u),
        _ => false,
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn scalar_text(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => s.clone(),
        Value::Map(_) | Value::Seq(_) => n.to_json().to_string(),
        Value::Null => String::new(),
        _ => interp::render(&n.to_json()),
    }
}

fn json_type(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "a list",
        J::Object(_) => "a map",
    }
}

fn show(v: &J) -> String {
    match v {
        J::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// `a/./b/../c` -> `a/c`, without touching the file system (symlinks are the user's business).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let at_root = out.has_root() && out.parent().is_none();
                if !at_root && !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
