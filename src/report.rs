//! [`Report`]: the paper-style comparison of a pipeline's matrix cells, built from the metrics of
//! the cells' *current* outputs (the instances whose fingerprint is cached now; a cell that has
//! not run, or whose inputs changed since, shows as missing, never as zero).
//!
//! Rows: one per matrix cell, plus the full-data baseline rows (the `report.baseline` stages).
//! Columns: kept % and identities (from `prune`), training time (from `train`), every
//! verification set and their average (from `verify`), IJB-C TAR@FAR 1e-5 / 1e-4 (from `ijbc`),
//! each with its difference to the matching baseline. The best value per group (the cells that
//! share every axis but the first, e.g. one kept ratio) is marked.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cache::{Cache, ObjKind};
use crate::exec::plan::{plan, PlanState};
use crate::pipeline::{Action, Instance, Pipeline};
use orchestrator_stages::eval::plot::{write_lines, Scale, Series, OKABE_ITO};

/// The verification sets of the paper, in its column order; their mean is "Avg".
const PAPER_SETS: [&str; 5] = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"];

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub key: String,
    pub title: String,
    /// Accuracy-like: higher is better, compared to the baseline, best marked.
    pub score: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `baseline` or `cell`.
    pub role: String,
    /// Matrix values of the row (the baseline's own axes only).
    pub cell: BTreeMap<String, String>,
    pub values: BTreeMap<String, f64>,
    /// Report stages of this row that have no current result.
    pub missing: Vec<String>,
    /// Column keys where this row is the best of its group.
    pub best: Vec<String>,
    /// Index of the matching baseline row.
    pub baseline: Option<usize>,
    /// Column key -> the stage instance whose metrics gave that value (for links to it).
    pub sources: BTreeMap<String, String>,
    /// ROC curve files (roc.csv) of the row's ijbc stage, for the overlay plot (of an aggregated
    /// row: its first repeat's).
    #[serde(skip)]
    pub roc_csv: Option<PathBuf>,
    /// The ijbc stage's ROC AUC (of the curve in `roc_csv`), for the ROC legends.
    #[serde(skip)]
    pub roc_auc: Option<f64>,
    /// 1 / the ijbc stage's impostor pairs: the smallest FAR above 0 it can measure; TAR at a
    /// FAR below it is TAR at FAR 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub far_floor: Option<f64>,
    /// Aggregated rows (`report.aggregate`): column key -> sample standard deviation (n - 1)
    /// over the repeats that have a value; absent where fewer than two have one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub std: BTreeMap<String, f64>,
    /// Aggregated rows: column key -> how many repeats have a value (the mean is over those).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub n: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pipeline: String,
    /// The matrix axes that name a row (the aggregated ones left out).
    pub axes: Vec<String>,
    /// The matrix axes averaged over (`report.aggregate`, e.g. `seed`); empty: one row per cell.
    pub aggregate: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// Cleaning quality against the injected noise (synthetic data): per clean instance.
    pub cleaning: Vec<BTreeMap<String, serde_json::Value>>,
}

/// The stages a report reads: `report.stages` + `report.baseline`, or by default every
/// `prune`, `train`, `verify`, `ijbc` stage (matrix-dependent ones as cells, the others as baseline).
fn roles(p: &Pipeline) -> (Vec<String>, Vec<String>) {
    if !p.report.stages.is_empty() || !p.report.baseline.is_empty() {
        return (p.report.stages.clone(), p.report.baseline.clone());
    }
    let mut cells = Vec::new();
    let mut base = Vec::new();
    for inst in &p.instances {
        if let Action::Builtin { kind, .. } = &inst.action {
            if ["prune", "train", "verify", "ijbc"].contains(&kind.name) {
                let list = if inst.cell.is_empty() && !p.matrix_axes.is_empty() {
                    &mut base
                } else {
                    &mut cells
                };
                if !list.contains(&inst.stage) {
                    list.push(inst.stage.clone());
                }
            }
        }
    }
    (cells, base)
}

/// What a report reads of one instance's current result (the committed outputs of its current
/// fingerprint): its metrics, its run time, and where its ROC curve file is (ijbc stages).
pub struct Current {
    pub metrics: serde_json::Value,
    pub duration_s: f64,
    /// Where it ran (the manifest's device: `cpu`, `cuda:0,1`, `gpu:2@node`): GPU-hours.
    pub device: String,
    pub roc_csv: Option<PathBuf>,
}

