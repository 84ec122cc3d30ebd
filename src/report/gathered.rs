//! The `report` kind: [`from_gathers`] reads the gathered folders a report stage is given into
//! the [`Sources`] that `orchestrator report` builds from the pipeline and the cache, and
//! [`run_stage`] writes the same files into the stage's `report` output.
//!
//! Each folder's `index.json` (`exec::gather`) names the gathered stage, its kind, its axes and
//! output, and each cell's entry: a `metrics` gather gives one [`Source`] per cell (a `null`
//! path: the instance wrote no metrics.json), a `roc` gather the ROC curve of the same stage's
//! cell. A gathered stage without axes gives the baseline rows. Run times are no output, so a
//! report stage has no `Train min` and `GPU h` columns.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::*;
use orchestrator_stages::kinds::{report::ReportParams, Kind};
use orchestrator_stages::Invocation;

/// A gathered folder's `index.json`, as `exec::gather::index_json` writes it.
#[derive(Debug, Deserialize)]
struct Index {
    stage: String,
    kind: String,
    axes: Vec<String>,
    output: String,
    cells: Vec<IndexCell>,
}

#[derive(Debug, Deserialize)]
struct IndexCell {
    cell: BTreeMap<String, String>,
    path: Option<String>,
}

/// Run a `report` stage: the report of its gathered inputs, written into its `report` output;
/// its metrics are the table's size.
pub fn run_stage(inv: &Invocation) -> Result<serde_json::Value> {
    let params: ReportParams =
        serde_json::from_value(inv.params.clone()).context("the params of `report`")?;
    let folders: Vec<(String, PathBuf)> = inv
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let sources = from_gathers(&inv.stage_id, &folders, &params.aggregate)?;
    let report = assemble(&sources);
    let dir = inv
        .outputs
        .get("report")
        .context("the invocation has no output `report`")?;
    let written = report.write(dir)?;
    Ok(serde_json::json!({
        "rows": report.rows.len(),
        "columns": report.columns.len(),
        "files": written.len(),
    }))
}

/// The sources of a report named `name` from gathered folders (`(input name, folder)`, in the
/// order their stages' columns come), averaged over the `aggregate` axes.
pub fn from_gathers(
    name: &str,
    folders: &[(String, PathBuf)],
    aggregate: &[String],
) -> Result<Sources> {
    let mut results: Vec<Source> = Vec::new();
    let mut rocs: Vec<Source> = Vec::new();
    let mut axis_lists: Vec<Vec<String>> = Vec::new();
    for (input, dir) in folders {
        let index = read_index(input, dir)?;
        axis_lists.push(index.axes.clone());
        let into = match index.output.as_str() {
            "metrics" => &mut results,
            "roc" => &mut rocs,
            other => bail!(
                "input `{input}` gathers `{}.{other}`: a report reads gathered `metrics` and `roc`\nhint: e.g. `\"{}.metrics[*]\"`",
                index.stage,
                index.stage
            ),
        };
        for c in &index.cells {
            into.push(gathered_source(input, dir, &index, c)?);
        }
    }
    attach_rocs(&mut results, rocs);
    let axes = merge_axes(axis_lists);
    if let Some(a) = aggregate.iter().find(|a| !axes.contains(a)) {
        bail!(
            "param `aggregate`: `{a}` is not an axis of the gathered stages (their axes: {})\nhint: name a matrix axis of a gathered stage, e.g. `seed`",
            if axes.is_empty() { "none".to_string() } else { axes.join(", ") }
        );
    }
    let (cell_stages, base_stages) = gathered_roles(&results, !axes.is_empty());
    Ok(Sources {
        pipeline: name.to_string(),
        aggregate: (axes.iter())
            .filter(|a| aggregate.contains(a))
            .cloned()
            .collect(),
        cells: row_cells(&results, &cell_stages),
        axes,
        cell_stages,
        base_stages,
        results,
    })
}

/// `index.json` of the gathered folder of input `input`, its kind one this build knows.
fn read_index(input: &str, dir: &Path) -> Result<Index> {
    let path = dir.join("index.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("input `{input}`: cannot read {} (a report reads gathers, e.g. `\"verify.metrics[*]\"`)", path.display())
    })?;
    let index: Index = serde_json::from_str(&text).with_context(|| {
        format!(
            "input `{input}`: {} is not a gather's index",
            path.display()
        )
    })?;
    if index.kind != "run" && Kind::from_name(&index.kind).is_none() {
        bail!(
            "input `{input}`: {} names kind `{}` of stage `{}`, which this build does not know\nhint: build the engine and its workers together (`make build`)",
            path.display(),
            index.kind,
            index.stage
        );
    }
    Ok(index)
}

