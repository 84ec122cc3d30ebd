//! Execution end to end: the real binary on `run:` pipelines in temp projects: caching, early
//! cutoff, crash safety under `kill -9`, GPU placement, and the error cases users hit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{wait_for_file, Project, Run};

/// a -> b -> c, d independent; `b` takes its command from the caller.
fn chain(b_cmd: &str) -> String {
    format!(
        r#"
        name: chain
        params:
          greeting: hello
        stages:
          a:
            run: "echo ${{params.greeting}} > ${{outputs.out}}"
            outputs: [out]
          b:
            run: "{b_cmd}"
            inputs: {{ x: a.out }}
            outputs: [out]
          c:
            run: "cat ${{inputs.x}} ${{inputs.x}} > ${{outputs.out}}"
            inputs: {{ x: b.out }}
            outputs: [out]
          d:
            run: "echo independent > ${{outputs.out}}"
            outputs: [out]
        "#
    )
}

fn started(stdout: &str) -> BTreeSet<String> {
    events(stdout, "started")
}

fn events(stdout: &str, kind: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .filter_map(|v| v["instance"].as_str().map(String::from))
        .collect()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rerun_runs_nothing_and_a_param_change_reruns_exactly_downstream() {
    let p = Project::new();
    p.file("p.yaml", &chain("cat ${inputs.x} > ${outputs.out}"));
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    assert_eq!(started(&r.stdout()), set(&["a", "b", "c", "d"]));
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    assert!(started(&r.stdout()).is_empty(), "{}", r.stdout());
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("ran 0, cached 4, failed 0");

    p.file(
        "p.yaml",
        &chain("cat ${inputs.x} > ${outputs.out}").replace("greeting: hello", "greeting: bye"),
    );
    p.run(&["plan", "p.yaml", "--explain"])
        .success()
        .stdout_has("will run  a")
        .stdout_has("changed fields: command")
        .stdout_has("waits on `a`");
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    assert_eq!(started(&r.stdout()), set(&["a", "b", "c"]));
    assert_eq!(
        std::fs::read_to_string(p.path("results/chain/c/out")).unwrap(),
        "bye\nbye\n"
    );
    let shown = p.run(&["show", "p.yaml", "c", "out"]);
    shown.success();
    assert_eq!(
        std::fs::read_to_string(shown.stdout().trim()).unwrap(),
        "bye\nbye\n"
    );
    p.run(&["status", "p.yaml"])
        .success()
        .stdout_has("cached")
        .stdout_has("cpu");
}

#[test]
fn byte_identical_rerun_does_not_invalidate_dependents() {
    let p = Project::new();
    p.file("p.yaml", &chain("cat ${inputs.x} > ${outputs.out}"));
    p.run(&["run", "p.yaml"]).success();
    // Different command, same bytes out: b reruns, c stays a cache hit (early cutoff).
    p.file("p.yaml", &chain("cat ${inputs.x} | cat > ${outputs.out}"));
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    assert_eq!(started(&r.stdout()), set(&["b"]));
    // Different bytes: c reruns too.
    p.file(
        "p.yaml",
        &chain("cat ${inputs.x} > ${outputs.out}; echo more >> ${outputs.out}"),
    );
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    assert_eq!(started(&r.stdout()), set(&["b", "c"]));
}

#[test]
fn failing_stage_skips_dependents_and_reports_its_log() {
    let p = Project::new();
    p.file("p.yaml", &chain("echo something broke >&2; exit 3"));
    let r = p.run(&["run", "p.yaml"]);
    r.exit(1)
        .stderr_has("error: stage `b` failed: exit code 3")
        .stderr_has("p.yaml:")
        .stderr_has("log: ")
        .stderr_has("| something broke")
        .stderr_has("skipped  c")
        .stderr_has("ran 2, cached 0, failed 1, skipped 1");
    p.run(&["status", "p.yaml"])
        .success()
        .stdout_has("failed")
        .stdout_has("never run");
    p.run(&["logs", "p.yaml", "b"])
        .success()
        .stdout_has("something broke");
}

#[test]
fn missing_declared_output_is_a_stage_failure() {
    let p = Project::new();
    p.file("p.yaml", &chain("true"));
    p.run(&["run", "p.yaml"])
        .exit(1)
        .stderr_has("did not write its declared output `out`")
        .stderr_has("hint: the command must create ${outputs.out}");
}

#[test]
fn corrupt_object_is_detected_and_the_stage_runs_again() {
    let p = Project::new();
    p.file("p.yaml", &chain("cat ${inputs.x} > ${outputs.out}"));
    p.run(&["run", "p.yaml"]).success();
    p.run(&["cache", "verify"]).success().stdout_has("ok: ");
    // The view is a hardlink of the object: writing through it corrupts the stored object.
    let obj = p
        .run(&["show", "p.yaml", "a", "out"])
        .stdout()
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, "tampered\n").unwrap();
    p.run(&["cache", "verify"])
        .exit(3)
        .stdout_has("corrupt object")
        .stderr_has("--repair");
    let r = p.run(&["run", "p.yaml", "--message-format", "json"]);
    r.success();
    assert_eq!(
        started(&r.stdout()),
        set(&["a"]),
        "a reruns; same bytes, so b and c stay cached"
    );
    p.run(&["cache", "verify"]).success();
    assert_eq!(
        std::fs::read_to_string(p.path("results/chain/a/out")).unwrap(),
        "hello\n"
    );
}

