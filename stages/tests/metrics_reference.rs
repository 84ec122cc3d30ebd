//! The evaluation metrics against scikit-learn / NumPy / SciPy: `tests/py/metrics_reference.py`
//! writes random score and distance sets with ties plus the reference results; every value here
//! must match bit for bit (f64 sums taken in another order: within a few ulps). Needs
//! `ORCHESTRATOR_PYTHON` (ignored without it; `make test` runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator_stages::eval::pooling::{pool_templates, score_pairs};
use orchestrator_stages::eval::roc::{
    auc, np_sum, roc_curve, tar_at_far, RocCurve, IJB_FAR_TARGETS,
};
use orchestrator_stages::eval::verification::{evaluate, pair_distances, test_embeddings};
use orchestrator_stages::formats::npy;

/// The reference's outputs, generated once per test process (every test of this file reads them)
/// into the target's scratch folder.
fn reference_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let python = orchestrator_stages::testing::require_python();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics_reference");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/metrics_reference.py");
        let out = Command::new(python)
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("cannot start the reference python");
        assert!(
            out.status.success(),
            "metrics_reference.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

fn f64s(dir: &Path, name: &str) -> Vec<f64> {
    npy::read(&dir.join(format!("{name}.npy")))
        .unwrap()
        .to_f64()
        .unwrap()
}

fn bools(dir: &Path, name: &str) -> Vec<bool> {
    npy::read(&dir.join(format!("{name}.npy")))
        .unwrap()
        .to_u8()
        .unwrap()
        .into_iter()
        .map(|b| b != 0)
        .collect()
}

/// Same bits (NaN equal to NaN).
fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || x == y)
}

#[test]
#[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh (numpy, scikit-learn); `make test` sets it"]
fn metrics_match_the_python_reference() {
    let dir = reference_dir();
    let mut k = 0;
    while dir.join(format!("roc{k}_scores.npy")).exists() {
        let arr = npy::read(&dir.join(format!("roc{k}_scores.npy"))).unwrap();
        let labels = bools(&dir, &format!("roc{k}_labels"));
        let curve: RocCurve = if arr.descr == "<f4" {
            roc_curve(&arr.to_f32().unwrap(), &labels).unwrap()
        } else {
            roc_curve(&arr.to_f64().unwrap(), &labels).unwrap()
        };
        assert!(
            same(&curve.fpr, &f64s(&dir, &format!("roc{k}_fpr"))),
            "case {k}: fpr differs"
        );
        assert!(
            same(&curve.tpr, &f64s(&dir, &format!("roc{k}_tpr"))),
            "case {k}: tpr differs"
        );
        assert!(
            same(&curve.thresholds, &f64s(&dir, &format!("roc{k}_thr"))),
            "case {k}: thresholds differ"
        );
        let tars: Vec<f64> = tar_at_far(&curve, &IJB_FAR_TARGETS)
            .iter()
            .map(|t| t.tar)
            .collect();
        assert!(
            same(&tars, &f64s(&dir, &format!("roc{k}_tar"))),
            "case {k}: TAR@FAR {tars:?}"
        );
        let a = auc(&curve.fpr, &curve.tpr);
        assert_eq!(
            a.to_bits(),
            f64s(&dir, &format!("roc{k}_auc"))[0].to_bits(),
            "case {k}: auc {a}"
        );
        k += 1;
    }
    assert!(k >= 8, "only {k} ROC cases");

    let mut k = 0;
    while dir.join(format!("ver{k}_dist.npy")).exists() {
        let dist = f64s(&dir, &format!("ver{k}_dist"));
        let issame = bools(&dir, &format!("ver{k}_issame"));
        let want = f64s(&dir, &format!("ver{k}_out"));
        let r = evaluate(&dist, &issame, 10, 1e-3).unwrap();
        let mut got = vec![r.accuracy, r.std, r.best_threshold, r.val, r.val_std, r.far];
        got.extend(&r.fold_accuracies);
        got.extend(&r.fold_thresholds);
        assert!(
            same(&got, &want),
            "verification case {k}:\n ours {got:?}\n numpy {want:?}"
        );
        k += 1;
    }
    assert!(k >= 4, "only {k} verification cases");

    let mut k = 0;
    while dir.join(format!("np_sum{k}.npy")).exists() {
        let a = f64s(&dir, &format!("np_sum{k}"));
        assert_eq!(
            np_sum(&a).to_bits(),
            f64s(&dir, &format!("np_sum{k}_out"))[0].to_bits(),
            "np.sum of {} values",
            a.len()
        );
        k += 1;
    }
}

