//! Scheduler and cache tests on hand-built pipelines: real `sh -c` stages through the local
//! backend, and a fake backend for resource placement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::backend::{Backend, BackendEvent, ExitStatus, JobId, JobSpec};
use super::*;
use crate::pipeline::{Action, Input, Instance, LiteMap, Output, Resources as Ask};

fn shell(id: &str, cmd: &str, inputs: &[(&str, Input)], outputs: &[&str], gpus: u32) -> Instance {
    Instance {
        id: id.into(),
        stage: id.into(),
        cell: LiteMap::new(),
        action: Action::Shell {
            command: cmd.into(),
            env: BTreeMap::new(),
        },
        inputs: inputs
            .iter()
            .map(|(n, i)| (n.to_string(), i.clone()))
            .collect(),
        outputs: outputs
            .iter()
            .map(|o| Output {
                name: o.to_string(),
                rel_path: format!("{o}.txt"),
                is_dir: false,
                required: true,
            })
            .collect(),
        resources: Ask {
            gpus,
            ..Default::default()
        },
        retry: 0,
        location: format!("p.yaml:1:1 ({id})").into(),
    }
}

fn up(i: usize, o: &str) -> Input {
    Input::Upstream {
        instance: i,
        output: o.into(),
    }
}

fn pipeline(dir: &Path, instances: Vec<Instance>) -> Pipeline {
    Pipeline {
        name: "t".into(),
        file: dir.join("p.yaml"),
        dir: dir.to_path_buf(),
        instances,
        ..Pipeline::default()
    }
}

fn opts(gpus: Vec<u32>) -> RunOptions {
    RunOptions {
        jobs: 4,
        gpus: GpuChoice::Ids(gpus),
        fail_fast: false,
        workers: Default::default(),
        force: Default::default(),
    }
}

fn go(p: &Pipeline, cache: &Cache) -> RunSummary {
    run(
        p,
        cache,
        opts(vec![]),
        Box::new(LocalBackend::default()),
        &mut View::silent(),
    )
    .unwrap()
}

/// a -> b -> c, plus d independent.
fn chain(dir: &Path, b_cmd: &str) -> Pipeline {
    pipeline(
        dir,
        vec![
            shell("a", "echo A > ${outputs.out}", &[], &["out"], 0),
            shell("b", b_cmd, &[("x", up(0, "out"))], &["out"], 0),
            shell(
                "c",
                "cat ${inputs.x} ${inputs.x} > ${outputs.out}",
                &[("x", up(1, "out"))],
                &["out"],
                0,
            ),
            shell("d", "echo D > ${outputs.out}", &[], &["out"], 0),
        ],
    )
}

fn temp_cache() -> (tempfile::TempDir, Cache) {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    (t, c)
}

#[test]
fn rerun_is_all_cached_and_a_change_reruns_exactly_downstream() {
    let (t, cache) = temp_cache();
    let s = go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo B >> ${outputs.out}",
        ),
        &cache,
    );
    assert_eq!((s.ran, s.cached, s.failed.len()), (4, 0, 0));
    let s = go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo B >> ${outputs.out}",
        ),
        &cache,
    );
    assert_eq!((s.ran, s.cached), (0, 4));
    let s = go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo B2 >> ${outputs.out}",
        ),
        &cache,
    );
    assert_eq!((s.ran, s.cached), (2, 2), "b and c rerun, a and d are hits");
    let c_out = t.path().join("results/t/c/out");
    assert_eq!(std::fs::read_to_string(c_out).unwrap(), "A\nB2\nA\nB2\n");
}

#[test]
fn byte_identical_rerun_keeps_dependents_cached() {
    let (t, cache) = temp_cache();
    go(&chain(t.path(), "cat ${inputs.x} > ${outputs.out}"), &cache);
    // A different command that writes the same bytes: b reruns, c is an early-cutoff hit.
    let s = go(
        &chain(t.path(), "cat ${inputs.x} > ${outputs.out} # same bytes"),
        &cache,
    );
    assert_eq!((s.ran, s.cached), (1, 3));
}

#[test]
fn failure_skips_dependents_and_runs_the_rest() {
    let (t, cache) = temp_cache();
    let s = go(&chain(t.path(), "echo oops >&2; exit 3"), &cache);
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].instance, "b");
    assert!(
        s.failed[0].message.contains("exit code 3"),
        "{}",
        s.failed[0].message
    );
    let log = std::fs::read_to_string(s.failed[0].log.as_ref().unwrap()).unwrap();
    assert!(log.contains("oops"));
    assert_eq!((s.ran, s.skipped), (2, 1), "a and d ran, c skipped");
}

#[test]
fn missing_declared_output_fails_the_stage() {
    let (t, cache) = temp_cache();
    let s = go(&chain(t.path(), "true"), &cache);
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0]
            .message
            .contains("did not write its declared output `out`"),
        "{}",
        s.failed[0].message
    );
}

