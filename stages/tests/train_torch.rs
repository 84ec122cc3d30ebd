//! End-to-end tests of the `train` and `eval-trainset` stages on a tiny, learnable RecordIO dataset:
//! the loss falls, outputs have the reference's shapes, a SIGKILLed worker resumes to the same bytes
//! as an uninterrupted run, and bad inputs fail with clear errors.
#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orchestrator_stages::data::dataset;
use orchestrator_stages::formats::{npy, recordio, text};
use orchestrator_stages::invocation::{Device, Invocation, INVOCATION_VERSION};
use serde_json::{json, Value};

/// `classes` identities × `per_class` PNG images of `size`², each class a colour and stripe
/// direction plus per-image noise: easy to learn, so a working trainer's loss must fall.
fn make_dataset(root: &Path, classes: usize, per_class: usize, size: u32) -> PathBuf {
    make_dataset_with_images(root, classes, per_class, size).0
}

/// As [`make_dataset`], also returning the encoded images (class-major order).
fn make_dataset_with_images(
    root: &Path,
    classes: usize,
    per_class: usize,
    size: u32,
) -> (PathBuf, Vec<Vec<u8>>) {
    let raw = root.join("raw");
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut state = 12345u64;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    for c in 0..classes {
        for _ in 0..per_class {
            let mut buf = Vec::with_capacity((size * size * 3) as usize);
            for y in 0..size {
                for x in 0..size {
                    let stripe = if c % 2 == 0 { x } else { y } / 2 % 2;
                    for ch in 0..3u32 {
                        let base = ((c as u32 * 53 + ch * 97) % 200) as i32
                            + if stripe == 1 { 40 } else { 0 };
                        let v = base + (rnd() % 40) as i32 - 20;
                        buf.push(v.clamp(0, 255) as u8);
                    }
                }
            }
            let img = image::RgbImage::from_raw(size, size, buf).expect("image buffer");
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .expect("png");
            images.push(png);
            labels.push(c as i64);
        }
    }
    recordio::write_face_layout(&raw, &images, &labels, classes, (size, size))
        .expect("write dataset");
    let train = root.join("train");
    std::fs::create_dir_all(&train).unwrap();
    dataset::publish(
        &train,
        &raw.join("train.rec"),
        &raw.join("train.idx"),
        Some(&raw.join("property")),
        true,
    )
    .expect("publish dataset");
    (train, images)
}

fn invocation(
    dir: &Path,
    kind: &str,
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, &str)],
) -> Invocation {
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    Invocation {
        version: INVOCATION_VERSION,
        kind: kind.into(),
        stage_id: format!("{kind}-test"),
        params,
        inputs: inputs
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_path_buf()))
            .collect::<BTreeMap<_, _>>(),
        outputs: outputs
            .iter()
            .map(|(k, p)| (k.to_string(), out_dir.join(p)))
            .collect(),
        out_dir,
        work_dir: dir.join("work"),
        device: Device::Cpu,
        progress: dir.join("progress.jsonl"),
    }
}

