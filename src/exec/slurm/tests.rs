use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::cluster::{gres_gpus, parse_config, parse_sinfo, parse_time_min};
use super::records::{self, Batch, Record};
use super::script::{self, Submission};
use super::states::{self, parse_elapsed, parse_rss_mb};
use super::*;
use crate::exec::backend::JobSpec;
use crate::pipeline::{Action, Instance, LiteMap};

fn spec() -> JobSpec {
    JobSpec {
        job: 0,
        stage_id: "train[lr=0.1]".into(),
        argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
        env: vec![
            ("CUDA_VISIBLE_DEVICES".into(), "0".into()),
            ("ORCHESTRATOR_DEVICE".into(), "cuda".into()),
            ("ORCHESTRATOR_CPU_THREADS".into(), "1".into()),
            ("OMP_NUM_THREADS".into(), "1".into()),
            ("MKL_NUM_THREADS".into(), "1".into()),
            // A stage's own `env:` comes after the engine's budget and wins.
            ("OMP_NUM_THREADS".into(), "3".into()),
        ],
        cwd: PathBuf::from("/proj"),
        log: PathBuf::from("/c/runs/k.1/log"),
        run_dir: PathBuf::from("/c/runs/k.1"),
        outputs: BTreeMap::new(),
        timeout: None,
    }
}

#[test]
fn states_map_to_outcomes() {
    assert_eq!(classify("PENDING"), Seen::Waiting);
    assert_eq!(classify("RUNNING"), Seen::Waiting);
    assert_eq!(classify("COMPLETING"), Seen::Waiting);
    assert_eq!(classify("REQUEUED"), Seen::Waiting);
    assert_eq!(classify("COMPLETED"), Seen::Ended("COMPLETED".into()));
    assert_eq!(classify("CANCELLED+"), Seen::Ended("CANCELLED".into()));
    assert_eq!(classify("CANCELLED by 0"), Seen::Ended("CANCELLED".into()));
    assert_eq!(classify("TIMEOUT"), Seen::Ended("TIMEOUT".into()));
    assert_eq!(
        classify("NODE_FAIL"),
        Seen::MaybeRequeued("NODE_FAIL".into())
    );
    assert_eq!(
        classify("PREEMPTED"),
        Seen::MaybeRequeued("PREEMPTED".into())
    );
}

#[test]
fn parses_squeue_scontrol_and_sacct() {
    let m = parse_squeue("12|RUNNING\n13_4|PENDING\n\n");
    assert_eq!(m.get("12").map(String::as_str), Some("RUNNING"));
    assert_eq!(m.get("13_4").map(String::as_str), Some("PENDING"));
    assert_eq!(states::base_id("13_4"), "13");
    let a = parse_scontrol(
        "3",
        "JobId=3 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 RunTime=00:01:05 NodeList=n7 TRES=cpu=1,node=1,billing=1,gres/gpu=2",
    )
    .unwrap();
    assert_eq!(a.state.as_deref(), Some("FAILED"));
    assert_eq!((a.exit_code, a.signal), (Some(3), None));
    assert_eq!(a.elapsed_s, Some(65.0));
    assert_eq!(a.node.as_deref(), Some("n7"));
    assert_eq!(a.gpus, Some(2));
    assert_eq!(a.source, "scontrol");
    // As `sacct -n -P -o JobID,State,ExitCode,Elapsed,MaxRSS,NodeList,AllocTRES` prints them.
    let s = parse_sacct(
        "202_0|COMPLETED|0:0|00:00:02||localhost|billing=1,cpu=1,node=1\n\
         202_0.batch|COMPLETED|0:0|00:00:02|2048K|localhost|cpu=1,mem=0,node=1\n\
         207|CANCELLED by 0|0:15|1-00:00:03||localhost|billing=1,cpu=1,gres/gpu=1,node=1\n\
         207.batch|CANCELLED|0:15|1-00:00:03|1.5G|localhost|cpu=1,gres/gpu=1,mem=0,node=1\n",
    );
    let t = &s["202_0"];
    assert_eq!(
        (t.exit_code, t.gpus, t.max_rss_mb),
        (Some(0), Some(0), Some(2.0))
    );
    let c = &s["207"];
    assert_eq!(c.state.as_deref(), Some("CANCELLED"));
    assert_eq!(
        (c.exit_code, c.signal, c.gpus),
        (Some(0), Some(15), Some(1))
    );
    assert_eq!(c.elapsed_s, Some(86_403.0));
    assert_eq!(c.max_rss_mb, Some(1536.0));
    assert_eq!(c.source, "sacct");
    assert_eq!(parse_elapsed("05:07"), Some(307.0));
    assert_eq!(parse_rss_mb("1024"), Some(1.0));
}

