//! Tests of [`super`]: determinism, formats and the recorded truth of the generated data.

use super::*;
use crate::formats::ijb;

fn small() -> SyntheticFacesParams {
    SyntheticFacesParams {
        identities: 12,
        images_per_identity: 6,
        size: 32,
        seed: 3,
        label_noise: 0.1,
        duplicates: 0.2,
        verification_identities: 5,
        verification_pool: 3,
        pairs: 30,
        ijbc_subjects: 3,
        ijbc_templates_per_subject: 4,
        ijbc_media_per_subject: 3,
    }
}

fn run(dir: &Path, p: &SyntheticFacesParams) -> serde_json::Value {
    let train = dir.join("train");
    let ijbc = dir.join("ijbc");
    generate(
        p,
        &Outputs {
            train: &train,
            pairs: &dir.join("pairs.bin"),
            ijbc: &ijbc,
            noise: &dir.join("noise.json"),
        },
    )
    .unwrap()
}

fn digest(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn deterministic_and_complete() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = small();
    let m = run(a.path(), &p);
    run(b.path(), &p);
    assert_eq!(digest(a.path()), digest(b.path()), "same seed, same bytes");
    let c = tempfile::tempdir().unwrap();
    run(c.path(), &SyntheticFacesParams { seed: 4, ..small() });
    assert_ne!(digest(a.path()), digest(c.path()));

    let ds = crate::data::dataset::Dataset::open(&a.path().join("train")).unwrap();
    assert_eq!(ds.num_classes(), 12);
    assert_eq!(ds.image_size(), (32, 32));
    assert_eq!(m["images"].as_u64().unwrap() as usize, ds.len());
    let mut buf = Vec::new();
    for pos in 0..ds.len() {
        ds.decode_rgb(pos, &mut buf).unwrap();
    }
    let (imgs, same) = bin::read_pairs(&a.path().join("pairs.bin")).unwrap();
    assert_eq!((imgs.len(), same.len()), (60, 30));
    assert_eq!(
        same.iter().filter(|&&s| s).count(),
        15,
        "exactly half genuine with odd fold sizes"
    );
    // Pairs come from a pool of 3 images per verification identity: at most 15 distinct
    // images, and the two images of a genuine pair are different images.
    let distinct: std::collections::HashSet<&Vec<u8>> = imgs.iter().collect();
    assert!(distinct.len() <= 15, "{} distinct images", distinct.len());
    assert_eq!(m["verification_images"], 15);
    for (k, &s) in same.iter().enumerate() {
        if s {
            assert_ne!(imgs[2 * k], imgs[2 * k + 1], "genuine pair {k}");
        }
    }
    // IJB-C: 3 subjects × 4 templates, every pair listed.
    let rel = ijb::read_release(&a.path().join("ijbc"), "IJBC", true).unwrap();
    let templates: std::collections::BTreeSet<u64> = rel.templates.iter().copied().collect();
    assert_eq!(templates.len(), 12);
    assert_eq!(rel.pairs.len(), 12 * 11 / 2);
    assert_eq!(rel.pairs.iter().filter(|p| p.2).count(), 3 * (4 * 3 / 2));
    assert_eq!(m["ijbc_templates"], 12);
    assert_eq!(m["ijbc_pairs"], 66);
    assert_eq!(m["ijbc_genuine_pairs"], 18);
    assert_eq!(m["ijbc_impostor_pairs"], 48);
    assert_eq!(m["ijbc_rows"].as_u64().unwrap() as usize, rel.images.len());
    // Each loose crop is one file, listed with the same landmarks and score on every row.
    let mut files: std::collections::HashMap<&str, ([[f32; 2]; 5], f32)> = Default::default();
    for i in 0..rel.images.len() {
        let e = files
            .entry(rel.images[i].as_str())
            .or_insert((rel.landmarks[i], rel.scores[i]));
        assert_eq!(*e, (rel.landmarks[i], rel.scores[i]), "row {i}");
    }
    let on_disk = std::fs::read_dir(a.path().join("ijbc/loose_crop"))
        .unwrap()
        .count();
    assert_eq!(files.len(), on_disk);
    assert_eq!(m["ijbc_images"].as_u64().unwrap() as usize, on_disk);
    assert!(
        on_disk <= 3 * 3 * 3,
        "at most 3 frames of 3 media per subject"
    );
    let noise: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("noise.json")).unwrap()).unwrap();
    let truth = noise["true_identity"].as_array().unwrap();
    for e in noise["label_noise"].as_array().unwrap() {
        let pos = e["position"].as_u64().unwrap() as usize;
        assert_eq!(ds.labels()[pos], e["label"].as_i64().unwrap());
        assert_ne!(truth[pos].as_i64().unwrap(), ds.labels()[pos]);
    }
}

#[test]
fn defects_follow_the_params() {
    let p = SyntheticFacesParams {
        identities: 300,
        images_per_identity: 24,
        ..Default::default()
    };
    let plan = plan_train(&p);
    let n = plan.len() as f64;
    assert!((n / 300.0 - 24.0).abs() < 4.0, "mean images {}", n / 300.0);
    let noisy = plan.iter().filter(|im| im.true_id != im.label).count() as f64 / n;
    let dups = plan.iter().filter(|im| im.duplicate_of.is_some()).count() as f64 / n;
    assert!((noisy - 0.02 * (1.0 - 0.2)).abs() < 0.01, "{noisy}");
    assert!((dups - 0.2).abs() < 0.03, "{dups}");
    assert!(image_counts(&p).iter().filter(|&&c| c <= 5).count() >= 5);
}

#[test]
fn aligning_the_loose_crop_landmarks_recovers_the_aligned_face() {
    let id = Identity::new(1, 0);
    let nz = Nuisance::new(&mut ChaCha8Rng::seed_from_u64(2));
    let loose = Sim::about([0.0, 0.0], 0.3, 1.4, [80.0, 70.0]);
    let lm: Vec<[f32; 2]> = id
        .landmarks(nz.yaw)
        .iter()
        .map(|&q| loose.apply(q))
        .collect();
    let m = Sim::estimate(&lm, &TEMPLATE);
    let got = m.then_after(&loose);
    let want = Sim::estimate(&id.landmarks(nz.yaw), &TEMPLATE);
    for (g, w) in [
        (got.a, want.a),
        (got.b, want.b),
        (got.tx, want.tx),
        (got.ty, want.ty),
    ] {
        assert!((g - w).abs() < 1e-3, "{got:?} vs {want:?}");
    }
    // Without pose the identity's alignment maps its landmarks close to the template.
    for (q, t) in id.landmarks(0.0).iter().zip(TEMPLATE) {
        let a = id.align.apply(*q);
        assert!(
            (a[0] - t[0]).abs() < 6.0 && (a[1] - t[1]).abs() < 6.0,
            "{a:?} vs {t:?}"
        );
    }
}
