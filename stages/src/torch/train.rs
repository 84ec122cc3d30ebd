//! The `train` stage (diffprob.md §2.2, §5): backbone + margin head with the reference's SGD recipe,
//! a checkpoint in the work dir after every epoch ([`Checkpoints`]) from which a rerun of the same
//! stage resumes, the optional per-sample probability history, and the `model/` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::heads::{self, Head, HeadConfig};
use super::model::{self, ModelInfo, MODEL_FORMAT};
use super::nn::{Arch, Backbone};
use super::optim::Sgd;
use crate::data::dataset::Dataset;
use crate::data::loader::{Batch, Flip, Loader, LoaderConfig};
use crate::formats::{npy, text};
use crate::kinds::train::{Precision, TrainParams};
use crate::Invocation;

/// Which samples train and under which class: the kept list and label map applied to a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    /// Full-dataset positions used (ascending).
    pub positions: Vec<usize>,
    /// old class → new class (−1: absent), when a label map was given.
    pub label_map: Option<Vec<i64>>,
    /// Outputs of the head.
    pub num_classes: usize,
}

/// Read a kept list: `kept.txt` (`kept_index = [...]`) or `kept.npy` (`<i8`), or a folder holding one.
pub fn read_kept(path: &Path, n: usize) -> Result<Vec<usize>> {
    let path = if path.is_dir() {
        let txt = path.join("kept.txt");
        let npy = path.join("kept.npy");
        if txt.exists() {
            txt
        } else if npy.exists() {
            npy
        } else {
            bail!("{}: no kept.txt or kept.npy in this folder\nhint: `kept` must be a prune or clean output", path.display());
        }
    } else {
        path.to_path_buf()
    };
    if path.extension().is_some_and(|e| e == "npy") {
        let v = npy::read(&path)?.to_i64()?;
        let mut out = Vec::with_capacity(v.len());
        for (i, &p) in v.iter().enumerate() {
            if p < 0 || p as usize >= n {
                bail!(
                    "{}: entry {i}: position {p} is out of range for a dataset of {n} samples",
                    path.display()
                );
            }
            if let Some(&prev) = out.last() {
                if p as usize <= prev {
                    bail!("{}: entry {i}: position {p} after {prev}; kept lists must be strictly increasing", path.display());
                }
            }
            out.push(p as usize);
        }
        Ok(out)
    } else {
        text::read_kept(&path, Some(n))
    }
}

/// Read `label_map.json` (old id as a decimal string → new id) into a dense old → new table
/// over `c` dataset classes (−1 = not in the map).
pub fn read_label_map(path: &Path, c: usize) -> Result<(Vec<i64>, usize)> {
    let path = if path.is_dir() {
        path.join("label_map.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read label map {}", path.display()))?;
    let raw: BTreeMap<String, i64> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: line {}, column {}: not a JSON object of old id → new id: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let size = raw.len();
    let mut table = vec![-1i64; c];
    let mut used = vec![false; size];
    for (k, &v) in &raw {
        let old: usize = k.trim().parse().map_err(|_| {
            anyhow::anyhow!("{}: key `{k}` is not a decimal class id", path.display())
        })?;
        if old >= c {
            bail!(
                "{}: key `{k}`: class {old} does not exist; the dataset has {c} classes (0..{})",
                path.display(),
                c.saturating_sub(1)
            );
        }
        if v < 0 || v as usize >= size {
            bail!(
                "{}: key `{k}` maps to {v}, outside the head's {size} classes (0..{})\nhint: a label map's new ids must be 0..len(map)-1",
                path.display(),
                size.saturating_sub(1)
            );
        }
        if std::mem::replace(&mut used[v as usize], true) {
            bail!(
                "{}: new id {v} is given to more than one old class (second: `{k}`)",
                path.display()
            );
        }
        table[old] = v;
    }
    Ok((table, size))
}

