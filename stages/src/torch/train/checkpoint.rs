//! [`Checkpoints`]: the state of a training after each epoch in its work dir (weights, momentum
//! buffers, loss scaler, metrics so far, probability-history rows), from which a rerun resumes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::Trainer;
use crate::formats::npy;
use crate::torch::amp::ScalerState;
use crate::torch::model;
use crate::torch::nn::Arch;

/// What a checkpoint must agree on to be resumable (the rest of the params may change, e.g. epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Identity {
    pub(super) arch: Arch,
    pub(super) loss: crate::kinds::train::Loss,
    pub(super) num_classes: usize,
    pub(super) samples: usize,
    pub(super) dataset_n: usize,
    pub(super) record_history: bool,
}

/// `state.json` of a checkpoint: the metrics so far and where to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) identity: Identity,
    pub(super) epochs_done: u32,
    pub(super) seed: u64,
    pub(super) epoch_loss: Vec<f64>,
    pub(super) epoch_images_per_s: Vec<f64>,
    pub(super) epoch_lr: Vec<f64>,
    pub(super) verification: Vec<serde_json::Value>,
    /// The loss scaler of `precision: amp` on CUDA (absent otherwise, and in older checkpoints).
    #[serde(default)]
    pub(super) scaler: Option<ScalerState>,
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

    pub(super) fn history_row(&self, e: u32) -> PathBuf {
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

    pub(super) fn save(
        &self,
        t: &Trainer,
        state: &State,
        history_row: Option<(u32, &[f32])>,
    ) -> Result<()> {
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

    pub(super) fn load(&self, k: u32, t: &mut Trainer) -> Result<State> {
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