#[test]
fn deleted_external_input_is_a_clear_error_and_loses_nothing() {
    let p = Project::new();
    p.file("data/in.txt", "x\n");
    p.file(
        "p.yaml",
        r#"
        name: ext
        stages:
          a:
            run: "cat ${inputs.src} > ${outputs.out}"
            inputs: { src: ./data/in.txt }
            outputs: [out]
        "#,
    );
    p.run(&["run", "p.yaml"]).success();
    std::fs::remove_file(p.path("data/in.txt")).unwrap();
    p.run(&["run", "p.yaml"])
        .exit(2)
        .stderr_has("data/in.txt")
        .stderr_has("does not exist: it is input `src` of stage `a`");
    p.run(&["status", "p.yaml"]).success().stdout_has("cached");
    p.file("data/in.txt", "x\n");
    p.run(&["run", "p.yaml"]).success().stderr_has("cached 1");
}

#[test]
fn second_run_on_the_same_cache_is_refused() {
    let p = Project::new();
    let flag = p.path("started.flag");
    p.file(
        "p.yaml",
        &format!(
            r#"
            name: slow
            stages:
              a:
                run: "touch {}; sleep 30; echo > ${{outputs.out}}"
                outputs: [out]
            "#,
            flag.display()
        ),
    );
    let mut first = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&flag, Duration::from_secs(20));
    let r = p.run(&["run", "p.yaml"]);
    let _ = first.kill();
    let _ = first.wait();
    r.exit(3)
        .stderr_has("in use by another `orchestrator run` (pid")
        .stderr_has(&first.id().to_string());
    // The lock of the killed run is stale now: the next run takes it over.
    p.file(
        "p.yaml",
        "name: slow\nstages:\n  a:\n    run: \"echo > ${outputs.out}\"\n    outputs: [out]\n",
    );
    p.run(&["run", "p.yaml"]).success();
}

#[test]
fn read_only_cache_dir_is_a_clear_error() {
    let p = Project::new();
    p.file("p.yaml", &chain("cat ${inputs.x} > ${outputs.out}"));
    p.run(&["run", "p.yaml"]).success();
    let cache = p.path("cache");
    let ro = ReadOnly::make(&cache);
    assert!(
        ro.effective,
        "cannot make {} read-only here: as root, file modes do not stop writes and `chattr -R +i` failed (install e2fsprogs, put TMPDIR on a filesystem with the immutable attribute, or run the tests as a normal user)",
        cache.display()
    );
    p.file(
        "p.yaml",
        &chain("cat ${inputs.x} > ${outputs.out}; echo x >> ${outputs.out}"),
    );
    p.run(&["run", "p.yaml"])
        .exit(3)
        .stderr_has("not writable")
        .stderr_has("hint:");
    drop(ro);
    p.run(&["run", "p.yaml"]).success();
    p.run(&["cache", "verify"]).success();
}

/// Makes a folder tree read-only for the test (chmod; as root, which ignores modes, `chattr +i`).
struct ReadOnly<'a> {
    dir: &'a Path,
    chattr: bool,
    effective: bool,
}

