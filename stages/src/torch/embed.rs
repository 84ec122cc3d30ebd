//! Embedding extraction ([`embed`]: batched, on the stage's device, image + horizontal flip summed)
//! and the two evaluation stages built on it: `verify` ([`run_verify`], the 10-fold protocol on
//! `.bin` pair packs, formats.md §2.4-2.5) and `ijbc` ([`run_ijbc`], IJB-B/C 1:1, §3).
//!
//! Images are decoded and aligned on the CPU threads (rayon); only the forward pass touches the
//! device. Everything after the embeddings is the tensor-free code of [`crate::eval`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::model::load_backbone;
use super::nn::Backbone;
use crate::data::decode::{decode_rgb, decode_rgb_sized};
use crate::eval::align::{self, Image};
use crate::eval::plot::write_roc;
use crate::eval::pooling::{pool_templates, score_pairs};
use crate::eval::roc::{auc, roc_curve, tar_at_far, RocCurve, TarAtFar, IJB_FAR_TARGETS};
use crate::eval::verification::{evaluate, pair_distances, test_embeddings};
use crate::formats::{bin, ijb, npy};
use crate::kinds::eval::{IjbcParams, VerifyParams};
use crate::Invocation;

/// The five benchmarks whose mean the paper reports.
pub const PAPER_SETS: [&str; 5] = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"];
/// Keys of the TAR@FAR table, as the reference prints the targets.
pub const FAR_KEYS: [&str; 6] = ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"];
/// Images decoded and aligned per round before they go to the device.
const DECODE_CHUNK: usize = 4096;

/// Raw embeddings of `n` interleaved RGB images (`h × w × 3` u8 each): `emb(x) + emb(flip(x))`
/// summed in f32 (as the IJB reference adds its two f32 halves) when `flip`, else `emb(x)`.
/// Returns `n × E` f32 values, row-major.
pub fn embed(
    net: &Backbone,
    device: Device,
    images: &[u8],
    h: usize,
    w: usize,
    flip: bool,
    batch: usize,
) -> Result<Vec<f32>> {
    let mut views = embed_views(net, device, images, h, w, flip, batch)?;
    let mut out = views.swap_remove(0);
    if let Some(flipped) = views.first() {
        out.iter_mut().zip(flipped).for_each(|(a, b)| *a += b);
    }
    Ok(out)
}

/// The raw embeddings of each view of `n` interleaved RGB images: `[emb(x)]`, or
/// `[emb(x), emb(flip(x))]` when `flip`; input `(x/255 − 0.5)/0.5`, eval mode, `batch` images per
/// forward. Each view is `n × E` f32 values, row-major.
pub fn embed_views(
    net: &Backbone,
    device: Device,
    images: &[u8],
    h: usize,
    w: usize,
    flip: bool,
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let per = h * w * 3;
    if per == 0 || !images.len().is_multiple_of(per) {
        bail!(
            "embed: {} bytes are not whole {h}×{w}×3 images",
            images.len()
        );
    }
    let n = images.len() / per;
    let batch = batch.max(1);
    let mut views: Vec<Vec<f32>> = vec![Vec::new(); if flip { 2 } else { 1 }];
    let read = |e: &Tensor| -> Result<Vec<f32>> {
        let e = e
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]);
        Vec::<f32>::try_from(&e).map_err(|err| anyhow!("embed: cannot read embeddings: {err}"))
    };
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch) {
            let b = batch.min(n - start);
            let x = Tensor::from_slice(&images[start * per..(start + b) * per])
                .to_device(device)
                .view([b as i64, h as i64, w as i64, 3])
                .permute([0, 3, 1, 2])
                .to_kind(Kind::Float);
            let x = (x / 255.0 - 0.5) / 0.5;
            if flip {
                // Both views in one forward (as the IJB reference does); eval-mode BN makes the
                // result independent of the batch composition.
                let both = net.forward_t(&Tensor::cat(&[&x, &x.flip([3])], 0), false);
                views[0].extend(read(&both.narrow(0, 0, b as i64))?);
                views[1].extend(read(&both.narrow(0, b as i64, b as i64))?);
            } else {
                views[0].extend(read(&net.forward_t(&x, false))?);
            }
        }
        Ok(())
    })?;
    Ok(views)
}

/// Rows L2-normalised in place (`sklearn.preprocessing.normalize`: a zero row stays zero).
fn normalize_rows(v: &mut [f32], dim: usize) {
    v.par_chunks_mut(dim).for_each(|r| {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    });
}

