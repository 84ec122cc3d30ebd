//! The `train` stage (diffprob.md §2.2, §5): backbone + margin head with the reference's SGD recipe,
//! a checkpoint in the work dir after every epoch ([`Checkpoints`]) from which a rerun of the same
//! stage resumes, the optional per-sample probability history, and the `model/` output.
//!
//! - [`set`]: the samples and classes a training uses (kept list, label map);
//! - [`trainer`]: the networks, optimisers and one step in the chosen precision;
//! - [`checkpoint`]: per-epoch checkpoints and resume;
//! - [`verifier`]: the optional per-epoch verification on `.bin` packs.

mod checkpoint;
mod set;
mod trainer;
mod verifier;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::Device;

pub use checkpoint::Checkpoints;
use checkpoint::{Identity, State};
pub use set::{read_kept, read_label_map, TrainingSet};
pub use trainer::{batch_tensors, StepOut, Trainer};
pub use verifier::EpochVerifier;

use super::heads::HeadConfig;
use super::model::{self, ModelInfo, MODEL_FORMAT};
use super::nn::Arch;
use crate::data::dataset::Dataset;
use crate::data::loader::{Flip, Loader, LoaderConfig};
use crate::formats::{npy, text};
use crate::kinds::train::{Precision, TrainParams};
use crate::Invocation;

/// The learning rate of a step: `lr · batch / lr_batch`, ×`lr_decay` per milestone reached
/// (1-based epoch starts), linear warm-up over the first `warmup_epochs` by step.
pub fn learning_rate(p: &TrainParams, epoch: u32, step: usize, steps_per_epoch: usize) -> f64 {
    let base = p.lr * p.batch_size as f64 / p.lr_batch as f64;
    let decays = p.milestones.iter().filter(|&&m| epoch + 1 >= m).count();
    let mut lr = base * p.lr_decay.powi(decays as i32);
    if epoch < p.warmup_epochs {
        let done = (epoch as usize * steps_per_epoch + step + 1) as f64;
        lr *= done / (p.warmup_epochs as usize * steps_per_epoch) as f64;
    }
    lr
}