impl<'a> ReadOnly<'a> {
    fn make(dir: &'a Path) -> Self {
        let _ = std::process::Command::new("chmod")
            .arg("-R")
            .arg("a-w")
            .arg(dir)
            .status();
        let writable = |d: &Path| {
            let probe = d.join(".probe");
            let ok = std::fs::write(&probe, b"x").is_ok();
            let _ = std::fs::remove_file(probe);
            ok
        };
        if !writable(&dir.join("tmp")) {
            return ReadOnly {
                dir,
                chattr: false,
                effective: true,
            };
        }
        let chattr = std::process::Command::new("chattr")
            .arg("-R")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ReadOnly {
            dir,
            chattr,
            effective: chattr && !writable(&dir.join("tmp")),
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.chattr {
            let _ = std::process::Command::new("chattr")
                .arg("-R")
                .arg("-i")
                .arg(self.dir)
                .status();
        }
        let _ = std::process::Command::new("find")
            .arg(self.dir)
            .args(["-type", "d", "-exec", "chmod", "u+w", "{}", "+"])
            .status();
    }
}

/// 30 stages in 6 layers of 5; each sleeps a little and writes a digest-like line of its inputs.
fn thirty() -> String {
    let mut s = String::from("name: thirty\nstages:\n");
    for layer in 0..6 {
        for k in 0..5 {
            let id = format!("s{layer}_{k}");
            let ms = 20 + ((layer * 7 + k * 13) % 5) * 30;
            if layer == 0 {
                s.push_str(&format!("  {id}:\n    run: \"sleep 0.{ms:03}; echo {id} > ${{outputs.out}}\"\n    outputs: [out]\n"));
            } else {
                let a = format!("s{}_{}", layer - 1, k);
                let b = format!("s{}_{}", layer - 1, (k + 1) % 5);
                s.push_str(&format!(
                    "  {id}:\n    run: \"sleep 0.{ms:03}; (echo {id}; cat ${{inputs.a}} ${{inputs.b}}) | cksum > ${{outputs.out}}\"\n    inputs: {{ a: {a}.out, b: {b}.out }}\n    outputs: [out]\n"
                ));
            }
        }
    }
    s
}

fn results(p: &Project) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(p.path("results/thirty")).unwrap() {
        let e = e.unwrap();
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read_to_string(e.path().join("out")).unwrap(),
        );
    }
    m
}

#[test]
fn kill_9_at_random_moments_then_rerun_resumes_exactly() {
    let reference = Project::new();
    reference.file("p.yaml", &thirty());
    reference.run(&["run", "p.yaml", "--jobs", "4"]).success();
    let want = results(&reference);
    assert_eq!(want.len(), 30);

    let p = Project::new();
    p.file("p.yaml", &thirty());
    // Deterministic "random" moments spread over a run (~1 s end to end with 4 jobs).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..5 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(60 + seed % 400);
        let mut child = p
            .cmd(&["run", "p.yaml", "--jobs", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SIGKILL: no cleanup runs in the orchestrator.
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("round {round}: killed after {delay:?}");
    }
    let finished: BTreeSet<String> = std::fs::read_to_string(p.path("cache/history/thirty.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status"] == "ok")
        .filter_map(|v| v["instance"].as_str().map(String::from))
        .collect();
    let r = p.run(&["run", "p.yaml", "--jobs", "4", "--message-format", "json"]);
    r.success();
    let rerun = started(&r.stdout());
    assert!(
        rerun.is_disjoint(&finished),
        "finished stages ran again: {:?}",
        rerun.intersection(&finished).collect::<Vec<_>>()
    );
    assert_eq!(rerun.len() + events(&r.stdout(), "cached").len(), 30);
    assert_eq!(results(&p), want);
    p.run(&["cache", "verify"]).success().stdout_has("ok: ");
}

#[test]
fn twelve_one_gpu_stages_share_four_gpus_without_overlap() {
    let p = Project::new();
    let mut s = String::from("name: gpus\nstages:\n");
    for i in 0..12 {
        s.push_str(&format!(
            "  g{i}:\n    run: \"echo \\\"$CUDA_VISIBLE_DEVICES $(date +%s%N)\\\" > ${{outputs.out}}; sleep 0.4; echo $(date +%s%N) >> ${{outputs.out}}; echo g{i} > /dev/null\"\n    outputs: [out]\n    resources: {{ gpus: 1 }}\n"
        ));
    }
    p.file("p.yaml", &s);
    p.run(&["run", "p.yaml", "--gpus", "0,1,2,3", "--jobs", "1"])
        .success();
    let mut spans = Vec::new();
    for i in 0..12 {
        let text = std::fs::read_to_string(p.path(&format!("results/gpus/g{i}/out"))).unwrap();
        let nums: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(nums.len(), 3, "{text}");
        spans.push((
            nums[0].to_string(),
            nums[1].parse::<u128>().unwrap(),
            nums[2].parse::<u128>().unwrap(),
        ));
    }
    assert_eq!(
        spans.iter().map(|s| s.0.clone()).collect::<BTreeSet<_>>(),
        set(&["0", "1", "2", "3"])
    );
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            assert!(
                !(a.0 == b.0 && a.1 < b.2 && b.1 < a.2),
                "two stages on GPU {} at once: {a:?} {b:?}",
                a.0
            );
        }
    }
    let max_concurrent = spans
        .iter()
        .map(|a| spans.iter().filter(|b| b.1 <= a.1 && a.1 < b.2).count())
        .max()
        .unwrap();
    assert_eq!(
        max_concurrent, 4,
        "all four GPUs busy at once (with --jobs 1: GPU stages do not take CPU slots)"
    );
}

