//! Parity of the pruning family with the reference algorithms (`tests/py/prune_reference.py`, numpy):
//! generated inputs with distinct values (R3), the stages run through their real entry point
//! (`prune::run` on an [`Invocation`]), kept lists, `prob_clean.txt`, flags and label maps
//! compared byte for byte. Needs `ORCHESTRATOR_PYTHON` (ignored without it; `make test` runs it).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator_stages::formats::{npy, text};
use orchestrator_stages::invocation::Invocation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Run one stage of `kind` with `params`; outputs go under `root/<id>/`. Returns the metrics and
/// the output paths by name.
fn stage(
    root: &Path,
    id: &str,
    kind: &str,
    params: Value,
    inputs: &[(&str, &Path)],
) -> (Value, BTreeMap<String, PathBuf>) {
    let inv = Invocation::standalone(kind, id, &params, inputs, &root.join(id))
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    let outputs = inv.outputs.clone();
    let m = orchestrator_stages::prune::run(&inv)
        .expect("a pruning kind")
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    (m, outputs)
}

struct Inputs {
    dir: PathBuf,
    labels: Vec<i64>,
    classes: usize,
}

/// Long-tailed identity sizes (some at or under min_per_id), shuffled positions, f32 probabilities
/// spread over many decades (so thresholds near 3e-5 matter), all distinct; a history with
/// unseen (0.0) entries; predictions with 5 % errors and one identity entirely mislabeled.
fn generate(dir: &Path, classes: usize, seed: u64) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut labels: Vec<i64> = Vec::new();
    for c in 0..classes {
        let size = match c % 7 {
            0 => rng.gen_range(1..=5),
            1 => rng.gen_range(6..=9),
            _ => rng.gen_range(10..=120),
        };
        labels.extend(std::iter::repeat_n(c as i64, size));
    }
    for i in (1..labels.len()).rev() {
        labels.swap(i, rng.gen_range(0..=i));
    }
    let n = labels.len();
    let mut seen = HashSet::new();
    let mut distinct_f32 = |x: f32| {
        let mut x = x;
        while !seen.insert(x.to_bits()) {
            x = f32::from_bits(x.to_bits() - 1);
        }
        x as f64
    };
    let probs: Vec<f64> = (0..n)
        .map(|_| {
            let p = if rng.gen_bool(0.6) {
                1.0 - 10f64.powf(-rng.gen_range(1.0..7.0))
            } else {
                10f64.powf(-rng.gen_range(0.0..9.0))
            };
            distinct_f32(p as f32)
        })
        .collect();
    npy::write_1d(&dir.join("labels.npy"), &labels).unwrap();
    std::fs::create_dir_all(dir.join("probs")).unwrap();
    npy::write_1d(&dir.join("probs/prob.npy"), &probs).unwrap();
    text::write_floats(&dir.join("prob.txt"), &probs).unwrap();

    let epochs = 14;
    let history: Vec<f32> = (0..epochs * n)
        .map(|_| {
            if rng.gen_bool(0.03) {
                0.0
            } else {
                rng.gen_range(1e-4f32..1.0)
            }
        })
        .collect();
    std::fs::create_dir_all(dir.join("history")).unwrap();
    npy::write(&dir.join("history/history.npy"), &[epochs, n], &history).unwrap();
    std::fs::create_dir_all(dir.join("history_txt")).unwrap();
    for e in 0..epochs {
        let row: Vec<f64> = history[e * n..(e + 1) * n]
            .iter()
            .map(|&x| x as f64)
            .collect();
        text::write_floats(&dir.join(format!("history_txt/prob_{e}.txt")), &row).unwrap();
    }
    let pred: Vec<i64> = labels
        .iter()
        .map(|&l| {
            if l == 3 || rng.gen_bool(0.05) {
                (l + 1 + rng.gen_range(0..classes as i64 - 1)) % classes as i64
            } else {
                l
            }
        })
        .collect();
    npy::write_1d(&dir.join("pred_label.npy"), &pred).unwrap();
    Inputs {
        dir: dir.to_path_buf(),
        labels,
        classes,
    }
}

fn run_reference(py: &Path, jobs: &Value, dir: &Path) -> PathBuf {
    let spec = dir.join("jobs.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(jobs).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/prune_reference.py");
    let out = Command::new(py)
        .arg(&script)
        .arg(&spec)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(jobs["out"].as_str().unwrap())
}