#[test]
fn ended_states_name_the_job_without_repeating_the_log() {
    let a = |code, signal| JobAccounting {
        exit_code: Some(code),
        signal,
        ..Default::default()
    };
    assert_eq!(
        states::ended_status("5_1", "COMPLETED", Some(&a(0, None))),
        ExitStatus::Success
    );
    let failed = states::ended_status("5_1", "FAILED", Some(&a(3, None))).to_string();
    assert_eq!(failed, "SLURM job 5_1 ended FAILED with exit code 3");
    let t = states::ended_status("9", "TIMEOUT", None).to_string();
    assert!(t.contains("time limit") && !t.contains("log"), "{t}");
}

const SINFO: &str = "debug*|n1|8|64000|gpu:4|infinite\n\
debug*|n2|16|128000|gpu:a100:2(S:0-1)|infinite\n\
short|n1|8|64000|gpu:4|30:00\n\
cpu|c1|64|256000|(null)|1-00:00:00\n";

fn cluster() -> ClusterInfo {
    ClusterInfo {
        partitions: parse_sinfo(SINFO),
        max_array_size: 1001,
        accounting: false,
    }
}

#[test]
fn cluster_facts_are_read_from_sinfo_and_the_config() {
    let c = cluster();
    let names: Vec<&str> = c.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["debug", "short", "cpu"]);
    let d = c.partition(None).unwrap();
    assert_eq!(d.name, "debug");
    assert_eq!(d.nodes.len(), 2);
    assert_eq!((d.nodes[1].cpus, d.nodes[1].gpus), (16, 2));
    assert_eq!(c.partition(Some("short")).unwrap().max_time_min, Some(30));
    assert_eq!(c.partition(Some("cpu")).unwrap().max_time_min, Some(1440));
    let e = c.partition(Some("gpu")).unwrap_err().to_string();
    assert!(
        e.contains("`gpu` does not exist") && e.contains("debug, short, cpu"),
        "{e}"
    );
    assert_eq!(gres_gpus("gpu:a100:2,nic:1"), Some(2));
    assert_eq!(gres_gpus("(null)"), None);
    assert_eq!(parse_time_min("2:00:00"), Some(120));
    assert_eq!(parse_time_min("45"), Some(45));
    assert_eq!(parse_time_min("UNLIMITED"), None);
    let cfg =
        "AccountingStorageType   = accounting_storage/slurmdbd\nMaxArraySize            = 501\n";
    assert_eq!(parse_config(cfg), (501, true));
    assert_eq!(
        parse_config("AccountingStorageType = accounting_storage/none\n"),
        (1001, false)
    );
}

fn instance(id: &str, resources: Ask) -> Instance {
    Instance {
        id: id.into(),
        stage: id.into(),
        cell: LiteMap::new(),
        action: Action::Shell {
            command: "true".into(),
            env: BTreeMap::new(),
        },
        inputs: LiteMap::new(),
        outputs: [].into(),
        resources,
        retry: 0,
        location: format!("p.yaml:3:3 ({id})").into(),
    }
}