#[test]
fn gc_and_rebuild_index_keep_the_latest_results() {
    let p = Project::new();
    p.file(
        "p.yaml",
        &chain("cat ${inputs.x} > ${outputs.out}; echo 1 >> ${outputs.out}"),
    );
    p.run(&["run", "p.yaml"]).success();
    p.file(
        "p.yaml",
        &chain("cat ${inputs.x} > ${outputs.out}; echo 2 >> ${outputs.out}"),
    );
    p.run(&["run", "p.yaml"]).success();
    p.run(&["gc", "--dry-run"])
        .success()
        .stdout_has("would remove 2 objects");
    p.run(&["gc"])
        .success()
        .stdout_has("removed 2 objects")
        .stdout_has("2 manifests");
    std::fs::remove_dir_all(p.path("cache/index")).unwrap();
    p.run(&["cache", "rebuild-index"])
        .success()
        .stdout_has("from 4 manifests");
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("ran 0, cached 4");
}

#[test]
fn an_error_inside_the_run_cancels_running_stages_and_is_reported_once() {
    let p = Project::new();
    // `a` breaks the cache's history file (a folder where the file was) once it has run, so
    // recording its success fails inside the scheduler loop while `slow` is still running.
    p.file(
        "p.yaml",
        r#"
        name: broken
        stages:
          a:
            run: "echo a > ${outputs.out}; h=$ORCHESTRATOR_WORK_DIR/../../history/broken.jsonl; rm -f $h; mkdir $h"
            outputs: [out]
          slow:
            run: "sleep 30; echo > ${outputs.out}; touch slow-finished"
            outputs: [out]
          after:
            run: "cat ${inputs.x} > ${outputs.out}"
            inputs: { x: a.out }
            outputs: [out]
        "#,
    );
    let t = Instant::now();
    let r = p.run(&["run", "p.yaml", "-j", "2"]);
    r.exit(3)
        .stderr_has("stopping after an error (reported at the end): launching nothing more; cancelling 1 running stage(s)")
        .stderr_has("cancelled 1")
        .stderr_has("stopped: what finished is saved");
    assert_eq!(
        r.stderr().matches("cannot write history").count(),
        1,
        "reported once:\n{}",
        r.stderr()
    );
    assert!(
        r.stderr().lines().last().unwrap().starts_with("error: "),
        "the error comes last, after the summary:\n{}",
        r.stderr()
    );
    assert!(
        !p.path("slow-finished").exists(),
        "`slow` was cancelled, not awaited"
    );
    assert!(t.elapsed() < Duration::from_secs(25));
    // What was committed before the error stays: repaired, the next run only runs the rest.
    std::fs::remove_dir(p.path("cache/history/broken.jsonl")).unwrap();
    p.run(&["run", "p.yaml"])
        .success()
        .stderr_has("ran 2, cached 1");
}