fn current(cache: &Cache, key: &str) -> Result<Option<Current>> {
    let Some(m) = cache.manifest(key)? else {
        return Ok(None);
    };
    let metrics = match &m.metrics {
        Some(d) => {
            let path = cache.store.object_path(d);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => serde_json::Value::Null,
    };
    let roc_csv = match m.outputs.get("roc") {
        Some(o) if o.kind == ObjKind::Dir => Some(
            cache
                .store
                .view(&o.digest, ObjKind::Dir, "roc")?
                .join("roc.csv"),
        ),
        _ => None,
    };
    Ok(Some(Current {
        metrics,
        duration_s: m.duration_ms as f64 / 1000.0,
        device: m.device.clone(),
        roc_csv,
    }))
}

fn is_sub(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Add the columns one instance's metrics contribute.
fn absorb(inst: &Instance, cur: &Current, row: &mut Row, columns: &mut Vec<Column>) {
    let (kind, id) = (inst.action.kind_name(), inst.id.as_str());
    let has_ids = row.values.contains_key("identities");
    if kind == "ijbc" {
        if let Some(p) = &cur.roc_csv {
            row.roc_csv = Some(p.clone());
            row.roc_auc = cur.metrics.get("auc").and_then(|a| a.as_f64());
        }
        if let Some(n) = cur.metrics.get("impostor_pairs").and_then(|n| n.as_f64()) {
            row.far_floor = (n > 0.0).then(|| 1.0 / n);
        }
    }
    let (values, sources) = (&mut row.values, &mut row.sources);
    let mut put = |key: String, title: String, score: bool, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            if !columns.iter().any(|c| c.key == key) {
                columns.push(Column {
                    key: key.clone(),
                    title,
                    score,
                });
            }
            sources.insert(key.clone(), id.to_string());
            values.insert(key, v);
        }
    };
    let m = &cur.metrics;
    let f = |v: &serde_json::Value| v.as_f64();
    match kind {
        "prune" => {
            put(
                "kept_percent".into(),
                "Kept %".into(),
                false,
                m.get("ratio").and_then(f).map(|r| r * 100.0),
            );
            put(
                "identities".into(),
                "Ids".into(),
                false,
                m.get("identities_kept").and_then(f),
            );
        }
        "train" => {
            put(
                "train_minutes".into(),
                "Train min".into(),
                false,
                Some(cur.duration_s / 60.0),
            );
            if !has_ids {
                put(
                    "identities".into(),
                    "Ids".into(),
                    false,
                    m.get("num_classes").and_then(f),
                );
            }
        }
        "verify" => {
            if let Some(sets) = m.get("sets").and_then(|s| s.as_object()) {
                let mut names: Vec<&String> = sets.keys().collect();
                names.sort_by_key(|n| {
                    (
                        PAPER_SETS.iter().position(|p| p == n).unwrap_or(usize::MAX),
                        (*n).clone(),
                    )
                });
                for name in names {
                    let acc = sets[name].get("accuracy").and_then(f).map(|a| a * 100.0);
                    let title = name.to_uppercase().replace('_', "-");
                    put(format!("verify.{name}"), title.clone(), true, acc);
                    // The spread over the 10 folds of that one model (np.std, ddof 0).
                    let folds = sets[name].get("std").and_then(f).map(|s| s * 100.0);
                    put(
                        format!("verify.{name}.fold_std"),
                        format!("{title} fold σ"),
                        false,
                        folds,
                    );
                }
            }
            put(
                "verify.avg".into(),
                "Avg".into(),
                true,
                m.get("avg").and_then(f).map(|a| a * 100.0),
            );
        }
        "ijbc" => {
            let tar = m.get("tar_at_far_percent");
            for (k, t) in [("1e-05", "IJB-C 1e-5"), ("1e-04", "IJB-C 1e-4")] {
                put(
                    format!("ijbc.{k}"),
                    t.into(),
                    true,
                    tar.and_then(|x| x.get(k)).and_then(f),
                );
            }
        }
        "run" => {
            // A shell stage's metrics.json: every number, nested keys joined with `.`.
            let mut flat = Vec::new();
            flatten_numbers("", m, &mut flat);
            for (k, v) in flat {
                put(
                    format!("{}.{k}", inst.stage),
                    format!("{} {k}", inst.stage),
                    false,
                    Some(v),
                );
            }
        }
        _ => {}
    }
}

/// Every number below `v` with its dotted path (objects only; arrays are not columns).
fn flatten_numbers(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_numbers(&key, x, out);
            }
        }
        _ => {}
    }
}

/// Build the report of `p` from the cache (read-only): the current fingerprints as `plan`
/// computes them, their manifests through the index.
pub fn build(p: &Pipeline, cache: &Cache) -> Result<Report> {
    // Keeps the typed error: a missing input is the user's to fix, not the environment's.
    let entries = plan(p, cache)?;
    let keys: Vec<Option<&String>> = entries
        .iter()
        .map(|e| match e.state {
            PlanState::Cached => e.key.as_ref(),
            _ => None,
        })
        .collect();
    build_from(p, &|i| match keys[i] {
        Some(key) => current(cache, key),
        None => Ok(None),
    })
}