/// libtorch's generator is reseeded at every epoch start from (seed, epoch), so that a resumed
/// epoch draws the same dropout masks and margins as an uninterrupted one.
fn epoch_seed(seed: u64, epoch: u32) -> i64 {
    let mut z = seed ^ (u64::from(epoch) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Everything a training run holds: the data, the trainer, and what the epochs accumulate.
struct Job<'a> {
    inv: &'a Invocation,
    p: &'a TrainParams,
    ds: Arc<Dataset>,
    set: TrainingSet,
    steps: usize,
    t: Trainer,
    ckpts: Checkpoints,
    state: State,
    /// [epochs × N] ground-truth probabilities (`record_history`), 0.0 = not seen.
    history: Vec<f32>,
    /// Steps whose update the loss scaler skipped (inf/NaN gradients), this run.
    skipped_steps: usize,
}

pub fn run(inv: &Invocation) -> Result<serde_json::Value> {
    let p: TrainParams = inv.params()?;
    super::check_params(&p)?;
    if p.batch_size < 2 {
        bail!("batch_size must be at least 2 (BatchNorm needs two samples in training mode)");
    }
    // Declared outputs are checked before hours of training, not after.
    inv.output("model")?;
    if p.record_history {
        inv.output("history")?;
    }
    let device = super::select_device(inv);
    if p.precision != Precision::Fp32 && !device.is_cuda() {
        inv.progress()
            .message("mixed precision is CUDA-only: training in fp32 on the CPU");
    }
    let mut job = Job::new(inv, &p, device)?;
    let resumed_from = job.resume()?;
    for e in 0..job.state.epochs_done.min(p.epochs) as usize {
        inv.progress().report(epoch_event(&job.state, e, p.epochs));
    }
    let verifier = match inv.opt_input("pairs") {
        Some(pairs) => {
            let (h, w) = job.ds.image_size();
            Some(EpochVerifier::open(pairs, h as usize, w as usize)?)
        }
        None => None,
    };
    for epoch in job.state.epochs_done..p.epochs {
        job.train_epoch(epoch)?;
        if let Some(v) = &verifier {
            let r = v
                .evaluate(&job.t.backbone, device)
                .with_context(|| format!("verification after epoch {}", epoch + 1))?;
            inv.progress()
                .report(json!({"epoch": epoch + 1, "verification": r}));
            job.state.verification.push(r);
        }
        job.checkpoint(epoch)?;
        inv.progress()
            .report(epoch_event(&job.state, epoch as usize, p.epochs));
    }
    write_outputs(&job)?;
    Ok(job.metrics(resumed_from))
}

/// The progress event of finished (checkpointed) epoch `e` (0-based): the values `metrics.json`
/// will hold, so a live curve (the dashboard's) and the final one agree point for point. A
/// resumed training repeats the events of the epochs it restored.
fn epoch_event(state: &State, e: usize, epochs: u32) -> serde_json::Value {
    json!({
        "event": "epoch", "epoch": e + 1, "epochs": epochs,
        "loss": state.epoch_loss.get(e), "lr": state.epoch_lr.get(e),
        "images_per_s": state.epoch_images_per_s.get(e),
        "verification": state.verification.get(e),
    })
}

impl<'a> Job<'a> {
    fn new(inv: &'a Invocation, p: &'a TrainParams, device: Device) -> Result<Self> {
        let ds = Arc::new(Dataset::open(inv.input("train")?)?);
        let set = TrainingSet::prepare(&ds, inv.opt_input("kept"), inv.opt_input("label_map"))?;
        let steps = set.positions.len() / p.batch_size as usize;
        if steps == 0 {
            bail!(
                "{} training samples are fewer than one batch of {} (drop_last)\nhint: lower batch_size",
                set.positions.len(),
                p.batch_size
            );
        }
        let (h, w) = ds.image_size();
        let arch = Arch {
            network: p.network,
            input_h: i64::from(h),
            input_w: i64::from(w),
            embedding_size: i64::from(p.embedding_size),
            dropout: p.dropout,
        };
        let head_cfg = HeadConfig {
            adaface_variant: p.adaface_variant,
            ..HeadConfig::new(
                p.loss,
                p.s,
                p.m,
                arch.embedding_size,
                set.num_classes as i64,
            )
        };
        let t = Trainer::new(device, &arch, head_cfg, p)?;
        let state = State {
            identity: Identity {
                arch,
                loss: p.loss,
                num_classes: set.num_classes,
                samples: set.positions.len(),
                dataset_n: ds.len(),
                record_history: p.record_history,
            },
            epochs_done: 0,
            seed: p.seed,
            epoch_loss: vec![],
            epoch_images_per_s: vec![],
            epoch_lr: vec![],
            verification: vec![],
            scaler: None,
        };
        let history = if p.record_history {
            vec![0.0; p.epochs as usize * ds.len()]
        } else {
            Vec::new()
        };
        Ok(Job {
            inv,
            p,
            ds,
            set,
            steps,
            t,
            ckpts: Checkpoints::new(&inv.work_dir),
            state,
            history,
            skipped_steps: 0,
        })
    }

    /// Continue from the latest checkpoint of the same training, if any; returns its epoch.
    fn resume(&mut self) -> Result<Option<u32>> {
        let Some(k) = self.ckpts.latest()? else {
            return Ok(None);
        };
        let saved = self.ckpts.load(k, &mut self.t)?;
        if saved.identity != self.state.identity || saved.seed != self.p.seed {
            bail!(
                "the checkpoint in {} was made by a different training (network, loss, classes, samples or seed differ)\nhint: remove that work dir to start afresh",
                self.inv.work_dir.display()
            );
        }
        self.state = saved;
        if let (Some(scaler), Some(s)) = (self.t.scaler.as_mut(), self.state.scaler) {
            scaler.state = s;
        }
        let n = self.ds.len();
        if self.p.record_history {
            for e in 0..self.state.epochs_done.min(self.p.epochs) {
                let path = self.ckpts.history_row(e);
                let row = npy::read(&path)?.to_f32()?;
                if row.len() != n {
                    bail!(
                        "{}: {} values, the dataset has {n}",
                        path.display(),
                        row.len()
                    );
                }
                self.history[e as usize * n..(e as usize + 1) * n].copy_from_slice(&row);
            }
        }
        self.inv.progress().message(&format!(
            "resuming after epoch {} of {} from {}",
            self.state.epochs_done,
            self.p.epochs,
            self.inv.work_dir.display()
        ));
        Ok(Some(self.state.epochs_done))
    }

    fn train_epoch(&mut self, epoch: u32) -> Result<()> {
        let (p, steps, n) = (self.p, self.steps, self.ds.len());
        tch::manual_seed(epoch_seed(p.seed, epoch));
        let loader = Loader::new(
            self.ds.clone(),
            LoaderConfig {
                positions: Some(self.set.positions.clone()),
                label_map: self.set.label_map.clone(),
                batch_size: p.batch_size as usize,
                shuffle: true,
                seed: p.seed,
                epoch: u64::from(epoch),
                drop_last: true,
                flip: Flip::Random { seed: p.seed },
                workers: crate::threads::loader_workers(p.workers),
                prefetch: 4,
            },
        )?;
        let report_every = (steps / 20).max(1);
        let t0 = Instant::now();
        let (mut loss_sum, mut images) = (0.0, 0usize);
        let mut window = (Instant::now(), 0usize);
        for (step, batch) in loader.enumerate() {
            let batch = batch?;
            let lr = learning_rate(p, epoch, step, steps);
            let (x, y) = batch_tensors(&batch, self.t.device);
            let out = self
                .t
                .step(&x, &y, lr, p.record_history)
                .with_context(|| format!("epoch {}, step {}", epoch + 1, step + 1))?;
            if let Some(probs) = &out.probs {
                let row = &mut self.history[epoch as usize * n..(epoch as usize + 1) * n];
                for (&pos, &pr) in batch.positions.iter().zip(probs) {
                    row[pos] = pr;
                }
            }
            self.skipped_steps += usize::from(out.skipped);
            loss_sum += out.loss;
            images += batch.len();
            window.1 += batch.len();
            if (step + 1) % report_every == 0 || step + 1 == steps {
                let ips = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
                self.inv.progress().report(json!({
                    "epoch": epoch + 1, "epochs": p.epochs, "step": step + 1, "steps": steps,
                    "loss": out.loss, "lr": lr, "images_per_s": ips,
                }));
                window = (Instant::now(), 0);
            }
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        self.state.epoch_loss.push(loss_sum / steps as f64);
        self.state.epoch_images_per_s.push(images as f64 / secs);
        self.state.epoch_lr.push(learning_rate(p, epoch, 0, steps));
        Ok(())
    }

    fn checkpoint(&mut self, epoch: u32) -> Result<()> {
        let n = self.ds.len();
        self.state.epochs_done = epoch + 1;
        self.state.scaler = self.t.scaler.as_ref().map(|s| s.state);
        let row = self.p.record_history.then(|| {
            (
                epoch,
                &self.history[epoch as usize * n..(epoch as usize + 1) * n],
            )
        });
        self.ckpts.save(&self.t, &self.state, row)
    }

    fn metrics(&self, resumed_from: Option<u32>) -> serde_json::Value {
        let state = &self.state;
        let mean_ips = if state.epoch_images_per_s.is_empty() {
            0.0
        } else {
            state.epoch_images_per_s.iter().sum::<f64>() / state.epoch_images_per_s.len() as f64
        };
        let mut metrics = json!({
            "epochs": self.p.epochs,
            "steps_per_epoch": self.steps,
            "samples": self.set.positions.len(),
            "num_classes": self.set.num_classes,
            "device": format!("{:?}", self.t.device),
            "precision": format!("{:?}", self.t.autocast),
            "loss_per_epoch": state.epoch_loss,
            "lr_per_epoch": state.epoch_lr,
            "images_per_s_per_epoch": state.epoch_images_per_s,
            "images_per_s": mean_ips,
            "final_loss": state.epoch_loss.last(),
            "resumed_after_epoch": resumed_from,
        });
        if let Some(s) = &self.t.scaler {
            metrics["loss_scale"] = json!(s.scale());
            metrics["skipped_steps"] = json!(self.skipped_steps);
        }
        if self.inv.opt_input("pairs").is_some() {
            metrics["verification_per_epoch"] = json!(state.verification);
        }
        metrics
    }
}

fn write_outputs(job: &Job) -> Result<()> {
    let (inv, p, t, state, history, n) = (
        job.inv,
        job.p,
        &job.t,
        &job.state,
        &job.history,
        job.ds.len(),
    );
    let label_map_size = job.set.label_map.as_ref().map(|_| job.set.num_classes);
    let dir = inv.output("model")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    model::save_vars(&t.bvs, &dir.join(model::BACKBONE_FILE))?;
    model::save_vars(&t.hvs, &dir.join(model::HEADER_FILE))?;
    let cfg = t.head.cfg;
    let arch = state.identity.arch;
    ModelInfo {
        format: MODEL_FORMAT,
        network: arch.network,
        loss: cfg.loss,
        s: cfg.s,
        m: cfg.m,
        sigma: cfg.sigma,
        embedding_size: arch.embedding_size,
        num_classes: cfg.num_classes,
        input_h: arch.input_h,
        input_w: arch.input_w,
        dropout: arch.dropout,
        epochs_trained: state.epochs_done,
        label_map_size,
        adaface_variant: cfg.adaface_variant,
    }
    .write(dir)?;
    if p.record_history {
        let hdir = inv.output("history")?;
        std::fs::create_dir_all(hdir)
            .with_context(|| format!("cannot create {}", hdir.display()))?;
        npy::write(&hdir.join("history.npy"), &[p.epochs as usize, n], history)?;
        if p.export_history_txt {
            for e in 0..p.epochs as usize {
                let row: Vec<f64> = history[e * n..(e + 1) * n]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect();
                text::write_floats(&hdir.join(format!("prob_{e}.txt")), &row)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_scales_by_batch_and_steps_at_one_based_milestones() {
        let p = TrainParams {
            lr: 0.1,
            lr_batch: 512,
            batch_size: 256,
            ..TrainParams::default()
        };
        let lr = |e| learning_rate(&p, e, 0, 100);
        // Reference: 0-based epochs 0-18 at the base lr, 19-26 ×0.1, 27-30 ×0.01, 31-33 ×0.001.
        assert_eq!(lr(0), 0.05);
        assert_eq!(lr(18), 0.05);
        assert!((lr(19) - 0.005).abs() < 1e-15);
        assert!((lr(27) - 0.0005).abs() < 1e-15);
        assert!((lr(33) - 0.00005).abs() < 1e-15);
        let w = TrainParams {
            warmup_epochs: 2,
            milestones: vec![],
            ..TrainParams::default()
        };
        assert!((learning_rate(&w, 0, 0, 10) - 0.1 / 20.0).abs() < 1e-15);
        assert!((learning_rate(&w, 1, 9, 10) - 0.1).abs() < 1e-15);
        assert_eq!(learning_rate(&w, 2, 0, 10), 0.1);
    }

    #[test]
    fn label_map_and_kept_npy_readers_reject_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("label_map.json");
        std::fs::write(&map, r#"{"0": 0, "3": 1}"#).unwrap();
        assert_eq!(read_label_map(&map, 4).unwrap(), (vec![0, -1, -1, 1], 2));
        std::fs::write(&map, r#"{"0": 0, "7": 1}"#).unwrap();
        assert!(format!("{:#}", read_label_map(&map, 4).unwrap_err())
            .contains("class 7 does not exist"));
        std::fs::write(&map, r#"{"0": 1, "1": 1}"#).unwrap();
        assert!(format!("{:#}", read_label_map(&map, 4).unwrap_err()).contains("more than one"));
        std::fs::write(&map, r#"{"0": 0,"#).unwrap();
        assert!(format!("{:#}", read_label_map(&map, 4).unwrap_err()).contains("line 1"));
        let kept = dir.path().join("kept.npy");
        npy::write_1d(&kept, &[0i64, 2, 5]).unwrap();
        assert_eq!(read_kept(&kept, 6).unwrap(), vec![0, 2, 5]);
        assert!(format!("{:#}", read_kept(&kept, 5).unwrap_err()).contains("out of range"));
        npy::write_1d(&kept, &[0i64, 2, 2]).unwrap();
        assert!(format!("{:#}", read_kept(&kept, 6).unwrap_err()).contains("strictly increasing"));
    }
}