#[test]
fn every_stage_gets_its_share_of_the_cores_as_a_thread_budget() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: threads
        stages:
          one:
            run: "echo $ORCHESTRATOR_CPU_THREADS $OMP_NUM_THREADS $MKL_NUM_THREADS > ${outputs.out}"
            outputs: [out]
          all:
            run: "echo $ORCHESTRATOR_CPU_THREADS > ${outputs.out}"
            outputs: [out]
            resources: { cpus: 64 }
          own:
            run: "echo $ORCHESTRATOR_CPU_THREADS $OMP_NUM_THREADS > ${outputs.out}"
            outputs: [out]
            env: { OMP_NUM_THREADS: "7" }
        "#,
    );
    let jobs = 4;
    p.run(&["run", "p.yaml", "-j", &jobs.to_string()]).success();
    let read =
        |s: &str| std::fs::read_to_string(p.path(&format!("results/threads/{s}/out"))).unwrap();
    let share = (cores / jobs).max(1);
    assert_eq!(read("one"), format!("{share} {share} {share}\n"));
    // `cpus: 64` is clamped to the 4 slots there are: every core.
    assert_eq!(
        read("all"),
        format!("{}\n", (4 * cores / jobs).clamp(1, cores))
    );
    assert_eq!(
        read("own"),
        format!("{share} 7\n"),
        "a stage's own env wins"
    );
}

/// The engine binary must start without libtorch (a login node without CUDA runs `plan`): none of
/// its dynamic dependencies may be libtorch or one of its parts.
#[test]
fn the_engine_binary_does_not_link_libtorch() {
    let out = std::process::Command::new("readelf")
        .args(["--dynamic", "--wide"])
        .arg(crate::support::bin())
        .output()
        .expect("run readelf (binutils, which the Rust linker needs anyway)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        needed.iter().any(|n| n.starts_with("libc.so")),
        "readelf output not understood: {text}"
    );
    let torch: Vec<&&str> = needed
        .iter()
        .filter(|n| {
            ["torch", "c10", "cuda", "gomp"]
                .iter()
                .any(|t| n.contains(t))
        })
        .collect();
    assert!(
        torch.is_empty(),
        "the engine links {torch:?} (all: {needed:?})"
    );
}

/// `--gpus auto` (the default) asks `nvidia-smi` only when a stage that asks for GPUs has to run,
/// once per run: a CPU-only pipeline and a fully cached one never look.
#[test]
fn gpus_are_discovered_only_when_a_gpu_stage_has_to_run() {
    let p = Project::new();
    let marker = p.path("nvidia-smi-calls");
    p.file(
        "bin/nvidia-smi",
        &format!(
            "#!/bin/sh\necho called >> '{}'\necho '0, 81920 MiB'\necho '1, 81920 MiB'\n",
            marker.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        p.path("bin/nvidia-smi"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        p.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    p.file(
        "cpu.yaml",
        r#"
        name: cpu
        stages:
          a:
            run: "echo a > ${outputs.out}"
            outputs: [out]
        "#,
    );
    p.file(
        "gpu.yaml",
        r#"
        name: gpu
        stages:
          g:
            run: "echo \"[$CUDA_VISIBLE_DEVICES]\" > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 1 }
        "#,
    );
    p.file(
        "big.yaml",
        r#"
        name: big
        stages:
          g:
            run: "echo no > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 3 }
        "#,
    );
    let run = |file: &str| {
        let out = p
            .cmd(&["run", file])
            .env("PATH", &path)
            .output()
            .expect("spawn orchestrator");
        Run { out }
    };
    let calls = || {
        std::fs::read_to_string(&marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    run("cpu.yaml").success();
    assert_eq!(calls(), 0, "a CPU-only pipeline looked for GPUs");
    run("gpu.yaml").success();
    assert_eq!(calls(), 1, "one look per run that needs GPUs");
    let got = std::fs::read_to_string(p.path("results/gpu/g/out")).unwrap();
    assert!(got == "[0]\n" || got == "[1]\n", "{got:?}");
    run("gpu.yaml").success().stderr_has("ran 0, cached 1");
    assert_eq!(calls(), 1, "a cached run looked for GPUs");
    run("big.yaml")
        .exit(2)
        .stderr_has("asks for 3 GPUs but this run has 2");
    assert_eq!(calls(), 2);
}