#[test]
fn retry_reruns_a_flaky_stage() {
    let (t, cache) = temp_cache();
    let flag = t.path().join("flag");
    let mut p = chain(
        t.path(),
        &format!(
            "if [ -e {f} ]; then cat ${{inputs.x}} > ${{outputs.out}}; else touch {f}; exit 1; fi",
            f = flag.display()
        ),
    );
    p.instances[1].retry = 1;
    let s = go(&p, &cache);
    assert_eq!((s.ran, s.failed.len()), (4, 0));
}

#[test]
fn corrupt_object_is_detected_and_the_stage_reruns() {
    let (t, cache) = temp_cache();
    let p = chain(t.path(), "cat ${inputs.x} > ${outputs.out}");
    go(&p, &cache);
    let m = cache
        .manifest(&cache.index.get_last("t", "a").unwrap().unwrap().key())
        .unwrap()
        .unwrap();
    let obj = cache.store.object_path(&m.outputs["out"].digest);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, "B\n").unwrap();
    assert!(!crate::cache::verify(&cache, false).unwrap().is_clean());
    let s = go(&p, &cache);
    assert_eq!(
        s.ran, 1,
        "a reruns, rewrites identical bytes, dependents stay cached"
    );
    assert!(crate::cache::verify(&cache, false).unwrap().is_clean());
}

#[test]
fn missing_external_input_is_a_clear_error() {
    let (t, cache) = temp_cache();
    let p = pipeline(
        t.path(),
        vec![shell(
            "a",
            "cat ${inputs.x} > ${outputs.out}",
            &[(
                "x",
                Input::External {
                    path: t.path().join("gone.bin"),
                },
            )],
            &["out"],
            0,
        )],
    );
    let e = run(
        &p,
        &cache,
        opts(vec![]),
        Box::new(LocalBackend::default()),
        &mut View::silent(),
    )
    .unwrap_err();
    assert!(matches!(e, ExecError::MissingInput { .. }), "{e}");
    assert!(
        e.to_string().contains("gone.bin") && e.to_string().contains("stage `a"),
        "{e}"
    );
}

#[test]
fn external_input_change_reruns_via_stat_cache() {
    let (t, cache) = temp_cache();
    let f = t.path().join("in.txt");
    std::fs::write(&f, "1").unwrap();
    let p = pipeline(
        t.path(),
        vec![shell(
            "a",
            "cat ${inputs.x} > ${outputs.out}",
            &[("x", Input::External { path: f.clone() })],
            &["out"],
            0,
        )],
    );
    assert_eq!(go(&p, &cache).ran, 1);
    assert_eq!(go(&p, &cache).cached, 1);
    std::fs::write(&f, "2").unwrap();
    assert_eq!(go(&p, &cache).ran, 1);
    let plan = plan::plan(&p, &cache).unwrap();
    assert_eq!(plan[0].state, plan::PlanState::Cached);
}

#[test]
fn plan_explains_changed_fields() {
    let (t, cache) = temp_cache();
    go(&chain(t.path(), "cat ${inputs.x} > ${outputs.out}"), &cache);
    let entries = plan::plan(
        &chain(t.path(), "cat ${inputs.x} > ${outputs.out}; echo"),
        &cache,
    )
    .unwrap();
    let st: Vec<_> = entries.iter().map(|e| e.state).collect();
    use plan::PlanState::*;
    assert_eq!(st, vec![Cached, WillRun, Waits, Cached]);
    assert_eq!(entries[1].changed, vec!["command".to_string()]);
    assert!(entries[2].reasons[0].contains("waits on `b`"));
}

/// (stage, CUDA_VISIBLE_DEVICES, start, end) of each fake job.
type Span = (String, String, Instant, Instant);

/// Fake backend: records a [`Span`] per job, writes its outputs, exits 0.
#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Vec<Span>>>,
    events: Option<UnboundedSender<BackendEvent>>,
}

impl Backend for Fake {
    fn attach(&mut self, events: UnboundedSender<BackendEvent>) {
        self.events = Some(events);
    }

    fn submit(&mut self, specs: Vec<JobSpec>) {
        for spec in specs {
            let log = self.log.clone();
            let events = self.events.clone().unwrap();
            let job: JobId = spec.job;
            tokio::spawn(async move {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(40)).await;
                for (p, _) in spec.outputs.values() {
                    std::fs::write(p, &spec.stage_id).unwrap();
                }
                let cvd = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                log.lock()
                    .unwrap()
                    .push((spec.stage_id.clone(), cvd, start, Instant::now()));
                let _ = events.send(BackendEvent::Exited {
                    job,
                    status: ExitStatus::Success,
                    accounting: None,
                });
            });
        }
    }
    fn cancel(&mut self, _jobs: &[JobId], _hard: bool) {}
}

