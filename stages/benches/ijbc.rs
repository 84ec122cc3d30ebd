//! IJB-C-scale benchmark of the evaluation path: template pooling, pair scoring and the ROC /
//! TAR@FAR / AUC metrics on generated features of the real sizes (469,375 images × 512, 23,124
//! templates, 15,658,489 pairs of which 19,557 genuine), side by side with the NumPy /
//! scikit-learn procedure (`ijbc_reference.py`) on the same inputs. With `--features torch` it
//! also measures embedding throughput (align + flip-sum forward) on the CPU.
//!
//! `cargo bench -p orchestrator-stages --bench ijbc [--features torch]`
//! Env: `IJBC_BENCH_SCALE` (fraction of the sizes, default 1), `IJBC_BENCH_PYTHON=0` to skip the
//! reference, `ORCHESTRATOR_PYTHON` (python with numpy + scikit-learn; `source scripts/deps.sh`).

use std::path::Path;
use std::time::Instant;

use orchestrator_stages::eval::pooling::{pool_templates, score_pairs};
use orchestrator_stages::eval::roc::{auc, roc_curve, tar_at_far, IJB_FAR_TARGETS};
use orchestrator_stages::formats::npy;
use rayon::prelude::*;

const DIM: usize = 512;

/// splitmix64: a fast, seedable stream for bulk synthetic data.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately N(0, 1): a centred sum of four uniforms, rescaled.
    fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.732_050_8
    }
}

struct Bench {
    feats: Vec<f32>,
    tids: Vec<u64>,
    mids: Vec<u64>,
    p1: Vec<u64>,
    p2: Vec<u64>,
    labels: Vec<bool>,
}

