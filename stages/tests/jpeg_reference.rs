//! JPEG decoding and p(x) against the reference's libraries, run at test time
//! (`tests/py/jpeg_reference.py`): our decoder gives the same pixels as PIL
//! (`Image.open(...).convert("RGB")`) and OpenCV (`cv2.imdecode`, BGR→RGB) on the synthetic
//! dataset's JPEGs and on 112×112 face JPEGs that PIL encodes at several subsamplings and
//! qualities (plus grayscale, progressive and odd sizes); and `eval-trainset`'s p(x) of a trained
//! model equals what the reference's classes compute from PIL-decoded pixels.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator_stages::data::dataset::Dataset;
use orchestrator_stages::data::decode::decode_rgb;
use orchestrator_stages::data::synthetic::{generate, Outputs};
use orchestrator_stages::formats::npy;
use orchestrator_stages::invocation::Invocation;
use orchestrator_stages::kinds::data::SyntheticFacesParams;
use serde_json::json;

const NEEDS: &str = "run `source scripts/deps.sh` (it installs PIL and opencv-python-headless into .deps/venv), or `make test`";

/// The project's Python (`orchestrator_stages::testing::require_python`) with PIL, cv2, torch
/// and safetensors importable; panics naming what is missing and how to get it.
fn require_python() -> PathBuf {
    let py = orchestrator_stages::testing::require_python();
    let ok = Command::new(&py)
        .args(["-c", "import PIL, cv2, torch, safetensors"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import PIL, cv2, torch, safetensors: {NEEDS}",
        py.display()
    );
    py
}

fn script(py: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/jpeg_reference.py");
    let out = Command::new(py)
        .arg(&s)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "jpeg_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn synthetic(dir: &Path, identities: u32, per_id: u32, size: u32) -> PathBuf {
    let p = SyntheticFacesParams {
        identities,
        images_per_identity: per_id,
        size,
        seed: 11,
        verification_identities: 2,
        pairs: 20,
        ijbc_subjects: 2,
        ..Default::default()
    };
    let train = dir.join("train");
    generate(
        &p,
        &Outputs {
            train: &train,
            pairs: &dir.join("pairs.bin"),
            ijbc: &dir.join("ijbc"),
            noise: &dir.join("noise.json"),
        },
    )
    .unwrap();
    train
}

fn u8s(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let a = npy::read(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    (a.shape.clone(), a.to_u8().unwrap())
}

#[test]
#[ignore = "requires the Python venv with PIL, OpenCV and torch (source scripts/deps.sh)"]
fn decoded_pixels_equal_pil_and_opencv() {
    let py = require_python();
    let tmp = tempfile::tempdir().unwrap();
    let jpegs = tmp.path().join("jpegs");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&jpegs).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    // The synthetic datasets' own JPEGs (112 px and the main job's 32 px), and the 112 px faces
    // as sources for PIL's encoder.
    for (size, name) in [(112u32, "s112"), (32, "s32")] {
        let ds = Dataset::open(&synthetic(&tmp.path().join(name), 6, 4, size)).unwrap();
        for pos in 0..ds.len().min(12) {
            let jpeg = ds.payload(pos).unwrap();
            std::fs::write(jpegs.join(format!("{name}_{pos}.jpg")), &*jpeg).unwrap();
            if size == 112 && pos < 4 {
                let mut rgb = Vec::new();
                decode_rgb(&jpeg, &mut rgb, &|| format!("{name} {pos}")).unwrap();
                npy::write(&src.join(format!("face{pos}.npy")), &[112, 112, 3], &rgb).unwrap();
            }
        }
    }
    script(&py, &[&"encode", &src, &jpegs]);
    script(&py, &[&"decode", &jpegs]);

    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&jpegs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let mut ours = Vec::new();
        let (h, w) = decode_rgb(&bytes, &mut ours, &|| f.display().to_string()).unwrap();
        for lib in ["pil", "cv2"] {
            let (shape, theirs) = u8s(&f.with_extension(format!("{lib}.npy")));
            assert_eq!(
                shape,
                vec![h as usize, w as usize, 3],
                "{} ({lib})",
                f.display()
            );
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            let max = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert_eq!(
                differ,
                0,
                "{}: {differ} of {} values differ from {lib} (max {max} levels)",
                f.display(),
                ours.len()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4 * 16 + 24, "only {checked} JPEGs checked");
}

#[test]
#[ignore = "requires the Python venv with PIL, OpenCV and torch (source scripts/deps.sh)"]
fn pofx_equals_the_reference_fed_pil_pixels() {
    let py = require_python();
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic(&tmp.path().join("data"), 8, 8, 32);
    let run = |kind: &str, params: serde_json::Value, inputs: &[(&str, &Path)]| {
        let inv =
            Invocation::standalone(kind, kind, &params, inputs, &tmp.path().join(kind)).unwrap();
        let out = inv.outputs.clone();
        orchestrator_stages::run::run_invocation(&inv)
            .expect("a built-in kind")
            .unwrap_or_else(|e| panic!("{kind}: {e:#}"));
        out
    };
    let trained = run(
        "train",
        json!({"network": "iresnet-tiny", "embedding_size": 32, "epochs": 3, "batch_size": 16,
               "lr": 0.1, "lr_batch": 16, "milestones": [], "dropout": 0.0, "workers": 1}),
        &[("train", &train)],
    );
    let model = trained["model"].clone();
    let eval = run(
        "eval-trainset",
        json!({}),
        &[("model", &model), ("train", &train)],
    );
    let ours = npy::read(&eval["probs"].join("prob.npy"))
        .unwrap()
        .to_f64()
        .unwrap();
    let out = tmp.path().join("ref_prob.npy");
    script(&py, &[&"pofx", &model, &train, &out]);
    let theirs = npy::read(&out).unwrap().to_f64().unwrap();
    assert_eq!(ours.len(), theirs.len());
    let (i, d) = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f64), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    eprintln!(
        "max |p(x) ours - reference| = {d:e} (sample {i} of {})",
        ours.len()
    );
    // Same pixels, same libtorch: what is left is f32 rounding in another order of operations.
    assert!(
        d <= 1e-5,
        "p(x) of sample {i}: ours {} vs reference {} (|d| = {d:e})",
        ours[i],
        theirs[i]
    );
}