/// Build the report of `p` from `current(i)`: the current result of instance `i` (index into
/// `p.instances`), `None` when it has none. `orchestrator serve` passes results it read from the
/// cache's plain files while a run holds the index.
pub fn build_from(
    p: &Pipeline,
    current: &dyn Fn(usize) -> Result<Option<Current>>,
) -> Result<Report> {
    // Each instance's result is read once, however many rows and columns use it.
    let memo: Vec<OnceCell<Option<Current>>> =
        (0..p.instances.len()).map(|_| OnceCell::new()).collect();
    let current = |i: usize| -> Result<Option<&Current>> {
        if memo[i].get().is_none() {
            let v = current(i)?;
            let _ = memo[i].set(v);
        }
        Ok(memo[i].get().and_then(Option::as_ref))
    };
    let (cell_stages, base_stages) = roles(p);
    let mut columns: Vec<Column> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();

    let fill = |role: &str,
                cell: BTreeMap<String, String>,
                stages: &[String],
                columns: &mut Vec<Column>|
     -> Result<Row> {
        let mut row = Row {
            role: role.into(),
            cell: cell.clone(),
            values: BTreeMap::new(),
            missing: vec![],
            best: vec![],
            baseline: None,
            sources: BTreeMap::new(),
            roc_csv: None,
            roc_auc: None,
            far_floor: None,
            std: BTreeMap::new(),
            n: BTreeMap::new(),
        };
        for stage in stages {
            let Some((i, inst)) = p.instances_of(stage).find(|(_, i)| is_sub(&i.cell, &cell))
            else {
                continue;
            };
            match current(i)? {
                Some(cur) => absorb(inst, cur, &mut row, columns),
                None => row.missing.push(inst.id.clone()),
            }
        }
        Ok(row)
    };

    // Baseline rows: one per distinct cell of the baseline stages (usually one).
    let mut base_cells: Vec<BTreeMap<String, String>> = Vec::new();
    for s in &base_stages {
        for (_, i) in p.instances_of(s) {
            if !base_cells.contains(&i.cell) {
                base_cells.push(i.cell.clone());
            }
        }
    }
    for c in base_cells {
        let mut row = fill("baseline", c, &base_stages, &mut columns)?;
        row.values.entry("kept_percent".into()).or_insert(100.0);
        rows.push(row);
    }
    if !columns.iter().any(|c| c.key == "kept_percent") && !rows.is_empty() {
        columns.insert(
            0,
            Column {
                key: "kept_percent".into(),
                title: "Kept %".into(),
                score: false,
            },
        );
    }
    let mut n_base = rows.len();
    let cells: Vec<BTreeMap<String, String>> = if p.cells.is_empty() {
        vec![BTreeMap::new()]
    } else {
        p.cells.iter().collect()
    };
    for c in cells {
        let mut row = fill("cell", c, &cell_stages, &mut columns)?;
        row.baseline = rows[..n_base]
            .iter()
            .position(|b| is_sub(&b.cell, &row.cell));
        rows.push(row);
    }
    // Column order: kept, ids, verification sets (paper order), avg, IJB-C, train time, GPU-hours.
    let rank = |c: &Column| match c.key.as_str() {
        "kept_percent" => 0,
        "identities" => 1,
        "verify.avg" => 3,
        k if k.starts_with("verify.") => 2,
        k if k.starts_with("ijbc.") => 4,
        "gpu_hours" => 6,
        _ => 5,
    };
    gpu_hours(p, &current, &mut rows, n_base, &mut columns)?;
    columns.sort_by_key(|c| rank(c));
    let aggregate: Vec<String> = p
        .matrix_axes
        .iter()
        .filter(|a| p.report.aggregate.contains(a))
        .cloned()
        .collect();
    let axes: Vec<String> = p
        .matrix_axes
        .iter()
        .filter(|a| !aggregate.contains(a))
        .cloned()
        .collect();
    if !aggregate.is_empty() {
        let base = aggregate_rows(rows.drain(..n_base).collect(), &aggregate);
        let cells = aggregate_rows(std::mem::take(&mut rows), &aggregate);
        n_base = base.len();
        rows = base;
        for mut r in cells {
            r.baseline = rows[..n_base].iter().position(|b| is_sub(&b.cell, &r.cell));
            rows.push(r);
        }
    }
    mark_best(&axes, &columns, &mut rows[n_base..]);

    let mut cleaning = Vec::new();
    for (i, inst) in p
        .instances
        .iter()
        .enumerate()
        .filter(|(_, i)| i.action.kind_name() == "clean")
    {
        let Some(cur) = current(i)? else { continue };
        let mut m = BTreeMap::new();
        m.insert("stage".into(), serde_json::json!(inst.id));
        for k in ["flagged", "identities_without_clean_sample"] {
            if let Some(v) = cur.metrics.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        if let Some(n) = cur.metrics.get("noise").and_then(|n| n.as_object()) {
            for (k, v) in n {
                m.insert(k.clone(), v.clone());
            }
        }
        cleaning.push(m);
    }
    Ok(Report {
        pipeline: p.name.clone(),
        axes,
        aggregate,
        columns,
        rows,
        cleaning,
    })
}

/// GPU-hours of each row: every instance whose current result ran on GPUs (GPUs of its device
/// times its run time; on SLURM the job's own elapsed time) counts for the rows it belongs to,
/// split evenly between them: an instance of no matrix cell for the baseline rows (or every row
/// without a baseline), one shared by several cells for those cells. The column sums to the
/// pipeline's total and is shown only when some stage ran on a GPU.
fn gpu_hours<'c>(
    p: &Pipeline,
    current: &dyn Fn(usize) -> Result<Option<&'c Current>>,
    rows: &mut [Row],
    n_base: usize,
    columns: &mut Vec<Column>,
) -> Result<()> {
    let mut any = false;
    for (i, inst) in p.instances.iter().enumerate() {
        let Some(cur) = current(i)? else {
            continue;
        };
        let gpus = crate::exec::gpus_of_device(&cur.device);
        if gpus == 0 {
            continue;
        }
        let hours = gpus as f64 * cur.duration_s / 3600.0;
        let targets: Vec<usize> = if inst.cell.is_empty() && n_base > 0 {
            (0..n_base).collect()
        } else {
            (n_base..rows.len())
                .filter(|&r| is_sub(&inst.cell, &rows[r].cell))
                .collect()
        };
        for &r in &targets {
            *rows[r].values.entry("gpu_hours".into()).or_insert(0.0) +=
                hours / targets.len() as f64;
            any = true;
        }
    }
    if any {
        columns.push(Column {
            key: "gpu_hours".into(),
            title: "GPU h".into(),
            score: false,
        });
    }
    Ok(())
}

