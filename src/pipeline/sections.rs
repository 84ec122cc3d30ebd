//! The second pass: the top-level sections other than `stages` — `name`, `params`,
//! `describe`, `matrix` (its axes, `exclude` and `include`, and the cells they make),
//! `executor`, `report` — each read from its raw struct and checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value as J;

use super::de::{Checked, Located};
use super::diagnostics::suggest;
use super::interp;
use super::loader::{scalar_text, valid_ident, valid_name, Loader};
use super::matrix::{render_id_value, IndexCells, Matrix};
use super::model::{ExecutorConfig, ReportConfig};
use super::raw::{Describe, Options, Params, RawExecutor, RawMatrix, RawReport, EXECUTOR_KINDS};
use super::templates::{contains_template, Mode, Scope};
use super::yaml::{Loc, Node, Value};

/// The `matrix:` section as read: the axes and filters, and what the stage passes need to
/// know about it.
#[derive(Default)]
pub(super) struct MatrixInfo {
    pub matrix: Matrix,
    /// Where `matrix:` is written (the key), for errors about the whole matrix.
    pub key_loc: Option<Loc>,
    /// Axis name -> where it is written.
    pub axis_locs: HashMap<String, Loc>,
    /// Axes with errors of their own: references to them are not errors again, but the stages
    /// that use them are not evaluated.
    pub broken: Vec<String>,
    /// Matrix value (JSON text) -> its name in instance ids, rendered from the YAML node so
    /// that map values keep the order the file wrote them in.
    pub id_names: HashMap<String, String>,
}

impl MatrixInfo {
    pub fn axis_names(&self) -> Vec<String> {
        self.matrix.axis_names()
    }
}

/// The cells as value indices, with each value's name in instance ids.
pub(super) struct Cells {
    pub axes: Vec<String>,
    pub index: IndexCells,
    /// Per axis, the id name of each value.
    pub rendered: Vec<Vec<String>>,
}

impl Cells {
    /// The projection of the cells on `axes` (ascending axis indices): a cell's values on those
    /// axes as one number, so that stages and instances are keyed without an allocation per cell.
    pub fn projection(&self, axes: &[usize]) -> Projection {
        let mut strides = Vec::with_capacity(axes.len());
        let mut stride: u128 = 1;
        for &a in axes {
            strides.push(stride);
            // Cell counts are limited long before this overflows (2^128).
            stride = stride.saturating_mul(self.index.values[a].len().max(1) as u128);
        }
        Projection {
            axes: axes.to_vec(),
            strides,
        }
    }

    pub fn value(&self, axis: usize, cell: &[u32]) -> &J {
        &self.index.values[axis][cell[axis] as usize]
    }
    pub fn name(&self, axis: usize, cell: &[u32]) -> &str {
        &self.rendered[axis][cell[axis] as usize]
    }
}

/// See [`Cells::projection`].
pub(super) struct Projection {
    pub axes: Vec<usize>,
    strides: Vec<u128>,
}

impl Projection {
    pub fn key(&self, cell: &[u32]) -> u128 {
        self.axes
            .iter()
            .zip(&self.strides)
            .map(|(a, s)| cell[*a] as u128 * s)
            .sum()
    }
}