fn same_bytes(ours: &Path, theirs: &Path, what: &str) {
    let a = std::fs::read(ours).unwrap_or_else(|e| panic!("{what}: {}: {e}", ours.display()));
    let b = std::fs::read(theirs).unwrap_or_else(|e| panic!("{what}: {}: {e}", theirs.display()));
    if a != b {
        let (sa, sb) = (String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        let at = sa
            .chars()
            .zip(sb.chars())
            .position(|(x, y)| x != y)
            .unwrap_or(sa.len().min(sb.len()));
        panic!(
            "{what}: {} and {} differ at char {at} (ours {} bytes, reference {} bytes)\nours: ...{}\nref:  ...{}",
            ours.display(),
            theirs.display(),
            a.len(),
            b.len(),
            &sa[at.saturating_sub(40)..(at + 40).min(sa.len())],
            &sb[at.saturating_sub(40)..(at + 40).min(sb.len())]
        );
    }
}

fn parity(classes: usize, seed: u64, faithful: bool) {
    let py = orchestrator_stages::testing::require_python();
    let tmp = tempfile::tempdir().unwrap();
    let inp = generate(tmp.path(), classes, seed);
    let d = &inp.dir;
    let n = inp.labels.len();
    let labels = d.join("labels.npy");
    let ours = d.join("ours");
    let refdir = d.join("ref");

    // Ours: scores, clean, then every prune variant.
    let (_, s_txt) = stage(
        &ours,
        "score_txt",
        "score",
        json!({"method": "diffprob"}),
        &[("probs", &d.join("prob.txt")), ("labels", &labels)],
    );
    let (_, s_dir) = stage(
        &ours,
        "score_dir",
        "score",
        json!({"method": "diffprob"}),
        &[("probs", &d.join("probs")), ("labels", &labels)],
    );
    assert_eq!(
        std::fs::read(s_txt["scores"].join("score.npy")).unwrap(),
        std::fs::read(s_dir["scores"].join("score.npy")).unwrap()
    );
    same_bytes(
        &s_txt["scores"].join("score.txt"),
        &d.join("prob.txt"),
        "score.txt of diffprob",
    );
    let scores = s_txt["scores"].clone();
    let (cm, clean) = stage(
        &ours,
        "clean",
        "clean",
        json!({}),
        &[
            ("predictions", &d.join("pred_label.npy")),
            ("probs", &d.join("probs")),
            ("labels", &labels),
        ],
    );
    assert!(
        cm["identities_without_clean_sample"].as_u64().unwrap() >= 1,
        "{cm}"
    );
    let flags = clean["flags"].clone();

    let mut jobs = vec![
        json!({"name": "savetxt", "kind": "savetxt"}),
        json!({"name": "clean", "kind": "clean"}),
    ];
    let mut ours_kept: Vec<(String, PathBuf)> = vec![("clean".into(), clean["kept"].clone())];
    let mut targets: Vec<(String, f64)> = Vec::new();
    for (i, t) in [3e-5, 1e-3, 0.0, 0.02, 0.3].into_iter().enumerate() {
        for min in [5u32, 3] {
            for with_flags in [false, true] {
                let name = format!("diffprob_{i}_m{min}_c{}", with_flags as u8);
                let mut inputs: Vec<(&str, &Path)> = vec![("scores", &scores), ("labels", &labels)];
                if with_flags {
                    inputs.push(("flags", &flags));
                }
                let (_, o) = stage(
                    &ours,
                    &name,
                    "prune",
                    json!({"threshold": t, "min_per_id": min}),
                    &inputs,
                );
                ours_kept.push((name.clone(), o["kept"].clone()));
                jobs.push(json!({"name": name, "kind": "diffprob", "threshold": t, "min": min, "clean": with_flags}));
            }
        }
    }
    for r in [0.75, 0.5, 0.25] {
        for with_flags in [false, true] {
            let name = format!("target_{}_c{}", (r * 100.0) as u32, with_flags as u8);
            let mut inputs: Vec<(&str, &Path)> = vec![("scores", &scores), ("train", d)];
            if with_flags {
                inputs.push(("flags", &flags));
            }
            // `train` = a folder with labels.npy (a dataset train/ folder).
            let (m, o) = stage(&ours, &name, "prune", json!({"target_ratio": r}), &inputs);
            assert!(
                m["kept"].as_u64().unwrap() as f64 >= (r * n as f64).ceil(),
                "{name}: {m}"
            );
            targets.push((name.clone(), m["threshold"].as_f64().unwrap()));
            ours_kept.push((name.clone(), o["kept"].clone()));
            jobs.push(json!({"name": name, "kind": "diffprob", "target_ratio": r, "min": 5, "clean": with_flags}));
        }
    }
    for include_final in [false, true] {
        let (_, s_npy) = stage(
            &ours,
            &format!("dynunc_npy_{include_final}"),
            "score",
            json!({"method": "dynunc", "include_final_window": include_final}),
            &[("history", &d.join("history")), ("labels", &labels)],
        );
        let (_, s_txt) = stage(
            &ours,
            &format!("dynunc_txt_{include_final}"),
            "score",
            json!({"method": "dynunc", "include_final_window": include_final}),
            &[("history", &d.join("history_txt"))],
        );
        assert_eq!(
            std::fs::read(s_npy["scores"].join("score.npy")).unwrap(),
            std::fs::read(s_txt["scores"].join("score.npy")).unwrap()
        );
        for f in [0.75, 0.5, 0.25] {
            let name = format!("dynunc_{}_f{}", (f * 100.0) as u32, include_final as u8);
            let (_, o) = stage(
                &ours,
                &name,
                "prune",
                json!({"fraction": f}),
                &[("scores", &s_npy["scores"]), ("labels", &labels)],
            );
            ours_kept.push((name.clone(), o["kept"].clone()));
            jobs.push(json!({"name": name, "kind": "dynunc", "fraction": f, "min": 5, "window": 10, "include_final": include_final}));
        }
    }
    let (_, rs) = stage(
        &ours,
        "rand_scores",
        "score",
        json!({"method": "rand", "seed": 3}),
        &[("labels", &labels)],
    );
    for f in [0.75, 0.5, 0.25] {
        for with_flags in [false, true] {
            let name = format!("rand_{}_c{}", (f * 100.0) as u32, with_flags as u8);
            let mut inputs: Vec<(&str, &Path)> =
                vec![("scores", &rs["scores"]), ("labels", &labels)];
            if with_flags {
                inputs.push(("flags", &flags));
            }
            let (_, o) = stage(
                &ours,
                &name,
                "prune",
                json!({"fraction": f, "order": "reference"}),
                &inputs,
            );
            ours_kept.push((name.clone(), o["kept"].clone()));
            jobs.push(
                json!({"name": name, "kind": "rand", "fraction": f, "min": 5, "clean": with_flags}),
            );
        }
    }
    let (rm, relabel) = stage(
        &ours,
        "relabel",
        "relabel",
        json!({}),
        &[("kept", &clean["kept"]), ("labels", &labels)],
    );
    assert_eq!(
        rm["classes_kept"].as_u64().unwrap() as usize,
        inp.classes - cm["identities_without_clean_sample"].as_u64().unwrap() as usize
    );
    jobs.push(json!({"name": "relabel", "kind": "relabel", "kept": clean["kept"]}));

    let spec = json!({
        "labels": labels, "probs_txt": d.join("prob.txt"), "history_dir": d.join("history_txt"),
        "pred": d.join("pred_label.npy"), "faithful": faithful, "out": refdir, "jobs": jobs,
    });
    let rdir = run_reference(&py, &spec, d);

    same_bytes(
        &d.join("prob.txt"),
        &rdir.join("savetxt.txt"),
        "np.savetxt of the probabilities",
    );
    same_bytes(
        &clean["prob_clean"].join("prob_clean.txt"),
        &rdir.join("clean_prob_clean.txt"),
        "prob_clean.txt",
    );
    assert_eq!(
        npy::read(&flags).unwrap().to_u8().unwrap(),
        npy::read(&rdir.join("clean_flags.npy"))
            .unwrap()
            .to_u8()
            .unwrap(),
        "flags"
    );
    same_bytes(
        &relabel["map"],
        &rdir.join("relabel.json"),
        "label_map.json",
    );
    for (name, path) in &ours_kept {
        same_bytes(path, &rdir.join(format!("{name}.txt")), name);
        let from_txt = text::read_kept(path, Some(n)).unwrap();
        let from_npy: Vec<usize> = npy::read(&path.with_extension("npy"))
            .unwrap()
            .to_i64()
            .unwrap()
            .into_iter()
            .map(|x| x as usize)
            .collect();
        assert_eq!(from_txt, from_npy, "{name}: kept.npy");
    }
    for (name, t) in targets {
        let v: Value =
            serde_json::from_slice(&std::fs::read(rdir.join(format!("{name}_t.json"))).unwrap())
                .unwrap();
        assert_eq!(
            v["t"].as_f64().unwrap().to_bits(),
            t.to_bits(),
            "{name}: threshold {t} vs reference {}",
            v["t"]
        );
    }
    for include_final in [false, true] {
        let ours = npy::read(&d.join(format!("ours/dynunc_npy_{include_final}/scores/score.npy")))
            .unwrap()
            .to_f64()
            .unwrap();
        let theirs =
            text::read_floats(&rdir.join(format!("dynunc_w10_f{}.txt", include_final as u8)))
                .unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1e-3),
                "dynunc score {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
#[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh (numpy); `make test` sets it"]
fn parity_with_the_literal_reference_scan() {
    parity(40, 11, true);
}

#[test]
#[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh (numpy); `make test` sets it"]
fn parity_with_the_reference_at_a_larger_scale() {
    parity(400, 12, false);
}
