//! Tests of [`super`]: embedding, deduplication, and the verify and ijbc stages end to end.

use super::*;
use crate::kinds::train::{Loss, Network};
use crate::torch::model::{save_vars, ModelInfo, BACKBONE_FILE, MODEL_FORMAT};
use crate::torch::nn::Arch;

const SIZE: usize = 32;

/// An untrained tiny backbone whose BN running stats were settled by a few train-mode passes
/// (fresh stats make eval outputs explode), saved as a `model/` folder.
fn model_dir(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let arch = Arch {
        network: Network::IresnetTiny,
        input_h: SIZE as i64,
        input_w: SIZE as i64,
        embedding_size: 16,
        dropout: 0.0,
    };
    let net = Backbone::new(&vs.root(), &arch).unwrap();
    tch::no_grad(|| {
        for _ in 0..30 {
            let _ = net.forward_t(
                &Tensor::randn(
                    [16, 3, SIZE as i64, SIZE as i64],
                    (Kind::Float, Device::Cpu),
                ),
                true,
            );
        }
    });
    save_vars(&vs, &m.join(BACKBONE_FILE)).unwrap();
    ModelInfo {
        format: MODEL_FORMAT,
        network: Network::IresnetTiny,
        loss: Loss::Cosface,
        s: 64.0,
        m: 0.35,
        sigma: 0.05,
        embedding_size: 16,
        num_classes: 4,
        input_h: SIZE as i64,
        input_w: SIZE as i64,
        dropout: 0.0,
        epochs_trained: 0,
        label_map_size: None,
        adaface_variant: Default::default(),
    }
    .write(&m)
    .unwrap();
    m
}

