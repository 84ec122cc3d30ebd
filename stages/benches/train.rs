//! Training throughput: images/s of one full SGD step (forward, CosFace loss, backward, backbone
//! clipping, two optimiser steps) of an iResNet at 112×112 with tch, and the same model and batch
//! in PyTorch (`tests/py/bench_train.py` through `$ORCHESTRATOR_PYTHON`, on the CPU), as a ratio.
//! `bench/gpu.sh` runs this binary on a GPU (with `bench/gpu_pytorch.py` as the PyTorch side).
//!
//! `cargo bench -p orchestrator-stages --features torch --bench train`
//!
//! Env: `BENCH_BATCH` (32), `BENCH_STEPS` (5 timed, after 2 warm-up), `BENCH_NET` (iresnet18),
//! `BENCH_DEVICE` (`cpu`, or `cuda` = device 0), `BENCH_PRECISION` (`fp32`, `amp`, `bf16`),
//! `BENCH_CLASSES` (1000), `BENCH_DROPOUT` (0.4), `BENCH_INIT` (a safetensors file of
//! `backbone.<name>` and `header.kernel` to start from, as `bench/gpu_pytorch.py --save-init`
//! writes it), `BENCH_LOSSES=N`: instead of timing, train N steps on the seeded batches of
//! `gpu_pytorch.py --losses` and print their losses. The last line is always one JSON object.

use std::collections::HashMap;
use std::time::Instant;

use orchestrator_stages::kinds::train::{Loss, Network, Precision, TrainParams};
use orchestrator_stages::torch::heads::HeadConfig;
use orchestrator_stages::torch::model::load_named_vars;
use orchestrator_stages::torch::nn::Arch;
use orchestrator_stages::torch::train::Trainer;
use tch::{Device, Kind, Tensor};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn parse<T: serde::de::DeserializeOwned>(name: &str, default: &str) -> T {
    let v = std::env::var(name).unwrap_or_else(|_| default.to_string());
    serde_json::from_value(serde_json::json!(v)).unwrap_or_else(|e| panic!("{name}={v}: {e}"))
}

/// The batch of step `k` of a loss trace: generated on the CPU from seed 1000 + k, as
/// `gpu_pytorch.py` does with the same libtorch generator.
fn seeded_batch(k: usize, batch: i64, classes: i64, device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(1000 + k as i64);
    let x = Tensor::rand([batch, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu));
    (x.to_device(device), y.to_device(device))
}

fn load_init(t: &Trainer, path: &str) {
    let all = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("BENCH_INIT {path}: {e}"));
    let (mut b, mut h) = (HashMap::new(), HashMap::new());
    for (name, v) in all {
        if let Some(n) = name.strip_prefix("backbone.") {
            b.insert(n.to_string(), v);
        } else if let Some(n) = name.strip_prefix("header.") {
            h.insert(n.to_string(), v);
        }
    }
    load_named_vars(&t.bvs, b, path, "backbone").expect("backbone init");
    load_named_vars(&t.hvs, h, path, "head").expect("head init");
}

fn main() {
    orchestrator_stages::torch::init_threads();
    let batch: i64 = env_or("BENCH_BATCH", 32);
    let steps: usize = env_or("BENCH_STEPS", 5);
    let classes: i64 = env_or("BENCH_CLASSES", 1000);
    let net: String = env_or("BENCH_NET", "iresnet18".to_string());
    let network: Network = parse("BENCH_NET", "iresnet18");
    let precision: Precision = parse("BENCH_PRECISION", "fp32");
    let device = match std::env::var("BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let p = TrainParams {
        network,
        precision,
        dropout: env_or("BENCH_DROPOUT", 0.4),
        ..TrainParams::default()
    };
    let arch = Arch {
        network,
        input_h: 112,
        input_w: 112,
        embedding_size: 512,
        dropout: p.dropout,
    };
    let mut t = Trainer::new(
        device,
        &arch,
        HeadConfig::new(Loss::Cosface, None, None, 512, classes),
        &p,
    )
    .expect("build the trainer");
    if let Ok(init) = std::env::var("BENCH_INIT") {
        load_init(&t, &init);
    }
    if let Some(n) = std::env::var("BENCH_LOSSES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let losses: Vec<f64> = (0..n)
            .map(|k| {
                let (x, y) = seeded_batch(k, batch, classes, device);
                t.step(&x, &y, 0.1, false).expect("step").loss
            })
            .collect();
        let scale = t.scaler.as_ref().map(|s| s.scale());
        println!(
            "{}",
            serde_json::json!({"losses": losses, "loss_scale": scale, "precision": format!("{:?}", t.autocast)})
        );
        return;
    }
    let x = (Tensor::rand([batch, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0)
        .to_device(device);
    let y = Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu)).to_device(device);
    for _ in 0..2 {
        t.step(&x, &y, 0.01, false).expect("warm-up step");
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        // Each step reads its loss back, which waits for the device: the timing is complete.
        t.step(&x, &y, 0.01, false).expect("step");
    }
    let secs = t0.elapsed().as_secs_f64();
    let ips = (batch as usize * steps) as f64 / secs;
    println!(
        "tch     {net} 112x112 batch {batch} {precision:?} on {device:?}: {ips:.2} images/s ({:.3} s/step, {} threads)",
        secs / steps as f64,
        tch::get_num_threads()
    );
    let line = serde_json::json!({"images_per_s": ips, "batch": batch, "net": net,
        "precision": format!("{precision:?}"), "device": format!("{device:?}")});
    if device.is_cuda() || std::env::var("BENCH_PYTHON").as_deref() == Ok("0") {
        println!("{line}");
        return;
    }
    let Some(py) = std::env::var_os("ORCHESTRATOR_PYTHON") else {
        println!("ORCHESTRATOR_PYTHON is unset: no PyTorch comparison");
        println!("{line}");
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/bench_train.py");
    let out = std::process::Command::new(py)
        .arg(&script)
        .args([
            "--net",
            &net,
            "--batch",
            &batch.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .args(["--threads", &tch::get_num_threads().to_string()])
        .output()
        .expect("run bench_train.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!(
            "bench_train.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    print!("{stdout}");
    let py_ips: Option<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("images_per_s=")?.trim().parse().ok());
    if let Some(py_ips) = py_ips {
        println!("ratio tch / PyTorch: {:.3}", ips / py_ips);
    }
    println!("{line}");
}