/// Mark the best score per group (the rows that share every axis but the first): only where the
/// best is ahead of the runner-up by more than their combined standard deviation
/// (sqrt(std_best² + std_second²); 0 for rows that are not aggregated, so a tie marks nothing).
fn mark_best(axes: &[String], columns: &[Column], rows: &mut [Row]) {
    let group = |r: &Row| -> Vec<String> {
        axes.iter()
            .skip(1)
            .map(|a| r.cell.get(a).cloned().unwrap_or_default())
            .collect()
    };
    let groups: Vec<Vec<String>> = rows.iter().map(group).collect();
    for c in columns.iter().filter(|c| c.score) {
        let mut by_group: BTreeMap<&Vec<String>, Vec<usize>> = BTreeMap::new();
        for (i, (r, g)) in rows.iter().zip(&groups).enumerate() {
            if r.values.contains_key(&c.key) {
                by_group.entry(g).or_default().push(i);
            }
        }
        let mut winners = Vec::new();
        for members in by_group.values() {
            let mut m = members.clone();
            m.sort_by(|&a, &b| rows[b].values[&c.key].total_cmp(&rows[a].values[&c.key]));
            let [first, second, ..] = m[..] else { continue };
            let sd = |i: usize| rows[i].std.get(&c.key).copied().unwrap_or(0.0);
            let gap = rows[first].values[&c.key] - rows[second].values[&c.key];
            if gap > (sd(first).powi(2) + sd(second).powi(2)).sqrt() {
                winners.push(first);
            }
        }
        for w in winners {
            rows[w].best.push(c.key.clone());
        }
    }
}