#[test]
fn gpus_are_exclusive_and_all_used() {
    let (t, cache) = temp_cache();
    // Distinct commands: instances with equal fingerprints would run once.
    let insts = (0..12)
        .map(|i| shell(&format!("g{i}"), &format!("# g{i}"), &[], &["out"], 1))
        .collect();
    let p = pipeline(t.path(), insts);
    let fake = Fake::default();
    let s = run(
        &p,
        &cache,
        opts(vec![0, 1, 2, 3]),
        Box::new(fake.clone()),
        &mut View::silent(),
    )
    .unwrap();
    assert_eq!(s.ran, 12);
    let log = fake.log.lock().unwrap().clone();
    let used: std::collections::BTreeSet<_> = log.iter().map(|l| l.1.clone()).collect();
    assert_eq!(used.len(), 4, "{used:?}");
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a.1.split(',').count(), 1);
        for b in &log[i + 1..] {
            let overlap = a.2 < b.3 && b.2 < a.3;
            assert!(
                !(overlap && a.1 == b.1),
                "{} and {} overlap on GPU {}",
                a.0,
                b.0,
                a.1
            );
        }
    }
    // No GPUs at all: GPU stages run on the CPU one at a time.
    let (t2, cache2) = temp_cache();
    let p2 = pipeline(
        t2.path(),
        (0..3)
            .map(|i| shell(&format!("h{i}"), &format!("# h{i}"), &[], &["out"], 1))
            .collect(),
    );
    let fake2 = Fake::default();
    run(
        &p2,
        &cache2,
        opts(vec![]),
        Box::new(fake2.clone()),
        &mut View::silent(),
    )
    .unwrap();
    let log2 = fake2.log.lock().unwrap().clone();
    for (i, a) in log2.iter().enumerate() {
        assert_eq!(a.1, "");
        for b in &log2[i + 1..] {
            assert!(!(a.2 < b.3 && b.2 < a.3), "{} and {} ran at once", a.0, b.0);
        }
    }
}

#[test]
fn too_many_gpus_is_refused_up_front() {
    let (t, cache) = temp_cache();
    let p = pipeline(t.path(), vec![shell("big", "", &[], &["out"], 3)]);
    let e = run(
        &p,
        &cache,
        opts(vec![0, 1]),
        Box::new(Fake::default()),
        &mut View::silent(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("asks for 3 GPUs"), "{e}");
}

#[test]
fn gc_keeps_latest_and_removes_superseded() {
    let (t, cache) = temp_cache();
    go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo 1 >> ${outputs.out}",
        ),
        &cache,
    );
    go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo 2 >> ${outputs.out}",
        ),
        &cache,
    );
    let r = crate::cache::gc(&cache, false).unwrap();
    assert_eq!(r.removed_manifests, 2, "old b and old c");
    assert!(r.removed_objects >= 2);
    let s = go(
        &chain(
            t.path(),
            "cat ${inputs.x} > ${outputs.out}; echo 2 >> ${outputs.out}",
        ),
        &cache,
    );
    assert_eq!(s.cached, 4);
    assert!(crate::cache::verify(&cache, false).unwrap().is_clean());
}

#[test]
fn devices_name_how_many_gpus_ran_a_stage() {
    assert_eq!(gpus_of_device("cpu"), 0);
    assert_eq!(gpus_of_device("cuda:3"), 1);
    assert_eq!(gpus_of_device("cuda:0,1"), 2);
    let a = JobAccounting {
        node: Some("n7".into()),
        gpus: Some(2),
        ..Default::default()
    };
    assert_eq!(device_of(&a, true), "gpu:2@n7");
    assert_eq!(gpus_of_device(&device_of(&a, true)), 2);
    let cpu = JobAccounting {
        gpus: Some(0),
        ..Default::default()
    };
    assert_eq!(device_of(&cpu, false), "cpu@?");
    assert_eq!(gpus_of_device("gpu@slurm"), 1);
    assert_eq!(gpus_of_device("cpu@slurm"), 0);
}

#[test]
fn the_longest_remaining_chain_starts_first() {
    // x1 -> x2 -> x3 and y, z alone, each 1 s; one slot. x1 (3 s to go) beats y (index 0). The
    // slot is free once a job exits, while its outputs are still being committed: y takes it
    // then (x2 is not ready yet); next x2 (2 s to go) beats z; z takes the slot during x2's
    // commit; x3 last.
    let (t, cache) = temp_cache();
    let p = pipeline(
        t.path(),
        vec![
            // Distinct commands: instances with one fingerprint run once per run.
            shell("y", ": y", &[], &["out"], 0),
            shell("x1", ": x1", &[], &["out"], 0),
            shell("x2", ": x2", &[("i", up(1, "out"))], &["out"], 0),
            shell("x3", ": x3", &[("i", up(2, "out"))], &["out"], 0),
            shell("z", ": z", &[], &["out"], 0),
        ],
    );
    let dag = crate::dag::Dag::new(&p);
    assert_eq!(dag.upstream(3), [2]);
    assert_eq!(dag.downstream(1), [2]);
    assert_eq!(
        dag.critical_path_lengths(|_| 1.0),
        [1.0, 3.0, 2.0, 1.0, 1.0]
    );
    let fake = Fake::default();
    let mut o = opts(vec![]);
    o.jobs = 1;
    run(&p, &cache, o, Box::new(fake.clone()), &mut View::silent()).unwrap();
    let order: Vec<String> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(order, ["x1", "y", "x2", "z", "x3"]);
}
