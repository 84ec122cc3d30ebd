//! Tests of [`super`]: determinism, formats and the recorded truth of the generated data.

use super::*;
use crate::formats::ijb;
use crate::kinds::Params;

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
        ..Default::default()
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
    // The new knobs are part of the seeded recipe too.
    let hard = SyntheticFacesParams {
        difficulty_spread: 0.5,
        duplicate_strength: 2.0,
        ..small()
    };
    let (d, e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(d.path(), &hard);
    run(e.path(), &hard);
    assert_eq!(
        digest(d.path()),
        digest(e.path()),
        "same params, same bytes"
    );
    assert_ne!(digest(a.path()), digest(d.path()));
    // 12 identities × 6 images: exactly round(0.1 · 72) mislabeled, round(0.2 · 72) duplicates.
    assert_eq!(m["images"], 72);
    assert_eq!(m["label_noise_images"], 7);
    assert_eq!(m["duplicate_images"], 14);

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
fn identity_sizes_keep_the_floor_the_cap_and_the_exact_mean() {
    for (ids, mean, min, ratio, sigma) in [
        (300, 24, 2, 17.0, 0.85),
        (200, 20, 2, 17.0, 0.85),
        (10_575, 47, 2, 17.0, 0.85),
        (50, 6, 3, 2.0, 1.5),
        (40, 5, 5, 3.0, 0.85),
        (40, 8, 2, 1.0, 0.85),
        (40, 8, 2, 17.0, 0.0),
    ] {
        let p = SyntheticFacesParams {
            identities: ids,
            images_per_identity: mean,
            images_per_identity_min: min,
            images_per_identity_max_ratio: ratio,
            images_per_identity_sigma: sigma,
            ..Default::default()
        };
        p.validate().unwrap();
        let c = image_counts(&p);
        let cap = p.max_images_per_identity() as usize;
        assert_eq!(c.len(), ids as usize);
        assert_eq!(c.iter().sum::<usize>(), (ids * mean) as usize, "{p:?}");
        assert!(
            c.iter().all(|&n| (min as usize..=cap).contains(&n)),
            "{c:?}"
        );
        if sigma == 0.0 {
            assert!(c.iter().all(|&n| n == mean as usize), "{c:?}");
        }
    }
    // The default shape is long-tailed: a floor of tiny identities and a tail past 4× the mean.
    let p = SyntheticFacesParams::default();
    let c = image_counts(&p);
    assert!(c.iter().filter(|&&n| n <= 5).count() >= 5, "{c:?}");
    assert!(*c.iter().max().unwrap() > 4 * 24, "{c:?}");
}

#[test]
fn defects_follow_the_params_exactly() {
    for (noise, dups) in [
        (0.093, 0.2),
        (0.03, 0.25),
        (0.0, 0.0),
        (0.2, 0.29),
        (0.49, 0.0),
    ] {
        let p = SyntheticFacesParams {
            identities: 120,
            images_per_identity: 9,
            label_noise: noise,
            duplicates: dups,
            ..Default::default()
        };
        p.validate().unwrap();
        let plan = plan_train(&p);
        let n = plan.len();
        assert_eq!(n, 120 * 9);
        let noisy = plan.iter().filter(|im| im.true_id != im.label).count();
        let dup = plan.iter().filter(|im| im.duplicate_of.is_some()).count();
        assert_eq!(noisy, (noise * n as f64).round() as usize, "{noise}");
        assert_eq!(dup, (dups * n as f64).round() as usize, "{dups}");
        let mut first = 0;
        for (label, &count) in image_counts(&p).iter().enumerate() {
            // Each identity's first image is a clean original; labels are contiguous.
            let im = &plan[first];
            assert!(im.label == label && im.true_id == label && im.duplicate_of.is_none());
            for (pos, im) in plan.iter().enumerate().skip(first).take(count) {
                assert_eq!(im.label, label);
                if let Some(src) = im.duplicate_of {
                    // A near-duplicate: an earlier clean original of the same identity, same shot.
                    let s = &plan[src];
                    assert!((first..pos).contains(&src), "{pos} <- {src}");
                    assert!(s.duplicate_of.is_none() && s.true_id == label);
                    assert_eq!((im.shot, im.true_id), (s.shot, label));
                }
            }
            first += count;
        }
    }
}

#[test]
fn near_duplicates_stay_near_their_source_and_strength_scales_them() {
    let id = Identity::new(1, 0);
    let shot = 42;
    let pixels = |d: Dup| {
        let mut r = ChaCha8Rng::seed_from_u64(shot);
        let mut nz = Nuisance::new(&mut r);
        if let Some((seed, s)) = d {
            nz = nz.near_duplicate_by(&mut ChaCha8Rng::seed_from_u64(seed), s);
        }
        render(&id, &nz, &nz.aligned(&id, 112), 112, 112)
    };
    let mad = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    };
    let base = pixels(None);
    let other = {
        let nz = Nuisance::new(&mut ChaCha8Rng::seed_from_u64(shot + 1));
        render(&id, &nz, &nz.aligned(&id, 112), 112, 112)
    };
    let (d0, d1, d4) = (
        mad(&base, &pixels(Some((9, 0.0)))),
        mad(&base, &pixels(Some((9, 1.0)))),
        mad(&base, &pixels(Some((9, 4.0)))),
    );
    let apart = mad(&base, &other);
    // Same drawn perturbation, larger strength: further from the source; all far nearer to it
    // than another shot of the same identity.
    assert!(d0 <= d1 && d1 < d4, "{d0} {d1} {d4}");
    assert!(d4 < apart, "{d4} vs another shot {apart}");
    // Strength 1 is the historical perturbation (IJB-C video frames use it).
    let mut r = ChaCha8Rng::seed_from_u64(shot);
    let nz = Nuisance::new(&mut r);
    let a = nz.near_duplicate(&mut ChaCha8Rng::seed_from_u64(9));
    let b = nz.near_duplicate_by(&mut ChaCha8Rng::seed_from_u64(9), 1.0);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn difficulty_spread_scales_the_nuisance_and_zero_changes_nothing() {
    let p0 = SyntheticFacesParams::default();
    for shot in 0..50 {
        assert_eq!(difficulty(&p0, shot), 1.0);
        let a = Nuisance::new(&mut ChaCha8Rng::seed_from_u64(shot));
        let b = Nuisance::with_difficulty(&mut ChaCha8Rng::seed_from_u64(shot), 1.0);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // Harder: the same draws, scaled (pose and jitter grow with d).
        let h = Nuisance::with_difficulty(&mut ChaCha8Rng::seed_from_u64(shot), 2.0);
        assert_eq!(h.yaw, 2.0 * a.yaw);
        assert_eq!(h.noise_seed, a.noise_seed);
    }
    let p = SyntheticFacesParams {
        difficulty_spread: 0.5,
        ..Default::default()
    };
    let d: Vec<f32> = (0..2000).map(|shot| difficulty(&p, shot)).collect();
    assert!(d.iter().all(|&x| x > 0.0));
    // ln d = 0.5 z: about half the shots above 1, half below.
    let above = d.iter().filter(|&&x| x > 1.0).count();
    assert!((800..1200).contains(&above), "{above}");
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
