use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::records::key_of_run_dir;
use super::*;

fn spec() -> JobSpec {
    JobSpec {
        job: 0,
        stage_id: "train[lr=0.1]".into(),
        argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
        env: vec![
            ("CUDA_VISIBLE_DEVICES".into(), "0".into()),
            ("ORCHESTRATOR_DEVICE".into(), "cuda".into()),
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
fn parses_squeue_and_scontrol() {
    let m = parse_squeue("12|RUNNING|None\n13|PENDING|Resources\n\n");
    assert_eq!(m.get("12").map(String::as_str), Some("RUNNING"));
    assert_eq!(m.get("13").map(String::as_str), Some("PENDING"));
    let (s, e) = parse_scontrol(
        "JobId=3 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 Requeue=1",
    );
    assert_eq!(s.as_deref(), Some("FAILED"));
    assert_eq!(e, Some((3, 0)));
}

#[test]
fn sbatch_args_carry_resources_and_options() {
    let ask = Ask {
        gpus: 2,
        cpus: 4,
        mem_gb: Some(1.5),
        time_min: Some(30),
        slurm: BTreeMap::new(),
    };
    let mut o = BTreeMap::new();
    o.insert("partition".to_string(), "gpu".to_string());
    let a = sbatch_args(&spec(), &ask, &o);
    for want in [
        "--parsable",
        "--gres=gpu:2",
        "--cpus-per-task=4",
        "--mem=1536M",
        "--time=30",
        "--partition=gpu",
        "--output=/c/runs/k.1/log",
        "--job-name=orch:train[lr=0.1]",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    let cpu = Ask {
        gpus: 0,
        cpus: 0,
        ..Default::default()
    };
    let a = sbatch_args(&spec(), &cpu, &BTreeMap::new());
    assert!(!a.iter().any(|x| x.starts_with("--gres")));
    assert!(a.iter().any(|x| x == "--cpus-per-task=1"));
}

#[test]
fn gpu_scripts_keep_slurms_devices_and_quote_the_command() {
    let s = batch_script(&spec(), 1);
    assert!(!s.contains("export CUDA_VISIBLE_DEVICES"), "{s}");
    assert!(s.contains("export ORCHESTRATOR_DEVICE='cuda'"));
    assert!(s.contains(r"exec 'sh' '-c' 'echo '\''hi'\'''"), "{s}");
    let s = batch_script(&spec(), 0);
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
fn node_local_paths_are_recognised_and_keys_come_from_run_dirs() {
    assert!(is_node_local(Path::new("/tmp/x")));
    assert!(is_node_local(Path::new("/dev/shm")));
    assert_eq!(
        key_of_run_dir(Path::new("/c/runs/abc123.1700000000000-1")).as_deref(),
        Some("abc123")
    );
}