fn train_params(extra: Value) -> Value {
    let mut p = json!({
        "network": "iresnet-tiny", "embedding_size": 32, "epochs": 3, "batch_size": 16, "lr": 0.1,
        "lr_batch": 16, "milestones": [3], "dropout": 0.0, "seed": 7, "record_history": true, "workers": 1,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn train_inv(dir: &Path, train: &Path, params: Value) -> Invocation {
    invocation(
        dir,
        "train",
        params,
        &[("train", train)],
        &[("model", "model"), ("history", "history")],
    )
}

fn run(inv: &Invocation) -> anyhow::Result<Value> {
    orchestrator_stages::torch::run(inv).expect("a torch kind")
}

#[test]
fn training_learns_and_eval_trainset_scores_every_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, images) = make_dataset_with_images(tmp.path(), 6, 20, 16);
    // A verification pack: 40 pairs alternating same / different identity.
    let (mut pair_imgs, mut issame) = (Vec::new(), Vec::new());
    for k in 0..40 {
        let (c1, c2) = (k % 6, if k % 2 == 0 { k % 6 } else { (k + 1) % 6 });
        pair_imgs.push(images[c1 * 20 + k % 10].clone());
        pair_imgs.push(images[c2 * 20 + 10 + k % 10].clone());
        issame.push(c1 == c2);
    }
    let pairs = tmp.path().join("pairs.bin");
    orchestrator_stages::formats::bin::write_pairs(&pairs, &pair_imgs, &issame).unwrap();
    let dir = tmp.path().join("run");
    let mut inv = train_inv(
        &dir,
        &train,
        train_params(json!({"epochs": 4, "export_history_txt": true})),
    );
    inv.inputs.insert("pairs".into(), pairs);
    let m = run(&inv).expect("training succeeds");
    let ver = m["verification_per_epoch"]
        .as_array()
        .expect("per-epoch verification");
    assert_eq!(ver.len(), 4);
    let acc = ver[3]["pairs"]["accuracy"].as_f64().unwrap();
    // Floors, not windows (weights differ between CPUs): chance on these 40 pairs is 50 % (std 8
    // points); the 6 identities here are easy, so a training that learned reaches far above 80 %.
    assert!(acc >= 0.8, "pair accuracy {acc} is near chance: {m}");
    let losses: Vec<f64> = serde_json::from_value(m["loss_per_epoch"].clone()).unwrap();
    assert_eq!(losses.len(), 4);
    assert!(
        losses[3] < losses[0] * 0.8,
        "the loss must fall: {losses:?}"
    );
    let model = dir.join("out/model");
    for f in ["backbone.safetensors", "header.safetensors", "model.json"] {
        assert!(model.join(f).exists(), "{f}");
    }
    let (_, info) =
        orchestrator_stages::torch::model::load_backbone(&model, tch::Device::Cpu).expect("load");
    assert_eq!(
        (info.num_classes, info.input_h, info.epochs_trained),
        (6, 16, 4)
    );
    // History: [E, N]; 120 samples, batch 16, drop_last → 7 steps, 8 unseen per epoch.
    let h = npy::read(&dir.join("out/history/history.npy")).unwrap();
    assert_eq!(h.shape, vec![4, 120]);
    let hv = h.to_f32().unwrap();
    for e in 0..4 {
        let row = &hv[e * 120..(e + 1) * 120];
        assert_eq!(
            row.iter().filter(|&&p| p == 0.0).count(),
            8,
            "epoch {e} unseen"
        );
        assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
        let txt = text::read_floats(&dir.join(format!("out/history/prob_{e}.txt"))).unwrap();
        assert_eq!(txt, row.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    }

    let mut probs = Vec::new();
    for margin in [true, false] {
        let edir = tmp.path().join(format!("eval-{margin}"));
        let inv = invocation(
            &edir,
            "eval-trainset",
            json!({"margin": margin, "batch_size": 32}),
            &[("model", &model), ("train", &train)],
            &[("probs", "probs"), ("predictions", "pred_label.npy")],
        );
        let m = run(&inv).expect("eval-trainset succeeds");
        // Chance is 1/6.
        assert!(m["train_accuracy"].as_f64().unwrap() > 0.5, "{m}");
        let p = npy::read(&edir.join("out/probs/prob.npy"))
            .unwrap()
            .to_f64()
            .unwrap();
        assert_eq!(p.len(), 120);
        assert!(p.iter().all(|&x| x > 0.0 && x <= 1.0));
        assert_eq!(
            text::read_floats(&edir.join("out/probs/prob.txt")).unwrap(),
            p
        );
        let pred = npy::read(&edir.join("out/pred_label.npy"))
            .unwrap()
            .to_i64()
            .unwrap();
        assert_eq!(pred.len(), 120);
        if margin {
            assert!(
                p.iter().all(|&x| x == f64::from(x as f32)),
                "margin: true keeps f32 values"
            );
        }
        probs.push(p);
    }
    // p_m = 1/(1 + R·e^{sm}) ≤ p_0 = 1/(1 + R), and the order inside the set is the same.
    assert!(probs[0].iter().zip(&probs[1]).all(|(m, z)| m <= z));
}

fn latest_checkpoint(work: &Path) -> Option<u32> {
    std::fs::read_dir(work.join("checkpoints"))
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("epoch_")?
                .parse()
                .ok()
        })
        .max()
}

