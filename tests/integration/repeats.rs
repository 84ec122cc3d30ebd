//! Sweeps as researchers run them (issue #19): repeats averaged by `report.aggregate` (mean, std,
//! n checked against each cell's own metrics.json), and results while a sweep still runs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{wait_for_file, Project};

/// method × size × seed; each cell's `acc` is size · (base + k · seed), a known number. The
/// cell `method=b,size=2,seed=3` waits for `release` in the project (when `gate`) or fails.
fn repeats_yaml(gate: bool) -> String {
    let last = if gate {
        "while [ ! -f \"$RELEASE\" ]; do sleep 0.05; done"
    } else {
        "exit 1"
    };
    format!(
        r#"
        name: rep
        matrix:
          method:
            - {{ name: a, base: 10, k: 1 }}
            - {{ name: b, base: 20, k: 3 }}
          size: [1, 2]
          seed: [1, 2, 3]
        stages:
          score:
            run: |
              if [ ${{matrix.method.name}} = b ] && [ ${{matrix.size}} = 2 ] && [ ${{matrix.seed}} = 3 ]; then {last}; fi
              echo "{{\"acc\": $(( ${{matrix.size}} * (${{matrix.method.base}} + ${{matrix.method.k}} * ${{matrix.seed}}) )), \"sub\": {{\"x\": 0.5}}}}" > "$ORCHESTRATOR_OUT_DIR/metrics.json"
              echo done > ${{outputs.out}}
            outputs: [out]
        report: {{ stages: [score], aggregate: [seed] }}
        "#
    )
}

/// The `acc` a cell wrote, read from its metrics.json under results/.
fn cell_acc(p: &Project, method: &str, size: u32, seed: u32) -> Option<f64> {
    let f = p.path(&format!(
        "results/rep/score[method={method},size={size},seed={seed}]/metrics.json"
    ));
    let text = std::fs::read_to_string(f).ok()?;
    serde_json::from_str::<Value>(&text).unwrap()["acc"].as_f64()
}

fn report_json(p: &Project) -> Value {
    let r = p.run(&["report", "p.yaml", "--format", "json"]);
    r.success();
    serde_json::from_str(&r.stdout()).expect("report --format json is JSON")
}

fn row<'a>(report: &'a Value, method: &str, size: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cell"]["method"] == method && r["cell"]["size"] == size)
        .unwrap_or_else(|| panic!("no row {method} {size} in {report:#}"))
}

/// Mean and sample standard deviation (n - 1).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn report_aggregate_averages_the_seed_axis_with_std_and_n() {
    let p = Project::new();
    p.file("p.yaml", &repeats_yaml(false));
    // One repeat fails: its cell averages the two that have a result.
    p.run(&["run", "p.yaml"]).exit(1);
    let report = report_json(&p);
    assert_eq!(report["axes"], serde_json::json!(["method", "size"]));
    assert_eq!(report["aggregate"], serde_json::json!(["seed"]));
    assert_eq!(report["rows"].as_array().unwrap().len(), 4, "{report:#}");
    for (method, size) in [("a", 1), ("a", 2), ("b", 1), ("b", 2)] {
        let accs: Vec<f64> = (1..=3)
            .filter_map(|seed| cell_acc(&p, method, size, seed))
            .collect();
        let expect_n = if (method, size) == ("b", 2) { 2 } else { 3 };
        assert_eq!(accs.len(), expect_n, "{method} {size}");
        let (mean, std) = mean_std(&accs);
        let r = row(&report, method, &size.to_string());
        assert_eq!(r["values"]["score.acc"].as_f64().unwrap(), mean, "{r:#}");
        assert_eq!(r["std"]["score.acc"].as_f64().unwrap(), std, "{r:#}");
        assert_eq!(r["n"]["score.acc"], expect_n, "{r:#}");
        // Nested numbers are columns too; equal repeats have std 0.
        assert_eq!(r["values"]["score.sub.x"], 0.5);
        assert_eq!(r["std"]["score.sub.x"], 0.0);
    }
    assert_eq!(
        row(&report, "b", "2")["missing"],
        serde_json::json!(["score[method=b,size=2,seed=3]"])
    );
    // The table shows mean ± std and n; the CSV keeps numbers and a std column.
    let md = p.run(&["report", "p.yaml"]);
    md.success()
        .stdout_has("| method | size | n | score acc | score sub.x |")
        .stdout_has("| a | 1 | 3 | 12.00 ± 1.00 | 0.50 ± 0.00 |")
        .stdout_has("| b | 2 | 2 | 49.00 ± 4.24 | 0.50 ± 0.00 |")
        .stdout_has("mean ± sample std (n − 1) over seed");
    let csv = p.run(&["report", "p.yaml", "--format", "csv"]);
    csv.success()
        .stdout_has(
            "method,size,n,score acc,score acc std,score sub.x,score sub.x std,role,missing,over_target,warnings\n",
        )
        .stdout_has("\nb,1,3,26,3,0.5,0,cell,,false,\n");
}

