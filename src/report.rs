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
pub struct Current {
    pub metrics: serde_json::Value,
    pub duration_s: f64,
    /// Where it ran (the manifest's device: `cpu`, `cuda:0,1`, `gpu:2@node`): GPU-hours.
    pub device: String,
    pub roc_csv: Option<PathBuf>,
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
        duration_s: m.duration_ms as f64 / 1000.0,
        device: m.device.clone(),
        roc_csv,
    }))
}

fn is_sub(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// The warning a `prune` stage gives when its target is below what the per-identity floor
/// (`min_per_id`) allows: it then keeps more than the target.
pub const BELOW_FLOOR: &str = "target below the floor";

/// How far above its target a prune's kept ratio may be and still count as at the target
/// (half a percentage point of the data). Rand and DynUnc keep ⌊n · fraction⌋ of each identity,
/// so their kept count moves in steps (at a fraction of 0.5 every identity of even size gains a
/// sample at once) and the floor of `min_per_id` adds to it: the nearest count at or above a
/// target can be well above it. A cell that far above keeps materially more data than the cells
/// it would be ranked against.
pub const OVER_TARGET: f64 = 0.005;

/// Whether a prune's metrics say it kept more than its target: the floor warning, or a kept
/// ratio [`OVER_TARGET`] or more above `target_ratio`.
fn kept_over_target(m: &serde_json::Value, warnings: &[String]) -> bool {
    let stepped = match (num(m, "ratio"), num(m, "target_ratio")) {
        (Some(kept), Some(target)) => kept - target >= OVER_TARGET - 1e-12,
        _ => false,
    };
    stepped || warnings.iter().any(|w| w.starts_with(BELOW_FLOOR))
}

/// One column value an instance contributes: key, title, accuracy-like, value.
type Put = (String, String, bool, Option<f64>);

/// Add the columns one instance's metrics contribute, its warnings (the `warnings` list of its
/// metrics.json, any stage), and for a `prune` that kept more than its target
/// ([`kept_over_target`]) the mark that says so.
fn absorb(inst: &Instance, cur: &Current, row: &mut Row, columns: &mut Vec<Column>) {
    let (kind, id) = (inst.action.kind_name(), inst.id.as_str());
    let m = &cur.metrics;
    if kind == "ijbc" {
        if let Some(p) = &cur.roc_csv {
            row.roc_csv = Some(p.clone());
            row.roc_auc = m.get("auc").and_then(|a| a.as_f64());
        }
        if let Some(n) = m.get("impostor_pairs").and_then(|n| n.as_f64()) {
            row.far_floor = (n > 0.0).then(|| 1.0 / n);
        }
    }
    let warnings = stage_warnings(m);
    if kind == "prune" && kept_over_target(m, &warnings) {
        row.over_target = true;
    }
    for w in warnings {
        row.warnings.push(format!("{id}: {w}"));
    }
    let has_ids = row.values.contains_key("identities");
    let puts: Vec<Put> = match kind {
        "prune" => prune_columns(m),
        "train" => train_columns(m, cur.duration_s, has_ids),
        "verify" => verify_columns(m),
        "ijbc" => ijbc_columns(m),
        "run" => {
            // A shell stage's metrics.json: every number, nested keys joined with `.`.
            let mut flat = Vec::new();
            flatten_numbers("", m, &mut flat);
            flat.into_iter()
                .map(|(k, v)| {
                    let key = format!("{}.{k}", inst.stage);
                    (key, format!("{} {k}", inst.stage), false, Some(v))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    for (key, title, score, v) in puts {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            continue;
        };
        if !columns.iter().any(|c| c.key == key) {
            columns.push(Column {
                key: key.clone(),
                title,
                score,
            });
        }
        row.sources.insert(key.clone(), id.to_string());
        row.values.insert(key, v);
    }
}

/// The `warnings` strings of a stage's metrics.json (none when absent).
pub fn stage_warnings(metrics: &serde_json::Value) -> Vec<String> {
    metrics
        .get("warnings")
        .and_then(|w| w.as_array())
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn num(m: &serde_json::Value, key: &str) -> Option<f64> {
    m.get(key).and_then(|v| v.as_f64())
}

/// `prune`: the target ratio next to the achieved one (they differ where the floor keeps more).
fn prune_columns(m: &serde_json::Value) -> Vec<Put> {
    vec![
        (
            "target_percent".into(),
            "Target %".into(),
            false,
            num(m, "target_ratio").map(|r| r * 100.0),
        ),
        (
            "kept_percent".into(),
            "Kept %".into(),
            false,
            num(m, "ratio").map(|r| r * 100.0),
        ),
        (
            "identities".into(),
            "Ids".into(),
            false,
            num(m, "identities_kept"),
        ),
    ]
}

fn train_columns(m: &serde_json::Value, duration_s: f64, has_ids: bool) -> Vec<Put> {
    let mut out: Vec<Put> = vec![(
        "train_minutes".into(),
        "Train min".into(),
        false,
        Some(duration_s / 60.0),
    )];
    if !has_ids {
        out.push((
            "identities".into(),
            "Ids".into(),
            false,
            num(m, "num_classes"),
        ));
    }
    out
}

/// `verify`: each set's accuracy and the spread over its 10 folds, in the paper's order, then
/// their average.
fn verify_columns(m: &serde_json::Value) -> Vec<Put> {
    let mut out = Vec::new();
    if let Some(sets) = m.get("sets").and_then(|s| s.as_object()) {
        let mut names: Vec<&String> = sets.keys().collect();
        names.sort_by_key(|n| {
            (
                PAPER_SETS.iter().position(|p| p == n).unwrap_or(usize::MAX),
                (*n).clone(),
            )
        });
        for name in names {
            let title = name.to_uppercase().replace('_', "-");
            let acc = num(&sets[name], "accuracy").map(|a| a * 100.0);
            out.push((format!("verify.{name}"), title.clone(), true, acc));
            // The spread over the 10 folds of that one model (np.std, ddof 0).
            let folds = num(&sets[name], "std").map(|s| s * 100.0);
            out.push((
                format!("verify.{name}.fold_std"),
                format!("{title} fold σ"),
                false,
                folds,
            ));
        }
    }
    out.push((
        "verify.avg".into(),
        "Avg".into(),
        true,
        num(m, "avg").map(|a| a * 100.0),
    ));
    out
}

fn ijbc_columns(m: &serde_json::Value) -> Vec<Put> {
    let tar = m.get("tar_at_far_percent");
    [("1e-05", "IJB-C 1e-5"), ("1e-04", "IJB-C 1e-4")]
        .into_iter()
        .map(|(k, t)| {
            let v = tar.and_then(|x| x.get(k)).and_then(|v| v.as_f64());
            (format!("ijbc.{k}"), t.to_string(), true, v)
        })
        .collect()
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
            ..Row::default()
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
    for c in baseline_cells(p, &base_stages) {
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
    gpu_hours(p, &current, &mut rows, n_base, &mut columns)?;
    columns.sort_by_key(column_rank);
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
        (rows, n_base) = fold_repeats(rows, n_base, &aggregate);
    }
    mark_best(&axes, &columns, &mut rows[n_base..]);

    Ok(Report {
        pipeline: p.name.clone(),
        cleaning: cleaning_rows(p, &current)?,
        training_loss: loss_curves(p, &current, &aggregate)?,
        axes,
        aggregate,
        columns,
        rows,
    })
}

/// Column order: target and kept %, ids, verification sets (paper order), avg, IJB-C, train
/// time and other stages' columns, GPU-hours.
fn column_rank(c: &Column) -> u8 {
    match c.key.as_str() {
        "target_percent" => 0,
        "kept_percent" => 1,
        "identities" => 2,
        "verify.avg" => 4,
        k if k.starts_with("verify.") => 3,
        k if k.starts_with("ijbc.") => 5,
        "gpu_hours" => 7,
        _ => 6,
    }
}

/// The distinct cells of the baseline stages' instances (usually one, the empty cell).
fn baseline_cells(p: &Pipeline, base_stages: &[String]) -> Vec<BTreeMap<String, String>> {
    let mut base_cells: Vec<BTreeMap<String, String>> = Vec::new();
    for s in base_stages {
        for (_, i) in p.instances_of(s) {
            if !base_cells.contains(&i.cell) {
                base_cells.push(i.cell.clone());
            }
        }
    }
    base_cells
}

/// Each `clean` instance's flagged count and its quality against the injected noise.
fn cleaning_rows<'c>(
    p: &Pipeline,
    current: &dyn Fn(usize) -> Result<Option<&'c Current>>,
) -> Result<Vec<BTreeMap<String, serde_json::Value>>> {
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
    Ok(cleaning)
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
/// A row that keeps more than its target ([`Row::over_target`]) is not like-for-like: it is
/// neither marked nor the runner-up of a row at the target.
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
            if r.values.contains_key(&c.key) && !r.over_target {
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

/// [`aggregate_rows`] of the baseline rows (the first `n_base`) and of the cells apart, each cell
/// linked to its baseline again; returns the rows and the new number of baseline rows.
fn fold_repeats(mut rows: Vec<Row>, n_base: usize, aggregate: &[String]) -> (Vec<Row>, usize) {
    let base = aggregate_rows(rows.drain(..n_base).collect(), aggregate);
    let cells = aggregate_rows(rows, aggregate);
    let n_base = base.len();
    let mut rows = base;
    for mut r in cells {
        r.baseline = rows[..n_base].iter().position(|b| is_sub(&b.cell, &r.cell));
        rows.push(r);
    }
    (rows, n_base)
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
                missing: members.iter().flat_map(|m| m.missing.clone()).collect(),
                roc_csv: members.iter().find_map(|m| m.roc_csv.clone()),
                roc_auc: members.iter().find_map(|m| m.roc_auc),
                far_floor: members.iter().find_map(|m| m.far_floor),
                // Repeats that share a stage (a prune of every seed) share its warnings: once each.
                warnings: members
                    .iter()
                    .flat_map(|m| &m.warnings)
                    .fold(Vec::new(), |mut ws, w| {
                        if !ws.contains(w) {
                            ws.push(w.clone());
                        }
                        ws
                    }),
                over_target: members.iter().any(|m| m.over_target),
                ..Row::default()
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

mod loss;
mod render;
pub use loss::{loss_curves, LossCurve};
pub use render::roc_points;

#[cfg(test)]
mod tests;
