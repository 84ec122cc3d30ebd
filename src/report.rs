//! [`Report`]: the paper-style comparison of a pipeline's matrix cells, built from the metrics of
//! the cells' *current* outputs (the instances whose fingerprint is cached now; a cell that has
//! not run, or whose inputs changed since, shows as missing, never as zero).
//!
//! One path, two sources: `orchestrator report` reads the pipeline and the cache ([`build`],
//! [`build_from`]), a `report` stage reads its gathered folders ([`gathered::from_gathers`]);
//! both give the same [`Sources`] (each instance's stage, kind, axis values, metrics and ROC
//! curve), from which [`assemble`] builds the rows, aggregates the repeats, marks the best and
//! `render.rs` writes the files.
//!
//! Rows: one per matrix cell, plus the full-data baseline rows (the `report.baseline` stages).
//! Columns: kept % and identities (from `prune`), training time (from `train`), every
//! verification set and their average (from `verify`), IJB-C TAR@FAR 1e-5 / 1e-4 (from `ijbc`),
//! each with its difference to the matching baseline. The best value per group (the cells that
//! share every axis but the first, e.g. one kept ratio) is marked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cache::{Cache, ObjKind};
use crate::exec::plan::{plan, PlanState};
use crate::pipeline::{Action, Pipeline};
use orchestrator_stages::eval::plot::{write_lines, Scale, Series, FAR_TICKS, OKABE_ITO};

/// The verification sets of the paper, in its column order; their mean is "Avg".
const PAPER_SETS: [&str; 5] = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"];

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub key: String,
    pub title: String,
    /// Accuracy-like: higher is better, compared to the baseline, best marked.
    pub score: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
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
    /// The warnings of the row's stages (`<instance>: <warning>`, from their metrics.json).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Its prune keeps more than the target ([`OVER_TARGET`] or more above it, or the target is
    /// below the per-identity floor): not like-for-like with the cells at the target, so never
    /// ranked against them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub over_target: bool,
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
    /// Each training stage's loss per epoch (averaged over the aggregated axes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub training_loss: Vec<LossCurve>,
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
#[derive(Debug, Clone)]
pub struct Current {
    pub metrics: serde_json::Value,
    /// `None` where it is not known (a gathered result: run times are no output, so a cached
    /// report cannot depend on them): no training-time or GPU-hours column then.
    pub duration_s: Option<f64>,
    /// Where it ran (the manifest's device: `cpu`, `cuda:0,1`, `gpu:2@node`): GPU-hours.
    pub device: String,
    pub roc_csv: Option<PathBuf>,
}

/// One stage instance as a report reads it.
#[derive(Debug, Clone)]
pub struct Source {
    pub stage: String,
    /// Its id (`prune[method=rand,ratio=0.5]`): the missing list, the warnings, the links.
    pub id: String,
    /// Its stage's kind (`prune`, `verify`, …, `run` for a shell stage): what its metrics mean.
    pub kind: String,
    /// Its axis values.
    pub cell: BTreeMap<String, String>,
    /// Its current result; `None` while it has none (not run yet, or stale).
    pub result: Option<Current>,
}

/// Everything a report is built from: what both paths produce and [`assemble`] reads.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Names a row where there are no axes (the pipeline, or the report stage).
    pub pipeline: String,
    /// The matrix axes, in matrix order.
    pub axes: Vec<String>,
    /// The axes averaged over (repeats), in matrix order.
    pub aggregate: Vec<String>,
    /// The cells of the cell rows, in matrix order.
    pub cells: Vec<BTreeMap<String, String>>,
    /// The stages whose results the cell rows show, in column order.
    pub cell_stages: Vec<String>,
    /// The stages whose results the baseline rows show.
    pub base_stages: Vec<String>,
    /// Every instance read, in pipeline (or gather) order: the report stages', and any other's
    /// for GPU-hours, cleaning and training loss.
    pub results: Vec<Source>,
}

/// The stored `metrics.json` object `digest`, parsed.
fn read_metrics(cache: &Cache, digest: &str) -> Result<serde_json::Value> {
    let path = cache.store.object_path(digest);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

fn current(cache: &Cache, key: &str) -> Result<Option<Current>> {
    let Some(m) = cache.manifest(key)? else {
        return Ok(None);
    };
    let metrics = match &m.metrics {
        Some(d) => read_metrics(cache, d)?,
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
        duration_s: Some(m.duration_ms as f64 / 1000.0),
        device: m.device.clone(),
        roc_csv,
    }))
}

