//! Loader benchmark: generation time of the default `synthetic-faces` dataset (300 identities ×
//! ~24 images, 112×112 JPEG), then images/s of [`Loader`] over it (shuffle, random flip,
//! normalised CHW f32 batches of 128) against the Python reference loader
//! (`stages/tests/py/loader_bench.py`: PIL + torch DataLoader) doing the same work, and the ratio.
//! Also the decoders alone on one thread: libjpeg-turbo (ours, the reference's decoder) against
//! zune-jpeg (the `image` crate's, which the loader used before).
//!
//! `cargo bench -p orchestrator-stages --bench loader` (needs `$ORCHESTRATOR_PYTHON` for the Python side).

use std::sync::Arc;
use std::time::Instant;

use orchestrator_stages::data::dataset::Dataset;
use orchestrator_stages::data::decode::decode_rgb;
use orchestrator_stages::data::loader::{Flip, Loader, LoaderConfig};
use orchestrator_stages::data::synthetic::{generate, Outputs};
use orchestrator_stages::kinds::data::SyntheticFacesParams;

fn rust_epoch(ds: &Arc<Dataset>, workers: usize, epoch: u64) -> anyhow::Result<(usize, f64)> {
    let cfg = LoaderConfig {
        batch_size: 128,
        shuffle: true,
        seed: 1,
        epoch,
        flip: Flip::Random { seed: 2 },
        workers,
        prefetch: 4,
        ..Default::default()
    };
    let t = Instant::now();
    let mut n = 0;
    for b in Loader::new(ds.clone(), cfg)? {
        let b = b?;
        n += b.len();
        std::hint::black_box(&b.images);
    }
    Ok((n, t.elapsed().as_secs_f64()))
}

/// Single-threaded decode of every training JPEG, best of 3 passes, per decoder.
fn decoders(ds: &Dataset) -> anyhow::Result<()> {
    let jpegs: Vec<Vec<u8>> = (0..ds.len())
        .map(|i| ds.payload(i).map(|p| p.to_vec()))
        .collect::<anyhow::Result<_>>()?;
    let best = |f: &dyn Fn(&[u8])| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                for j in &jpegs {
                    f(j);
                }
                jpegs.len() as f64 / t.elapsed().as_secs_f64()
            })
            .fold(0f64, f64::max)
    };
    let turbo = best(&|j| {
        let mut b = Vec::new();
        decode_rgb(j, &mut b, &|| String::new()).expect("decode");
        std::hint::black_box(&b);
    });
    let zune = best(&|j| {
        let img = image::load_from_memory_with_format(j, image::ImageFormat::Jpeg).expect("decode");
        std::hint::black_box(img.to_rgb8());
    });
    println!(
        "decode only, 1 thread, {} JPEGs: libjpeg-turbo {turbo:.0} images/s, zune-jpeg {zune:.0} images/s ({:.2}x)",
        jpegs.len(),
        turbo / zune
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = SyntheticFacesParams::default();
    let (train, pairs, ijbc, noise) = (
        dir.path().join("train"),
        dir.path().join("pairs.bin"),
        dir.path().join("ijbc"),
        dir.path().join("noise.json"),
    );
    let t = Instant::now();
    let m = generate(
        &p,
        &Outputs {
            train: &train,
            pairs: &pairs,
            ijbc: &ijbc,
            noise: &noise,
        },
    )?;
    let gen_s = t.elapsed().as_secs_f64();
    println!(
        "generate default synthetic-faces: {:.2} s ({} train images, {} pair images, {} IJB-C crops, {} threads)",
        gen_s,
        m["images"],
        2 * p.pairs,
        m["ijbc_images"],
        rayon::current_num_threads()
    );

    let ds = Arc::new(Dataset::open(&train)?);
    decoders(&ds)?;
    rust_epoch(&ds, 2, 0)?; // warm the page cache
    let mut best = 0f64;
    for workers in [1usize, 2] {
        let mut rates = Vec::new();
        for e in 0..3 {
            let (n, s) = rust_epoch(&ds, workers, e + 1)?;
            rates.push(n as f64 / s);
        }
        let r = rates.iter().cloned().fold(0f64, f64::max);
        println!(
            "rust loader, {workers} worker(s): {r:.0} images/s (best of 3 epochs of {} images)",
            ds.len()
        );
        if workers == 2 {
            best = r;
        }
    }

    let Some(py) = std::env::var_os("ORCHESTRATOR_PYTHON") else {
        println!("ORCHESTRATOR_PYTHON unset: no Python comparison");
        return Ok(());
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/loader_bench.py");
    let mut py_rate = 0f64;
    for workers in [0usize, 2] {
        let out = std::process::Command::new(&py)
            .arg(script)
            .arg(&train)
            .args(["--workers", &workers.to_string(), "--epochs", "2"])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "python loader failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let r = v["images_per_s"].as_f64().unwrap_or(0.0);
        println!(
            "python loader (PIL + torch DataLoader), {workers} worker process(es): {r:.0} images/s"
        );
        if workers == 2 {
            py_rate = r;
        }
    }
    println!("ratio rust/python at 2 workers: {:.2}x", best / py_rate);
    Ok(())
}