impl Loader {
    pub(super) fn pipeline_name(&mut self, name: Option<&Node>, abs: &Path) -> String {
        let Some(n) = name else {
            return abs
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into());
        };
        match n.as_str() {
            Some(s) if valid_name(s) => s.to_string(),
            _ => {
                self.err(
                    Some(n.loc),
                    "`name` must be a non-empty name of letters, digits, `_`, `-` and `.`",
                    "name",
                    Some("it names the results folder, e.g. `name: diffprob_50`".into()),
                );
                String::new()
            }
        }
    }

    pub(super) fn read_params<'n>(
        &mut self,
        params: Option<&'n Checked<Params>>,
        mx: &MatrixInfo,
    ) -> BTreeMap<String, &'n Node> {
        let mut out = BTreeMap::new();
        let Some(Checked::Valid(params)) = params else {
            return out;
        };
        let no_params = BTreeMap::new();
        for p in params.iter() {
            let key = format!("params.{}", p.key);
            if !valid_ident(&p.key) {
                self.err(
                    Some(p.key_loc),
                    format!("bad param name `{}`", p.key),
                    &key,
                    Some("names are letters, digits, `_` and `-`".into()),
                );
                continue;
            }
            let scope = Scope {
                mode: Mode::Param,
                matrix: mx,
                params: &no_params,
                inputs: &[],
                outputs: &[],
            };
            self.check_templates(&p.value, &key, &scope, &mut BTreeSet::new());
            out.insert(p.key.clone(), &p.value);
        }
        out
    }

    /// `describe:` param -> what it is. Every entry names a param and is one line of text.
    pub(super) fn read_describe(
        &mut self,
        describe: Option<&Checked<Describe>>,
        params: &BTreeMap<String, &Node>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(Checked::Valid(d)) = describe else {
            return out;
        };
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        for e in d.iter() {
            let key = format!("describe.{}", e.key);
            if !params.contains_key(&e.key) {
                self.err(
                    Some(e.key_loc),
                    format!("`describe` names an unknown param `{}`", e.key),
                    &key,
                    suggest(&e.key, &names, "the params are"),
                );
                continue;
            }
            match e.value.as_str() {
                Some(s) if !s.trim().is_empty() && !s.contains('\n') => {
                    out.insert(e.key.clone(), s.trim().to_string());
                }
                _ => self.err(
                    Some(e.value.loc),
                    format!(
                        "a description must be one line of text, got {}",
                        e.value.type_name()
                    ),
                    &key,
                    Some("e.g. `casia: the CASIA-WebFace RecordIO folder (train.rec, train.idx, property)`".into()),
                ),
            }
        }
        out
    }

    // ----- matrix -------------------------------------------------------------------------

    pub(super) fn read_matrix(&mut self, raw: Option<&Located<Checked<RawMatrix>>>) -> MatrixInfo {
        let mut mx = MatrixInfo {
            key_loc: raw.and_then(|r| r.key_loc),
            ..Default::default()
        };
        let Some(Checked::Valid(entries)) = raw.map(|r| &r.value) else {
            return mx;
        };
        for a in entries
            .iter()
            .filter(|a| a.key != "include" && a.key != "exclude")
        {
            mx.axis_locs.insert(a.key.clone(), a.key_loc);
            self.read_axis(&mut mx, &a.key, a.key_loc, &a.value);
        }
        for which in ["exclude", "include"] {
            if let Some(list) = entries.iter().find(|e| e.key == which) {
                self.read_filters(&mut mx, which, &list.value);
            }
        }
        mx
    }

    fn read_axis(&mut self, mx: &mut MatrixInfo, name: &str, key_loc: Loc, value: &Node) {
        let key = format!("matrix.{name}");
        if !valid_ident(name) {
            self.err(
                Some(key_loc),
                format!("bad matrix axis name `{name}`"),
                &key,
                Some("names are letters, digits, `_` and `-`".into()),
            );
            mx.broken.push(name.to_string());
            return;
        }
        match &value.value {
            Value::Seq(items) if !items.is_empty() => {
                let mut vals: Vec<J> = Vec::new();
                // Values seen, by their JSON text (a set: an axis may have thousands).
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    let v = it.to_json();
                    let text = v.to_string();
                    if contains_template(it) {
                        self.err(Some(it.loc), "matrix values cannot use `${...}`", &format!("{key}[{i}]"), Some("matrix values are literal; put computed values in `params:` and reference `${matrix.AXIS}` there".into()));
                    }
                    if !seen.insert(text.clone()) {
                        self.err(
                            Some(it.loc),
                            format!("value listed twice in matrix axis `{name}`"),
                            &format!("{key}[{i}]"),
                            Some("remove the duplicate".into()),
                        );
                    }
                    mx.id_names
                        .entry(text)
                        .or_insert_with(|| render_node_id(it));
                    vals.push(v);
                }
                mx.matrix.axes.push((name.to_string(), vals));
            }
            Value::Seq(_) | Value::Null => {
                mx.broken.push(name.to_string());
                self.err(
                    Some(value.loc),
                    format!("matrix axis `{name}` has no values"),
                    &key,
                    Some(format!(
                        "list at least one value, e.g. `{name}: [a, b]`, or remove the axis"
                    )),
                );
            }
            // `${params.NAME}` that did not resolve to a list: reported by `params_into_axes`.
            Value::Str(s) if is_param_ref(s) => mx.broken.push(name.to_string()),
            _ => {
                mx.broken.push(name.to_string());
                self.err(
                    Some(value.loc),
                    format!(
                        "matrix axis `{name}` must be a list of values, got {}",
                        value.type_name()
                    ),
                    &key,
                    Some(format!("write `{name}: [{}]`", scalar_text(value))),
                );
            }
        }
    }

    /// `exclude` / `include` entries: maps of axis -> value.
    fn read_filters(&mut self, mx: &mut MatrixInfo, which: &str, list: &Node) {
        let items: &[Node] = match &list.value {
            Value::Seq(v) => v,
            Value::Null => &[],
            _ => {
                self.err(
                    Some(list.loc),
                    format!(
                        "`matrix.{which}` must be a list of maps (axis -> value), got {}",
                        list.type_name()
                    ),
                    &format!("matrix.{which}"),
                    None,
                );
                return;
            }
        };
        let names = mx.axis_names();
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
                    continue;
                }
                let v = kv.value.to_json();
                mx.id_names
                    .entry(v.to_string())
                    .or_insert_with(|| render_node_id(&kv.value));
                cell.insert(kv.key.clone(), v);
            }
            if m.is_empty() {
                let hint = if which == "exclude" {
                    "an empty entry would match every cell"
                } else {
                    "give a value for every axis"
                };
                self.err(
                    Some(it.loc),
                    format!("empty `{which}` entry"),
                    &key,
                    Some(hint.into()),
                );
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
                            "an include entry is a whole cell: give a value for every axis".into(),
                        ),
                    );
                }
                mx.matrix.include.push(cell);
            } else {
                mx.matrix.exclude.push(cell);
            }
        }
    }

    /// How many cells the matrix has, refused beyond `limit` before any is built.
    pub(super) fn check_cell_count(&mut self, mx: &MatrixInfo, limit: usize) -> Option<()> {
        // Scanning the product (only with more than 16 exclude entries) is cheap up to here.
        let scan_limit = (limit as u128).saturating_mul(64).max(1 << 20);
        let count = mx.matrix.count_cells(scan_limit);
        if count.n <= limit as u128 && count.exact {
            return Some(());
        }
        let what = if count.exact {
            format!("{} cells", group_digits(count.n))
        } else if count.n > limit as u128 {
            format!("at least {} cells", group_digits(count.n))
        } else {
            // More than 16 exclude entries over a product too large to scan: not counted.
            let product = mx
                .matrix
                .axes
                .iter()
                .fold(1u128, |p, (_, v)| p.saturating_mul(v.len() as u128));
            format!(
                "up to {} cells (more than 16 `exclude` entries: not counted)",
                group_digits(product)
            )
        };
        self.too_many_cells(mx, &what, limit)
    }

    fn too_many_cells(&mut self, mx: &MatrixInfo, n: &str, limit: usize) -> Option<()> {
        self.err(
            mx.key_loc,
            format!(
                "the matrix has {n}, more than the limit of {} stage instances",
                group_digits(limit as u128)
            ),
            "matrix",
            Some("remove axis values or add `exclude` entries; if the sweep is meant to be this large, raise the limit with `--max-instances N` (or ORCHESTRATOR_MAX_INSTANCES)".into()),
        );
        None
    }

    /// The cells, numbered. When `exclude` removes everything, the error is reported and the
    /// stages are still checked over the whole product.
    pub(super) fn cells(&mut self, mx: &MatrixInfo) -> Cells {
        let mut index = mx.matrix.index_cells();
        if index.is_empty() {
            self.err(
                mx.key_loc,
                "the matrix has no cells: `exclude` removes every combination",
                "matrix",
                Some("remove an `exclude` entry, or add cells with `include`".into()),
            );
            index = Matrix {
                axes: mx.matrix.axes.clone(),
                ..Default::default()
            }
            .index_cells();
        }
        let axes = mx.axis_names();
        let rendered: Vec<Vec<String>> = index
            .values
            .iter()
            .map(|vals| {
                vals.iter()
                    .map(|v| {
                        mx.id_names
                            .get(&v.to_string())
                            .cloned()
                            .unwrap_or_else(|| render_id_value(v))
                    })
                    .collect()
            })
            .collect();
        self.check_id_names(mx, &axes, &index, &rendered);
        Cells {
            axes,
            index,
            rendered,
        }
    }

    /// Two values of an axis that appear in cells must not get the same name in instance ids.
    fn check_id_names(
        &mut self,
        mx: &MatrixInfo,
        axes: &[String],
        index: &IndexCells,
        rendered: &[Vec<String>],
    ) {
        for (a, names) in rendered.iter().enumerate() {
            // Values in the order they first appear in the cells.
            let mut seen = vec![false; names.len()];
            let mut order = Vec::new();
            for cell in index.iter() {
                let v = cell[a] as usize;
                if !seen[v] {
                    seen[v] = true;
                    order.push(v);
                }
            }
            let mut first: HashMap<&str, usize> = HashMap::new();
            for &v in &order {
                if let Some(&j) = first.get(names[v].as_str()) {
                    let vals = &index.values[a];
                    self.err(
                        mx.axis_locs.get(&axes[a]).copied(),
                        format!("matrix axis `{}`: values {} and {} would both be named `{}` in instance ids", axes[a], vals[j], vals[v], names[v]),
                        &format!("matrix.{}", axes[a]),
                        Some("make the values differ in what they list (map values are named by their values joined with `+`)".into()),
                    );
                } else {
                    first.insert(&names[v], v);
                }
            }
        }
    }

    // ----- executor / report --------------------------------------------------------------

    pub(super) fn read_executor(&mut self, raw: Option<&Checked<RawExecutor>>) -> ExecutorConfig {
        let mut cfg = ExecutorConfig::default();
        let Some(Checked::Valid(e)) = raw else {
            return cfg;
        };
        if let Some(k) = &e.kind {
            match k.as_str() {
                Some(s) if EXECUTOR_KINDS.contains(&s) => cfg.kind = Some(s.to_string()),
                _ => {
                    let got = scalar_text(k);
                    self.err(
                        Some(k.loc),
                        format!("unknown executor `{got}`"),
                        "executor.kind",
                        suggest(&got, EXECUTOR_KINDS, "expected one of"),
                    );
                }
            }
        }
        if let Some(Checked::Valid(o)) = &e.slurm {
            cfg.slurm = self.options(o, "executor.slurm");
        }
        cfg
    }

    pub(super) fn read_report(
        &mut self,
        raw: Option<&Checked<RawReport>>,
        stages: &[String],
        axes: &[String],
    ) -> ReportConfig {
        let mut cfg = ReportConfig::default();
        let Some(Checked::Valid(r)) = raw else {
            return cfg;
        };
        for (name, list, target, known, what) in [
            ("stages", &r.stages, &mut cfg.stages, stages, "stage"),
            ("baseline", &r.baseline, &mut cfg.baseline, stages, "stage"),
            (
                "aggregate",
                &r.aggregate,
                &mut cfg.aggregate,
                axes,
                "matrix axis",
            ),
        ] {
            let Some(list) = list else { continue };
            let key = format!("report.{name}");
            let items: Vec<&Node> = match &list.value {
                Value::Seq(v) => v.iter().collect(),
                Value::Null => Vec::new(),
                _ => vec![list],
            };
            for (i, it) in items.iter().enumerate() {
                match it.as_str() {
                    Some(s) if known.iter().any(|n| n == s) => target.push(s.to_string()),
                    _ => {
                        let got = scalar_text(it);
                        let hint = match (name, known.is_empty()) {
                            ("aggregate", true) => Some(
                                "the pipeline has no matrix; repeats are an axis, e.g. `matrix: { seed: [1, 2, 3] }`".into(),
                            ),
                            ("aggregate", false) => suggest(&got, known, "the matrix axes are"),
                            _ => suggest(&got, known, "the stages are"),
                        };
                        self.err(
                            Some(it.loc),
                            format!("`{key}` names an unknown {what} `{got}`"),
                            &format!("{key}[{i}]"),
                            hint,
                        );
                    }
                }
            }
        }
        cfg
    }

    /// Scheduler options: each a string or a number.
    pub(super) fn options(&mut self, o: &Options, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for kv in o.iter() {
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
        out
    }
}

/// `1234567` -> `1,234,567`.
pub(super) fn group_digits(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

/// Whether `s` is exactly one `${params...}` reference.
fn is_param_ref(s: &str) -> bool {
    interp::Template::parse(s)
        .ok()
        .and_then(|t| t.whole_ref().map(|r| r.ns == interp::Ns::Params))
        .unwrap_or(false)
}
