//! The report as a stage of the pipeline (issue #19 item 1): `stage.metrics[*]` gathers, a
//! `uses: report` stage whose files equal `orchestrator report`'s, cached like any stage and
//! rerun when a gathered cell changes.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::Project;

/// method × size × seed `score` cells (acc = size · (base + k · seed) + the cell's offset file),
/// method × size `sel` cells, a `full` baseline; the report as a stage and as a `report:`.
const PIPELINE: &str = r#"
name: rs
matrix:
  method:
    - { name: a, base: 10, k: 1 }
    - { name: b, base: 20, k: 3 }
  size: [1, 2]
  seed: [1, 2, 3]
stages:
  full:
    run: |
      echo '{"acc": 30, "kept": 100}' > "$ORCHESTRATOR_OUT_DIR/metrics.json"
    outputs: []
  sel:
    run: |
      echo "{\"kept\": $(( ${matrix.size} * 10 )), \"m\": \"${matrix.method.name}\"}" > "$ORCHESTRATOR_OUT_DIR/metrics.json"
    outputs: []
  score:
    run: |
      echo "{\"acc\": $(( ${matrix.size} * (${matrix.method.base} + ${matrix.method.k} * ${matrix.seed}) + $(cat ${inputs.off}) ))}" > "$ORCHESTRATOR_OUT_DIR/metrics.json"
    inputs: { off: "./off/${matrix.method.name}-${matrix.size}-${matrix.seed}" }
    outputs: []
  table:
    uses: report
    inputs:
      base: "full.metrics[*]"
      score: "score.metrics[*]"
      sel: "sel.metrics[*]"
    with: { aggregate: [seed] }
report: { stages: [score, sel], baseline: [full], aggregate: [seed] }
"#;

fn project() -> Project {
    let p = Project::new();
    for m in ["a", "b"] {
        for size in 1..=2 {
            for seed in 1..=3 {
                p.file(&format!("off/{m}-{size}-{seed}"), "0\n");
            }
        }
    }
    p.file("p.yaml", PIPELINE);
    p
}

/// The instances a `run --message-format json` started.
fn run_started(p: &Project) -> BTreeSet<String> {
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    r.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "started")
        .filter_map(|v| v["instance"].as_str().map(String::from))
        .collect()
}