/// One row per distinct cell without the `aggregate` axes (in order of first appearance): each
/// column's mean over the repeats that have a value, its sample standard deviation and n.
/// GPU-hours are summed (the cost of all repeats); missing instances are listed together.
fn aggregate_rows(rows: Vec<Row>, aggregate: &[String]) -> Vec<Row> {
    let mut groups: Vec<(BTreeMap<String, String>, Vec<Row>)> = Vec::new();
    for r in rows {
        let mut cell = r.cell.clone();
        cell.retain(|k, _| !aggregate.contains(k));
        match groups.iter_mut().find(|(c, _)| *c == cell) {
            Some((_, members)) => members.push(r),
            None => groups.push((cell, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(cell, members)| {
            let mut out = Row {
                role: members[0].role.clone(),
                cell,
                values: BTreeMap::new(),
                missing: members.iter().flat_map(|m| m.missing.clone()).collect(),
                best: vec![],
                baseline: None,
                sources: BTreeMap::new(),
                roc_csv: members.iter().find_map(|m| m.roc_csv.clone()),
                roc_auc: members.iter().find_map(|m| m.roc_auc),
                far_floor: members.iter().find_map(|m| m.far_floor),
                std: BTreeMap::new(),
                n: BTreeMap::new(),
            };
            let keys: std::collections::BTreeSet<&String> =
                members.iter().flat_map(|m| m.values.keys()).collect();
            for key in keys {
                let xs: Vec<f64> = members
                    .iter()
                    .filter_map(|m| m.values.get(key).copied())
                    .collect();
                let n = xs.len();
                let sum: f64 = xs.iter().sum();
                if key == "gpu_hours" {
                    out.values.insert(key.clone(), sum);
                    continue;
                }
                let mean = sum / n as f64;
                out.values.insert(key.clone(), mean);
                out.n.insert(key.clone(), n);
                if n >= 2 {
                    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
                    out.std.insert(key.clone(), var.sqrt());
                }
                if let Some(src) = members.iter().find_map(|m| m.sources.get(key)) {
                    out.sources.insert(key.clone(), src.clone());
                }
            }
            out
        })
        .collect()
}

impl Report {
    fn label(&self, r: &Row, axis: &str) -> String {
        match r.cell.get(axis) {
            Some(v) => v.clone(),
            None if r.role == "baseline" => "full data".into(),
            None => String::new(),
        }
    }

    /// The text of row `r` in column `c` as every format shows it (`—` when missing), without
    /// the best-of-group mark.
    pub fn cell_text(&self, r: &Row, c: &Column) -> String {
        let Some(&v) = r.values.get(&c.key) else {
            return "—".into();
        };
        let fmt = |v: f64| match c.key.as_str() {
            "identities" if r.std.is_empty() => format!("{v:.0}"),
            "identities" | "train_minutes" => format!("{v:.1}"),
            "gpu_hours" => format!("{v:.3}"),
            _ => format!("{v:.2}"),
        };
        let mut s = fmt(v);
        if let Some(&sd) = r.std.get(&c.key) {
            s = format!("{s} ± {}", fmt(sd));
        }
        // Fewer repeats in this column than in the row (some have no result yet).
        if let Some(&n) = r.n.get(&c.key).filter(|&&n| n < self.repeats(r)) {
            s = format!("{s} (n={n})");
        }
        if self.below_far_floor(r, c) {
            s.push_str(" †");
        }
        if c.score {
            if let Some(b) = r.baseline.and_then(|b| self.rows[b].values.get(&c.key)) {
                s = format!("{s} ({:+.2})", v - b);
            }
        }
        s
    }

    fn markdown_cell(&self, r: &Row, c: &Column) -> String {
        let s = self.cell_text(r, c);
        if r.best.contains(&c.key) {
            format!("**{s}**")
        } else {
            s
        }
    }

    /// A row's name in plot legends: its axis values, `full data` for a baseline.
    pub fn row_label(&self, r: &Row) -> String {
        if r.role == "baseline" {
            "full data".into()
        } else if self.axes.is_empty() {
            self.pipeline.clone()
        } else {
            self.axes
                .iter()
                .filter_map(|a| r.cell.get(a))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// An IJB-C TAR column whose FAR is below 1 / the row's impostor pairs (TAR at FAR 0 there).
    fn below_far_floor(&self, r: &Row, c: &Column) -> bool {
        let far = c
            .key
            .strip_prefix("ijbc.")
            .and_then(|f| f.parse::<f64>().ok());
        matches!((far, r.far_floor), (Some(f), Some(floor)) if f < floor)
    }

    /// How many repeats an aggregated row averages (the most any column has; 0 before any has a
    /// result); 1 when not aggregating.
    pub fn repeats(&self, r: &Row) -> usize {
        let none = if self.aggregate.is_empty() { 1 } else { 0 };
        r.n.values().copied().max().unwrap_or(none)
    }

    /// The header of the table: the axes (or `run`), `n` when aggregating, then the column titles.
    pub fn head(&self) -> Vec<String> {
        let mut axes: Vec<String> = if self.axes.is_empty() {
            vec!["run".into()]
        } else {
            self.axes.clone()
        };
        if !self.aggregate.is_empty() {
            axes.push("n".into());
        }
        axes.into_iter()
            .chain(self.columns.iter().map(|c| c.title.clone()))
            .collect()
    }

    /// The row's label cells under [`Report::head`]'s axis columns (`full data` for a baseline),
    /// and its number of repeats when aggregating.
    pub fn axis_values(&self, r: &Row) -> Vec<String> {
        let mut out: Vec<String> = if self.axes.is_empty() {
            vec![if r.role == "baseline" {
                "full data".into()
            } else {
                self.pipeline.clone()
            }]
        } else {
            self.axes.iter().map(|a| self.label(r, a)).collect()
        };
        if !self.aggregate.is_empty() {
            out.push(self.repeats(r).to_string());
        }
        out
    }

    pub fn markdown(&self) -> String {
        let head = self.head();
        let mut out = format!(
            "| {} |\n|{}|\n",
            head.join(" | "),
            head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        for r in &self.rows {
            let mut cols = self.axis_values(r);
            cols.extend(self.columns.iter().map(|c| self.markdown_cell(r, c)));
            out.push_str(&format!("| {} |\n", cols.join(" | ")));
        }
        let missing: Vec<&String> = self.rows.iter().flat_map(|r| &r.missing).collect();
        if !missing.is_empty() {
            out.push_str(&format!(
                "\n— = no current result ({} stage instance{} not run yet, or stale: {}).\n",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .take(6)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if missing.len() > 6 { ", …" } else { "" }
            ));
        }
        if self.aggregate.is_empty() {
            out.push_str("\nAccuracies and TAR in %; (±x) = difference to the full-data baseline; **bold** = best of its group (ahead of the runner-up).\n");
        } else {
            out.push_str(&format!(
                "\nAccuracies and TAR in %: mean ± sample std (n − 1) over {} (n = repeats with a result); (±x) = difference of the means to the full-data baseline; **bold** = best of its group, ahead of the runner-up by more than their combined std.\n",
                self.aggregate.join(", ")
            ));
        }
        if let Some(floor) = self
            .rows
            .iter()
            .filter_map(|r| r.far_floor)
            .reduce(f64::max)
        {
            if self
                .rows
                .iter()
                .any(|r| self.columns.iter().any(|c| self.below_far_floor(r, c)))
            {
                out.push_str(&format!(
                    "† that FAR is below 1 / {:.0} impostor pairs, the smallest non-zero FAR the set can measure: the TAR shown is TAR at FAR 0.\n",
                    1.0 / floor
                ));
            }
        }
        if self.columns.iter().any(|c| c.key.ends_with(".fold_std")) {
            out.push_str(
                "fold σ = the verification accuracy's std over its 10 folds (one model).\n",
            );
        }
        if !self.cleaning.is_empty() {
            out.push_str("\nCleaning against the injected label noise:\n\n| stage | flagged | mislabeled | precision | recall |\n|---|---|---|---|---|\n");
            for c in &self.cleaning {
                let g = |k: &str| {
                    c.get(k)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "—".into())
                };
                let pct = |k: &str| {
                    c.get(k)
                        .and_then(|v| v.as_f64())
                        .map(|v| format!("{:.1} %", v * 100.0))
                        .unwrap_or_else(|| "—".into())
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    g("stage").trim_matches('"'),
                    g("flagged"),
                    g("mislabeled"),
                    pct("precision"),
                    pct("recall")
                ));
            }
        }
        out
    }

    /// Numbers stay numbers: a baseline's axis cells are empty (its `role` says what it is), an
    /// aggregated column is followed by its `std` column, and `n` follows the axes.
    pub fn csv(&self) -> String {
        let agg = !self.aggregate.is_empty();
        let mut head: Vec<String> = if self.axes.is_empty() {
            vec!["run".into()]
        } else {
            self.axes.clone()
        };
        if agg {
            head.push("n".into());
        }
        for c in &self.columns {
            head.push(c.title.clone());
            if agg {
                head.push(format!("{} std", c.title));
            }
        }
        head.push("role".into());
        head.push("missing".into());
        let mut out = head.join(",") + "\n";
        let num = |v: Option<&f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.rows {
            let mut cols: Vec<String> = if self.axes.is_empty() {
                vec![if r.role == "baseline" {
                    String::new()
                } else {
                    self.pipeline.clone()
                }]
            } else {
                self.axes
                    .iter()
                    .map(|a| r.cell.get(a).cloned().unwrap_or_default())
                    .collect()
            };
            if agg {
                cols.push(self.repeats(r).to_string());
            }
            for c in &self.columns {
                cols.push(num(r.values.get(&c.key)));
                if agg {
                    cols.push(num(r.std.get(&c.key)));
                }
            }
            cols.push(r.role.clone());
            cols.push(r.missing.join(" "));
            out.push_str(
                &cols
                    .iter()
                    .map(|s| csv_field(s))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        out
    }

    /// Write report.md, report.csv, report.json and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in [
            ("report.md", self.markdown()),
            ("report.csv", self.csv()),
            ("report.json", serde_json::to_string_pretty(self)?),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
        written.extend(self.plots(dir)?);
        Ok(written)
    }

    /// One fixed colour per method (the first axis's values in matrix order), the same in every
    /// plot; black for the full-data baseline.
    fn color_of(&self, r: &Row) -> (u8, u8, u8) {
        if r.role == "baseline" {
            return (0, 0, 0);
        }
        let Some(axis) = self.axes.first() else {
            return OKABE_ITO[0];
        };
        let mut seen: Vec<&String> = Vec::new();
        for x in self.rows.iter().filter_map(|x| x.cell.get(axis)) {
            if !seen.contains(&x) {
                seen.push(x);
            }
        }
        let i = r
            .cell
            .get(axis)
            .and_then(|v| seen.iter().position(|s| *s == v))
            .unwrap_or(0);
        OKABE_ITO[i % OKABE_ITO.len()]
    }

    fn plots(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let method_axis = self.axes.first().cloned();
        let by_method = |key: &str| -> Vec<Series> {
            let mut series: Vec<Series> = Vec::new();
            for r in &self.rows {
                let (Some(&x), Some(&y)) = (r.values.get("kept_percent"), r.values.get(key)) else {
                    continue;
                };
                let name = match (&method_axis, r.role.as_str()) {
                    (_, "baseline") => "full data".to_string(),
                    (Some(a), _) => r.cell.get(a).cloned().unwrap_or_default(),
                    (None, _) => self.pipeline.clone(),
                };
                let i = match series.iter().position(|s| s.label == name) {
                    Some(i) => i,
                    None => {
                        series.push(Series {
                            label: name,
                            color: Some(self.color_of(r)),
                            ..Series::default()
                        });
                        series.len() - 1
                    }
                };
                series[i].points.push((x, y));
                series[i].y_err.push(r.std.get(key).copied().unwrap_or(0.0));
            }
            for s in &mut series {
                let mut both: Vec<((f64, f64), f64)> = s
                    .points
                    .iter()
                    .copied()
                    .zip(s.y_err.iter().copied())
                    .collect();
                both.sort_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
                (s.points, s.y_err) = both.into_iter().unzip();
                if s.y_err.iter().all(|&e| e == 0.0) {
                    s.y_err.clear();
                }
            }
            series
        };
        let mut metric_cols: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| c.key == "verify.avg")
            .collect();
        if metric_cols.is_empty() {
            metric_cols.extend(
                self.columns
                    .iter()
                    .filter(|c| c.key.starts_with("verify."))
                    .take(1),
            );
        }
        metric_cols.extend(self.columns.iter().filter(|c| c.key == "ijbc.1e-04"));
        for c in metric_cols {
            let series = by_method(&c.key);
            if series.iter().all(|s| s.points.is_empty()) {
                continue;
            }
            let stem = format!("{}_vs_kept", c.key.replace(['.', '-'], "_"));
            write_lines(
                dir,
                &stem,
                &format!("{} vs kept ratio", c.title),
                ("kept %", &format!("{} %", c.title)),
                Scale::Linear,
                &series,
            )?;
            out.push(dir.join(format!("{stem}.svg")));
            out.push(dir.join(format!("{stem}.png")));
        }
        // ROC overlays: one plot per group (the cells that share every axis but the method, e.g.
        // one kept ratio) with the baseline, or one for everything without groups.
        let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
        for r in self.rows.iter().filter(|r| r.roc_csv.is_some()) {
            if r.role == "baseline" {
                continue;
            }
            let g: Vec<String> = self
                .axes
                .iter()
                .skip(1)
                .filter_map(|a| r.cell.get(a).map(|v| format!("{a}={v}")))
                .collect();
            let g = g.join(",");
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, rs)) => rs.push(r),
                None => groups.push((g, vec![r])),
            }
        }
        let base: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.role == "baseline" && r.roc_csv.is_some())
            .collect();
        if groups.is_empty() && !base.is_empty() {
            groups.push((String::new(), vec![]));
        }
        for (g, rows) in &groups {
            let mut rocs = Vec::new();
            for r in base.iter().chain(rows) {
                let Some(text) = r
                    .roc_csv
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                else {
                    continue;
                };
                let mut label = self.row_label(r);
                if let Some(a) = r.roc_auc {
                    label = format!("{label} (AUC {:.2}%)", a * 100.0);
                }
                // The plotted FAR range ends at 1e-1.
                let mut points = roc_points(&text);
                points.retain(|&(far, _)| far <= 1e-1);
                rocs.push(Series {
                    label,
                    points,
                    color: Some(self.color_of(r)),
                    ..Series::default()
                });
            }
            if rocs.is_empty() {
                continue;
            }
            let stem = if g.is_empty() {
                "roc".to_string()
            } else {
                format!("roc_{}", g.replace(['=', ',', '.', '+'], "_"))
            };
            let mut title = "IJB-C 1:1 ROC".to_string();
            if !g.is_empty() {
                title.push_str(&format!(" ({g})"));
            }
            if rows.len() > 1 && !self.aggregate.is_empty() {
                title.push_str(&format!(", first {}", self.aggregate.join(",")));
            }
            let floor = base
                .iter()
                .chain(rows)
                .filter_map(|r| r.far_floor)
                .reduce(f64::max);
            let x_label = match floor {
                Some(f) if f > 1e-6 => {
                    format!("FAR (below {f:.1e} = 1/impostor pairs: TAR at FAR 0)")
                }
                _ => "FAR".to_string(),
            };
            write_lines(dir, &stem, &title, (&x_label, "TAR"), Scale::Far, &rocs)?;
            out.push(dir.join(format!("{stem}.svg")));
            out.push(dir.join(format!("{stem}.png")));
        }
        let pr: Vec<Series> = self
            .cleaning
            .iter()
            .filter_map(|c| {
                let p = c.get("precision")?.as_f64()?;
                let r = c.get("recall")?.as_f64()?;
                Some(Series {
                    label: c.get("stage")?.as_str()?.to_string(),
                    points: vec![(r * 100.0, p * 100.0)],
                    ..Series::default()
                })
            })
            .collect();
        if !pr.is_empty() {
            write_lines(
                dir,
                "cleaning",
                "Cleaning vs injected label noise",
                ("recall %", "precision %"),
                Scale::Linear,
                &pr,
            )?;
            out.push(dir.join("cleaning.svg"));
            out.push(dir.join("cleaning.png"));
        }
        Ok(out)
    }
}

