//! Training throughput: images/s of one full SGD step (forward, CosFace loss, backward, backbone
//! clipping, two optimiser steps) of iResNet-18 at 112×112 on the CPU with tch, and the same model
//! and batch in PyTorch (`tests/py/bench_train.py` through `$ORCHESTRATOR_PYTHON`), as a ratio.
//!
//! `cargo bench -p orchestrator-stages --features torch --bench train`
//! Env: `BENCH_BATCH` (32), `BENCH_STEPS` (5 timed, after 2 warm-up), `BENCH_NET` (iresnet18).

use std::time::Instant;

use orchestrator_stages::kinds::train::{Loss, Network, TrainParams};
use orchestrator_stages::torch::heads::HeadConfig;
use orchestrator_stages::torch::nn::Arch;
use orchestrator_stages::torch::train::Trainer;
use tch::{Device, Kind, Tensor};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    orchestrator_stages::torch::init_threads();
    let batch: i64 = env_or("BENCH_BATCH", 32);
    let steps: usize = env_or("BENCH_STEPS", 5);
    let net: String = env_or("BENCH_NET", "iresnet18".to_string());
    let network: Network =
        serde_json::from_value(serde_json::json!(net)).expect("BENCH_NET: a network name");
    let classes = 1000;
    let p = TrainParams {
        network,
        dropout: 0.4,
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
        Device::Cpu,
        &arch,
        HeadConfig::new(Loss::Cosface, None, None, 512, classes),
        &p,
    )
    .expect("build the trainer");
    let x = Tensor::rand([batch, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu));
    for _ in 0..2 {
        t.step(&x, &y, 0.01, false).expect("warm-up step");
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        t.step(&x, &y, 0.01, false).expect("step");
    }
    let secs = t0.elapsed().as_secs_f64();
    let ips = (batch as usize * steps) as f64 / secs;
    println!(
        "tch     {net} 112x112 batch {batch}: {ips:.2} images/s ({:.3} s/step, {} threads)",
        secs / steps as f64,
        tch::get_num_threads()
    );
    let Some(py) = std::env::var_os("ORCHESTRATOR_PYTHON") else {
        println!("ORCHESTRATOR_PYTHON is unset: no PyTorch comparison");
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
}
