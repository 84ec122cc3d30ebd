//! [`Trainer`]: the backbone and margin head with their VarStores and SGD optimisers, and one
//! training step ([`Trainer::step`]) in the chosen precision (fp32; on CUDA fp16 autocast with
//! dynamic loss scaling, or bf16 autocast).

use anyhow::{bail, Result};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::data::loader::Batch;
use crate::kinds::train::{Precision, TrainParams};
use crate::torch::amp::{Autocast, GradScaler};
use crate::torch::heads::{self, Head, HeadConfig};
use crate::torch::nn::{Arch, Backbone};
use crate::torch::optim::Sgd;

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
    /// The backbone's forward under CUDA autocast (`precision: amp` fp16, `bf16`), or not.
    pub autocast: Autocast,
    /// Dynamic loss scaling, with fp16 autocast.
    pub scaler: Option<GradScaler>,
}

/// One step's outputs.
pub struct StepOut {
    pub loss: f64,
    /// softmax(logits)[y] per sample, when asked for.
    pub probs: Option<Vec<f32>>,
    /// The loss scaler found an inf/NaN gradient: an optimiser skipped its update.
    pub skipped: bool,
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
        let autocast = match (p.precision, device.is_cuda()) {
            (_, false) | (Precision::Fp32, _) => Autocast::Off,
            (Precision::Amp, true) => Autocast::Fp16,
            (Precision::Bf16, true) => Autocast::Bf16,
        };
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
            scaler: (autocast == Autocast::Fp16).then(GradScaler::default),
        })
    }

    /// Forward (train mode), loss, backward, clip the backbone's gradients, one SGD step of each
    /// optimiser. Without a scaler a non-finite loss stops before the update; with one, the
    /// reference's order: scaled backward, unscale the backbone's gradients, clip them, unscale the
    /// head's, step each optimiser whose gradients are finite, update the scale.
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
        want_probs: bool,
    ) -> Result<StepOut> {
        let emb = self.autocast.run(|| self.backbone.forward_t(images, true));
        // The margin head and the loss stay in f32 (cosines near ±1 need the precision).
        let logits = self.head.forward(&emb.to_kind(tch::Kind::Float), labels);
        let loss = heads::loss(&logits, labels);
        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() && self.scaler.is_none() {
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
        let skipped = match &mut self.scaler {
            None => {
                loss.backward();
                if self.clip > 0.0 {
                    self.opt_b.clip_grad_norm(self.clip);
                }
                self.opt_b.step(lr);
                self.opt_h.step(lr);
                false
            }
            Some(scaler) => {
                scaler.scale_loss(&loss).backward();
                let inf_b = scaler.unscale(&self.opt_b);
                if self.clip > 0.0 {
                    self.opt_b.clip_grad_norm(self.clip);
                }
                let inf_h = scaler.unscale(&self.opt_h);
                if !inf_b {
                    self.opt_b.step(lr);
                }
                if !inf_h {
                    self.opt_h.step(lr);
                }
                scaler.update(inf_b || inf_h);
                inf_b || inf_h
            }
        };
        Ok(StepOut {
            loss: loss_v,
            probs,
            skipped,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::train::{Loss, Network};
    use crate::torch::amp::ScalerState;

    fn trainer() -> Trainer {
        let arch = Arch {
            network: Network::IresnetTiny,
            input_h: 16,
            input_w: 16,
            embedding_size: 8,
            dropout: 0.0,
        };
        let p = TrainParams {
            network: Network::IresnetTiny,
            embedding_size: 8,
            ..TrainParams::default()
        };
        Trainer::new(
            Device::Cpu,
            &arch,
            HeadConfig::new(Loss::Cosface, None, None, 8, 3),
            &p,
        )
        .unwrap()
    }

    /// The trainable variables (BatchNorm's running stats move in any train-mode forward).
    fn weights(t: &Trainer) -> Vec<Vec<f32>> {
        let mut v: Vec<(String, Tensor)> = t.bvs.variables().into_iter().collect();
        v.extend(t.hvs.variables());
        v.retain(|(_, x)| x.requires_grad());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.iter()
            .map(|(_, x)| Vec::<f32>::try_from(x.flatten(0, -1)).unwrap())
            .collect()
    }

    fn batch() -> (Tensor, Tensor) {
        tch::manual_seed(1);
        (
            Tensor::randn([4, 3, 16, 16], (tch::Kind::Float, Device::Cpu)),
            Tensor::from_slice(&[0i64, 1, 2, 1]),
        )
    }

    #[test]
    fn a_forced_overflow_skips_the_step_and_halves_the_scale() {
        let mut t = trainer();
        // loss · 1e39 is inf in f32: every gradient overflows.
        t.scaler = Some(GradScaler::new(1e39, 2000));
        let before = weights(&t);
        let (x, y) = batch();
        let out = t.step(&x, &y, 0.1, false).unwrap();
        assert!(out.skipped && out.loss.is_finite());
        assert_eq!(before, weights(&t), "a skipped step changes no weight");
        assert_eq!(
            t.scaler.as_ref().unwrap().state,
            ScalerState {
                scale: 5e38,
                growth_tracker: 0
            }
        );
        assert!(
            t.opt_b.state().is_empty(),
            "no momentum buffer: nothing stepped"
        );
    }

    #[test]
    fn good_steps_update_and_grow_the_scale_after_the_interval() {
        let mut t = trainer();
        t.scaler = Some(GradScaler::new(1024.0, 2));
        let (x, y) = batch();
        let before = weights(&t);
        assert!(!t.step(&x, &y, 0.1, false).unwrap().skipped);
        assert_ne!(before, weights(&t));
        assert_eq!(t.scaler.as_ref().unwrap().state.growth_tracker, 1);
        assert!(!t.step(&x, &y, 0.1, false).unwrap().skipped);
        assert_eq!(
            t.scaler.as_ref().unwrap().state,
            ScalerState {
                scale: 2048.0,
                growth_tracker: 0
            }
        );
    }

    #[test]
    fn an_unscaled_step_equals_a_scaled_one() {
        // A power-of-two scale is exact in f32: scaling, unscaling and stepping gives the same
        // weights as the plain fp32 step.
        let (x, y) = batch();
        let mut a = trainer();
        let mut b = trainer();
        // Same starting weights whatever other tests do to libtorch's global generator meanwhile.
        b.bvs.copy(&a.bvs).unwrap();
        b.hvs.copy(&a.hvs).unwrap();
        b.scaler = Some(GradScaler::new(256.0, 2000));
        a.step(&x, &y, 0.1, false).unwrap();
        b.step(&x, &y, 0.1, false).unwrap();
        assert_eq!(weights(&a), weights(&b));
    }
}