fn generate(scale: f64) -> Bench {
    let n_img = (469_375.0 * scale) as usize;
    let n_tpl = ((23_124.0 * scale) as usize).max(2);
    let n_gen = ((19_557.0 * scale) as usize).max(1);
    let n_imp = ((15_638_932.0 * scale) as usize).max(1);
    let n_sub = ((3_531.0 * scale) as usize).max(2);
    let mut r = Mix(7);
    // Subject of each template; non-contiguous template ids as in the release.
    let subject: Vec<usize> = (0..n_tpl)
        .map(|t| {
            if t < n_sub {
                t
            } else {
                r.below(n_sub as u64) as usize
            }
        })
        .collect();
    let tid = |t: usize| 1 + 7 * t as u64;
    let centres: Vec<f32> = (0..n_sub * DIM).map(|_| r.normal()).collect();
    // Every template gets one image, the rest go to random templates; media = 1..4 per template.
    let tpl_of: Vec<usize> = (0..n_img)
        .map(|i| {
            if i < n_tpl {
                i
            } else {
                r.below(n_tpl as u64) as usize
            }
        })
        .collect();
    let tids: Vec<u64> = tpl_of.iter().map(|&t| tid(t)).collect();
    let mids: Vec<u64> = tpl_of
        .iter()
        .map(|&t| 100_000 + 8 * t as u64 + r.below(4))
        .collect();
    let mut feats = vec![0f32; n_img * DIM];
    feats.par_chunks_mut(DIM).enumerate().for_each(|(i, row)| {
        let mut g = Mix(0xABCD ^ (i as u64).wrapping_mul(0x1000_0000_01B3));
        let c = &centres[subject[tpl_of[i]] * DIM..][..DIM];
        let quality = 0.5 + 0.5 * g.unit();
        for (v, &m) in row.iter_mut().zip(c) {
            *v = quality * (0.15 * m + g.normal());
        }
    });
    // Genuine pairs: two templates of one subject (the first n_sub templates anchor each subject).
    let mut by_subject = vec![Vec::new(); n_sub];
    for (t, &s) in subject.iter().enumerate() {
        by_subject[s].push(t);
    }
    let (mut p1, mut p2, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    while p1.len() < n_gen {
        let s = r.below(n_sub as u64) as usize;
        let ts = &by_subject[s];
        if ts.len() < 2 {
            continue;
        }
        let a = ts[r.below(ts.len() as u64) as usize];
        let b = ts[r.below(ts.len() as u64) as usize];
        if a != b {
            p1.push(tid(a));
            p2.push(tid(b));
            labels.push(true);
        }
    }
    while p1.len() < n_gen + n_imp {
        let a = r.below(n_tpl as u64) as usize;
        let b = r.below(n_tpl as u64) as usize;
        if subject[a] != subject[b] {
            p1.push(tid(a));
            p2.push(tid(b));
            labels.push(false);
        }
    }
    // Interleave genuine pairs among the impostors (a Fisher-Yates shuffle of the pair order).
    for i in (1..p1.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        p1.swap(i, j);
        p2.swap(i, j);
        labels.swap(i, j);
    }
    Bench {
        feats,
        tids,
        mids,
        p1,
        p2,
        labels,
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn main() {
    let scale: f64 = std::env::var("IJBC_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!("threads: {}", rayon::current_num_threads());
    let t = Instant::now();
    let b = generate(scale);
    println!(
        "generated {} images x {DIM}, {} pairs ({} genuine) in {:.1} s",
        b.tids.len(),
        b.p1.len(),
        b.labels.iter().filter(|&&l| l).count(),
        secs(t)
    );

    let t_all = Instant::now();
    let t = Instant::now();
    let templates = pool_templates(&b.feats, DIM, &b.tids, &b.mids).expect("pool");
    let pool_s = secs(t);
    let t = Instant::now();
    let scores = score_pairs(&templates, &b.p1, &b.p2).expect("score");
    let score_s = secs(t);
    let t = Instant::now();
    let curve = roc_curve(&scores, &b.labels).expect("roc");
    let tars = tar_at_far(&curve, &IJB_FAR_TARGETS);
    let area = auc(&curve.fpr, &curve.tpr);
    let metrics_s = secs(t);
    let total_s = secs(t_all);
    println!("rust: {} templates; pool {pool_s:.3} s, score {score_s:.3} s, roc+tar+auc {metrics_s:.3} s, total {total_s:.3} s", templates.len());
    println!("rust: ROC points {}, AUC {area:.6}", curve.fpr.len());
    println!(
        "rust TAR@FAR: {}",
        tars.iter()
            .map(|t| format!("{:.0e}: {:.4}%", t.target, t.tar * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );

    embedding_throughput();

    if std::env::var("IJBC_BENCH_PYTHON").as_deref() == Ok("0") {
        return;
    }
    let Some(python) = std::env::var_os("ORCHESTRATOR_PYTHON") else {
        println!("ORCHESTRATOR_PYTHON unset: skipping the NumPy/scikit-learn side (source scripts/deps.sh)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let w = |name: &str, shape: &[usize], data: &[u64]| {
        let v: Vec<i64> = data.iter().map(|&x| x as i64).collect();
        npy::write(&d.join(format!("{name}.npy")), shape, &v).expect("write npy");
    };
    npy::write(&d.join("feats.npy"), &[b.tids.len(), DIM], &b.feats).expect("write feats");
    w("tids", &[b.tids.len()], &b.tids);
    w("mids", &[b.mids.len()], &b.mids);
    w("p1", &[b.p1.len()], &b.p1);
    w("p2", &[b.p2.len()], &b.p2);
    let labels: Vec<u8> = b.labels.iter().map(|&l| l as u8).collect();
    npy::write_1d(&d.join("labels.npy"), &labels).expect("write labels");
    npy::write_1d(&d.join("our_score.npy"), &scores).expect("write scores");
    drop(b.feats);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ijbc_reference.py");
    println!("running the NumPy/scikit-learn reference (minutes at full scale)...");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(d)
        .output()
        .expect("start python");
    if !out.status.success() {
        println!(
            "reference failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value =
        serde_json::from_str(line.trim().lines().last().unwrap_or("{}")).expect("timings json");
    let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "numpy/sklearn: pool {:.3} s, score {:.3} s, roc+tar+auc {:.3} s, total {:.3} s",
        f("pool_s"),
        f("score_s"),
        f("metrics_s"),
        f("total_s")
    );
    println!(
        "speed-up (numpy / rust): pool {:.0}x, score {:.1}x, metrics {:.1}x (sklearn on our scores: {:.3} s, {:.1}x), total {:.1}x",
        f("pool_s") / pool_s,
        f("score_s") / score_s,
        f("metrics_s") / metrics_s,
        f("metrics_on_ours_s"),
        f("metrics_on_ours_s") / metrics_s,
        f("total_s") / total_s
    );
    let read = |n: &str| {
        npy::read(&d.join(format!("{n}.npy")))
            .expect("read")
            .to_f64()
            .expect("f64")
    };
    let ref_scores = read("ref_score");
    let max_diff = ref_scores
        .iter()
        .zip(&scores)
        .map(|(a, &b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("max |score(rust) - score(numpy)| (both f64) = {max_diff:.2e}");
    let ref_tar = read("ref_tar");
    println!(
        "numpy TAR@FAR: {}",
        ref_tar
            .iter()
            .zip(IJB_FAR_TARGETS)
            .map(|(t, x)| format!("{x:.0e}: {:.4}%", t * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Metric code alone: scikit-learn and ours on the same scores must agree bit for bit.
    let on_ours = read("ref_tar_on_ours");
    let same_tar = on_ours
        .iter()
        .zip(&tars)
        .all(|(a, b)| a.to_bits() == b.tar.to_bits());
    let same_auc = read("ref_auc_on_ours")[0].to_bits() == area.to_bits();
    let same_fpr = read("ref_fpr_on_ours") == curve.fpr;
    println!("sklearn on our scores vs ours: TAR@FAR identical: {same_tar}, AUC identical: {same_auc}, FPR array identical: {same_fpr}");
    // Our metrics on the reference's f64 scores.
    let labels = &labels.iter().map(|&l| l == 1).collect::<Vec<_>>();
    let t = Instant::now();
    let c64 = roc_curve(&ref_scores, labels).expect("roc f64");
    let t64 = tar_at_far(&c64, &IJB_FAR_TARGETS);
    println!(
        "rust metrics on numpy's f64 scores ({:.3} s): TAR@FAR identical to numpy: {}",
        secs(t),
        t64.iter()
            .zip(&ref_tar)
            .all(|(a, b)| a.tar.to_bits() == b.to_bits())
    );
}

#[cfg(not(feature = "torch"))]
fn embedding_throughput() {
    println!("embedding throughput: build with --features torch to measure");
}

#[cfg(feature = "torch")]
fn embedding_throughput() {
    orchestrator_stages::torch::embed::bench_throughput();
}