impl TrainingSet {
    pub fn prepare(ds: &Dataset, kept: Option<&Path>, label_map: Option<&Path>) -> Result<Self> {
        let labels = ds.labels();
        let c = ds.num_classes();
        let positions = match kept {
            Some(p) => read_kept(p, ds.len())?,
            None => (0..ds.len()).collect(),
        };
        if positions.is_empty() {
            bail!(
                "the kept list {} is empty: nothing to train on",
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        match label_map {
            Some(lm) => {
                let (table, size) = read_label_map(lm, c)?;
                if let Some(&p) = positions.iter().find(|&&p| table[labels[p] as usize] < 0) {
                    bail!(
                        "position {p} (class {}) is kept but {} has no entry for class {}\nhint: the label map and the kept list must come from the same relabel/prune run",
                        labels[p],
                        lm.display(),
                        labels[p]
                    );
                }
                Ok(TrainingSet {
                    positions,
                    label_map: Some(table),
                    num_classes: size,
                })
            }
            None => {
                let mut seen = vec![false; c];
                for &p in &positions {
                    seen[labels[p] as usize] = true;
                }
                if let Some(id) = seen.iter().position(|s| !s) {
                    let empty = seen.iter().filter(|s| !**s).count();
                    bail!(
                        "the kept list leaves {empty} identit{} without samples (first: class {id}); the head would keep untrainable classes\nhint: add the `label_map` input from a relabel stage",
                        if empty == 1 { "y" } else { "ies" }
                    );
                }
                Ok(TrainingSet {
                    positions,
                    label_map: None,
                    num_classes: c,
                })
            }
        }
    }
}

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

/// What a checkpoint must agree on to be resumable (the rest of the params may change, e.g. epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Identity {
    arch: Arch,
    loss: crate::kinds::train::Loss,
    num_classes: usize,
    samples: usize,
    dataset_n: usize,
    record_history: bool,
}

/// `state.json` of a checkpoint: the metrics so far and where to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    identity: Identity,
    epochs_done: u32,
    seed: u64,
    epoch_loss: Vec<f64>,
    epoch_images_per_s: Vec<f64>,
    epoch_lr: Vec<f64>,
    verification: Vec<serde_json::Value>,
}