/// The points of an ijbc stage's `roc.csv` (`far,tar` rows after a header) from FAR 1e-6 on,
/// thinned for plotting.
pub fn roc_points(csv: &str) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .filter(|(f, _): &(f64, f64)| *f >= 1e-6)
        .collect();
    thin(points)
}

/// Keep at most ~400 points of a curve (every k-th, plus the last).
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let k = points.len().div_ceil(400).max(1);
    let last = points.last().copied();
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(k).collect();
    if let Some(l) = last {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, ratio: &str, v: f64, std: Option<f64>) -> Row {
        Row {
            role: "cell".into(),
            cell: [("method", method), ("ratio", ratio)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            values: [("acc".to_string(), v)].into(),
            missing: vec![],
            best: vec![],
            baseline: None,
            sources: BTreeMap::new(),
            roc_csv: None,
            roc_auc: None,
            far_floor: None,
            std: std
                .map(|s| [("acc".to_string(), s)].into())
                .unwrap_or_default(),
            n: BTreeMap::new(),
        }
    }

    #[test]
    fn best_of_its_group_needs_a_lead_beyond_the_combined_std() {
        let axes = vec!["method".to_string(), "ratio".to_string()];
        let cols = [Column {
            key: "acc".into(),
            title: "Acc".into(),
            score: true,
        }];
        let mut rows = vec![
            // ratio 0.5: a leads b by 5, combined std sqrt(3² + 4²) = 5: not beyond it.
            row("a", "0.5", 90.0, Some(3.0)),
            row("b", "0.5", 85.0, Some(4.0)),
            // ratio 0.25: a leads by 5.01 > 5: marked.
            row("a", "0.25", 90.01, Some(3.0)),
            row("b", "0.25", 85.0, Some(4.0)),
            row("c", "0.25", 10.0, Some(0.0)),
            // ratio 0.1: not aggregated, a tie marks nothing; 0.9: alone in its group.
            row("a", "0.1", 80.0, None),
            row("b", "0.1", 80.0, None),
            row("a", "0.9", 80.0, None),
        ];
        mark_best(&axes, &cols, &mut rows);
        let marked: Vec<bool> = rows.iter().map(|r| !r.best.is_empty()).collect();
        assert_eq!(
            marked,
            [false, false, true, false, false, false, false, false]
        );
    }

    #[test]
    fn aggregate_rows_average_each_column_over_the_repeats() {
        let mut rows = Vec::new();
        for (seed, v) in [("1", 1.0), ("2", 2.0), ("3", 6.0)] {
            let mut r = row("a", "0.5", v, None);
            r.cell.insert("seed".into(), seed.into());
            r.values.insert("gpu_hours".into(), 0.5);
            rows.push(r);
        }
        rows[2].values.remove("acc");
        let out = aggregate_rows(rows, &["seed".to_string()]);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert!(!r.cell.contains_key("seed"));
        assert_eq!((r.values["acc"], r.n["acc"]), (1.5, 2));
        assert_eq!(r.std["acc"], 0.5f64.sqrt());
        // GPU-hours add up: the cost of all repeats.
        assert_eq!(r.values["gpu_hours"], 1.5);
    }
}