fn pipeline(instances: Vec<Instance>) -> Pipeline {
    Pipeline {
        name: "t".into(),
        file: PathBuf::from("p.yaml"),
        dir: PathBuf::from("."),
        instances,
        ..Pipeline::default()
    }
}

#[test]
fn impossible_requests_name_the_stage_and_the_largest_node() {
    let ask = |gpus, cpus, mem_gb: Option<f64>| Ask {
        gpus,
        cpus,
        mem_gb,
        ..Default::default()
    };
    let p = pipeline(vec![
        instance("fits", ask(4, 16, Some(100.0))),
        instance("big", ask(8, 1, None)),
        instance("wide", ask(0, 32, None)),
    ]);
    let opts = vec![BTreeMap::new(); 3];
    let e = check_requests(&cluster(), &p, &opts).unwrap_err();
    assert!(matches!(e, SlurmError::Request(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("stage `big` (p.yaml:3:3 (big)) asks for 8 GPUs, but the largest node of SLURM partition `debug` (n1) has 4"),
        "{e}"
    );
    assert!(e.contains("stage `wide`") && e.contains("32 CPUs") && e.contains("(n2) has 16"));
    assert!(!e.contains("`fits`"), "{e}");
    // A stage's `slurm:` options are what is submitted: they are what is checked.
    let mut o = BTreeMap::new();
    o.insert("partition".to_string(), "cpu".to_string());
    o.insert("time".to_string(), "2-00:00:00".to_string());
    let p = pipeline(vec![instance("long", ask(0, 1, None))]);
    let e = check_requests(&cluster(), &p, &[o])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2880 minutes") && e.contains("`cpu` allows at most 1440"),
        "{e}"
    );
}

#[test]
fn arrays_carry_resources_throttle_and_per_task_output() {
    let ask = Ask {
        gpus: 2,
        cpus: 4,
        mem_gb: Some(1.5),
        time_min: Some(30),
        slurm: BTreeMap::new(),
    };
    let mut o = BTreeMap::new();
    o.insert("partition".to_string(), "gpu".to_string());
    let res = resource_args(&ask, &o);
    let sub = |tasks| Submission {
        stage: "train",
        batch: Path::new("/c/slurm/batches/b1"),
        batch_name: "b1",
        cwd: Path::new("/proj"),
        tasks,
        max_running: 64,
        resources: &res,
    };
    let a = script::sbatch_args(&sub(200));
    for want in [
        "--parsable",
        "--gres=gpu:2",
        "--cpus-per-task=4",
        "--mem=1536M",
        "--time=30",
        "--partition=gpu",
        "--output=/c/slurm/batches/b1/%a/log",
        "--job-name=orch:train",
        "--comment=orch:b1",
        "--array=0-199%64",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    assert!(script::sbatch_args(&sub(3))
        .iter()
        .any(|x| x == "--array=0-2"));
    let single = script::sbatch_args(&sub(1));
    assert!(!single.iter().any(|x| x.starts_with("--array")));
    assert!(single
        .iter()
        .any(|x| x == "--output=/c/slurm/batches/b1/0/log"));
    let cpu = Ask {
        gpus: 0,
        cpus: 0,
        ..Default::default()
    };
    let a = resource_args(&cpu, &BTreeMap::new());
    assert!(!a.iter().any(|x| x.starts_with("--gres")));
    assert!(a.iter().any(|x| x == "--cpus-per-task=1"));
    let d = script::batch_script("train", Path::new("/c/b1"), 2);
    assert!(
        d.contains(r#"exec sh '/c/b1'/"${SLURM_ARRAY_TASK_ID:-0}"/job.sh"#),
        "{d}"
    );
}

#[test]
fn task_scripts_keep_slurms_devices_take_its_cpus_and_record_the_exit() {
    let s = script::task_script(&spec(), 1, 4);
    assert!(!s.contains("export CUDA_VISIBLE_DEVICES"), "{s}");
    assert!(s.contains("export ORCHESTRATOR_DEVICE='cuda'"));
    assert!(s.contains("export ORCHESTRATOR_CPU_THREADS='4'"), "{s}");
    assert!(s.contains("export MKL_NUM_THREADS='4'"), "{s}");
    let omp: Vec<&str> = s.lines().filter(|l| l.contains("OMP_NUM")).collect();
    assert_eq!(
        omp,
        ["export OMP_NUM_THREADS='4'", "export OMP_NUM_THREADS='3'"],
        "the stage's own setting comes last"
    );
    assert!(s.contains(r"'sh' '-c' 'echo '\''hi'\'''"), "{s}");
    assert!(s.contains("rm -f '/c/runs/k.1'/exit-status\n"), "{s}");
    assert!(s.contains("rc=$?\necho $rc > '/c/runs/k.1'/exit-status.tmp && mv"));
    let s = script::task_script(&spec(), 0, 1);
    assert!(s.contains("export CUDA_VISIBLE_DEVICES='0'"));
}

#[test]
fn reserved_and_malformed_options_are_refused() {
    let mut p = BTreeMap::new();
    p.insert("partition".to_string(), "debug".to_string());
    let mut ask = Ask::default();
    ask.slurm.insert("output".into(), "x".into());
    assert!(merged_options(&p, &ask)
        .unwrap_err()
        .contains("cannot be overridden"));
    let mut ask = Ask::default();
    ask.slurm.insert("array".into(), "0-3".into());
    assert!(merged_options(&p, &ask).is_err());
    let mut ask = Ask::default();
    ask.slurm.insert("qos".into(), "high".into());
    ask.slurm.insert("partition".into(), "gpu".into());
    let m = merged_options(&p, &ask).unwrap();
    assert_eq!(
        m.get("partition").map(String::as_str),
        Some("gpu"),
        "the stage wins"
    );
    let mut ask = Ask::default();
    ask.slurm.insert("a b".into(), "x".into());
    assert!(merged_options(&p, &ask).is_err());
}

#[test]
fn records_live_until_released_and_batches_until_unreferenced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = |n: &str| {
        let d = root.join("runs").join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (r0, r1, r2) = (run("k0.1"), run("k1.1"), run("k2.1"));
    let b = Batch::create(root).unwrap();
    for (i, (key, dir)) in [("k0", &r0), ("k1", &r1), ("k2", &r2)].iter().enumerate() {
        b.link_task(i, dir).unwrap();
        let rec = Record {
            batch: b.name.clone(),
            index: i,
        };
        records::write_record(root, key, &rec).unwrap();
    }
    assert_eq!(b.task_id(1), None, "no job id until sbatch answered");
    b.write_job_id("77", true).unwrap();
    assert_eq!(b.task_id(1).as_deref(), Some("77_1"));
    std::fs::write(r2.join("exit-status"), "0\n").unwrap();
    assert_eq!(records::exit_status(&r2), Some(0));
    // k0 is committed already (its record outlived a kill -9 after the commit): dropped.
    let found = records::recover(root, |k| k == "k0");
    let mut keys: Vec<&String> = found.keys().collect();
    keys.sort();
    assert_eq!(keys, ["k1", "k2"]);
    assert_eq!(found["k1"].task_id.as_deref(), Some("77_1"));
    assert_eq!(found["k1"].run_dir, r1);
    records::remove_unreferenced_batches(root);
    assert!(b.dir.is_dir(), "k1 and k2 still refer to the batch");
    records::remove_record(root, "k1");
    records::remove_record(root, "k2");
    records::remove_unreferenced_batches(root);
    assert!(!b.dir.exists());
    assert!(r1.is_dir(), "removing a batch never follows its links");
}

#[test]
fn node_local_paths_are_recognised_and_keys_come_from_run_dirs() {
    assert!(is_node_local(Path::new("/tmp/x")));
    assert!(is_node_local(Path::new("/dev/shm")));
    assert_eq!(
        key_of_run_dir(Path::new("/c/runs/abc123.1700000000000-1")).as_deref(),
        Some("abc123")
    );
}