fn worker(inv: &Invocation, dir: &Path) -> std::process::Child {
    let path = dir.join("invocation.json");
    std::fs::write(&path, serde_json::to_vec(inv).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_orchestrator-stage"))
        .arg("run")
        .arg(&path)
        .spawn()
        .expect("start the worker")
}

#[test]
fn sigkill_mid_epoch_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let train = make_dataset(tmp.path(), 8, 64, 32);
    let params = train_params(
        json!({"epochs": 3, "batch_size": 8, "lr_batch": 8, "dropout": 0.2, "loss": "elasticarcface"}),
    );

    let whole = tmp.path().join("whole");
    let inv = train_inv(&whole, &train, params.clone());
    assert!(worker(&inv, &whole).wait().unwrap().success());

    // Kill during the second epoch (k = 2): the last checkpoint is then the end of epoch 1.
    let cut = tmp.path().join("cut");
    let inv = train_inv(&cut, &train, params);
    let mut child = worker(&inv, &cut);
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&inv.progress).unwrap_or_default();
        let in_epoch_2 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| {
                v["epoch"] == 2
                    && v["step"]
                        .as_u64()
                        .is_some_and(|s| s >= 2 && s + 4 < v["steps"].as_u64().unwrap_or(0))
            });
        if in_epoch_2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "epoch 2 never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let _ = child.wait();
    assert_eq!(
        latest_checkpoint(&inv.work_dir),
        Some(1),
        "killed mid-epoch 2: the epoch-1 checkpoint is the last"
    );
    assert!(!cut.join("out/model/model.json").exists());

    assert!(
        worker(&inv, &cut).wait().unwrap().success(),
        "the rerun resumes and finishes"
    );
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(cut.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["resumed_after_epoch"], 1);
    let whole_metrics: Value =
        serde_json::from_slice(&std::fs::read(whole.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["loss_per_epoch"], whole_metrics["loss_per_epoch"]);
    for f in [
        "model/backbone.safetensors",
        "model/header.safetensors",
        "model/model.json",
        "history/history.npy",
    ] {
        let a = std::fs::read(whole.join("out").join(f)).unwrap();
        let b = std::fs::read(cut.join("out").join(f)).unwrap();
        assert!(
            a == b,
            "{f}: the resumed run must be bit-identical to the uninterrupted one"
        );
    }
}

