//! Results while a sweep runs: the order ready instances launch in (finishing cells first) and
//! the live view's overall progress when output is not a terminal.

use crate::support::Project;

/// Four cells of train -> eval (cheap `run:` stages).
const CELLS: &str = r#"
name: cells
matrix:
  cell: [1, 2, 3, 4]
stages:
  train:
    run: "echo model ${matrix.cell} > ${outputs.model}"
    outputs: [model]
  eval:
    run: "cat ${inputs.model} > ${outputs.score}"
    inputs: { model: train.model }
    outputs: [score]
"#;

/// The run's history records as (status, instance), in the order the scheduler appended them:
/// `started` as it launches a job, `ok` once the job's outputs are stored.
fn history(p: &Project, pipeline: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(p.path(&format!("cache/history/{pipeline}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("status"), s("instance"))
        })
        .collect()
}

#[test]
fn an_evaluation_runs_as_soon_as_its_model_exists() {
    let p = Project::new();
    // Trains take a while (0.5 s), so each model is stored while the next train still runs.
    p.file(
        "p.yaml",
        &CELLS.replace("echo model", "sleep 0.5; echo model"),
    );
    p.run(&["run", "p.yaml", "--jobs", "1"]).success();
    // The rule, checked on every launch: once train[cell=c] is stored (its `ok` record), its
    // eval is ready and deeper than any train, so no train starts before that eval has.
    // (`--jobs 1` counts running jobs; a job whose outputs are being stored holds no slot.)
    let h = history(&p, "cells");
    let mut ready_evals = Vec::new();
    let mut started = Vec::new();
    let mut checked = 0;
    for (status, id) in &h {
        match status.as_str() {
            "ok" if id.starts_with("train") => ready_evals.push(id.replace("train", "eval")),
            "started" if id.starts_with("train") => {
                let waiting: Vec<_> = ready_evals
                    .iter()
                    .filter(|e| !started.contains(*e))
                    .collect();
                assert!(waiting.is_empty(), "{id} started before {waiting:?}: {h:?}");
                checked += usize::from(!ready_evals.is_empty());
                started.push(id.clone());
            }
            "started" => started.push(id.clone()),
            _ => {}
        }
    }
    assert_eq!(started.len(), 8, "{h:?}");
    assert!(
        checked > 0,
        "no train started after a model was stored: {h:?}"
    );
}

#[test]
fn the_plain_view_shows_done_of_total_and_an_eta_once_durations_are_known() {
    let p = Project::new();
    p.file("p.yaml", CELLS);
    // stderr is a pipe here: plain lines, no spinner.
    let r = p.run(&["run", "p.yaml", "--jobs", "1"]);
    r.success();
    let err = r.stderr();
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err}");
    // One line per settled instance, 0/8 to 8/8; the ETA appears once both stages have a
    // finished instance (before that, the evals' duration is unknown).
    let (mut k, mut eval_done) = (0, false);
    for line in err.lines() {
        if line.starts_with("     ran  eval[") {
            eval_done = true;
        }
        let Some(rest) = line.strip_prefix("progress  ") else {
            continue;
        };
        assert!(rest.starts_with(&format!("{k}/8 done, ")), "{line}\n{err}");
        assert!(rest.contains(" running, 0 failed"), "{line}");
        assert_eq!(rest.contains(", ETA "), eval_done, "{line}\n{err}");
        k += 1;
    }
    assert_eq!(k, 9, "{err}");
    assert!(
        err.contains("progress  8/8 done, 0 running, 0 failed, ETA 0.0s\n"),
        "{err}"
    );
    // The final summary follows.
    r.stderr_has("ran 8, cached 0, failed 0 in ");
    // A rerun of changed trains knows every duration from the start (the recorded ones).
    p.file("p.yaml", &CELLS.replace("echo model", "echo Model"));
    let again = p.run(&["run", "p.yaml", "--jobs", "1"]);
    again.success();
    let first = again
        .stderr()
        .lines()
        .find(|l| l.starts_with("progress  "))
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("progress  0/8 done, 1 running, 0 failed, ETA "),
        "{first}"
    );
    // A no-op rerun prints no progress, only its summary.
    let noop = p.run(&["run", "p.yaml"]);
    noop.success().stderr_has("ran 0, cached 8, failed 0");
    assert!(!noop.stderr().contains("progress  "), "{}", noop.stderr());
}

#[test]
fn json_output_has_overall_events() {
    let p = Project::new();
    p.file("p.yaml", CELLS);
    let r = p.run(&["run", "p.yaml", "--jobs", "1", "--message-format", "json"]);
    r.success();
    let overall: Vec<serde_json::Value> = r
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "overall")
        .collect();
    let done: Vec<u64> = overall
        .iter()
        .map(|v| v["done"].as_u64().unwrap())
        .collect();
    assert_eq!(done, (0..=8).collect::<Vec<_>>());
    assert!(overall.iter().all(|v| v["total"] == 8 && v["failed"] == 0));
    assert!(overall[1]["eta_s"].is_null());
    assert_eq!(overall[8]["eta_s"], 0.0);
}
