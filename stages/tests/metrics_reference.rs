//! The evaluation metrics against scikit-learn / NumPy / SciPy: `tests/py/metrics_reference.py`
//! writes random score and distance sets with ties plus the reference results; every value here
//! must match bit for bit. Needs `ORCHESTRATOR_PYTHON` (ignored without it; `make test` runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator_stages::eval::roc::{
    auc, np_sum, roc_curve, tar_at_far, RocCurve, IJB_FAR_TARGETS,
};
use orchestrator_stages::eval::verification::evaluate;
use orchestrator_stages::formats::npy;

fn reference_dir() -> (tempfile::TempDir, PathBuf) {
    let python = orchestrator_stages::testing::require_python();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/metrics_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("cannot start the reference python");
    assert!(
        out.status.success(),
        "metrics_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = dir.path().to_path_buf();
    (dir, p)
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
    let (_keep, dir) = reference_dir();
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