#[test]
fn report_aggregate_names_a_matrix_axis() {
    let p = Project::new();
    p.file(
        "p.yaml",
        &repeats_yaml(false).replace("aggregate: [seed]", "aggregate: [sede]"),
    );
    p.run(&["validate", "p.yaml"])
        .exit(2)
        .stderr_has("`report.aggregate` names an unknown matrix axis `sede`")
        .stderr_has("hint: did you mean `seed`?");
}

#[test]
fn report_and_results_work_while_the_sweep_runs() {
    let p = Project::new();
    p.file("p.yaml", &repeats_yaml(true));
    let release = p.path("release");
    let mut run = p
        .cmd(&["run", "p.yaml"])
        .env("RELEASE", &release)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Every other cell commits while one still runs: its results/ link is there already.
    for (method, size, seed) in [("a", 1, 1), ("b", 2, 1), ("b", 2, 2), ("b", 1, 3)] {
        wait_for_file(
            &p.path(&format!(
                "results/rep/score[method={method},size={size},seed={seed}]/metrics.json"
            )),
            Duration::from_secs(60),
        );
    }
    let during = report_json(&p);
    let r = row(&during, "b", "2");
    assert_eq!(r["n"]["score.acc"], 2, "{r:#}");
    assert_eq!(r["values"]["score.acc"], 49.0, "{r:#}");
    assert_eq!(
        r["missing"],
        serde_json::json!(["score[method=b,size=2,seed=3]"])
    );
    assert!(run.try_wait().unwrap().is_none(), "the run is still going");
    std::fs::write(&release, "").unwrap();
    assert!(run.wait().unwrap().success());
    let after = report_json(&p);
    let r = row(&after, "b", "2");
    assert_eq!(r["n"]["score.acc"], 3, "{r:#}");
    assert_eq!(r["values"]["score.acc"], 52.0, "{r:#}");
    assert_eq!(r["std"]["score.acc"], 6.0, "{r:#}");
}

#[test]
#[ignore = "requires the stage worker (`make build`); `make test` builds it"]
fn logs_of_a_built_in_training_stage_show_its_epochs_loss_lr_and_throughput() {
    crate::support::require_worker();
    let p = Project::new();
    p.file(
        "t.yaml",
        r#"
        name: t
        stages:
          data:
            uses: synthetic-faces
            with: { identities: 4, images_per_identity: 4, size: 16, seed: 1, label_noise: 0.0,
                    duplicates: 0.0, verification_identities: 2, pairs: 20, ijbc_subjects: 2 }
          retrain:
            uses: train
            inputs: { train: data.train }
            with: { network: iresnet-tiny, epochs: 2, batch_size: 8, lr: 0.1, lr_batch: 8 }
        "#,
    );
    p.run(&["run", "t.yaml", "--gpus", "none"]).success();
    let log = p.run(&["logs", "t.yaml", "retrain"]).success().stdout();
    for epoch in ["epoch 1/2", "epoch 2/2"] {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("[progress] {epoch}  loss ")))
            .unwrap_or_else(|| panic!("no summary of {epoch} in the log:\n{log}"));
        for field in ["  images_per_s ", "  lr 0.1000"] {
            assert!(line.contains(field), "{line}");
        }
    }
    assert!(
        !log.contains("[progress] {"),
        "progress events are rendered:\n{log}"
    );
}
