//! The `eval-trainset` stage (diffprob.md §2.3): every training position once, backbone and head
//! in eval mode, no grad; p(x) = softmax(s·(cos − m·[j = y]))_y (f32, R1 `margin: true`) or the
//! m = 0 variant in f64, and the margin-free predicted label. [`TrainsetProbs`] is the result.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Device, Kind};

use super::heads::Head;
use super::model::{self, ModelInfo};
use super::nn::Backbone;
use super::train::batch_tensors;
use crate::data::dataset::Dataset;
use crate::data::loader::{Flip as LoaderFlip, Loader, LoaderConfig};
use crate::formats::{npy, text};
use crate::kinds::train::{EvalTrainsetParams, Flip};
use crate::Invocation;

/// p(x) and the predicted label per dataset position.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainsetProbs {
    pub prob: Vec<f64>,
    pub pred_label: Vec<i64>,
}

/// Check that a model can score this dataset: same image size, a head over the same classes.
pub fn check_compatible(info: &ModelInfo, ds: &Dataset, model_dir: &std::path::Path) -> Result<()> {
    let (h, w) = ds.image_size();
    if (i64::from(h), i64::from(w)) != (info.input_h, info.input_w) {
        bail!(
            "{}: the model takes {}×{} images, the dataset {} has {h}×{w}",
            model_dir.display(),
            info.input_h,
            info.input_w,
            ds.dir().display()
        );
    }
    if info.num_classes != ds.num_classes() as i64 {
        bail!(
            "{}: the model's head has {} classes, the dataset {} has {} (labels would fall outside the head)\nhint: eval-trainset needs the model trained on this full dataset without a label map",
            model_dir.display(),
            info.num_classes,
            ds.dir().display(),
            ds.num_classes()
        );
    }
    Ok(())
}

/// Score every position of `ds` once (batches in dataset order).
pub fn evaluate(
    backbone: &Backbone,
    head: &Head,
    ds: Arc<Dataset>,
    p: &EvalTrainsetParams,
    device: Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<TrainsetProbs> {
    let n = ds.len();
    let loader = Loader::new(
        ds,
        LoaderConfig {
            positions: None,
            label_map: None,
            batch_size: p.batch_size as usize,
            shuffle: false,
            seed: p.seed,
            epoch: 0,
            drop_last: false,
            flip: match p.flip {
                Flip::None => LoaderFlip::None,
                Flip::Random => LoaderFlip::Random { seed: p.seed },
            },
            workers: crate::threads::loader_workers(p.workers),
            prefetch: 4,
        },
    )?;
    let mut prob = vec![f64::NAN; n];
    let mut pred = vec![-1i64; n];
    let mut seen = vec![false; n];
    let mut done = 0usize;
    for batch in loader {
        let batch = batch?;
        let (x, y) = batch_tensors(&batch, device);
        let (pb, lb) = tch::no_grad(|| -> Result<(Vec<f64>, Vec<i64>)> {
            let cos = head.cosine(&backbone.forward_t(&x, false));
            let yy = y.unsqueeze(1);
            let pr = if p.margin {
                let logits = (&cos - cos.zeros_like().scatter_value(1, &yy, p.m)) * p.s;
                logits
                    .softmax(-1, Kind::Float)
                    .gather(1, &yy, false)
                    .to_kind(Kind::Double)
            } else {
                (cos.to_kind(Kind::Double) * p.s)
                    .softmax(-1, Kind::Double)
                    .gather(1, &yy, false)
            };
            let pr = Vec::<f64>::try_from(pr.view([-1]).to_device(Device::Cpu))?;
            let lb = Vec::<i64>::try_from(cos.argmax(1, false).to_device(Device::Cpu))?;
            Ok((pr, lb))
        })?;
        for (i, &pos) in batch.positions.iter().enumerate() {
            if std::mem::replace(&mut seen[pos], true) {
                bail!("position {pos} came twice from the loader");
            }
            prob[pos] = pb[i];
            pred[pos] = lb[i];
        }
        done += batch.len();
        on_batch(done, n);
    }
    if let Some(pos) = seen.iter().position(|s| !s) {
        bail!("position {pos} was never scored ({done} of {n} seen)");
    }
    Ok(TrainsetProbs {
        prob,
        pred_label: pred,
    })
}

pub fn run(inv: &Invocation) -> Result<serde_json::Value> {
    let p: EvalTrainsetParams = inv.params()?;
    super::check_params(&p)?;
    let device = super::select_device(inv);
    let model_dir = inv.input("model")?;
    let ds = Arc::new(Dataset::open(inv.input("train")?)?);
    let info = ModelInfo::read(model_dir)?;
    check_compatible(&info, &ds, model_dir)?;
    let (backbone, info) = model::load_backbone(model_dir, device)?;
    let head = model::load_head(model_dir, &info, device)?;
    let t0 = Instant::now();
    let progress = inv.progress();
    let mut last = Instant::now();
    let out = evaluate(&backbone, &head, ds.clone(), &p, device, |done, n| {
        if last.elapsed().as_secs_f64() > 2.0 || done == n {
            progress.report(json!({"step": done, "steps": n, "images_per_s": done as f64 / t0.elapsed().as_secs_f64().max(1e-9)}));
            last = Instant::now();
        }
    })?;
    let probs_dir = inv.output("probs")?;
    std::fs::create_dir_all(probs_dir)
        .with_context(|| format!("cannot create {}", probs_dir.display()))?;
    npy::write_1d(&probs_dir.join("prob.npy"), &out.prob)?;
    text::write_floats(&probs_dir.join("prob.txt"), &out.prob)?;
    let pred_path = inv.output("predictions")?;
    if let Some(parent) = pred_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    npy::write_1d(pred_path, &out.pred_label)?;
    let n = out.prob.len();
    let correct = out
        .pred_label
        .iter()
        .zip(ds.labels())
        .filter(|(a, b)| a == b)
        .count();
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "samples": n,
        "margin": p.margin,
        "mean_prob": out.prob.iter().sum::<f64>() / n.max(1) as f64,
        "min_prob": out.prob.iter().copied().fold(f64::INFINITY, f64::min),
        "train_accuracy": correct as f64 / n.max(1) as f64,
        "seconds": secs,
        "images_per_s": n as f64 / secs.max(1e-9),
        "device": format!("{device:?}"),
    }))
}