fn read(p: &Project, rel: &str) -> String {
    std::fs::read_to_string(p.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A cell's `acc`, from its own metrics.json.
fn acc(p: &Project, m: &str, size: u32, seed: u32) -> f64 {
    let rel = format!("results/rs/score[method={m},size={size},seed={seed}]/metrics.json");
    let v: Value = serde_json::from_str(&read(p, &rel)).unwrap();
    v["acc"].as_f64().unwrap()
}

/// The CSV row of `method,size`, as the report writes it: mean, std (n − 1), n from the cells.
fn expected_row(p: &Project, m: &str, size: u32) -> String {
    let xs: Vec<f64> = (1..=3).map(|seed| acc(p, m, size, seed)).collect();
    let mean = xs.iter().sum::<f64>() / 3.0;
    let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let kept = f64::from(size * 10);
    // Kept % and the baseline's columns are empty in a cell row.
    format!("{m},{size},3,,,,,,,{mean},{std},{kept},0,cell,,false,\n")
}

#[test]
fn a_report_stage_equals_the_report_command_and_reruns_with_one_gathered_cell() {
    let p = project();
    assert_eq!(run_started(&p).len(), 12 + 4 + 1 + 1);
    let stage_csv = read(&p, "results/rs/table/report/report.csv");
    let cmd = p.run(&["report", "p.yaml", "--format", "csv"]);
    cmd.success();
    assert_eq!(stage_csv, cmd.stdout());
    assert!(
        stage_csv.starts_with(
            "method,size,n,Kept %,Kept % std,full acc,full acc std,full kept,full kept std,score acc,score acc std,sel kept,sel kept std,role,missing,over_target,warnings\n"
        ),
        "{stage_csv}"
    );
    for (m, size) in [("a", 1), ("a", 2), ("b", 1), ("b", 2)] {
        let want = expected_row(&p, m, size);
        assert!(stage_csv.contains(&want), "{want} not in\n{stage_csv}");
    }
    for f in ["report.md", "report.json"] {
        assert!(
            p.path(&format!("results/rs/table/report/{f}")).is_file(),
            "{f}"
        );
    }
    let md = read(&p, "results/rs/table/report/report.md");
    assert!(
        md.starts_with(
            "| method | size | n | Kept % | full acc | full kept | score acc | sel kept |\n"
        ),
        "{md}"
    );

    // Nothing changed: all cached.
    assert_eq!(run_started(&p), BTreeSet::new());
    // One cell changes: it and the report stage run, nothing else.
    p.file("off/a-1-2", "7\n");
    let want: BTreeSet<String> = ["score[method=a,size=1,seed=2]", "table"]
        .map(String::from)
        .into();
    assert_eq!(run_started(&p), want);
    assert_eq!(acc(&p, "a", 1, 2), 19.0);
    let stage_csv = read(&p, "results/rs/table/report/report.csv");
    let cmd = p.run(&["report", "p.yaml", "--format", "csv"]);
    assert_eq!(stage_csv, cmd.stdout());
    // a,1: acc 11, 19, 13 -> mean 43/3.
    let row = format!("\na,1,3,,,,,,,{},", 43.0 / 3.0);
    assert!(stage_csv.contains(&row), "{row} not in\n{stage_csv}");
    assert_eq!(run_started(&p), BTreeSet::new());
}

/// `stage.metrics[*]` gathers each cell's metrics.json (`null` where a cell wrote none); the
/// index names the gathered stage's kind and axes; a declared output named `metrics` wins.
#[test]
fn a_metrics_gather_lists_each_cells_metrics_json_and_the_stages_kind() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: mg
        matrix: { x: [1, 2] }
        stages:
          w:
            run: "if [ ${matrix.x} = 1 ]; then echo '{\"v\": 1}' > \"$ORCHESTRATOR_OUT_DIR/metrics.json\"; fi"
            outputs: []
          own:
            run: "echo mine ${matrix.x} > ${outputs.metrics}"
            outputs: [metrics]
          g:
            run: "cp ${inputs.m}/index.json ${outputs.index} && cat ${inputs.m}/x=1/metrics.json > ${outputs.one} && cp ${inputs.o}/index.json ${outputs.own} && cat ${inputs.o}/x=2/metrics > ${outputs.mine}"
            inputs: { m: "w.metrics[*]", o: "own.metrics[*]" }
            outputs: [index, one, own, mine]
        "#,
    );
    p.run(&["run", "p.yaml"]).success();
    let index: Value = serde_json::from_str(&read(&p, "results/mg/g/index")).unwrap();
    assert_eq!(
        index,
        serde_json::json!({
            "stage": "w", "kind": "run", "axes": ["x"], "output": "metrics",
            "cells": [
                {"cell": {"x": "1"}, "path": "x=1/metrics.json"},
                {"cell": {"x": "2"}, "path": null}
            ]
        })
    );
    assert_eq!(read(&p, "results/mg/g/one"), "{\"v\": 1}\n");
    let own: Value = serde_json::from_str(&read(&p, "results/mg/g/own")).unwrap();
    assert_eq!(own["cells"][1]["path"], "x=2/metrics");
    assert_eq!(read(&p, "results/mg/g/mine"), "mine 2\n");
}