/// Per-epoch checkpoints under `work_dir/checkpoints/epoch_{k}` (k = epochs done), each written into
/// a `.tmp` folder and renamed, so a kill at any instant leaves the previous one intact.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(work_dir: &Path) -> Self {
        Checkpoints {
            dir: work_dir.join("checkpoints"),
        }
    }

    fn epoch_dir(&self, k: u32) -> PathBuf {
        self.dir.join(format!("epoch_{k}"))
    }

    fn history_row(&self, e: u32) -> PathBuf {
        self.dir.join("history").join(format!("row_{e}.npy"))
    }

    /// The most recent complete checkpoint (epochs done), ignoring interrupted `.tmp` writes.
    pub fn latest(&self) -> Result<Option<u32>> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(None);
        };
        let mut best = None;
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(k) = name
                .strip_prefix("epoch_")
                .and_then(|k| k.parse::<u32>().ok())
            {
                if e.path().join("state.json").exists() {
                    best = best.max(Some(k));
                }
            }
        }
        Ok(best)
    }

    fn save(&self, t: &Trainer, state: &State, history_row: Option<(u32, &[f32])>) -> Result<()> {
        let k = state.epochs_done;
        if let Some((e, row)) = history_row {
            let p = self.history_row(e);
            std::fs::create_dir_all(p.parent().unwrap_or(&self.dir))?;
            let tmp = p.with_extension("npy.tmp");
            npy::write_1d(&tmp, row)?;
            std::fs::rename(&tmp, &p)?;
        }
        let tmp = self.dir.join(format!("epoch_{k}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        model::save_vars(&t.bvs, &tmp.join("backbone.safetensors"))?;
        model::save_vars(&t.hvs, &tmp.join("header.safetensors"))?;
        save_named(&t.opt_b.state(), &tmp.join("momentum_backbone.safetensors"))?;
        save_named(&t.opt_h.state(), &tmp.join("momentum_header.safetensors"))?;
        std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
        let dst = self.epoch_dir(k);
        if dst.exists() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("cannot commit checkpoint {}", dst.display()))?;
        // Older checkpoints are superseded once the new one is in place.
        for old in 0..k {
            let d = self.epoch_dir(old);
            if d.exists() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        Ok(())
    }

    fn load(&self, k: u32, t: &mut Trainer) -> Result<State> {
        let d = self.epoch_dir(k);
        let state: State = serde_json::from_slice(&std::fs::read(d.join("state.json"))?)
            .with_context(|| format!("{}: unreadable checkpoint state", d.display()))?;
        model::load_vars(
            &t.bvs,
            &d.join("backbone.safetensors"),
            "backbone checkpoint",
        )?;
        model::load_vars(&t.hvs, &d.join("header.safetensors"), "head checkpoint")?;
        t.opt_b.load_state(load_named(
            &d.join("momentum_backbone.safetensors"),
            t.device,
        )?)?;
        t.opt_h.load_state(load_named(
            &d.join("momentum_header.safetensors"),
            t.device,
        )?)?;
        Ok(state)
    }
}

fn save_named(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    Tensor::write_safetensors(named, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn load_named(path: &Path, device: Device) -> Result<Vec<(String, Tensor)>> {
    let v = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(v.into_iter()
        .map(|(n, t)| (n, t.to_device(device)))
        .collect())
}

/// The networks, their VarStores and optimisers.
pub struct Trainer {
    pub device: Device,
    pub bvs: VarStore,
    pub hvs: VarStore,
    pub backbone: Backbone,
    pub head: Head,
    pub opt_b: Sgd,
    pub opt_h: Sgd,
    pub clip: f64,
    /// `precision: amp` on CUDA: the forward runs under libtorch's fp16 autocast (no loss scaling).
    pub autocast: bool,
}

/// One step's outputs.
pub struct StepOut {
    pub loss: f64,
    /// softmax(logits)[y] per sample, when asked for.
    pub probs: Option<Vec<f32>>,
}

impl Trainer {
    pub fn new(device: Device, arch: &Arch, head_cfg: HeadConfig, p: &TrainParams) -> Result<Self> {
        tch::manual_seed(p.seed as i64);
        let bvs = VarStore::new(device);
        let backbone = Backbone::new(&bvs.root(), arch)?;
        let hvs = VarStore::new(device);
        let head = Head::new(&hvs.root(), head_cfg);
        let opt_b = Sgd::new(&bvs, p.momentum, p.weight_decay);
        let opt_h = Sgd::new(&hvs, p.momentum, p.weight_decay);
        let autocast = p.precision == Precision::Amp && device.is_cuda();
        Ok(Trainer {
            device,
            bvs,
            hvs,
            backbone,
            head,
            opt_b,
            opt_h,
            clip: p.clip_grad_norm,
            autocast,
        })
    }

    /// Forward (train mode), loss, backward, clip the backbone's gradients, one SGD step of each.
    /// A non-finite loss stops before the update.
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
        want_probs: bool,
    ) -> Result<StepOut> {
        let emb = tch::autocast(self.autocast, || self.backbone.forward_t(images, true));
        // The margin head and the loss stay in f32 (cosines near ±1 need the precision).
        let logits = self.head.forward(&emb.to_kind(tch::Kind::Float), labels);
        let loss = heads::loss(&logits, labels);
        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            bail!("the training loss became {loss_v}\nhint: lower `lr`, keep `clip_grad_norm` on, or check the data; the last good checkpoint is kept");
        }
        let probs = if want_probs {
            let p =
                tch::no_grad(|| heads::gt_prob(&logits.detach(), labels)).to_device(Device::Cpu);
            Some(Vec::<f32>::try_from(&p)?)
        } else {
            None
        };
        self.opt_b.zero_grad();
        self.opt_h.zero_grad();
        loss.backward();
        if self.clip > 0.0 {
            self.opt_b.clip_grad_norm(self.clip);
        }
        self.opt_b.step(lr);
        self.opt_h.step(lr);
        Ok(StepOut {
            loss: loss_v,
            probs,
        })
    }
}

/// Batch → (images B×3×H×W, labels B) on `device`.
pub fn batch_tensors(b: &Batch, device: Device) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(&b.images)
        .view([b.len() as i64, 3, b.h as i64, b.w as i64])
        .to_device(device);
    let y = Tensor::from_slice(&b.labels).to_device(device);
    (x, y)
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
    let train_dir = inv.input("train")?;
    let ds = Arc::new(Dataset::open(train_dir)?);
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
    let head_cfg = HeadConfig::new(
        p.loss,
        p.s,
        p.m,
        arch.embedding_size,
        set.num_classes as i64,
    );
    let mut t = Trainer::new(device, &arch, head_cfg, &p)?;
    let identity = Identity {
        arch,
        loss: p.loss,
        num_classes: set.num_classes,
        samples: set.positions.len(),
        dataset_n: ds.len(),
        record_history: p.record_history,
    };
    let ckpts = Checkpoints::new(&inv.work_dir);
    let n = ds.len();
    let epochs = p.epochs;
    let mut history: Vec<f32> = if p.record_history {
        vec![0.0; epochs as usize * n]
    } else {
        Vec::new()
    };
    let mut state = State {
        identity: identity.clone(),
        epochs_done: 0,
        seed: p.seed,
        epoch_loss: vec![],
        epoch_images_per_s: vec![],
        epoch_lr: vec![],
        verification: vec![],
    };
    let mut resumed_from = None;
    if let Some(k) = ckpts.latest()? {
        let saved = ckpts.load(k, &mut t)?;
        if saved.identity != identity || saved.seed != p.seed {
            bail!(
                "the checkpoint in {} was made by a different training (network, loss, classes, samples or seed differ)\nhint: remove that work dir to start afresh",
                inv.work_dir.display()
            );
        }
        state = saved;
        if p.record_history {
            for e in 0..state.epochs_done.min(epochs) {
                let row = npy::read(&ckpts.history_row(e))?.to_f32()?;
                if row.len() != n {
                    bail!(
                        "{}: {} values, the dataset has {n}",
                        ckpts.history_row(e).display(),
                        row.len()
                    );
                }
                history[e as usize * n..(e as usize + 1) * n].copy_from_slice(&row);
            }
        }
        resumed_from = Some(state.epochs_done);
        inv.progress().message(&format!(
            "resuming after epoch {} of {epochs} from {}",
            state.epochs_done,
            inv.work_dir.display()
        ));
        for e in 0..state.epochs_done as usize {
            inv.progress().report(epoch_event(&state, e, epochs));
        }
    }
    let verifier = match inv.opt_input("pairs") {
        Some(pairs) => Some(EpochVerifier::open(pairs, h as usize, w as usize)?),
        None => None,
    };
    let report_every = (steps / 20).max(1);
    for epoch in state.epochs_done..epochs {
        tch::manual_seed(epoch_seed(p.seed, epoch));
        let loader = Loader::new(
            ds.clone(),
            LoaderConfig {
                positions: Some(set.positions.clone()),
                label_map: set.label_map.clone(),
                batch_size: p.batch_size as usize,
                shuffle: true,
                seed: p.seed,
                epoch: u64::from(epoch),
                drop_last: true,
                flip: Flip::Random { seed: p.seed },
                workers: p.workers as usize,
                prefetch: 4,
            },
        )?;
        let t0 = Instant::now();
        let (mut loss_sum, mut images) = (0.0, 0usize);
        let mut window = (Instant::now(), 0usize);
        for (step, batch) in loader.enumerate() {
            let batch = batch?;
            let lr = learning_rate(&p, epoch, step, steps);
            let (x, y) = batch_tensors(&batch, device);
            let out = t
                .step(&x, &y, lr, p.record_history)
                .with_context(|| format!("epoch {}, step {}", epoch + 1, step + 1))?;
            if let Some(probs) = out.probs {
                let row = &mut history[epoch as usize * n..(epoch as usize + 1) * n];
                for (&pos, &pr) in batch.positions.iter().zip(&probs) {
                    row[pos] = pr;
                }
            }
            loss_sum += out.loss;
            images += batch.len();
            window.1 += batch.len();
            if (step + 1) % report_every == 0 || step + 1 == steps {
                let ips = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
                inv.progress().report(json!({
                    "epoch": epoch + 1, "epochs": epochs, "step": step + 1, "steps": steps,
                    "loss": out.loss, "lr": lr, "images_per_s": ips,
                }));
                window = (Instant::now(), 0);
            }
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        state.epoch_loss.push(loss_sum / steps as f64);
        state.epoch_images_per_s.push(images as f64 / secs);
        state.epoch_lr.push(learning_rate(&p, epoch, 0, steps));
        if let Some(v) = &verifier {
            let r = v
                .evaluate(&t.backbone, device)
                .with_context(|| format!("verification after epoch {}", epoch + 1))?;
            inv.progress()
                .report(json!({"epoch": epoch + 1, "verification": r}));
            state.verification.push(r);
        }
        state.epochs_done = epoch + 1;
        let row = p.record_history.then(|| {
            (
                epoch,
                &history[epoch as usize * n..(epoch as usize + 1) * n],
            )
        });
        ckpts.save(&t, &state, row)?;
        inv.progress()
            .report(epoch_event(&state, epoch as usize, epochs));
    }
    write_outputs(
        inv,
        &p,
        &t,
        &state,
        &history,
        n,
        set.label_map.as_ref().map(|_| set.num_classes),
    )?;
    let mean_ips = if state.epoch_images_per_s.is_empty() {
        0.0
    } else {
        state.epoch_images_per_s.iter().sum::<f64>() / state.epoch_images_per_s.len() as f64
    };
    let mut metrics = json!({
        "epochs": epochs,
        "steps_per_epoch": steps,
        "samples": set.positions.len(),
        "num_classes": set.num_classes,
        "device": format!("{device:?}"),
        "loss_per_epoch": state.epoch_loss,
        "lr_per_epoch": state.epoch_lr,
        "images_per_s_per_epoch": state.epoch_images_per_s,
        "images_per_s": mean_ips,
        "final_loss": state.epoch_loss.last(),
        "resumed_after_epoch": resumed_from,
    });
    if inv.opt_input("pairs").is_some() {
        metrics["verification_per_epoch"] = json!(state.verification);
    }
    Ok(metrics)
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

/// The `.bin` packs of the `pairs` input, decoded once at the training image size; after each
/// epoch the 10-fold accuracy of flip-summed, normalised embeddings (formats.md §2.4-2.5).
pub struct EpochVerifier {
    sets: Vec<(String, Vec<u8>, Vec<bool>)>,
    h: usize,
    w: usize,
}

impl EpochVerifier {
    /// `pairs`: one `.bin` file or a folder of them.
    pub fn open(pairs: &Path, h: usize, w: usize) -> Result<Self> {
        let files: Vec<PathBuf> = if pairs.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(pairs)
                .with_context(|| format!("cannot list {}", pairs.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "bin"))
                .collect();
            v.sort();
            if v.is_empty() {
                bail!(
                    "{}: no .bin verification packs in this folder",
                    pairs.display()
                );
            }
            v
        } else {
            vec![pairs.to_path_buf()]
        };
        let mut sets = Vec::new();
        for f in files {
            let (jpegs, issame) = crate::formats::bin::read_pairs(&f)?;
            let mut rgb = Vec::with_capacity(jpegs.len() * h * w * 3);
            for (i, j) in jpegs.iter().enumerate() {
                let img = image::load_from_memory(j)
                    .map_err(|e| anyhow::anyhow!("{}: image {i}: cannot decode: {e}", f.display()))?
                    .to_rgb8();
                let img = if (img.height() as usize, img.width() as usize) != (h, w) {
                    image::imageops::resize(
                        &img,
                        w as u32,
                        h as u32,
                        image::imageops::FilterType::Triangle,
                    )
                } else {
                    img
                };
                rgb.extend_from_slice(img.as_raw());
            }
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            sets.push((name, rgb, issame));
        }
        Ok(EpochVerifier { sets, h, w })
    }

    pub fn evaluate(&self, backbone: &Backbone, device: Device) -> Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, rgb, issame) in &self.sets {
            let mut emb = super::embed::embed(backbone, device, rgb, self.h, self.w, true, 128)?;
            let dim = emb.len() / (issame.len() * 2).max(1);
            for r in emb.chunks_mut(dim.max(1)) {
                let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    r.iter_mut().for_each(|x| *x /= n);
                }
            }
            let dist = crate::eval::verification::pair_distances(&emb, dim);
            let r = crate::eval::verification::evaluate(&dist, issame, 10, 1e-3)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            out.insert(name.clone(), json!({"accuracy": r.accuracy, "std": r.std}));
        }
        Ok(serde_json::Value::Object(out))
    }
}

fn write_outputs(
    inv: &Invocation,
    p: &TrainParams,
    t: &Trainer,
    state: &State,
    history: &[f32],
    n: usize,
    label_map_size: Option<usize>,
) -> Result<()> {
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
