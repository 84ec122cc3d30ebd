//! Benchmark of the pruning family at CASIA-WebFace scale (490,623 samples, 10,572 identities,
//! generated inputs): the core of each method (inputs in memory) and each whole stage (reading
//! inputs, writing outputs), side by side with the numpy reference (`tests/py/prune_reference.py`)
//! on the same inputs when `ORCHESTRATOR_PYTHON` is set. Prints a table; asserts nothing.
//!
//! `cargo bench -p orchestrator-stages --bench prune` (add `-- --no-python` to skip the reference).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use orchestrator_stages::formats::{npy, text};
use orchestrator_stages::invocation::Invocation;
use orchestrator_stages::prune::inputs::{Identities, Labels};
use orchestrator_stages::prune::{clean, relabel, score, select};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const N: usize = 490_623;
const C: usize = 10_572;
const EPOCHS: usize = 34;

struct Data {
    labels: Vec<i64>,
    probs: Vec<f64>,
    history: Vec<f32>,
    pred: Vec<i64>,
}

/// Long-tailed identity sizes summing to N (CASIA: 2..804 images, mean 46.4), shuffled positions.
fn generate() -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(2025);
    let mut sizes: Vec<usize> = (0..C)
        .map(|_| 2 + (300.0 * rng.gen::<f64>().powf(5.0)) as usize)
        .collect();
    let mut total: usize = sizes.iter().sum();
    while total != N {
        let c = rng.gen_range(0..C);
        if total < N {
            sizes[c] += 1;
            total += 1;
        } else if sizes[c] > 2 {
            sizes[c] -= 1;
            total -= 1;
        }
    }
    let mut labels: Vec<i64> = sizes
        .iter()
        .enumerate()
        .flat_map(|(c, &s)| std::iter::repeat_n(c as i64, s))
        .collect();
    for i in (1..N).rev() {
        labels.swap(i, rng.gen_range(0..=i));
    }
    let probs: Vec<f64> = (0..N)
        .map(|_| {
            let p = if rng.gen_bool(0.6) {
                1.0 - 10f64.powf(-rng.gen_range(1.0..7.0))
            } else {
                10f64.powf(-rng.gen_range(0.0..9.0))
            };
            p as f32 as f64
        })
        .collect();
    let history: Vec<f32> = (0..EPOCHS * N)
        .map(|_| {
            if rng.gen_bool(0.01) {
                0.0
            } else {
                rng.gen::<f32>()
            }
        })
        .collect();
    let pred: Vec<i64> = labels
        .iter()
        .map(|&l| {
            if rng.gen_bool(0.011) {
                (l + 1) % C as i64
            } else {
                l
            }
        })
        .collect();
    Data {
        labels,
        probs,
        history,
        pred,
    }
}

/// Median wall time of `runs` calls, in milliseconds.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[runs / 2]
}

fn stage(
    root: &Path,
    id: &str,
    kind: &str,
    params: Value,
    inputs: &[(&str, &Path)],
) -> BTreeMap<String, PathBuf> {
    let inv = Invocation::standalone(kind, id, &params, inputs, &root.join(id))
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    let outputs = inv.outputs.clone();
    orchestrator_stages::run::run_invocation(&inv)
        .expect("a pruning kind")
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    outputs
}

