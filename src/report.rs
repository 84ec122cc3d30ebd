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
use orchestrator_stages::eval::plot::{write_lines, Scale, Series};

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
    /// ROC curve files (roc.csv) of the row's ijbc stage, for the overlay plot.
    #[serde(skip)]
    pub roc_csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pipeline: String,
    pub axes: Vec<String>,
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
fn absorb(kind: &str, id: &str, cur: &Current, row: &mut Row, columns: &mut Vec<Column>) {
    let has_ids = row.values.contains_key("identities");
    if kind == "ijbc" {
        if let Some(p) = &cur.roc_csv {
            row.roc_csv = Some(p.clone());
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
                    put(
                        format!("verify.{name}"),
                        name.to_uppercase().replace('_', "-"),
                        true,
                        acc,
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
    let kind_of = |inst: &Instance| inst.action.kind_name().to_string();
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
        };
        for stage in stages {
            let Some((i, inst)) = p.instances_of(stage).find(|(_, i)| is_sub(&i.cell, &cell))
            else {
                continue;
            };
            match current(i)? {
                Some(cur) => absorb(&kind_of(inst), &inst.id, cur, &mut row, columns),
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
    let n_base = rows.len();
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
    mark_best(p, &columns, &mut rows[n_base..]);

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
        axes: p.matrix_axes.clone(),
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

/// Mark the best score per group: cells that share every axis but the first.
fn mark_best(p: &Pipeline, columns: &[Column], rows: &mut [Row]) {
    let group = |r: &Row| -> Vec<String> {
        p.matrix_axes
            .iter()
            .skip(1)
            .map(|a| r.cell.get(a).cloned().unwrap_or_default())
            .collect()
    };
    let groups: Vec<Vec<String>> = rows.iter().map(group).collect();
    for c in columns.iter().filter(|c| c.score) {
        let mut best: BTreeMap<&Vec<String>, f64> = BTreeMap::new();
        for (r, g) in rows.iter().zip(&groups) {
            if let Some(&v) = r.values.get(&c.key) {
                let e = best.entry(g).or_insert(f64::NEG_INFINITY);
                *e = e.max(v);
            }
        }
        let winners: Vec<bool> = rows
            .iter()
            .zip(&groups)
            .map(|(r, g)| {
                let n_in_group = groups.iter().filter(|x| *x == g).count();
                n_in_group > 1 && r.values.get(&c.key).is_some_and(|v| Some(v) == best.get(g))
            })
            .collect();
        for (r, w) in rows.iter_mut().zip(winners) {
            if w {
                r.best.push(c.key.clone());
            }
        }
    }
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
        let mut s = match c.key.as_str() {
            "identities" => format!("{v:.0}"),
            "train_minutes" => format!("{v:.1}"),
            "gpu_hours" => format!("{v:.3}"),
            _ => format!("{v:.2}"),
        };
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

    /// The header of the table: the axes (or `run`), then the column titles.
    pub fn head(&self) -> Vec<String> {
        let axes: Vec<String> = if self.axes.is_empty() {
            vec!["run".into()]
        } else {
            self.axes.clone()
        };
        axes.into_iter()
            .chain(self.columns.iter().map(|c| c.title.clone()))
            .collect()
    }

    /// The row's label cells under [`Report::head`]'s axis columns (`full data` for a baseline).
    pub fn axis_values(&self, r: &Row) -> Vec<String> {
        if self.axes.is_empty() {
            return vec![if r.role == "baseline" {
                "full data".into()
            } else {
                self.pipeline.clone()
            }];
        }
        self.axes.iter().map(|a| self.label(r, a)).collect()
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
        out.push_str("\nAccuracies and TAR in %; (±x) = difference to the full-data baseline; **bold** = best of its group.\n");
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

    pub fn csv(&self) -> String {
        let mut head = self.head();
        head.push("role".into());
        head.push("missing".into());
        let mut out = head.join(",") + "\n";
        for r in &self.rows {
            let mut cols = self.axis_values(r);
            cols.extend(self.columns.iter().map(|c| {
                r.values
                    .get(&c.key)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            }));
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

    fn plots(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let method_axis = self.axes.first().cloned();
        let by_method = |key: &str| -> Vec<Series> {
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for r in &self.rows {
                let (Some(&x), Some(&y)) = (r.values.get("kept_percent"), r.values.get(key)) else {
                    continue;
                };
                let name = match (&method_axis, r.role.as_str()) {
                    (_, "baseline") => "full data".to_string(),
                    (Some(a), _) => r.cell.get(a).cloned().unwrap_or_default(),
                    (None, _) => self.pipeline.clone(),
                };
                series.entry(name).or_default().push((x, y));
            }
            series
                .into_iter()
                .map(|(label, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series { label, points }
                })
                .collect()
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
        let mut rocs = Vec::new();
        for r in &self.rows {
            let Some(path) = &r.roc_csv else { continue };
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let label = self.row_label(r);
            rocs.push(Series {
                label,
                points: roc_points(&text),
            });
        }
        if !rocs.is_empty() {
            write_lines(
                dir,
                "roc",
                "IJB-C 1:1 ROC per cell",
                ("FAR", "TAR"),
                Scale::Log,
                &rocs,
            )?;
            out.push(dir.join("roc.svg"));
            out.push(dir.join("roc.png"));
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