/// The instance of one `index.json` cell: its metrics.json (a `metrics` gather; null without
/// one) or its ROC curve file (a `roc` gather: `roc.csv` in the entry's folder).
fn gathered_source(input: &str, dir: &Path, index: &Index, c: &IndexCell) -> Result<Source> {
    let path = c.path.as_ref().map(|p| dir.join(p));
    let mut cur = Current {
        metrics: serde_json::Value::Null,
        duration_s: None,
        device: String::new(),
        roc_csv: None,
    };
    match (&path, index.output.as_str()) {
        (Some(p), "roc") => {
            cur.roc_csv = Some(if p.is_dir() {
                p.join("roc.csv")
            } else {
                p.clone()
            });
        }
        (Some(p), _) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("input `{input}`: cannot read {}", p.display()))?;
            cur.metrics = serde_json::from_str(&text)
                .with_context(|| format!("input `{input}`: {} is not JSON", p.display()))?;
        }
        (None, _) => {}
    }
    Ok(Source {
        stage: index.stage.clone(),
        id: instance_id(&index.stage, &index.axes, &c.cell),
        kind: index.kind.clone(),
        cell: c.cell.clone(),
        result: Some(cur),
    })
}

/// The instance id as the pipeline writes it: `stage[axis=value,...]` in matrix order.
fn instance_id(stage: &str, axes: &[String], cell: &BTreeMap<String, String>) -> String {
    if cell.is_empty() {
        return stage.to_string();
    }
    let mut parts: Vec<String> = (axes.iter())
        .filter_map(|a| cell.get(a).map(|v| format!("{a}={v}")))
        .collect();
    for (a, v) in cell.iter().filter(|(a, _)| !axes.contains(a)) {
        parts.push(format!("{a}={v}"));
    }
    format!("{stage}[{}]", parts.join(","))
}

/// Each ROC curve joins its stage's metrics in the same cell (an ijbc stage's AUC and FAR
/// floor); a curve without gathered metrics is a source of its own.
fn attach_rocs(results: &mut Vec<Source>, rocs: Vec<Source>) {
    for roc in rocs {
        let same = |r: &&mut Source| r.stage == roc.stage && r.cell == roc.cell;
        let path = roc.result.as_ref().and_then(|c| c.roc_csv.clone());
        match results.iter_mut().find(same) {
            Some(r) => {
                if let Some(cur) = &mut r.result {
                    cur.roc_csv = path;
                }
            }
            None => results.push(roc),
        }
    }
}

/// The matrix axes of all gathered stages in matrix order (each stage's axes keep it): the
/// longest list first, every other axis after its predecessor in its own list.
fn merge_axes(mut lists: Vec<Vec<String>>) -> Vec<String> {
    lists.sort_by_key(|l| std::cmp::Reverse(l.len()));
    let mut out: Vec<String> = Vec::new();
    for list in lists {
        for (i, a) in list.iter().enumerate() {
            if out.contains(a) {
                continue;
            }
            let after = i
                .checked_sub(1)
                .and_then(|p| out.iter().position(|x| *x == list[p]));
            match after {
                Some(p) => out.insert(p + 1, a.clone()),
                None => out.push(a.clone()),
            }
        }
    }
    out
}

/// Cell stages and baseline stages, in gather order: a stage whose instances have no axes is a
/// baseline where some other stage has axes.
fn gathered_roles(results: &[Source], any_axes: bool) -> (Vec<String>, Vec<String>) {
    let mut cells: Vec<String> = Vec::new();
    let mut base: Vec<String> = Vec::new();
    for r in results {
        if cells.contains(&r.stage) || base.contains(&r.stage) {
            continue;
        }
        let no_axes = results
            .iter()
            .filter(|x| x.stage == r.stage)
            .all(|x| x.cell.is_empty());
        if no_axes && any_axes {
            base.push(r.stage.clone());
        } else {
            cells.push(r.stage.clone());
        }
    }
    (cells, base)
}

/// The rows' cells: the distinct cells of the cell stages' instances that no other one extends
/// (a prune's `method,ratio` under the retrain's `method,ratio,seed`), the stages with the most
/// axes first, each in matrix order.
fn row_cells(results: &[Source], cell_stages: &[String]) -> Vec<BTreeMap<String, String>> {
    let mut stages: Vec<&String> = cell_stages.iter().collect();
    let width = |s: &String| {
        (results.iter().filter(|r| &r.stage == s))
            .map(|r| r.cell.len())
            .max()
            .unwrap_or(0)
    };
    stages.sort_by_key(|s| std::cmp::Reverse(width(s)));
    let mut cells: Vec<BTreeMap<String, String>> = Vec::new();
    for s in stages {
        for r in results.iter().filter(|r| &r.stage == s) {
            if !cells.iter().any(|c| is_sub(&r.cell, c)) {
                cells.push(r.cell.clone());
            }
        }
    }
    if cells.is_empty() {
        cells.push(BTreeMap::new());
    }
    cells
}

#[cfg(test)]
#[path = "gathered_tests.rs"]
mod tests;