/// The `.bin` files a `pairs` input names: the file itself, or the folder's `.bin` files (all, or
/// those whose stems are in `sets`).
pub fn pick_sets(input: &Path, sets: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if input.is_file() {
        return Ok(vec![(stem(input), input.to_path_buf())]);
    }
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(input)
        .with_context(|| format!("cannot list verification folder {}", input.display()))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "bin") && p.is_file() {
            found.insert(stem(&p), p);
        }
    }
    if found.is_empty() {
        bail!("{}: no .bin verification packs in this folder\nhint: `pairs` must be a .bin file or a folder of them (lfw.bin, cfp_fp.bin, ...)", input.display());
    }
    if sets.is_empty() {
        return Ok(found.into_iter().collect());
    }
    sets.iter()
        .map(|s| {
            found.get(s).map(|p| (s.clone(), p.clone())).ok_or_else(|| {
                anyhow!(
                    "params.sets names {s:?}, but {} has no {s}.bin\nhint: available sets: {}",
                    input.display(),
                    found.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// A `.bin` pair pack decoded (in parallel) at `w × h`: the interleaved RGB images of its pairs and
/// whether each pair is the same identity.
pub fn read_pack(path: &Path, h: usize, w: usize) -> Result<(Vec<u8>, Vec<bool>)> {
    let (jpegs, issame) = bin::read_pairs(path)?;
    let decoded: Vec<Vec<u8>> = jpegs
        .par_iter()
        .enumerate()
        .map(|(i, j)| decode_rgb_sized(j, w, h, &|| format!("{} image {i}", path.display())))
        .collect::<Result<_>>()?;
    Ok((decoded.concat(), issame))
}

/// Each distinct encoded image of `jpegs` (equal bytes) once, in first-seen order, and for every
/// entry the index of its distinct image.
fn distinct_by<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>) -> (Vec<usize>, Vec<usize>) {
    let mut seen: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut first = Vec::new();
    let rows = keys
        .enumerate()
        .map(|(i, k)| {
            *seen.entry(k).or_insert_with(|| {
                first.push(i);
                first.len() - 1
            })
        })
        .collect();
    (first, rows)
}

/// `view` (one row of `dim` values per distinct item) expanded to one row per entry of `rows`.
fn expand_rows(view: &[f32], rows: &[usize], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &u in rows {
        out.extend_from_slice(&view[u * dim..(u + 1) * dim]);
    }
    out
}

/// The per-image views ([`embed_views`]) of every image of a `.bin` pack, each distinct encoded
/// image (by its bytes) decoded and embedded once: the same values as embedding every image,
/// since the forward pass of an image does not depend on the rest of its batch (eval mode).
/// Returns the views (one row per image of the pack), `issame`, and the number of distinct images.
#[allow(clippy::too_many_arguments)]
pub fn pack_views(
    net: &Backbone,
    device: Device,
    path: &Path,
    h: usize,
    w: usize,
    dim: usize,
    flip: bool,
    batch: usize,
) -> Result<(Vec<Vec<f32>>, Vec<bool>, usize)> {
    let (jpegs, issame) = bin::read_pairs(path)?;
    let (first, rows) = distinct_by(jpegs.iter().map(|j| j.as_slice()));
    let decoded: Vec<Vec<u8>> = first
        .par_iter()
        .map(|&i| decode_rgb_sized(&jpegs[i], w, h, &|| format!("{} image {i}", path.display())))
        .collect::<Result<_>>()?;
    let views = embed_views(net, device, &decoded.concat(), h, w, flip, batch)?;
    let views = views.iter().map(|v| expand_rows(v, &rows, dim)).collect();
    Ok((views, issame, first.len()))
}

/// The `verify` stage.
pub fn run_verify(inv: &Invocation) -> Result<Value> {
    let p: VerifyParams = inv.params()?;
    super::check_params(&p)?;
    let device = super::select_device(inv);
    let (net, info) = load_backbone(inv.input("model")?, device)?;
    let (h, w) = (info.input_h as usize, info.input_w as usize);
    let sets = pick_sets(inv.input("pairs")?, &p.sets)?;
    let progress = inv.progress();
    let mut out = serde_json::Map::new();
    let mut accs: BTreeMap<String, f64> = BTreeMap::new();
    for (name, path) in &sets {
        let t0 = Instant::now();
        let dim = info.embedding_size as usize;
        let (views, issame, distinct) =
            pack_views(&net, device, path, h, w, dim, p.flip, p.batch_size as usize)?;
        let views: Vec<&[f32]> = views.iter().map(|v| v.as_slice()).collect();
        let (emb, xnorm) = test_embeddings(&views, dim);
        let dist = pair_distances(&emb, dim);
        let r =
            evaluate(&dist, &issame, 10, 1e-3).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        progress.report(json!({"set": name, "accuracy": r.accuracy, "std": r.std, "seconds": t0.elapsed().as_secs_f64()}));
        accs.insert(name.clone(), r.accuracy);
        out.insert(
            name.clone(),
            json!({
                "accuracy": r.accuracy,
                "std": r.std,
                "best_threshold": r.best_threshold,
                "tar_at_far_1e-03": r.val,
                "tar_at_far_1e-03_std": r.val_std,
                "far": r.far,
                "pairs": r.pairs,
                "distinct_images": distinct,
                "xnorm": xnorm,
                "fold_accuracies": r.fold_accuracies,
                "fold_thresholds": r.fold_thresholds,
            }),
        );
    }
    let avg = PAPER_SETS
        .iter()
        .map(|s| accs.get(*s).copied())
        .collect::<Option<Vec<f64>>>()
        .map(|v| v.iter().sum::<f64>() / v.len() as f64);
    let metrics = json!({
        "sets": Value::Object(out),
        "avg": avg,
        "avg_of": PAPER_SETS,
        "flip": p.flip,
        "input_size": [h, w],
    });
    let path = inv.output("results")?;
    std::fs::write(path, serde_json::to_vec_pretty(&metrics)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(metrics)
}

/// Decode and align the loose crops of release rows `rows` into interleaved `h × w × 3` RGB.
fn aligned_images(
    root: &Path,
    rel: &ijb::IjbRelease,
    target: &str,
    rows: &[usize],
    h: usize,
    w: usize,
) -> Result<Vec<u8>> {
    let meta = ijb::meta_paths(root, target)?;
    let rows: Vec<Vec<u8>> = rows
        .par_iter()
        .map(|&i| -> Result<Vec<u8>> {
            let bytes = ijb::read_image(root, rel, i, target)?;
            let mut data = Vec::new();
            let (ih, iw) = decode_rgb(&bytes, &mut data, &|| {
                ijb::image_path(root, &rel.images[i]).display().to_string()
            })?;
            let src = Image { width: iw as usize, height: ih as usize, channels: 3, data };
            let lm = rel.landmarks[i].map(|[x, y]| [x as f64, y as f64]);
            let out = align::align_face(&src, &lm, w, h).ok_or_else(|| {
                anyhow!(
                    "{}:{}: the 5 landmarks of {} coincide; no alignment exists\nhint: fix the landmark line",
                    meta[2].display(),
                    i + 1,
                    rel.images[i]
                )
            })?;
            Ok(out.data)
        })
        .collect::<Result<_>>()?;
    Ok(rows.concat())
}

/// The features of every row of the release (`f(img) [+ f(flip)]`, before normalisation and the
/// detector score), each distinct (image file, landmarks) decoded, aligned and embedded once: the
/// same values as embedding every row (the reference does), since the aligned input is the same
/// and an image's forward pass does not depend on its batch (eval mode). Returns the features
/// (`rows × dim`) and the number of distinct images; `progress(done, total)` after each chunk.
fn release_features(
    net: &Backbone,
    device: Device,
    root: &Path,
    rel: &ijb::IjbRelease,
    p: &IjbcParams,
    (h, w, dim): (usize, usize, usize),
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<f32>, usize)> {
    let (first, rows) = distinct_by(
        rel.images
            .iter()
            .zip(&rel.landmarks)
            .map(|(name, lm)| (name.as_str(), lm.map(|[x, y]| [x.to_bits(), y.to_bits()]))),
    );
    let mut feats: Vec<f32> = Vec::with_capacity(first.len() * dim);
    for chunk in first.chunks(DECODE_CHUNK) {
        let images = aligned_images(root, rel, &p.target, chunk, h, w)?;
        feats.extend(embed(
            net,
            device,
            &images,
            h,
            w,
            p.use_flip_test,
            p.batch_size as usize,
        )?);
        progress(feats.len() / dim, first.len());
    }
    Ok((expand_rows(&feats, &rows, dim), first.len()))
}

/// Whether FAR `target` can be measured with `impostors` impostor pairs: at least one false
/// accept is allowed (`target ≥ 1/impostors`). Below that floor the picked point is TAR at FAR 0.
pub fn far_measurable(target: f64, impostors: u64) -> bool {
    impostors > 0 && target * impostors as f64 >= 1.0
}

/// The `ijbc` stage.
pub fn run_ijbc(inv: &Invocation) -> Result<Value> {
    let p: IjbcParams = inv.params()?;
    super::check_params(&p)?;
    let device = super::select_device(inv);
    let (net, info) = load_backbone(inv.input("model")?, device)?;
    let (h, w, dim) = (
        info.input_h as usize,
        info.input_w as usize,
        info.embedding_size as usize,
    );
    let root = inv.input("benchmark")?;
    let rel = ijb::read_release(root, &p.target, true)?;
    let n = rel.images.len();
    if n == 0 {
        bail!(
            "{}: the release lists no images",
            ijb::meta_paths(root, &p.target)?[0].display()
        );
    }
    let progress = inv.progress();
    let t0 = Instant::now();
    let (mut feats, distinct) = release_features(
        &net,
        device,
        root,
        &rel,
        &p,
        (h, w, dim),
        &|done, total| {
            progress.report(json!({"step": done, "steps": total, "images_per_s": done as f64 / t0.elapsed().as_secs_f64().max(1e-9)}));
        },
    )?;
    let embed_s = t0.elapsed().as_secs_f64();
    weight_features(&mut feats, dim, &rel.scores, &p);
    let t1 = Instant::now();
    let templates = pool_templates(&feats, dim, &rel.templates, &rel.media)?;
    drop(feats);
    let p1: Vec<u64> = rel.pairs.iter().map(|x| x.0).collect();
    let p2: Vec<u64> = rel.pairs.iter().map(|x| x.1).collect();
    let labels: Vec<bool> = rel.pairs.iter().map(|x| x.2).collect();
    let meta = ijb::meta_paths(root, &p.target)?;
    let scores =
        score_pairs(&templates, &p1, &p2).map_err(|e| anyhow!("{}: {e}", meta[1].display()))?;
    let scores_path = inv.output("scores")?;
    npy::write_1d(scores_path, &scores)?;
    let curve = roc_curve(&scores, &labels).map_err(|e| anyhow!("{}: {e}", meta[1].display()))?;
    let picks = tar_at_far(&curve, &IJB_FAR_TARGETS);
    let area = auc(&curve.fpr, &curve.tpr);
    let score_s = t1.elapsed().as_secs_f64();
    write_roc(
        inv.output("roc")?,
        &curve,
        &inv.stage_id,
        &format!("ROC on {}", p.target),
        area,
        &picks,
    )?;
    let far = FarTables::new(&curve, &picks);
    let metrics = json!({
        "target": p.target,
        "tar_at_far": far.tar,
        "tar_at_far_percent": far.percent,
        "far_floor": far.floor,
        "tar_at_far_measurable": far.measurable,
        "roc_points_picked": far.points,
        "auc": area,
        "pairs": labels.len(),
        "genuine_pairs": curve.positives,
        "impostor_pairs": curve.negatives,
        "templates": templates.len(),
        "images": n,
        "distinct_images": distinct,
        "input_size": [h, w],
        "flags": {"use_flip_test": p.use_flip_test, "use_norm_score": p.use_norm_score, "use_detector_score": p.use_detector_score},
        "seconds": {"embed": embed_s, "pool_score_metrics": score_s},
    });
    let path = inv.output("results")?;
    std::fs::write(path, serde_json::to_vec_pretty(&metrics)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(metrics)
}

/// Unless `use_norm_score`, each image's feature scaled to unit length; with
/// `use_detector_score`, multiplied by the image's detector score.
fn weight_features(feats: &mut [f32], dim: usize, scores: &[f32], p: &IjbcParams) {
    if !p.use_norm_score {
        normalize_rows(feats, dim);
    }
    if p.use_detector_score {
        feats
            .par_chunks_mut(dim)
            .zip(scores.par_iter())
            .for_each(|(r, &s)| r.iter_mut().for_each(|x| *x *= s));
    }
}

/// The picked ROC points as the metrics show them, keyed by FAR target (`FAR_KEYS`).
struct FarTables {
    /// TAR as a fraction.
    tar: Value,
    /// TAR in percent, two decimals.
    percent: Value,
    /// The smallest non-zero FAR with this many impostor pairs.
    floor: f64,
    measurable: Value,
    /// Each picked point whole.
    points: Value,
}

impl FarTables {
    fn new(curve: &RocCurve, picks: &[TarAtFar]) -> Self {
        let frac: serde_json::Map<String, Value> = FAR_KEYS
            .iter()
            .zip(picks)
            .map(|(k, t)| (k.to_string(), json!(t.tar)))
            .collect();
        let pct: serde_json::Map<String, Value> = FAR_KEYS
            .iter()
            .zip(picks)
            .map(|(k, t)| (k.to_string(), json!((t.tar * 1e4).round() / 100.0)))
            .collect();
        let measurable: serde_json::Map<String, Value> = FAR_KEYS
            .iter()
            .zip(IJB_FAR_TARGETS)
            .map(|(k, x)| (k.to_string(), json!(far_measurable(x, curve.negatives))))
            .collect();
        let points: Vec<Value> = FAR_KEYS
            .iter()
            .zip(picks)
            .zip(IJB_FAR_TARGETS)
            .map(|((k, t), x)| json!({"target": k, "tar": t.tar, "far": t.far, "threshold": t.threshold, "measurable": far_measurable(x, curve.negatives)}))
            .collect();
        FarTables {
            tar: Value::Object(frac),
            percent: Value::Object(pct),
            // With N impostor pairs the smallest non-zero FAR is 1/N: a target below it is TAR at FAR 0.
            floor: 1.0 / curve.negatives.max(1) as f64,
            measurable: Value::Object(measurable),
            points: Value::Array(points),
        }
    }
}

/// Embedding throughput on the CPU for the benchmark `benches/ijbc.rs`: untrained backbones at the
/// embedded default size and at the paper's 112×112, flip-sum forward, plus decode + align of
/// JPEG loose crops.
pub fn bench_throughput() {
    use crate::kinds::train::Network;
    use crate::torch::nn::Arch;
    super::init_threads();
    // Decode + align: 150×150 JPEG crops to 112×112.
    let mut crop = image::RgbImage::new(150, 150);
    for (x, y, px) in crop.enumerate_pixels_mut() {
        *px = image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ]);
    }
    let mut jpeg = Vec::new();
    if let Err(e) =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&crop)
    {
        println!("embedding throughput: cannot encode a test JPEG: {e}");
        return;
    }
    let lm = align::ARCFACE_112.map(|[x, y]| [x * 1.2 + 5.0, y * 1.2 + 3.0]);
    let t = Instant::now();
    let count = 2000;
    let ok = (0..count)
        .into_par_iter()
        .filter(|_| {
            let mut data = Vec::new();
            decode_rgb(&jpeg, &mut data, &|| "bench".into())
                .ok()
                .and_then(|_| {
                    let src = Image {
                        width: 150,
                        height: 150,
                        channels: 3,
                        data,
                    };
                    align::align_face(&src, &lm, 112, 112)
                })
                .is_some()
        })
        .count();
    println!(
        "decode + align 150px JPEG -> 112x112: {:.0} images/s ({ok} images)",
        count as f64 / t.elapsed().as_secs_f64()
    );
    for (network, size, n, batch) in [
        (Network::IresnetTiny, 32usize, 1024usize, 256usize),
        (Network::IresnetTiny, 64, 512, 128),
        (Network::Iresnet50, 112, 32, 16),
    ] {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let arch = Arch {
            network,
            input_h: size as i64,
            input_w: size as i64,
            embedding_size: 512,
            dropout: 0.0,
        };
        let net = match Backbone::new(&vs.root(), &arch) {
            Ok(n) => n,
            Err(e) => {
                println!("embedding throughput {network:?}: {e}");
                continue;
            }
        };
        let images = vec![128u8; n * size * size * 3];
        // One warm-up batch, then the timed run.
        let _ = embed(
            &net,
            Device::Cpu,
            &images[..batch * size * size * 3],
            size,
            size,
            true,
            batch,
        );
        let t = Instant::now();
        match embed(&net, Device::Cpu, &images, size, size, true, batch) {
            Ok(_) => println!(
                "embedding {network:?} @{size}px, flip-sum, batch {batch}, CPU ({} threads): {:.1} images/s",
                tch::get_num_threads(),
                n as f64 / t.elapsed().as_secs_f64()
            ),
            Err(e) => println!("embedding {network:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