fn err_text(r: anyhow::Result<Value>) -> String {
    format!("{:#}", r.expect_err("must fail"))
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let train = make_dataset(tmp.path(), 4, 8, 16);
    let p =
        train_params(json!({"epochs": 1, "batch_size": 4, "lr_batch": 4, "record_history": false}));

    // Empty kept list.
    let kept = tmp.path().join("kept_empty.txt");
    std::fs::write(&kept, "kept_index = []").unwrap();
    let d = tmp.path().join("empty");
    let inv = invocation(
        &d,
        "train",
        p.clone(),
        &[("train", &train), ("kept", &kept)],
        &[("model", "model")],
    );
    assert!(err_text(run(&inv)).contains("is empty"));

    // A kept list that empties identity 1, without a label map.
    let kept = tmp.path().join("kept.txt");
    let positions: Vec<usize> = (0..32).filter(|p| !(8..16).contains(p)).collect();
    text::write_kept(&kept, &positions).unwrap();
    let d = tmp.path().join("gap");
    let inv = invocation(
        &d,
        "train",
        p.clone(),
        &[("train", &train), ("kept", &kept)],
        &[("model", "model")],
    );
    let e = err_text(run(&inv));
    assert!(e.contains("class 1") && e.contains("label_map"), "{e}");

    // A label map whose new id falls outside the head's classes.
    let map = tmp.path().join("label_map.json");
    std::fs::write(&map, r#"{"0": 0, "2": 1, "3": 5}"#).unwrap();
    let d = tmp.path().join("badmap");
    let inv = invocation(
        &d,
        "train",
        p.clone(),
        &[("train", &train), ("kept", &kept), ("label_map", &map)],
        &[("model", "model")],
    );
    let e = err_text(run(&inv));
    assert!(
        e.contains("`3` maps to 5") && e.contains("3 classes"),
        "{e}"
    );

    // The same with a correct map trains (3 classes).
    std::fs::write(&map, r#"{"0": 0, "2": 1, "3": 2}"#).unwrap();
    let good = tmp.path().join("goodmap");
    let inv = invocation(
        &good,
        "train",
        p.clone(),
        &[("train", &train), ("kept", &kept), ("label_map", &map)],
        &[("model", "model")],
    );
    let m = run(&inv).expect("relabelled training");
    assert_eq!(m["num_classes"], 3);

    // eval-trainset with that model: its head has 3 classes, the dataset's labels reach 3.
    let model = good.join("out/model");
    let ed = tmp.path().join("eval-mismatch");
    let eval_inv = |model: &Path| {
        invocation(
            &ed,
            "eval-trainset",
            json!({}),
            &[("model", model), ("train", &train)],
            &[("probs", "probs"), ("predictions", "pred.npy")],
        )
    };
    let e = err_text(run(&eval_inv(&model)));
    assert!(e.contains("3 classes") && e.contains("4"), "{e}");

    // Wrong-architecture weights: a 4-class model whose model.json claims MobileFaceNet.
    let full = tmp.path().join("full");
    let inv = invocation(
        &full,
        "train",
        p.clone(),
        &[("train", &train)],
        &[("model", "model")],
    );
    run(&inv).expect("full training");
    let model = full.join("out/model");
    let info_path = model.join("model.json");
    let info = std::fs::read_to_string(&info_path).unwrap();
    orchestrator_stages::torch::model::load_backbone(&model, tch::Device::Cpu)
        .expect("the model as written loads");
    std::fs::write(
        &info_path,
        info.replace("\"embedding_size\": 32", "\"embedding_size\": 64"),
    )
    .unwrap();
    let e = err_text(run(&eval_inv(&model)));
    assert!(e.contains("wrong shape") && e.contains("fc.weight"), "{e}");
    std::fs::write(&info_path, info.replace("iresnet-tiny", "mobilefacenet")).unwrap();
    let e = err_text(run(&eval_inv(&model)));
    assert!(
        e.contains("missing") && e.contains("unexpected") && e.contains("conv1.conv.weight"),
        "{e}"
    );
    // Missing weights are an error too (R10), never random weights.
    std::fs::write(&info_path, &info).unwrap();
    std::fs::remove_file(model.join("header.safetensors")).unwrap();
    let e = err_text(run(&eval_inv(&model)));
    assert!(e.contains("header.safetensors"), "{e}");
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let train = make_dataset(tmp.path(), 4, 8, 16);
    let d = tmp.path().join("nan");
    let good = train_inv(
        &d,
        &train,
        train_params(json!({"epochs": 1, "batch_size": 4, "lr_batch": 4})),
    );
    run(&good).expect("one good epoch");
    assert_eq!(latest_checkpoint(&good.work_dir), Some(1));
    let before = std::fs::read(
        good.work_dir
            .join("checkpoints/epoch_1/backbone.safetensors"),
    )
    .unwrap();
    // Same work dir, more epochs, an absurd learning rate: the weights overflow in epoch 2.
    let bad = train_inv(
        &d,
        &train,
        train_params(
            json!({"epochs": 3, "batch_size": 4, "lr_batch": 4, "lr": 1e30, "clip_grad_norm": 0.0}),
        ),
    );
    let e = err_text(run(&bad));
    assert!(e.contains("loss became") && e.contains("epoch 2"), "{e}");
    assert_eq!(latest_checkpoint(&good.work_dir), Some(1));
    assert_eq!(
        std::fs::read(
            good.work_dir
                .join("checkpoints/epoch_1/backbone.safetensors")
        )
        .unwrap(),
        before
    );
}
