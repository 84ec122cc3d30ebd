//! The command line as users meet it: planning a pipeline whose data is not there, `show` of the
//! instance the current `--set` values name, exit codes mapped from the engine's errors, one
//! spelling of the machine-output flag.

use std::path::Path;

use crate::support::Project;

/// The shipped full-scale pipeline plans without CASIA-WebFace and IJB-C: the stages that need
/// them say what they need and how to set it; `run` refuses before anything starts.
#[test]
fn the_paper_pipeline_plans_without_its_data_and_run_says_what_is_missing() {
    let p = Project::new();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/casia_paper.yaml");
    let file = file.to_str().unwrap();
    let cache = p.path("cache");
    let cache = cache.to_str().unwrap();
    let plan = p.run(&["plan", file, "--cache-dir", cache]);
    plan.success()
        .stdout_has("needs input data")
        .stdout_has("needs input `source` (missing): /data/faces_webface_112x112")
        .stdout_has("the CASIA-WebFace RecordIO folder faces_webface_112x112: train.rec, train.idx, property")
        .stdout_has("set it with `--set casia=PATH`")
        .stdout_has("set it with `--set ijbc=PATH`")
        .stdout_has("waits       train_original  waits on `data`")
        .stdout_has("5 need an input that is missing");
    let json = p.run(&["plan", file, "--cache-dir", cache, "--format", "json"]);
    json.success().stdout_has("\"state\": \"needs_input\"");

    let run = p.run(&["run", file, "--cache-dir", cache, "--gpus", "none"]);
    run.exit(2)
        .stderr_has("/data/faces_webface_112x112 does not exist: it is input `source` of stage `data`")
        .stderr_has("casia_paper.yaml:")
        .stderr_has("the CASIA-WebFace RecordIO folder faces_webface_112x112: train.rec, train.idx, property")
        .stderr_has("hint: set it with `--set casia=PATH`");
    // Nothing started: no run directory, no run record.
    let runs = std::fs::read_dir(p.path("cache/runs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "a stage started");
    let status = p.run(&["status", file, "--cache-dir", cache]);
    status.success().stdout_has("never run");
    assert!(!status.stdout().contains("running"), "{}", status.stdout());
}

/// An input without a `describe:` is described by the kind's port, and a path written in the
/// file (not a param) gets the restore hint.
#[test]
fn a_missing_input_is_described_by_its_port_without_a_param() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: noparam
        stages:
          data: { uses: recordio, inputs: { source: ./faces } }
        "#,
    );
    p.run(&["plan", "p.yaml"])
        .success()
        .stdout_has("needs input `source` (missing):")
        .stdout_has("(input `source` of kind `recordio`)")
        .stdout_has("restore the file, or point the pipeline at where it is now");
}

/// `show PIPELINE STAGE --set NAME=VALUE` shows the outputs of the instance those values make,
/// as `report` reads them; values that never ran are an error that says so.
#[test]
fn show_respects_set() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: seeds
        params: { seed: 1 }
        stages:
          s: { run: "echo seed ${params.seed} > ${outputs.out}", outputs: [out] }
          t: { run: "cat ${inputs.x} > ${outputs.out}", inputs: { x: s.out }, outputs: [out] }
        "#,
    );
    for seed in ["1", "2"] {
        let set = format!("seed={seed}");
        p.run(&["run", "p.yaml", "--set", &set]).success();
    }
    for seed in ["1", "2"] {
        let set = format!("seed={seed}");
        for stage in ["s", "t"] {
            let r = p.run(&["show", "p.yaml", stage, "out", "--set", &set]);
            r.success();
            let path = r.stdout().trim().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text, format!("seed {seed}\n"), "{stage} with {set}: {path}");
        }
    }
    // Without --set: the file's value (1).
    let r = p.run(&["show", "p.yaml", "t", "out"]);
    let text = std::fs::read_to_string(r.stdout().trim()).unwrap();
    assert_eq!(text, "seed 1\n");
    p.run(&["show", "p.yaml", "t", "--set", "seed=3"])
        .exit(2)
        .stderr_has(
            "stage `t` has no results for its current inputs and params (it has run with others)",
        )
        .stderr_has("hint: `orchestrator run p.yaml --set seed=3`");
}

/// `report` of a pipeline whose external input is missing is a table with that cell missing
/// (exit 0), not an environment failure (it was exit 3).
#[test]
fn report_with_a_missing_input_reports_what_there_is() {
    let p = Project::new();
    p.file("in.txt", "1\n");
    p.file(
        "p.yaml",
        r#"
        name: rep
        params: { data: ./in.txt }
        stages:
          s: { run: "cat ${inputs.x} > ${outputs.out}; echo '{}' > ${outputs.metrics}", inputs: { x: "${params.data}" }, outputs: [out, metrics] }
        report: { stages: [s] }
        "#,
    );
    p.run(&["run", "p.yaml"]).success();
    std::fs::remove_file(p.path("in.txt")).unwrap();
    p.run(&["report", "p.yaml"]).success();
    p.run(&["run", "p.yaml"])
        .exit(2)
        .stderr_has("hint: set it with `--set data=PATH`");
}

/// `--format json` is the machine-output flag of every command that has one; the spellings of
/// earlier versions still work.
#[test]
fn format_json_is_one_spelling_everywhere() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: fmt
        stages:
          s: { run: "echo hi > ${outputs.out}", outputs: [out] }
        "#,
    );
    for flag in ["--format", "--message-format"] {
        let r = p.run(&["run", "p.yaml", flag, "json"]);
        r.success();
        let last = r.stdout().lines().last().unwrap_or_default().to_string();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(v["event"], "summary", "{flag}: {last}");
    }
    for args in [&["--format", "json"][..], &["--json"][..]] {
        let mut a = vec!["status", "p.yaml"];
        a.extend_from_slice(args);
        let r = p.run(&a);
        r.success();
        let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
        assert_eq!(v["instance"], "s", "{args:?}");
    }
    for cmd in ["plan", "validate", "dag"] {
        let r = p.run(&[cmd, "p.yaml", "--format", "json"]);
        r.success();
        serde_json::from_str::<serde_json::Value>(&r.stdout())
            .unwrap_or_else(|e| panic!("{cmd}: {e}\n{}", r.stdout()));
    }
}