/// Bad report inputs are errors at their place in the file, with the fix.
#[test]
fn report_stage_inputs_are_gathers_of_metrics_or_roc() {
    let p = Project::new();
    let yaml = |inputs: &str| {
        format!(
            "name: bad\nmatrix: {{ x: [1, 2] }}\nstages:\n  w:\n    run: \"echo ${{matrix.x}} > ${{outputs.o}}\"\n    outputs: [o]\n  t:\n    uses: report\n    inputs: {inputs}\n"
        )
    };
    p.file("a.yaml", &yaml("{ m: w.metrics }"));
    p.run(&["validate", "a.yaml"])
        .exit(2)
        .stderr_has("input `m`: `w.metrics` (the stage's metrics.json) is read as a gather")
        .stderr_has("a.yaml:9:")
        .stderr_has("hint: gather it: `\"w.metrics[*]\"`");
    p.file("b.yaml", &yaml("{ m: \"w.o[*]\" }"));
    p.run(&["validate", "b.yaml"])
        .exit(2)
        .stderr_has("input `m`: kind `report` does not read gathered `o`")
        .stderr_has("hint: it reads `STAGE.metrics[*]`, `STAGE.roc[*]`, e.g. `\"w.metrics[*]\"`");
    p.file("c.yaml", &yaml("{ m: ./x }"));
    p.run(&["validate", "c.yaml"])
        .exit(2)
        .stderr_has("input `m`: kind `report` reads gathers of the pipeline's stages, not a path");
    p.file(
        "e.yaml",
        &yaml("{ m: \"w.metrics[*]\" }\n    with: { aggregate: [y] }"),
    );
    p.run(&["validate", "e.yaml"])
        .exit(2)
        .stderr_has("`aggregate` names `y`, which is not an axis of a stage that `t` gathers")
        .stderr_has("e.yaml:10:")
        .stderr_has("hint: their axes are: `x`");
    p.file("d.yaml", &yaml("{}"));
    p.run(&["validate", "d.yaml"])
        .exit(2)
        .stderr_has("stage `t` (kind `report`) reads no gather");
}

/// Built-in kinds (the lite worker only): a `report` stage reads the prune's metrics by its kind
/// (Target %, Kept %, Ids) and gives `orchestrator report`'s CSV.
#[test]
fn a_report_stage_reads_built_in_kinds_metrics_by_their_kind() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
name: rk
matrix: { ratio: [0.5, 0.75], seed: [1, 2] }
stages:
  data:
    uses: synthetic-faces
    with: { identities: 8, images_per_identity: 10, size: 16, seed: 1, label_noise: 0.0,
            duplicates: 0.0, verification_identities: 2, pairs: 20, ijbc_subjects: 2 }
  score: { uses: score, inputs: { train: data.train }, with: { method: rand, seed: "${matrix.seed}" } }
  prune:
    uses: prune
    inputs: { scores: score.scores, labels: data.train }
    with: { target_ratio: "${matrix.ratio}", min_per_id: 1 }
  table:
    uses: report
    inputs: { prune: "prune.metrics[*]" }
    with: { aggregate: [seed] }
report: { stages: [prune], aggregate: [seed] }
"#,
    );
    p.run(&["run", "p.yaml"]).success();
    let stage_csv = read(&p, "results/rk/table/report/report.csv");
    let cmd = p.run(&["report", "p.yaml", "--format", "csv"]);
    cmd.success();
    assert_eq!(stage_csv, cmd.stdout());
    let mut lines = stage_csv.lines();
    assert_eq!(
        lines.next(),
        Some("ratio,n,Target %,Target % std,Kept %,Kept % std,Ids,Ids std,role,missing,over_target,warnings")
    );
    // Each column is the mean over the seeds of the prunes' own metrics (std of two equal: 0).
    let metrics = |seed: u32| -> Value {
        let rel = format!("results/rk/prune[ratio=0.5,seed={seed}]/metrics.json");
        serde_json::from_str(&read(&p, &rel)).unwrap()
    };
    let (m1, m2) = (metrics(1), metrics(2));
    let kept = |m: &Value| m["ratio"].as_f64().unwrap() * 100.0;
    let ids = |m: &Value| m["identities_kept"].as_f64().unwrap();
    assert_eq!((kept(&m1), ids(&m1)), (kept(&m2), ids(&m2)), "{m1} {m2}");
    let want = format!("0.5,2,50,0,{},0,{},0,cell,,false,", kept(&m1), ids(&m1));
    assert_eq!(lines.next(), Some(want.as_str()));
}
