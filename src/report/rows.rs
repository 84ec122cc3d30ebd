//! The rows of a report: the baseline cells, GPU-hours, the cleaning table, the aggregation over
//! repeats and the best-of-group marks.

use super::*;

/// The distinct cells of the baseline stages' instances (usually one, the empty cell).
pub(super) fn baseline_cells(s: &Sources) -> Vec<BTreeMap<String, String>> {
    let mut base_cells: Vec<BTreeMap<String, String>> = Vec::new();
    for stage in &s.base_stages {
        for r in s.results.iter().filter(|r| &r.stage == stage) {
            if !base_cells.contains(&r.cell) {
                base_cells.push(r.cell.clone());
            }
        }
    }
    base_cells
}

/// Each `clean` instance's flagged count and its quality against the injected noise.
pub(super) fn cleaning_rows(s: &Sources) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut cleaning = Vec::new();
    for src in s.results.iter().filter(|r| r.kind == "clean") {
        let Some(cur) = &src.result else { continue };
        let mut m = BTreeMap::new();
        m.insert("stage".into(), serde_json::json!(src.id));
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
    cleaning
}

/// GPU-hours of each row: every instance whose current result ran on GPUs (GPUs of its device
/// times its run time; on SLURM the job's own elapsed time) counts for the rows it belongs to,
/// split evenly between them: an instance of no matrix cell for the baseline rows (or every row
/// without a baseline), one shared by several cells for those cells. The column sums to the
/// pipeline's total and is shown only when some stage ran on a GPU (and its run time is known).
pub(super) fn gpu_hours(s: &Sources, rows: &mut [Row], n_base: usize, columns: &mut Vec<Column>) {
    let mut any = false;
    for src in &s.results {
        let Some(cur) = &src.result else {
            continue;
        };
        let gpus = crate::exec::gpus_of_device(&cur.device);
        let Some(duration_s) = cur.duration_s.filter(|_| gpus > 0) else {
            continue;
        };
        let hours = gpus as f64 * duration_s / 3600.0;
        let targets: Vec<usize> = if src.cell.is_empty() && n_base > 0 {
            (0..n_base).collect()
        } else {
            (n_base..rows.len())
                .filter(|&r| is_sub(&src.cell, &rows[r].cell))
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
}

/// Mark the best score per group (the rows that share every axis but the first): only where the
/// best is ahead of the runner-up by more than their combined standard deviation
/// (sqrt(std_best² + std_second²); 0 for rows that are not aggregated, so a tie marks nothing).
/// A row that keeps more than its target ([`Row::over_target`]) is not like-for-like: it is
/// neither marked nor the runner-up of a row at the target.
pub(super) fn mark_best(axes: &[String], columns: &[Column], rows: &mut [Row]) {
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
pub(super) fn fold_repeats(
    mut rows: Vec<Row>,
    n_base: usize,
    aggregate: &[String],
) -> (Vec<Row>, usize) {
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
pub(super) fn aggregate_rows(rows: Vec<Row>, aggregate: &[String]) -> Vec<Row> {
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
