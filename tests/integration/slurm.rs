//! `--executor slurm` against a real slurmctld/slurmd (`../shared/slurm/local-cluster.sh`, 4 fake
//! GPUs, 8 advertised CPUs). Each cluster test is `#[ignore]`d with the reason, so a plain
//! `cargo test` lists it as ignored; `make test` runs them with `--include-ignored` against a
//! cluster (it starts the local one when none answers), and there a missing cluster is a failure
//! ([`require_slurm`], called by [`Cluster::new`]). Every test puts a logging `sbatch` wrapper
//! first on PATH, so it knows exactly which jobs it submitted, with which options, when, and how
//! many times `sbatch` ran.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::support::{require_slurm, require_worker, Project};

fn real(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` is not on PATH"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One `sbatch` call as the wrapper saw it.
#[derive(Debug, Clone)]
struct Call {
    started: f64,
    id: String,
    args: String,
}

impl Call {
    /// How many attempts it submitted: the size of its `--array`, else one.
    fn tasks(&self) -> usize {
        let Some(spec) = self
            .args
            .split_whitespace()
            .find_map(|a| a.strip_prefix("--array=0-"))
        else {
            return 1;
        };
        spec.split('%').next().unwrap().parse::<usize>().unwrap() + 1
    }
}

/// A project whose PATH starts with `wrap/`: `sbatch` logs `start id args` per successful call
/// to `sbatch.calls`.
struct Cluster {
    p: Project,
}

impl Cluster {
    /// `@DIR@` in the pipeline is the project folder.
    fn new(pipeline: &str) -> Cluster {
        require_slurm();
        let p = Project::new();
        p.file(
            "p.yaml",
            &pipeline.replace("@DIR@", &p.root().display().to_string()),
        );
        let wrap = p.path("wrap/sbatch");
        p.file(
            "wrap/sbatch",
            &format!(
                "#!/bin/sh\nt=$(date +%s.%N)\nout=$({} \"$@\")\nrc=$?\n[ $rc -eq 0 ] && echo \"$t $out $*\" >> {}\necho \"$out\"\nexit $rc\n",
                real("sbatch").display(),
                p.path("sbatch.calls").display()
            ),
        );
        Command::new("chmod").arg("+x").arg(&wrap).status().unwrap();
        Cluster { p }
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.p.path("wrap").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn cmd(&self, extra: &[&str]) -> Command {
        let mut args = vec![
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--slurm-poll",
            "0.3",
            "--message-format",
            "human",
        ];
        args.extend_from_slice(extra);
        let mut c = self.p.cmd(&args);
        c.env("PATH", self.path_env());
        c
    }

    fn run(&self, extra: &[&str]) -> crate::support::Run {
        crate::support::Run {
            out: self.cmd(extra).output().expect("spawn orchestrator"),
        }
    }

    fn orchestrator(&self, args: &[&str]) -> crate::support::Run {
        crate::support::Run {
            out: self
                .p
                .cmd(args)
                .env("PATH", self.path_env())
                .output()
                .expect("spawn orchestrator"),
        }
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        self.cmd(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestrator")
    }

    fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(self.p.path("sbatch.calls"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ' ');
                Some(Call {
                    started: f.next()?.parse().ok()?,
                    id: f.next()?.split(';').next()?.to_string(),
                    args: f.next().unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    fn job_ids(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.id).collect()
    }

    /// Attempts submitted over all `sbatch` calls.
    fn tasks(&self) -> usize {
        self.calls().iter().map(Call::tasks).sum()
    }

    /// Our jobs (array tasks one by one) SLURM still has pending or running.
    fn live(&self) -> Vec<String> {
        let ids = self.job_ids();
        if ids.is_empty() {
            return Vec::new();
        }
        // A failed squeue (a busy controller) prints nothing, which must not read as "no job
        // left": ask again, and fail the test if the controller never answers.
        let t = Instant::now();
        let out = loop {
            let out = Command::new("squeue")
                .args(["-h", "-r", "-o", "%i %T", "-j", &ids.join(",")])
                .output()
                .unwrap();
            if out.status.success() {
                break out;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "squeue keeps failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Cluster) -> bool) {
        let t = Instant::now();
        while !ok(self) {
            assert!(
                t.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; SLURM has {:?} of our jobs",
                self.live()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ckpt` files the tasks of the requeue test wrote into their work dirs.
    fn checkpoints(&self) -> usize {
        std::fs::read_dir(self.p.path("cache/work"))
            .map(|dirs| {
                dirs.flatten()
                    .filter(|d| d.path().join("ckpt").exists())
                    .count()
            })
            .unwrap_or(0)
    }

    fn cancel_ours(&self) {
        let ids = self.job_ids();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed assertion must not leave jobs that block the next test's GPUs.
        self.cancel_ours();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("orchestrator did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = std::process::Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out.stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
}

fn files_named(dir: &Path, name: &str, acc: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name)
            && std::fs::metadata(&p).is_ok_and(|m| m.is_file())
        {
            acc.push(p);
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            files_named(&p, name, acc);
        }
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_sweep_of_200_cells_is_one_job_array() {
    let c = Cluster::new(&format!(
        "name: sweep\nmatrix: {{ i: [{}] }}\nstages:\n  s:\n    run: \"echo ${{matrix.i}} > ${{outputs.out}}\"\n    outputs: [out]\n",
        (1..=200).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    ));
    let r = c.run(&["--max-jobs", "50"]);
    r.success()
        .stderr_has("ran 200, cached 0, failed 0")
        .stderr_has("200 attempts of `s` submitted as job array");
    let calls = c.calls();
    assert_eq!(calls.len(), 1, "one sbatch call: {calls:?}");
    assert!(
        calls[0].args.contains("--array=0-199%50"),
        "{}",
        calls[0].args
    );
    for i in [1, 77, 200] {
        let out = c.p.path(&format!("results/sweep/s[i={i}]/out"));
        assert_eq!(std::fs::read_to_string(out).unwrap(), format!("{i}\n"));
    }
    // Per-task logs: SLURM wrote each task's output into its own run dir.
    let logs = c.orchestrator(&["logs", "p.yaml", "s[i=77]"]);
    logs.success()
        .stdout_has(&format!("[orchestrator] SLURM job {}_", calls[0].id));
    let status = c.orchestrator(&["status", "p.yaml"]);
    status
        .success()
        .stdout_has(&format!("job {}_", calls[0].id))
        .stdout_has("COMPLETED exit 0");
    c.run(&[]).success().stderr_has("ran 0, cached 200");
    assert_eq!(c.calls().len(), 1);
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_kill_9_at_three_instants_never_runs_finished_work_again() {
    // Two stages per cell: the `b`s become ready while `a`s finish, so submissions, job ends
    // and commits are spread over the run, and each kill lands in a different mix of them.
    let c = Cluster::new(&format!(
        r#"
        name: kills
        matrix: {{ i: [{}] }}
        stages:
          a:
            run: "sleep 1; echo a ${{matrix.i}} >> @DIR@/ran.txt; echo ${{matrix.i}} > ${{outputs.out}}"
            outputs: [out]
          b:
            run: "sleep 1; echo b ${{matrix.i}} >> @DIR@/ran.txt; cat ${{inputs.x}} > ${{outputs.out}}"
            inputs: {{ x: a.out }}
            outputs: [out]
        "#,
        (1..=12)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    // Every run of a stage command, over all four orchestrator runs.
    let ran = c.p.path("ran.txt");
    let lines = |c: &Cluster| lines_of(&c.p.path("ran.txt")).len();
    // 1: right after the first submission.
    let mut child = c.spawn(&[]);
    c.wait_for("the first sbatch call", Duration::from_secs(60), |c| {
        !c.calls().is_empty()
    });
    kill9(&mut child);
    // 2: while `a`s finish and `b`s are being submitted.
    let mut child = c.spawn(&[]);
    c.wait_for("8 stage runs", Duration::from_secs(120), |c| lines(c) >= 8);
    kill9(&mut child);
    // 3: late, when most `b`s have run but not all are committed.
    let mut child = c.spawn(&[]);
    c.wait_for("20 stage runs", Duration::from_secs(120), |c| {
        lines(c) >= 20
    });
    kill9(&mut child);
    let r = c.run(&[]);
    r.success();
    let mut seen = lines_of(&ran);
    seen.sort();
    let mut want: Vec<String> = (1..=12)
        .flat_map(|i| [format!("a {i}"), format!("b {i}")])
        .collect();
    want.sort();
    assert_eq!(seen, want, "every stage ran exactly once over four runs");
    assert_eq!(
        c.tasks(),
        24,
        "every attempt was submitted once: {:?}",
        c.calls()
    );
    for i in [1, 12] {
        let out = c.p.path(&format!("results/kills/b[i={i}]/out"));
        assert_eq!(std::fs::read_to_string(out).unwrap(), format!("{i}\n"));
    }
    c.run(&[]).success().stderr_has("ran 0, cached 24");
    assert!(
        std::fs::read_dir(c.p.path("cache/slurm/jobs"))
            .unwrap()
            .next()
            .is_none(),
        "every record is gone once its outputs are committed"
    );
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_ctrl_c_during_submission_stops_at_once_and_cancels_what_was_submitted() {
    // 30 stages with different names (and commands: one fingerprint would run once): 30
    // `sbatch` calls at 5 per second take 6 s.
    let mut yaml = String::from("name: sigint\nstages:\n");
    for i in 1..=30 {
        yaml.push_str(&format!(
            "  s{i}: {{ run: \"sleep 120; echo {i} > ${{outputs.out}}\", outputs: [out] }}\n"
        ));
    }
    let c = Cluster::new(&yaml);
    let mut child = c.spawn(&["--slurm-submit-rate", "5"]);
    c.wait_for("three sbatch calls", Duration::from_secs(60), |c| {
        c.calls().len() >= 3
    });
    let sigint_at = unix_now();
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_exit(&mut child, Duration::from_secs(60));
    let exited_after = unix_now() - sigint_at;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let calls = c.calls();
    let late: Vec<&Call> = calls
        .iter()
        .filter(|k| k.started > sigint_at + 1.0)
        .collect();
    assert!(late.is_empty(), "sbatch ran after Ctrl-C: {late:?}");
    assert!(
        calls.len() < 30,
        "submission went on: {} calls",
        calls.len()
    );
    assert!(
        stderr.contains("cancelled 30") && stderr.contains("failed 0"),
        "our own cancellations are not failures:\n{stderr}"
    );
    assert!(!stderr.contains("FAILED"), "{stderr}");
    assert!(c.live().is_empty(), "jobs left behind: {:?}", c.live());
    assert!(
        exited_after < 15.0,
        "exited {exited_after:.1} s after Ctrl-C"
    );
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_impossible_request_fails_before_any_submission() {
    let c = Cluster::new(
        r#"
        name: huge
        stages:
          fine:
            run: "echo > ${outputs.out}"
            outputs: [out]
          big:
            run: "echo > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 8 }
        "#,
    );
    c.run(&[])
        .exit(2)
        .stderr_has("stage `big` (p.yaml:")
        .stderr_has(
            "asks for 8 GPUs, but the largest node of SLURM partition `debug` (localhost) has 4",
        )
        .stderr_has("hint: lower its `resources.gpus` to at most 4");
    assert!(c.calls().is_empty(), "nothing was submitted");
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_gpu_stages_get_distinct_devices_and_at_most_four_at_once() {
    let c = Cluster::new(
        r#"
        name: gpus
        matrix: { i: [1, 2, 3, 4, 5, 6] }
        stages:
          g:
            run: "echo \"$CUDA_VISIBLE_DEVICES $(date +%s%N) ${matrix.i}\" > ${outputs.out}; sleep 3; date +%s%N >> ${outputs.out}"
            outputs: [out]
            resources: { gpus: 1, cpus: 1, mem_gb: 0.1, time_min: 5 }
          cpu:
            run: "echo \"cpu=[$CUDA_VISIBLE_DEVICES] threads=$ORCHESTRATOR_CPU_THREADS\" > ${outputs.out}"
            outputs: [out]
            resources: { cpus: 2 }
        "#,
    );
    c.run(&[]).success().stderr_has("ran 7");
    assert_eq!(c.tasks(), 7, "one attempt per stage instance");
    assert_eq!(c.calls().len(), 2, "the six GPU stages are one array");
    let mut outs = Vec::new();
    files_named(&c.p.path("results/gpus"), "out", &mut outs);
    let mut spans = Vec::new();
    for f in &outs {
        let text = std::fs::read_to_string(f).unwrap();
        if let Some(rest) = text.strip_prefix("cpu=") {
            assert_eq!(
                rest.trim(),
                "[] threads=2",
                "a CPU stage sees no GPU and gets its CPUs' threads"
            );
            continue;
        }
        let mut lines = text.lines();
        let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let end: u128 = lines.next().unwrap().trim().parse().unwrap();
        assert_eq!(
            first.len(),
            3,
            "a GPU stage got CUDA_VISIBLE_DEVICES from SLURM: {text:?}"
        );
        spans.push((first[0].to_string(), first[1].parse::<u128>().unwrap(), end));
    }
    assert_eq!(spans.len(), 6);
    let mut most = 0;
    for (dev, s, e) in &spans {
        // Running at the instant this stage started.
        most = most.max(spans.iter().filter(|(_, s2, e2)| s2 <= s && s < e2).count());
        let same = spans
            .iter()
            .filter(|(d, s2, e2)| d == dev && s2 < e && s < e2)
            .count();
        assert_eq!(
            same, 1,
            "GPU {dev} was given to two stages running at once: {spans:?}"
        );
    }
    assert!(
        most <= 4,
        "{most} GPU stages ran at once on 4 GPUs: {spans:?}"
    );
    assert!(c.live().is_empty());
    // Accounting: each GPU job's record carries its job id, state and GPUs; the report counts
    // GPU-hours (one GPU for ~3 s each).
    let status = c.orchestrator(&["status", "p.yaml", "--json"]);
    status.success();
    let rows: Vec<serde_json::Value> = status
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in rows.iter().filter(|r| r["instance"] != "cpu") {
        let job = &r["job"];
        assert_eq!(job["state"], "COMPLETED", "{r}");
        assert_eq!(job["gpus"], 1, "{r}");
        assert!(job["elapsed_s"].as_f64().unwrap() >= 3.0, "{r}");
        assert!(r["device"].as_str().unwrap().starts_with("gpu:1@"), "{r}");
    }
    let report = c.orchestrator(&["report", "p.yaml", "--format", "json"]);
    report.success();
    let v: serde_json::Value = serde_json::from_str(&report.stdout()).unwrap();
    let total: f64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["values"]["gpu_hours"].as_f64())
        .sum();
    assert!(
        total >= 6.0 * 3.0 / 3600.0,
        "6 GPU jobs of 3 s or more: {total} GPU-hours\n{v}"
    );
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_failed_job_fails_its_stage_naming_job_and_log_once() {
    let c = Cluster::new(
        r#"
        name: fails
        stages:
          bad:
            run: "echo boom-from-the-job; exit 3"
            outputs: [out]
          after:
            run: "cat ${inputs.x} > ${outputs.out}"
            inputs: { x: bad.out }
            outputs: [out]
        "#,
    );
    let r = c.run(&[]);
    r.exit(1);
    let ids = c.job_ids();
    assert_eq!(
        ids.len(),
        1,
        "the dependent stage is skipped, not submitted"
    );
    r.stderr_has(&format!(
        "SLURM job {} ended FAILED with exit code 3",
        ids[0]
    ))
    .stderr_has("/log")
    .stderr_has("boom-from-the-job")
    .stderr_has("skipped 1");
    for line in r.stderr().lines().filter(|l| l.contains("FAILED")) {
        assert!(line.matches("log:").count() <= 1, "{line}");
    }
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_rejected_submission_shows_sbatchs_message_and_command() {
    let c = Cluster::new(
        r#"
        name: rejected
        stages:
          odd:
            run: "echo > ${outputs.out}"
            outputs: [out]
            resources: { slurm: { constraint: no-such-feature } }
        "#,
    );
    c.run(&[])
        .exit(1)
        .stderr_has("SLURM rejected the job")
        .stderr_has("Invalid feature specification")
        .stderr_has("--constraint=no-such-feature");
    assert!(c.calls().is_empty());
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_ctrl_c_cancels_every_job_of_the_run() {
    let c = Cluster::new(
        r#"
        name: cancel
        matrix: { i: [1, 2, 3, 4, 5, 6] }
        stages:
          g:
            run: "sleep 120; echo ${matrix.i} > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 1 }
          later:
            run: "cat ${inputs.x} > ${outputs.out}"
            inputs: { x: g.out }
            outputs: [out]
        "#,
    );
    let mut child = c.spawn(&[]);
    // 6 GPU jobs on 4 GPUs: some run, the rest stay pending; cancel must take both kinds.
    c.wait_for(
        "6 submitted jobs, some running, some pending",
        Duration::from_secs(60),
        |c| {
            let live = c.live();
            live.len() == 6
                && live.iter().any(|l| l.ends_with("RUNNING"))
                && live.iter().any(|l| l.ends_with("PENDING"))
        },
    );
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_exit(&mut child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling 6 submitted job(s)"), "{stderr}");
    assert!(stderr.contains("failed 0, cancelled 6"), "{stderr}");
    assert!(c.live().is_empty(), "jobs left behind: {:?}", c.live());
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_restart_after_kill_9_reattaches_without_resubmitting() {
    let c = Cluster::new(
        r#"
        name: reattach
        stages:
          slow:
            run: "sleep 6; echo slow-done > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 1 }
          quick:
            run: "sleep 1; echo quick-done > ${outputs.out}"
            outputs: [out]
          last:
            run: "cat ${inputs.a} ${inputs.b} > ${outputs.out}"
            inputs: { a: slow.out, b: quick.out }
            outputs: [out]
        "#,
    );
    let mut child = c.spawn(&[]);
    c.wait_for("two submitted jobs", Duration::from_secs(60), |c| {
        c.job_ids().len() == 2
    });
    kill9(&mut child);
    let before = c.job_ids();
    assert!(!c.live().is_empty(), "jobs outlive the orchestrator");
    // `quick` ends while no orchestrator runs; `slow` is still running when we come back.
    std::thread::sleep(Duration::from_secs(2));
    let r = c.run(&[]);
    r.success()
        .stderr_has("re-attached to job")
        .stderr_has("ran 3");
    let after = c.job_ids();
    assert_eq!(after.len(), 3, "only `last` is new: {after:?}");
    assert_eq!(
        &after[..2],
        &before[..],
        "the first two jobs were not resubmitted"
    );
    let text = std::fs::read_to_string(c.p.path("results/reattach/last/out")).unwrap();
    assert_eq!(text, "slow-done\nquick-done\n");
    c.run(&[]).success().stderr_has("cached 3");
    assert_eq!(c.job_ids().len(), 3);
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_requeued_array_task_runs_again_and_resumes_from_its_work_dir() {
    let c = Cluster::new(
        r#"
        name: requeue
        matrix: { i: [1, 2] }
        stages:
          s:
            run: "if [ -f $ORCHESTRATOR_WORK_DIR/ckpt ]; then echo resumed ${matrix.i} > ${outputs.out}; else touch $ORCHESTRATOR_WORK_DIR/ckpt; sleep 600; echo fresh > ${outputs.out}; fi"
            outputs: [out]
        "#,
    );
    let mut child = c.spawn(&[]);
    // RUNNING in the queue comes before the script's first line: requeueing then would start the
    // task afresh (into its 600 s sleep), not resume it. Wait for both checkpoints, i.e. both
    // scripts well into their work, as a preempted job would be.
    c.wait_for("both tasks' checkpoints", Duration::from_secs(120), |c| {
        c.checkpoints() == 2
    });
    let task = format!("{}_0", c.job_ids()[0]);
    // What node failure or preemption does to a job: back to the queue, same task id.
    let t = Instant::now();
    while !Command::new("scontrol")
        .args(["requeue", &task])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "scontrol requeue {task} keeps failing"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let requeued = Instant::now();
    // SLURM holds a requeued job for two minutes (BeginTime) once it is pending again;
    // release it then.
    c.wait_for("the requeued task pending", Duration::from_secs(60), |c| {
        c.live().iter().any(|l| l.ends_with("PENDING"))
    });
    // But not within the second of the requeue: slurmd revoked the first attempt's credential
    // then, compares whole seconds, and kills a relaunch of the same second as "Job credential
    // revoked" (the task then ends FAILED, exit 1). Real requeues wait those two minutes.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(requeued.elapsed()));
    let t = Instant::now();
    while !Command::new("scontrol")
        .args(["update", &format!("JobId={task}"), "StartTime=now"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "scontrol update {task} StartTime=now keeps failing"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Done as the orchestrator sees it: its output committed (its link in results/), not merely
    // gone from the queue.
    let t = Instant::now();
    while !c.p.path("results/requeue/s[i=1]/out").exists() {
        if t.elapsed() > Duration::from_secs(240) {
            let live = c.live();
            let _ = child.kill();
            let out = wait_exit(&mut child, Duration::from_secs(10));
            let acct = Command::new("sacct")
                .args(["-D", "-n", "-P", "-o", "JobID,State,ExitCode", "-j"])
                .arg(c.job_ids()[0].as_str())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let mut logs = Vec::new();
            files_named(&c.p.path("cache/runs"), "log", &mut logs);
            let logs: Vec<String> = logs
                .iter()
                .map(|l| {
                    format!(
                        "{}:\n{}",
                        l.display(),
                        std::fs::read_to_string(l).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "the requeued task's output was not stored within 240 s; SLURM has {live:?}; sacct -D:\n{acct}\norchestrator's stderr:\n{}\nthe stages' logs:\n{}",
                String::from_utf8_lossy(&out.stderr),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The other task is still in its 600 s sleep (long enough whatever the controller's
    // scheduling delay after the requeue); stop it so the run ends.
    Command::new("scancel")
        .arg(format!("{}_1", c.job_ids()[0]))
        .status()
        .unwrap();
    let out = wait_exit(&mut child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was cancelled (scancel or an administrator)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(c.p.path("results/requeue/s[i=1]/out")).unwrap(),
        "resumed 1\n"
    );
    assert_eq!(c.calls().len(), 1, "a requeue is not a resubmission");
    let log = c.orchestrator(&["logs", "p.yaml", "s[i=1]"]);
    log.success().stdout_has("restart 1");
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_builtin_stages_run_through_the_worker() {
    require_worker();
    let c = Cluster::new(
        r#"
        name: small
        matrix: { r: [0.75, 0.5] }
        stages:
          # Enough images per identity that both ratios prune above the 5-per-identity floor:
          # two different kept lists, so no instance is a twin of another.
          data:    { uses: synthetic-faces, with: { identities: 8, images_per_identity: 24 } }
          score:   { uses: score, inputs: { train: data.train }, with: { method: rand } }
          prune:   { uses: prune, inputs: { scores: score.scores, labels: data.train }, with: { target_ratio: "${matrix.r}" } }
          relabel: { uses: relabel, inputs: { kept: prune.kept, labels: data.train } }
        "#,
    );
    c.run(&[]).success().stderr_has("ran 6");
    assert_eq!(c.tasks(), 6);
    for r in ["0.75", "0.5"] {
        let map = c.p.path(&format!("results/small/relabel[r={r}]/map"));
        assert!(std::fs::metadata(&map).is_ok(), "{} missing", map.display());
    }
    // What a stage reports as progress is in its SLURM log too.
    c.orchestrator(&["logs", "p.yaml", "score"])
        .success()
        .stdout_has("[progress] scores from");
    // The same pipeline locally is all cache hits: SLURM jobs ran the same invocations.
    c.p.run(&["run", "p.yaml", "--executor", "local"])
        .success()
        .stderr_has("cached 6");
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_shared_cache_check_refuses_tmp_on_a_multi_node_partition() {
    let c = Cluster::new(
        r#"
        name: shared
        stages:
          a: { run: "echo > ${outputs.out}", outputs: [out] }
        "#,
    );
    // A stand-in `sinfo` describing a two-node default partition; the temp project is in /tmp.
    c.p.file(
        "wrap/sinfo",
        "#!/bin/sh\necho 'debug*|n1|8|64000|gpu:4|infinite'\necho 'debug*|n2|8|64000|gpu:4|infinite'\n",
    );
    Command::new("chmod")
        .arg("+x")
        .arg(c.p.path("wrap/sinfo"))
        .status()
        .unwrap();
    c.run(&[])
        .exit(3)
        .stderr_has("node-local storage")
        .stderr_has("has 2 nodes")
        .stderr_has("--cache-dir");
    assert!(c.calls().is_empty());
}

#[test]
fn slurm_without_sbatch_names_path_and_suggests_local() {
    // Needs no cluster: PATH simply has no sbatch.
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: x\nstages:\n  a: { run: \"echo > ${outputs.out}\", outputs: [out] }\n",
    );
    let r = crate::support::Run {
        out: p
            .cmd(&["run", "p.yaml", "--executor", "slurm"])
            .env("PATH", "/nonexistent-bin")
            .output()
            .unwrap(),
    };
    r.exit(3)
        .stderr_has("`sbatch` is not on PATH (/nonexistent-bin)")
        .stderr_has("--executor local");
}