fn is_sub(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
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

/// The warnings (`(instance, warning)`, in the given order) that the stored `metrics.json`
/// objects list: `metrics` as a run's summary carries them ([`crate::exec::RunSummary::metrics`]),
/// so that the final summary repeats every done stage's warnings, cached or not, without a second
/// plan; they do not vanish with the live view.
pub fn warnings(cache: &Cache, metrics: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (instance, digest) in metrics {
        for w in stage_warnings(&read_metrics(cache, digest)?) {
            out.push((instance.clone(), w));
        }
    }
    Ok(out)
}

/// Build the report of `p` from `current(i)`: the current result of instance `i` (index into
/// `p.instances`), `None` when it has none. `orchestrator serve` passes results it read from the
/// cache's plain files while a run holds the index.
pub fn build_from(
    p: &Pipeline,
    current: &dyn Fn(usize) -> Result<Option<Current>>,
) -> Result<Report> {
    // Every instance is read once: GPU-hours count all of them.
    let results = (p.instances.iter().enumerate())
        .map(|(i, inst)| {
            Ok(Source {
                stage: inst.stage.clone(),
                id: inst.id.clone(),
                kind: inst.action.kind_name().to_string(),
                cell: crate::pipeline::cell_map(&inst.cell),
                result: current(i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (cell_stages, base_stages) = roles(p);
    let aggregate = (p.matrix_axes.iter())
        .filter(|a| p.report.aggregate.contains(a))
        .cloned()
        .collect();
    let cells = if p.cells.is_empty() {
        vec![BTreeMap::new()]
    } else {
        p.cells.iter().collect()
    };
    Ok(assemble(&Sources {
        pipeline: p.name.clone(),
        axes: p.matrix_axes.clone(),
        aggregate,
        cells,
        cell_stages,
        base_stages,
        results,
    }))
}

/// The report of `s`: baseline rows (one per distinct cell of the baseline stages) and one row
/// per cell, each with the columns its stages' metrics give; then the repeats folded
/// (`s.aggregate`) and the best of each group marked.
pub fn assemble(s: &Sources) -> Report {
    let mut by_stage: HashMap<&str, Vec<&Source>> = HashMap::new();
    for r in &s.results {
        by_stage.entry(r.stage.as_str()).or_default().push(r);
    }
    let fill = |role: &str,
                cell: &BTreeMap<String, String>,
                stages: &[String],
                columns: &mut Vec<Column>| {
        let mut row = Row {
            role: role.into(),
            cell: cell.clone(),
            ..Row::default()
        };
        for stage in stages {
            let of_stage = by_stage.get(stage.as_str()).map(Vec::as_slice);
            let Some(src) = (of_stage.unwrap_or_default().iter()).find(|r| is_sub(&r.cell, cell))
            else {
                continue;
            };
            match &src.result {
                Some(cur) => absorb(src, cur, &mut row, columns),
                None => row.missing.push(src.id.clone()),
            }
        }
        row
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for c in baseline_cells(s) {
        let mut row = fill("baseline", &c, &s.base_stages, &mut columns);
        row.values.entry("kept_percent".into()).or_insert(100.0);
        rows.push(row);
    }
    if !columns.iter().any(|c| c.key == "kept_percent") && !rows.is_empty() {
        let kept = Column {
            key: "kept_percent".into(),
            title: "Kept %".into(),
            score: false,
        };
        columns.insert(0, kept);
    }
    let mut n_base = rows.len();
    for c in &s.cells {
        let mut row = fill("cell", c, &s.cell_stages, &mut columns);
        row.baseline = rows[..n_base].iter().position(|b| is_sub(&b.cell, c));
        rows.push(row);
    }
    gpu_hours(s, &mut rows, n_base, &mut columns);
    columns.sort_by_key(column_rank);
    let aggregate = s.aggregate.clone();
    let axes: Vec<String> = (s.axes.iter())
        .filter(|a| !aggregate.contains(a))
        .cloned()
        .collect();
    if !aggregate.is_empty() {
        (rows, n_base) = fold_repeats(rows, n_base, &aggregate);
    }
    mark_best(&axes, &columns, &mut rows[n_base..]);
    Report {
        pipeline: s.pipeline.clone(),
        cleaning: cleaning_rows(s),
        training_loss: loss_curves(s),
        axes,
        aggregate,
        columns,
        rows,
    }
}

mod columns;
pub mod gathered;
mod loss;
mod render;
mod rows;
use columns::{absorb, column_rank};
pub use columns::{stage_warnings, BELOW_FLOOR, OVER_TARGET};
pub use loss::{loss_curves, LossCurve};
pub use render::roc_points;
#[cfg(test)]
use rows::aggregate_rows;
use rows::{baseline_cells, cleaning_rows, fold_repeats, gpu_hours, mark_best};

#[cfg(test)]
mod tests;
