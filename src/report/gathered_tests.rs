//! Tests of [`super`]: reading gathered folders (as `exec::gather` lays them out) into sources.

use super::*;

/// A cell's axis values and its metrics.json (none: the instance wrote none).
type Cell<'a> = (&'a [(&'a str, &'a str)], Option<serde_json::Value>);

/// A gathered folder: `index.json` with `kind`, `axes` and the cells `(cell, metrics or none)`;
/// each metrics.json written at `<entry>/metrics.json`.
fn folder(
    root: &Path,
    name: &str,
    (stage, kind, axes): (&str, &str, &[&str]),
    cells: &[Cell],
) -> (String, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut listed = Vec::new();
    for (cell, metrics) in cells {
        let entry: Vec<String> = cell.iter().map(|(a, v)| format!("{a}={v}")).collect();
        let entry = if entry.is_empty() {
            stage.to_string()
        } else {
            entry.join(",")
        };
        let path = metrics.as_ref().map(|m| {
            std::fs::create_dir_all(dir.join(&entry)).unwrap();
            std::fs::write(dir.join(&entry).join("metrics.json"), m.to_string()).unwrap();
            format!("{entry}/metrics.json")
        });
        let cell: BTreeMap<&str, &str> = cell.iter().copied().collect();
        listed.push(serde_json::json!({"cell": cell, "path": path}));
    }
    let index = serde_json::json!({
        "stage": stage, "kind": kind, "axes": axes, "output": "metrics", "cells": listed,
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    (name.to_string(), dir)
}

#[test]
fn cells_baseline_and_axes_come_from_the_indexes() {
    let d = tempfile::tempdir().unwrap();
    let acc = |x: f64| Some(serde_json::json!({ "acc": x }));
    let folders = [
        folder(d.path(), "base", ("full", "run", &[]), &[(&[], acc(9.0))]),
        folder(
            d.path(),
            "score",
            ("score", "run", &["method", "seed"]),
            &[
                (&[("method", "a"), ("seed", "1")], acc(1.0)),
                (&[("method", "a"), ("seed", "2")], acc(3.0)),
                (&[("method", "b"), ("seed", "1")], acc(5.0)),
                (&[("method", "b"), ("seed", "2")], None),
            ],
        ),
    ];
    let s = from_gathers("table", &folders, &["seed".into()]).unwrap();
    assert_eq!(s.axes, ["method", "seed"]);
    assert_eq!(s.aggregate, ["seed"]);
    assert_eq!(s.base_stages, ["full"]);
    assert_eq!(s.cell_stages, ["score"]);
    assert_eq!(s.cells.len(), 4);
    assert_eq!(s.results[2].id, "score[method=a,seed=2]");
    // A null path: the instance ran and wrote no metrics (no values, not missing).
    let last = s.results[4].result.as_ref().unwrap();
    assert!(last.metrics.is_null());
    let r = assemble(&s);
    assert_eq!(r.axes, ["method"]);
    let value = |i: usize| r.rows[i].values.get("score.acc").copied();
    assert_eq!(r.rows[0].values["full.acc"], 9.0);
    assert_eq!(
        (value(1), r.rows[1].std.get("score.acc")),
        (Some(2.0), Some(&2f64.sqrt()))
    );
    assert_eq!(
        (value(2), r.rows[2].n.get("score.acc")),
        (Some(5.0), Some(&1))
    );
    assert!(r.rows.iter().all(|r| r.missing.is_empty()));
    assert_eq!(r.rows[1].baseline, Some(0));
}

#[test]
fn a_missing_metrics_file_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let f = folder(
        d.path(),
        "v",
        ("v", "run", &["m"]),
        &[(&[("m", "a")], Some(serde_json::json!({})))],
    );
    std::fs::remove_file(f.1.join("m=a/metrics.json")).unwrap();
    let e = format!("{:#}", from_gathers("t", &[f], &[]).unwrap_err());
    assert!(
        e.starts_with("input `v`: cannot read ") && e.contains("m=a/metrics.json"),
        "{e}"
    );
}

#[test]
fn an_unknown_kind_or_output_or_axis_is_an_error_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let f = folder(d.path(), "x", ("x", "nope", &[]), &[(&[], None)]);
    let e = format!("{:#}", from_gathers("t", &[f], &[]).unwrap_err());
    assert!(e.contains("names kind `nope` of stage `x`, which this build does not know\nhint: build the engine and its workers together"), "{e}");

    let f = folder(
        d.path(),
        "y",
        ("y", "prune", &["m"]),
        &[(&[("m", "a")], None)],
    );
    let index = std::fs::read_to_string(f.1.join("index.json")).unwrap();
    let kept = index.replace("\"metrics\"", "\"kept\"");
    std::fs::write(f.1.join("index.json"), kept).unwrap();
    let e = format!("{:#}", from_gathers("t", &[f], &[]).unwrap_err());
    assert_eq!(e, "input `y` gathers `y.kept`: a report reads gathered `metrics` and `roc`\nhint: e.g. `\"y.metrics[*]\"`");

    let g = folder(
        d.path(),
        "z",
        ("z", "prune", &["m"]),
        &[(&[("m", "a")], None)],
    );
    let e = format!(
        "{:#}",
        from_gathers("t", &[g], &["seed".into()]).unwrap_err()
    );
    assert!(
        e.starts_with(
            "param `aggregate`: `seed` is not an axis of the gathered stages (their axes: m)"
        ),
        "{e}"
    );

    let e = format!(
        "{:#}",
        from_gathers("t", &[("w".into(), d.path().join("none"))], &[]).unwrap_err()
    );
    assert!(
        e.starts_with("input `w`: cannot read ") && e.contains("index.json"),
        "{e}"
    );
}

#[test]
fn a_roc_gather_joins_its_stages_metrics_in_the_same_cell() {
    let d = tempfile::tempdir().unwrap();
    let m = folder(
        d.path(),
        "ijbc",
        ("ijbc", "ijbc", &["m"]),
        &[(&[("m", "a")], Some(serde_json::json!({"auc": 0.9})))],
    );
    let roc = d.path().join("roc");
    std::fs::create_dir_all(roc.join("m=a/roc")).unwrap();
    std::fs::write(roc.join("m=a/roc/roc.csv"), "far,tar\n").unwrap();
    let index = serde_json::json!({"stage": "ijbc", "kind": "ijbc", "axes": ["m"], "output": "roc",
        "cells": [{"cell": {"m": "a"}, "path": "m=a/roc"}]});
    std::fs::write(roc.join("index.json"), index.to_string()).unwrap();
    let s = from_gathers("t", &[m, ("roc".into(), roc.clone())], &[]).unwrap();
    assert_eq!(s.results.len(), 1);
    let cur = s.results[0].result.as_ref().unwrap();
    assert_eq!(
        cur.roc_csv.as_deref(),
        Some(roc.join("m=a/roc/roc.csv").as_path())
    );
    let r = assemble(&s);
    assert_eq!(r.rows[0].roc_auc, Some(0.9));
}

#[test]
fn axes_merge_in_matrix_order() {
    let l = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let merged = merge_axes(vec![
        l(&["ratio"]),
        l(&["method", "ratio", "seed"]),
        l(&["method"]),
    ]);
    assert_eq!(merged, ["method", "ratio", "seed"]);
    assert_eq!(
        merge_axes(vec![l(&["method", "seed"]), l(&["method", "ratio"])]),
        ["method", "ratio", "seed"]
    );
}
