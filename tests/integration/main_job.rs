//! The shipped pipelines end to end through the real binaries (`orchestrator` + the
//! `orchestrator-stage` worker that `make build` puts beside it), shrunk with `--set` so that
//! they run in seconds: the main job runs and reruns as a no-op; the sweep, interrupted once
//! with Ctrl-C and once with `kill -9`, resumes to the same report as an uninterrupted sweep
//! without running any finished stage twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::bin;

/// Small enough for a 2-core CI machine; `epochs` > the sweep's DynUnc window (5).
const SMALL: &[&str] = &[
    "--set",
    "identities=24",
    "--set",
    "images_per_identity=10",
    "--set",
    "epochs=6",
    "--set",
    "batch_size=32",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_worker() {
    let worker = bin().with_file_name("orchestrator-stage");
    assert!(
        worker.exists(),
        "{} is missing: build it with `make build` (the README's `make test` does)",
        worker.display()
    );
}

fn orchestrator(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(repo())
        .args(args)
        .args([
            "--cache-dir",
            cache.to_str().unwrap(),
            "--gpus",
            "none",
            "--message-format",
            "json",
        ])
        .env("NO_COLOR", "1");
    c
}

fn run_args(pipeline: &str) -> Vec<&str> {
    let mut a = vec!["run", pipeline];
    a.extend_from_slice(SMALL);
    a
}

/// Events of one `run --message-format json` (stdout, one JSON object per line).
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn ids_with(events: &[Value], kind: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .filter_map(|e| e["instance"].as_str().map(String::from))
        .collect()
}

/// Start a run, return once `n` stages have finished; the rest of its events arrive through
/// the returned handle (joined after the child exits).
fn start_and_wait_for(
    cache: &Path,
    pipeline: &str,
    n: usize,
) -> (Child, Vec<Value>, std::thread::JoinHandle<Vec<Value>>) {
    let mut child = orchestrator(cache, &run_args(pipeline))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut finished = 0;
    while finished < n {
        let Some(Ok(line)) = lines.next() else { break };
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["event"] == "finished" {
                finished += 1;
            }
            seen.push(v);
        }
    }
    assert_eq!(
        finished, n,
        "the run ended before {n} stages finished: {seen:?}"
    );
    let rest = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect()
    });
    (child, seen, rest)
}

/// The report's values without the training times (wall clock, never reproducible).
fn report_values(cache: &Path, pipeline: &str) -> BTreeMap<String, Value> {
    let mut args = vec!["report", pipeline, "--format", "json"];
    args.extend_from_slice(SMALL);
    let out = Command::new(bin())
        .current_dir(repo())
        .args(&args)
        .args(["--cache-dir", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let mut values = r["values"].clone();
        values.as_object_mut().unwrap().remove("train_minutes");
        assert!(
            r["missing"].as_array().unwrap().is_empty(),
            "a cell is missing: {r}"
        );
        rows.insert(format!("{}{}", r["role"], r["cell"]), values);
    }
    rows
}

#[test]
fn main_job_runs_end_to_end_and_reruns_as_a_noop() {
    require_worker();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = orchestrator(&cache, &run_args("pipelines/diffprob_50.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "main job failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(ids_with(&ev, "finished").len(), 12, "every stage runs once");

    let again = orchestrator(&cache, &run_args("pipelines/diffprob_50.yaml"))
        .output()
        .unwrap();
    assert!(again.status.success());
    let ev = events(&String::from_utf8_lossy(&again.stdout));
    assert!(
        ids_with(&ev, "started").is_empty(),
        "a rerun runs nothing: {ev:?}"
    );
    assert_eq!(ids_with(&ev, "cached").len(), 12);

    let rows = report_values(&cache, "pipelines/diffprob_50.yaml");
    assert_eq!(rows.len(), 2, "baseline + the 50 % cell: {rows:?}");
    for (row, v) in &rows {
        let acc = v["verify.pairs"]
            .as_f64()
            .unwrap_or_else(|| panic!("{row}: no accuracy in {v}"));
        assert!((50.0..=100.0).contains(&acc), "{row}: accuracy {acc}");
        assert!(
            v["ijbc.1e-04"].as_f64().is_some(),
            "{row}: no IJB-C TAR in {v}"
        );
    }
    let kept = rows.iter().find(|(k, _)| k.contains("cell")).unwrap().1["kept_percent"]
        .as_f64()
        .unwrap();
    // At this size the floor of 5 samples per identity keeps a little more than asked.
    assert!((50.0..60.0).contains(&kept), "kept {kept} %");
}

#[test]
fn sweep_interrupted_by_ctrl_c_and_kill_9_resumes_to_the_same_report() {
    require_worker();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let sweep = "pipelines/sweep.yaml";

    // Interrupted twice, then resumed.
    let (mut child, mut first, rest) = start_and_wait_for(&a, sweep, 8);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    first.extend(rest.join().unwrap());
    assert_eq!(status.code(), Some(130), "first Ctrl-C: graceful stop");
    let (mut child, mut second, rest) = start_and_wait_for(&a, sweep, 10);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    second.extend(rest.join().unwrap());
    let last = orchestrator(&a, &run_args(sweep)).output().unwrap();
    assert!(
        last.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&last.stderr)
    );
    let third = events(&String::from_utf8_lossy(&last.stdout));

    // No stage that finished ran again later.
    let mut done: BTreeSet<String> = BTreeSet::new();
    for (i, run) in [&first, &second, &third].iter().enumerate() {
        let started = ids_with(run, "started");
        let again: Vec<&String> = started.intersection(&done).collect();
        assert!(
            again.is_empty(),
            "run {}: finished stages ran again: {again:?}",
            i + 1
        );
        done.extend(ids_with(run, "finished"));
    }
    assert_eq!(
        done.len(),
        69,
        "every instance of the sweep finished exactly once"
    );

    // Same report as an uninterrupted sweep.
    let straight = orchestrator(&b, &run_args(sweep)).output().unwrap();
    assert!(straight.status.success());
    assert_eq!(report_values(&a, sweep), report_values(&b, sweep));
}
