//! Tests of [`super`]: best-of-group marking and the aggregation over repeats.

use super::*;

fn row(method: &str, ratio: &str, v: f64, std: Option<f64>) -> Row {
    Row {
        role: "cell".into(),
        cell: [("method", method), ("ratio", ratio)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        values: [("acc".to_string(), v)].into(),
        std: std
            .map(|s| [("acc".to_string(), s)].into())
            .unwrap_or_default(),
        ..Row::default()
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

#[test]
fn a_cell_over_its_target_is_neither_best_nor_runner_up() {
    let axes = vec!["method".to_string(), "ratio".to_string()];
    let cols = [Column {
        key: "acc".into(),
        title: "Acc".into(),
        score: true,
    }];
    let mut rows = vec![
        // ratio 0.25: the floored cell is ahead, but keeps more data: a leads b, the ranked ones.
        row("floored", "0.25", 99.0, None),
        row("a", "0.25", 90.0, None),
        row("b", "0.25", 85.0, None),
        // ratio 0.5: without the floored cell, a is alone: nothing to be ahead of.
        row("floored", "0.5", 10.0, None),
        row("a", "0.5", 90.0, None),
    ];
    rows[0].over_target = true;
    rows[3].over_target = true;
    mark_best(&axes, &cols, &mut rows);
    let marked: Vec<bool> = rows.iter().map(|r| !r.best.is_empty()).collect();
    assert_eq!(marked, [false, true, false, false, false]);
}

#[test]
fn repeats_sharing_a_stage_list_its_warning_once_and_keep_the_over_target_mark() {
    let mut rows = Vec::new();
    for seed in ["1", "2"] {
        let mut r = row("a", "0.25", 1.0, None);
        r.cell.insert("seed".into(), seed.into());
        r.warnings = vec!["prune[method=a,ratio=0.25]: target below the floor".into()];
        r.over_target = true;
        rows.push(r);
    }
    let out = aggregate_rows(rows, &["seed".to_string()]);
    assert_eq!(out[0].warnings.len(), 1);
    assert!(out[0].over_target);
}
