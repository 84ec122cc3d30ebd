//! `--executor slurm` against a real slurmctld/slurmd (`/work/shared/slurm/local-cluster.sh`,
//! 4 fake GPUs). Each cluster test is `#[ignore]`d with the reason, so a plain `cargo test` lists
//! it as ignored; `make test` runs them with `--include-ignored` against a cluster (it starts the
//! local one when none answers), and there a missing cluster is a failure. Every test puts a logging `sbatch` wrapper first on PATH, so it knows exactly which
//! jobs it submitted (and how many times `sbatch` ran).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Project;

fn real(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` is not on PATH"))
}

/// A project whose PATH starts with `wrap/`: `sbatch` logs each job id to `sbatch.calls`.
struct Cluster {
    p: Project,
}

impl Cluster {
    fn new(pipeline: &str) -> Cluster {
        let p = Project::new();
        p.file("p.yaml", pipeline);
        let wrap = p.path("wrap/sbatch");
        p.file(
            "wrap/sbatch",
            &format!(
                "#!/bin/sh\nout=$({} \"$@\")\nrc=$?\n[ $rc -eq 0 ] && echo \"$out\" >> {}\necho \"$out\"\nexit $rc\n",
                real("sbatch").display(),
                p.path("sbatch.calls").display()
            ),
        );
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&wrap)
            .status()
            .unwrap();
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

    fn spawn(&self) -> Child {
        self.cmd(&[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestrator")
    }

    fn job_ids(&self) -> Vec<String> {
        std::fs::read_to_string(self.p.path("sbatch.calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(';').next().unwrap_or("").to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Our jobs SLURM still has pending or running.
    fn live(&self) -> Vec<String> {
        let ids = self.job_ids();
        if ids.is_empty() {
            return Vec::new();
        }
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i %T", "-j", &ids.join(",")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut(&Cluster) -> bool) {
        let t = Instant::now();
        while !ok(self) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
        std::thread::sleep(Duration::from_millis(100));
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

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_gpu_stages_get_distinct_devices_and_at_most_four_at_once() {
    crate::support::require_slurm();
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
            run: "echo \"cpu=[$CUDA_VISIBLE_DEVICES]\" > ${outputs.out}"
            outputs: [out]
        "#,
    );
    c.run(&[]).success().stderr_has("ran 7");
    assert_eq!(c.job_ids().len(), 7, "one sbatch per stage instance");
    let mut outs = Vec::new();
    files_named(&c.p.path("results/gpus"), "out", &mut outs);
    let mut spans = Vec::new();
    for f in &outs {
        let text = std::fs::read_to_string(f).unwrap();
        if let Some(rest) = text.strip_prefix("cpu=") {
            assert_eq!(rest.trim(), "[]", "a CPU stage sees no GPU");
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
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_failed_job_fails_its_stage_naming_job_and_log() {
    crate::support::require_slurm();
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
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_rejected_submission_shows_sbatchs_message_and_resources() {
    crate::support::require_slurm();
    let c = Cluster::new(
        r#"
        name: huge
        stages:
          big:
            run: "echo > ${outputs.out}"
            outputs: [out]
            resources: { gpus: 9 }
        "#,
    );
    c.run(&[])
        .exit(1)
        .stderr_has("SLURM rejected stage `big`")
        .stderr_has("Requested node configuration is not available")
        .stderr_has("gpus 9")
        .stderr_has("--gres=gpu:9");
    assert!(c.job_ids().is_empty());
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_ctrl_c_cancels_every_job_of_the_run() {
    crate::support::require_slurm();
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
    let mut child = c.spawn();
    // 6 GPU jobs on 4 GPUs (fewer if the node has fewer CPUs): some run, the rest stay
    // pending; cancel must take both kinds.
    c.wait_for("6 submitted jobs, some running, some pending", |c| {
        let live = c.live();
        c.job_ids().len() == 6
            && live.iter().any(|l| l.ends_with("RUNNING"))
            && live.iter().any(|l| l.ends_with("PENDING"))
    });
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_exit(&mut child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling 6 submitted job(s)"), "{stderr}");
    assert!(c.live().is_empty(), "jobs left behind: {:?}", c.live());
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_restart_after_kill_9_reattaches_without_resubmitting() {
    crate::support::require_slurm();
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
    let mut child = c.spawn();
    c.wait_for("two submitted jobs", |c| c.job_ids().len() == 2);
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let before = c.job_ids();
    assert!(
        c.live()
            .iter()
            .any(|l| l.starts_with(&format!("{} ", before[0]))
                || l.starts_with(&format!("{} ", before[1]))),
        "jobs outlive the orchestrator"
    );
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
fn slurm_requeued_job_runs_again_and_resumes_from_its_work_dir() {
    crate::support::require_slurm();
    let c = Cluster::new(
        r#"
        name: requeue
        stages:
          s:
            run: "if [ -f $ORCHESTRATOR_WORK_DIR/ckpt ]; then echo resumed > ${outputs.out}; else touch $ORCHESTRATOR_WORK_DIR/ckpt; sleep 60; echo fresh > ${outputs.out}; fi"
            outputs: [out]
        "#,
    );
    let mut child = c.spawn();
    c.wait_for("the job running", |c| {
        c.live().iter().any(|l| l.ends_with("RUNNING"))
    });
    let id = c.job_ids()[0].clone();
    // What node failure or preemption does to a job: back to the queue, same job id.
    let t = Instant::now();
    while !Command::new("scontrol")
        .args(["requeue", &id])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "scontrol requeue {id} keeps failing"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // SLURM holds a requeued job for two minutes (BeginTime) once it is pending again;
    // release it then.
    c.wait_for("the requeued job pending", |c| {
        c.live().iter().any(|l| l.ends_with("PENDING"))
    });
    Command::new("scontrol")
        .args(["update", &format!("JobId={id}"), "StartTime=now"])
        .status()
        .unwrap();
    let out = wait_exit(&mut child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(c.p.path("results/requeue/s/out")).unwrap(),
        "resumed\n"
    );
    assert_eq!(c.job_ids().len(), 1, "a requeue is not a resubmission");
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_builtin_stages_run_through_the_worker() {
    crate::support::require_slurm();
    crate::support::require_worker();
    let c = Cluster::new(
        r#"
        name: small
        matrix: { r: [0.5, 0.25] }
        stages:
          data:    { uses: synthetic-faces, with: { identities: 8, images_per_identity: 3 } }
          score:   { uses: score, inputs: { train: data.train }, with: { method: rand } }
          prune:   { uses: prune, inputs: { scores: score.scores, labels: data.train }, with: { target_ratio: "${matrix.r}" } }
          relabel: { uses: relabel, inputs: { kept: prune.kept, labels: data.train } }
        "#,
    );
    c.run(&[]).success().stderr_has("ran 6");
    assert_eq!(c.job_ids().len(), 6);
    for r in ["0.5", "0.25"] {
        let map = c.p.path(&format!("results/small/relabel[r={r}]/map"));
        assert!(std::fs::metadata(&map).is_ok(), "{} missing", map.display());
    }
    // The same pipeline locally is all cache hits: SLURM jobs ran the same invocations.
    c.p.run(&["run", "p.yaml", "--executor", "local"])
        .success()
        .stderr_has("cached 6");
}

#[test]
#[ignore = "requires a SLURM cluster (sbatch + a slurmctld that answers); `make test` starts the local one"]
fn slurm_shared_cache_check_refuses_tmp_on_a_multi_node_partition() {
    crate::support::require_slurm();
    let c = Cluster::new(
        r#"
        name: shared
        stages:
          a: { run: "echo > ${outputs.out}", outputs: [out] }
        "#,
    );
    // A stand-in `sinfo` describing a two-node default partition; the temp project is in /tmp.
    c.p.file("wrap/sinfo", "#!/bin/sh\necho 'debug* 2'\n");
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
    assert!(c.job_ids().is_empty());
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