fn u64s(dir: &Path, name: &str) -> Vec<u64> {
    npy::read(&dir.join(format!("{name}.npy")))
        .unwrap()
        .to_i64()
        .unwrap()
        .into_iter()
        .map(|x| x as u64)
        .collect()
}

/// |a - b| <= tol for every element (f64 sums in another order differ by a few ulps).
fn within(a: &[f64], b: &[f64], tol: f64) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).position(|(x, y)| (x - y).abs() > tol)
}

#[test]
#[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh (numpy, scikit-learn); `make test` sets it"]
fn verification_embeddings_and_xnorm_match_insightface_test() {
    let dir = reference_dir();
    let mut k = 0;
    while dir.join(format!("vemb{k}_views.npy")).exists() {
        let arr = npy::read(&dir.join(format!("vemb{k}_views.npy"))).unwrap();
        let (views, rows, dim) = (arr.shape[0], arr.shape[1], arr.shape[2]);
        let flat = arr.to_f32().unwrap();
        let views: Vec<&[f32]> = flat.chunks(rows * dim).take(views).collect();
        let (emb, xnorm) = test_embeddings(&views, dim);
        let want = f64s(&dir, &format!("vemb{k}_xnorm"))[0];
        assert!(
            (xnorm - want).abs() <= 1e-12 * want,
            "case {k}: xnorm {xnorm} vs {want}"
        );
        let dist = pair_distances(&emb, dim);
        let want = f64s(&dir, &format!("vemb{k}_dist"));
        if let Some(i) = within(&dist, &want, 1e-14) {
            panic!("case {k}: pair {i}: distance {} vs {}", dist[i], want[i]);
        }
        let issame = bools(&dir, &format!("vemb{k}_issame"));
        let (a, b) = (
            evaluate(&dist, &issame, 10, 1e-3).unwrap(),
            evaluate(&want, &issame, 10, 1e-3).unwrap(),
        );
        assert_eq!(a, b, "case {k}");
        k += 1;
    }
    assert!(k >= 3, "only {k} embedding cases");
}

#[test]
#[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh (numpy, scikit-learn); `make test` sets it"]
fn ijb_template_scores_are_f64_as_eval_ijbc() {
    let dir = reference_dir();
    let feats = npy::read(&dir.join("ijb0_feats.npy")).unwrap();
    let dim = feats.shape[1];
    let t = pool_templates(
        &feats.to_f32().unwrap(),
        dim,
        &u64s(&dir, "ijb0_tids"),
        &u64s(&dir, "ijb0_mids"),
    )
    .unwrap();
    let scores = score_pairs(&t, &u64s(&dir, "ijb0_p1"), &u64s(&dir, "ijb0_p2")).unwrap();
    let want = f64s(&dir, "ijb0_score");
    if let Some(i) = within(&scores, &want, 1e-15) {
        panic!("pair {i}: score {} vs numpy {}", scores[i], want[i]);
    }
    // Pairs 0 (genuine) and 1 (impostor) are one f32 apart from a tie: f64 keeps them ordered.
    assert_eq!(scores[0] as f32, scores[1] as f32);
    assert!(scores[0] > scores[1] && want[0] > want[1]);
    let labels = bools(&dir, "ijb0_labels");
    let tars: Vec<f64> = tar_at_far(&roc_curve(&scores, &labels).unwrap(), &IJB_FAR_TARGETS)
        .iter()
        .map(|t| t.tar)
        .collect();
    assert!(same(&tars, &f64s(&dir, "ijb0_tar")), "TAR@FAR {tars:?}");
}