/// A face-ish test image of subject `s`: a colour pattern plus a shot-dependent shift.
fn face(s: u64, shot: u64, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = ((x as u64 * (3 + s) + y as u64 * (5 + 2 * s) + shot) % 256) as u8;
        image::Rgb([v, v.wrapping_mul(3), (s * 60) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

fn invocation(dir: &Path, kind: &str, params: Value, inputs: &[(&str, PathBuf)]) -> Invocation {
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(k, p)| (*k, p.as_path())).collect();
    Invocation::standalone(
        kind,
        &format!("{kind}-test"),
        &params,
        &inputs,
        &dir.join("out"),
    )
    .unwrap()
}

#[test]
fn verify_stage_on_a_small_pack() {
    let d = tempfile::tempdir().unwrap();
    let model = model_dir(d.path());
    std::fs::create_dir_all(d.path().join("out")).unwrap();
    // 40 pairs at 48 px (resized to the model's 32 px): same subject for even pairs.
    let (mut imgs, mut same) = (Vec::new(), Vec::new());
    for k in 0..40u64 {
        let genuine = k % 2 == 0;
        imgs.push(face(k % 5, 0, 48, 48));
        imgs.push(face(if genuine { k % 5 } else { (k + 1) % 5 }, 7, 48, 48));
        same.push(genuine);
    }
    let pack = d.path().join("lfw.bin");
    bin::write_pairs(&pack, &imgs, &same).unwrap();
    let params = serde_json::to_value(VerifyParams::default()).unwrap();
    let inv = invocation(
        d.path(),
        "verify",
        params,
        &[("model", model.clone()), ("pairs", pack)],
    );
    let m = run_verify(&inv).unwrap();
    let acc = m["sets"]["lfw"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{m}");
    assert_eq!(m["sets"]["lfw"]["pairs"], 40);
    assert!(m["avg"].is_null(), "avg needs all five paper sets");
    // Compared as bytes: serde_json's default parser may round the last digit of a float.
    let written = std::fs::read(d.path().join("out/verify.json")).unwrap();
    assert_eq!(written, serde_json::to_vec_pretty(&m).unwrap());

    // A folder input with a set that is not there names the available ones.
    let folder = d.path().join("packs");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(d.path().join("lfw.bin"), folder.join("lfw.bin")).unwrap();
    let params = json!({"sets": ["cfp_fp"], "batch_size": 8, "flip": true});
    let inv = invocation(
        d.path(),
        "verify",
        params,
        &[("model", model), ("pairs", folder)],
    );
    let e = run_verify(&inv).unwrap_err().to_string();
    assert!(
        e.contains("cfp_fp") && e.contains("available sets: lfw"),
        "{e}"
    );
}

fn release(root: &Path) -> ijb::IjbRelease {
    // 3 subjects × 2 templates; template 10·s + t has two media, one of them a 2-frame video.
    let (mut r, mut n) = (
        ijb::IjbRelease {
            images: vec![],
            templates: vec![],
            media: vec![],
            landmarks: vec![],
            scores: vec![],
            pairs: vec![],
        },
        0,
    );
    let lm = align::ARCFACE_112.map(|[x, y]| [(x * 0.8 + 10.0) as f32, (y * 0.8 + 6.0) as f32]);
    for s in 0..3u64 {
        for t in 0..2u64 {
            for (media, frames) in [(100 * s + 10 * t, 1u64), (100 * s + 10 * t + 1, 2)] {
                for f in 0..frames {
                    n += 1;
                    let name = format!("{n}.jpg");
                    std::fs::create_dir_all(root.join("loose_crop")).unwrap();
                    std::fs::write(ijb::image_path(root, &name), face(s, t * 3 + f, 110, 110))
                        .unwrap();
                    r.images.push(name);
                    r.templates.push(10 * s + t + 1);
                    r.media.push(media);
                    r.landmarks.push(lm);
                    r.scores.push(0.9);
                }
            }
        }
    }
    for a in 0..6u64 {
        for b in a + 1..6 {
            let (ta, tb) = (10 * (a / 2) + a % 2 + 1, 10 * (b / 2) + b % 2 + 1);
            r.pairs.push((ta, tb, a / 2 == b / 2));
        }
    }
    ijb::write_release(root, "IJBC", &r).unwrap();
    r
}

#[test]
fn ijbc_stage_end_to_end_and_bad_inputs() {
    let d = tempfile::tempdir().unwrap();
    let model = model_dir(d.path());
    std::fs::create_dir_all(d.path().join("out")).unwrap();
    let root = d.path().join("ijbc");
    let rel = release(&root);
    let params = serde_json::to_value(IjbcParams::default()).unwrap();
    let inv = invocation(
        d.path(),
        "ijbc",
        params.clone(),
        &[("model", model.clone()), ("benchmark", root.clone())],
    );
    let m = run_ijbc(&inv).unwrap();
    assert_eq!(m["pairs"], 15);
    assert_eq!(m["templates"], 6);
    assert_eq!(m["genuine_pairs"], 3);
    assert_eq!(m["distinct_images"], 18, "no row repeats a file here");
    // 12 impostor pairs: FAR 1e-1 is measurable (≥ 1/12), the smaller targets are TAR at FAR 0.
    assert_eq!(m["impostor_pairs"], 12);
    assert_eq!(m["far_floor"].as_f64().unwrap(), 1.0 / 12.0);
    for (k, want) in FAR_KEYS
        .iter()
        .zip([false, false, false, false, false, true])
    {
        assert_eq!(m["tar_at_far_measurable"][k], want, "{k}");
    }
    for pt in m["roc_points_picked"].as_array().unwrap() {
        let k = pt["target"].as_str().unwrap();
        assert_eq!(pt["measurable"], m["tar_at_far_measurable"][k], "{k}");
    }
    for k in FAR_KEYS {
        let t = m["tar_at_far"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&t));
        assert!((m["tar_at_far_percent"][k].as_f64().unwrap() - t * 100.0).abs() < 0.006);
    }
    let scores = npy::read(&d.path().join("out/score.npy")).unwrap();
    assert_eq!(
        (scores.descr.as_str(), scores.shape.clone()),
        ("<f8", vec![15])
    );
    assert!(scores
        .to_f64()
        .unwrap()
        .iter()
        .all(|s| (-1.0 - 1e-12..=1.0 + 1e-12).contains(s)));
    for f in ["roc.svg", "roc.png", "roc.csv"] {
        assert!(d.path().join("out/roc").join(f).is_file(), "{f}");
    }

    // Bad inputs: each error names the file and line.
    let run = |root: &Path| {
        run_ijbc(&invocation(
            d.path(),
            "ijbc",
            params.clone(),
            &[("model", model.clone()), ("benchmark", root.to_path_buf())],
        ))
    };
    let meta = root.join("meta");
    let pairs = std::fs::read_to_string(meta.join("ijbc_template_pair_label.txt")).unwrap();
    std::fs::write(
        meta.join("ijbc_template_pair_label.txt"),
        format!("{pairs}1 999 0\n"),
    )
    .unwrap();
    let e = run(&root).unwrap_err().to_string();
    assert!(
        e.contains("ijbc_template_pair_label.txt:16") && e.contains("999"),
        "{e}"
    );
    std::fs::write(meta.join("ijbc_template_pair_label.txt"), &pairs).unwrap();

    let pts = std::fs::read_to_string(meta.join("ijbc_name_5pts_score.txt")).unwrap();
    let mut lines: Vec<String> = pts.lines().map(String::from).collect();
    lines[2] = lines[2]
        .rsplit_once(' ')
        .unwrap()
        .0
        .rsplit_once(' ')
        .unwrap()
        .0
        .to_string();
    std::fs::write(meta.join("ijbc_name_5pts_score.txt"), lines.join("\n")).unwrap();
    let e = run(&root).unwrap_err().to_string();
    assert!(
        e.contains("ijbc_name_5pts_score.txt:3") && e.contains("expected 12 values"),
        "{e}"
    );
    std::fs::write(meta.join("ijbc_name_5pts_score.txt"), &pts).unwrap();

    std::fs::remove_file(ijb::image_path(&root, &rel.images[4])).unwrap();
    let e = run(&root).unwrap_err().to_string();
    assert!(
        e.contains("ijbc_face_tid_mid.txt:5") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn far_is_measurable_from_one_impostor_in_the_target() {
    assert!(far_measurable(1e-6, 1_000_000));
    assert!(!far_measurable(1e-6, 999_999));
    assert!(far_measurable(1e-4, 10_000));
    assert!(!far_measurable(1e-4, 9_999));
    assert!(!far_measurable(1e-1, 0));
}

#[test]
fn verify_embeds_each_distinct_image_once_with_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let (net, info) = load_backbone(&model_dir(d.path()), Device::Cpu).unwrap();
    let (h, w, dim) = (
        info.input_h as usize,
        info.input_w as usize,
        info.embedding_size as usize,
    );
    // 12 pairs drawn from a pool of 6 images: every image repeats.
    let pool: Vec<Vec<u8>> = (0..6).map(|k| face(k % 3, k, 40, 40)).collect();
    let (mut imgs, mut same) = (Vec::new(), Vec::new());
    for k in 0..12usize {
        imgs.push(pool[k % 6].clone());
        imgs.push(pool[(k * 5 + 1) % 6].clone());
        same.push(k % 2 == 0);
    }
    let pack = d.path().join("lfw.bin");
    bin::write_pairs(&pack, &imgs, &same).unwrap();
    // Batch 1: each forward is one image, so per-row and deduplicated runs are bit-equal.
    let (views, issame, distinct) =
        pack_views(&net, Device::Cpu, &pack, h, w, dim, true, 1).unwrap();
    assert_eq!((distinct, issame), (6, same));
    let (rgb, _) = read_pack(&pack, h, w).unwrap();
    let per_row = embed_views(&net, Device::Cpu, &rgb, h, w, true, 1).unwrap();
    assert_eq!(views, per_row);
}

#[test]
fn ijbc_embeds_each_distinct_crop_once_with_the_same_result() {
    let d = tempfile::tempdir().unwrap();
    let model = model_dir(d.path());
    let (net, info) = load_backbone(&model, Device::Cpu).unwrap();
    let dims = (
        info.input_h as usize,
        info.input_w as usize,
        info.embedding_size as usize,
    );
    let root = d.path().join("ijbc");
    let mut rel = release(&root);
    // Template 99 re-lists the files of rows 0 and 3 (same names and landmarks).
    for i in [0, 3] {
        rel.images.push(rel.images[i].clone());
        rel.templates.push(99);
        rel.media.push(rel.media[i]);
        rel.landmarks.push(rel.landmarks[i]);
        rel.scores.push(rel.scores[i]);
    }
    rel.pairs.push((1, 99, true));
    rel.pairs.push((11, 99, false));
    ijb::write_release(&root, "IJBC", &rel).unwrap();
    let rel = ijb::read_release(&root, "IJBC", true).unwrap();
    let p = IjbcParams {
        batch_size: 1,
        ..Default::default()
    };
    let (feats, distinct) =
        release_features(&net, Device::Cpu, &root, &rel, &p, dims, &|_, _| {}).unwrap();
    assert_eq!((distinct, rel.images.len()), (18, 20));
    let all: Vec<usize> = (0..rel.images.len()).collect();
    let rgb = aligned_images(&root, &rel, "IJBC", &all, dims.0, dims.1).unwrap();
    let per_row = embed(&net, Device::Cpu, &rgb, dims.0, dims.1, true, 1).unwrap();
    assert_eq!(feats, per_row);
}