fn main() {
    let no_python = std::env::args().any(|a| a == "--no-python");
    let threads = rayon::current_num_threads();
    println!("pruning family at CASIA scale: N = {N}, C = {C}, history {EPOCHS} x N, {threads} rayon threads");
    let t = Instant::now();
    let d = generate();
    println!(
        "generated inputs in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let labels = Labels::new(&d.labels, None, "labels").unwrap();
    let ids = Identities::new(&labels, None);
    let flags = clean::flag(&d.pred, &labels);
    let clean_ids = Identities::new(&labels, Some(&flags));
    let history: Vec<&[f32]> = d.history.chunks(N).collect();
    let sizes: Vec<usize> = (0..C).map(|c| ids.members(c).len()).collect();
    let target = (0.5 * N as f64).ceil() as usize;

    // Core timings: inputs in memory, the selection end to end (sort once + walk/search + kept list).
    let mut core: Vec<(&str, f64, String)> = Vec::new();
    let mut note = String::new();
    core.push((
        "diffprob t=3e-5",
        time(7, || select::Ranked::new(&ids, &d.probs).select(3e-5, 5)),
        String::new(),
    ));
    core.push((
        "diffprob target 0.5",
        time(5, || {
            let r = select::Ranked::new(&ids, &d.probs);
            let s = r.search_threshold(target, 5).unwrap();
            note = format!(
                "t = {:.4e}, kept {}, {} K(t) passes",
                s.value, s.kept, s.evaluations
            );
            r.select(s.value, 5)
        }),
        note.clone(),
    ));
    core.push((
        "diffprob+clean target 0.5",
        time(5, || {
            let r = select::Ranked::new(&clean_ids, &d.probs);
            let s = r.search_threshold(target, 5).unwrap();
            r.select(s.value, 5)
        }),
        String::new(),
    ));
    let mut u = Vec::new();
    core.push((
        "dynunc score (34 x N)",
        time(5, || {
            u = score::dynamic_uncertainty(&history, 10, false).unwrap()
        }),
        String::new(),
    ));
    core.push((
        "dynunc f=0.5",
        time(7, || select::Ranked::new(&ids, &u).top_k(0.5, 5)),
        String::new(),
    ));
    core.push((
        "dynunc target 0.5",
        time(7, || {
            let s = select::search_fraction(&sizes, target, 5).unwrap();
            select::Ranked::new(&ids, &u).top_k(s.value, 5)
        }),
        String::new(),
    ));
    core.push((
        "rand random f=0.5",
        time(7, || {
            select::Ranked::new(&ids, &select::rand_keys(&ids, N, 1)).top_k(0.5, 5)
        }),
        String::new(),
    ));
    core.push((
        "rand reference f=0.5",
        time(7, || select::last_k(&ids, 0.5, 5)),
        String::new(),
    ));
    core.push((
        "clean (flags only)",
        time(7, || clean::flag(&d.pred, &labels)),
        String::new(),
    ));
    let kept: Vec<usize> = (0..N).filter(|&i| flags[i] == 0).collect();
    core.push((
        "relabel (map only)",
        time(7, || relabel::label_map(&labels, &kept)),
        String::new(),
    ));

    // Whole stages: read inputs from disk, write every output.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    npy::write_1d(&dir.join("labels.npy"), &d.labels).unwrap();
    std::fs::create_dir_all(dir.join("probs")).unwrap();
    npy::write_1d(&dir.join("probs/prob.npy"), &d.probs).unwrap();
    text::write_floats(&dir.join("prob.txt"), &d.probs).unwrap();
    std::fs::create_dir_all(dir.join("history")).unwrap();
    npy::write(&dir.join("history/history.npy"), &[EPOCHS, N], &d.history).unwrap();
    npy::write_1d(&dir.join("pred_label.npy"), &d.pred).unwrap();
    let lp = dir.join("labels.npy");
    let runs = dir.join("runs");
    let mut stages: Vec<(&str, f64)> = Vec::new();
    let mut sc = BTreeMap::new();
    stages.push((
        "score diffprob (prob.npy)",
        time(3, || {
            sc = stage(
                &runs,
                "s_dp",
                "score",
                json!({"method": "diffprob"}),
                &[("probs", &dir.join("probs")), ("labels", &lp)],
            )
        }),
    ));
    stages.push((
        "score diffprob (prob.txt)",
        time(3, || {
            stage(
                &runs,
                "s_dpt",
                "score",
                json!({"method": "diffprob"}),
                &[("probs", &dir.join("prob.txt")), ("labels", &lp)],
            )
        }),
    ));
    let dp = sc["scores"].clone();
    stages.push((
        "prune diffprob t=3e-5",
        time(3, || {
            stage(
                &runs,
                "p_t",
                "prune",
                json!({"threshold": 3e-5}),
                &[("scores", &dp), ("labels", &lp)],
            )
        }),
    ));
    stages.push((
        "prune diffprob target 0.5",
        time(3, || {
            stage(
                &runs,
                "p_r",
                "prune",
                json!({"target_ratio": 0.5}),
                &[("scores", &dp), ("labels", &lp)],
            )
        }),
    ));
    stages.push((
        "score dynunc (history.npy)",
        time(3, || {
            sc = stage(
                &runs,
                "s_du",
                "score",
                json!({"method": "dynunc"}),
                &[("history", &dir.join("history")), ("labels", &lp)],
            )
        }),
    ));
    let du = sc["scores"].clone();
    stages.push((
        "prune dynunc target 0.5",
        time(3, || {
            stage(
                &runs,
                "p_du",
                "prune",
                json!({"target_ratio": 0.5}),
                &[("scores", &du), ("labels", &lp)],
            )
        }),
    ));
    stages.push((
        "score rand",
        time(3, || {
            sc = stage(
                &runs,
                "s_r",
                "score",
                json!({"method": "rand"}),
                &[("labels", &lp)],
            )
        }),
    ));
    let rs = sc["scores"].clone();
    stages.push((
        "prune rand random 0.5",
        time(3, || {
            stage(
                &runs,
                "p_rr",
                "prune",
                json!({"fraction": 0.5}),
                &[("scores", &rs), ("labels", &lp)],
            )
        }),
    ));
    stages.push((
        "prune rand reference 0.5",
        time(3, || {
            stage(
                &runs,
                "p_rf",
                "prune",
                json!({"fraction": 0.5, "order": "reference"}),
                &[("scores", &rs), ("labels", &lp)],
            )
        }),
    ));
    let mut cl = BTreeMap::new();
    stages.push((
        "clean (+ prob_clean)",
        time(3, || {
            cl = stage(
                &runs,
                "c",
                "clean",
                json!({}),
                &[
                    ("predictions", &dir.join("pred_label.npy")),
                    ("probs", &dir.join("probs")),
                    ("labels", &lp),
                ],
            )
        }),
    ));
    let ck = cl["kept"].clone();
    stages.push((
        "relabel",
        time(3, || {
            stage(
                &runs,
                "rl",
                "relabel",
                json!({}),
                &[("kept", &ck), ("labels", &lp)],
            )
        }),
    ));

    // The numpy reference on the same inputs (algorithm time; inputs loaded before its clock).
    let reference: BTreeMap<String, f64> = match std::env::var("ORCHESTRATOR_PYTHON") {
        Ok(py) if !no_python && !py.is_empty() => {
            let jobs = json!({
                "labels": lp, "probs_txt": dir.join("prob.txt"), "history_npy": dir.join("history/history.npy"),
                "pred": dir.join("pred_label.npy"), "out": dir.join("ref"),
                "jobs": [
                    {"name": "diffprob t=3e-5", "kind": "diffprob", "threshold": 3e-5, "min": 5},
                    {"name": "diffprob target 0.5", "kind": "diffprob", "target_ratio": 0.5, "min": 5},
                    {"name": "clean (+ prob_clean)", "kind": "clean"},
                    {"name": "diffprob+clean target 0.5", "kind": "diffprob", "target_ratio": 0.5, "min": 5, "clean": true},
                    {"name": "dynunc score+select f=0.5", "kind": "dynunc", "fraction": 0.5, "min": 5, "window": 10, "include_final": false},
                    {"name": "rand reference f=0.5", "kind": "rand", "fraction": 0.5, "min": 5},
                    {"name": "relabel", "kind": "relabel", "kept": ck},
                ],
            });
            std::fs::write(dir.join("jobs.json"), jobs.to_string()).unwrap();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/prune_reference.py");
            println!("running the numpy reference (pure-Python walks: a minute or two) ...");
            let out = std::process::Command::new(py)
                .arg(script)
                .arg(dir.join("jobs.json"))
                .output()
                .expect("python");
            if !out.status.success() {
                panic!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let last = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or("{}")
                .to_string();
            let v: BTreeMap<String, f64> = serde_json::from_str(&last).unwrap();
            v.into_iter().map(|(k, s)| (k, s * 1e3)).collect()
        }
        _ => {
            println!("(numpy reference skipped: ORCHESTRATOR_PYTHON unset or --no-python)");
            BTreeMap::new()
        }
    };

    println!("\ncore (inputs in memory)            rust ms    numpy ms    speed-up");
    let dyn_rust: f64 = core
        .iter()
        .filter(|c| c.0.starts_with("dynunc score") || c.0 == "dynunc f=0.5")
        .map(|c| c.1)
        .sum();
    let mut rows: Vec<(String, f64, String)> = core
        .iter()
        .map(|(n, ms, note)| (n.to_string(), *ms, note.clone()))
        .collect();
    rows.push(("dynunc score+select f=0.5".into(), dyn_rust, String::new()));
    for (name, ms, note) in rows {
        match reference.get(&name) {
            Some(r) => println!("  {name:<32} {ms:>8.1} {r:>11.1} {:>10.0}x  {note}", r / ms),
            None => println!("  {name:<32} {ms:>8.1} {:>11} {:>11}  {note}", "-", "-"),
        }
    }
    println!("\nwhole stage (read inputs, write outputs)   rust ms    numpy ms    speed-up");
    for (name, ms) in stages {
        match reference.get(name) {
            Some(r) => println!("  {name:<40} {ms:>8.1} {r:>11.1} {:>10.0}x", r / ms),
            None => println!("  {name:<40} {ms:>8.1}"),
        }
    }
}
