//! Backbones: [`Backbone`] (iResNet-18/34/50/100/tiny, MobileFaceNet) built from an [`Arch`], with
//! PyTorch-identical variable names, and the small layers they share ([`BatchNorm`], PReLU weights).

pub mod iresnet;
pub mod mobilefacenet;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

use crate::kinds::train::Network;
pub use iresnet::{IResNet, IResNetConfig};
pub use mobilefacenet::MobileFaceNet;

/// Everything that fixes a backbone's variables and forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    pub network: Network,
    pub input_h: i64,
    pub input_w: i64,
    pub embedding_size: i64,
    /// Dropout before `fc` (iResNet only; MobileFaceNet has none).
    pub dropout: f64,
}

impl Arch {
    /// A clear error for sizes the network cannot take (before any libtorch call can abort).
    pub fn check(&self) -> anyhow::Result<()> {
        let min = match self.network {
            Network::Mobilefacenet => 16,
            _ => 8,
        };
        if self.input_h < min || self.input_w < min {
            anyhow::bail!(
                "{:?} needs images of at least {min}×{min} pixels, the dataset has {}×{}",
                self.network,
                self.input_h,
                self.input_w
            );
        }
        if self.embedding_size < 1 {
            anyhow::bail!(
                "embedding_size must be at least 1, got {}",
                self.embedding_size
            );
        }
        Ok(())
    }
}

/// BatchNorm with PyTorch's keys and init (weight 1, bias 0, eps 1e-5, momentum 0.1); tch's own
/// `BatchNormConfig` defaults the weight to U(0, 1) (formats.md §8.2), hence this type.
#[derive(Debug)]
pub struct BatchNorm {
    ws: Option<Tensor>,
    bs: Option<Tensor>,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    fn with_affine(p: &nn::Path, c: i64, ws: Option<Tensor>, bs: Option<Tensor>) -> Self {
        BatchNorm {
            ws,
            bs,
            running_mean: p.zeros_no_train("running_mean", &[c]),
            running_var: p.ones_no_train("running_var", &[c]),
        }
    }

    /// iResNet's `features`: weight fixed at 1 (not trained, still saved), bias trained.
    pub fn frozen_weight(p: &nn::Path, c: i64) -> Self {
        let ws = p.ones_no_train("weight", &[c]);
        let bs = p.var("bias", &[c], Init::Const(0.0));
        Self::with_affine(p, c, Some(ws), Some(bs))
    }
}

/// A BatchNorm (1-d or 2-d: the input decides), affine or not.
pub fn batch_norm<'a, P: std::borrow::Borrow<nn::Path<'a>>>(
    p: P,
    c: i64,
    affine: bool,
) -> BatchNorm {
    let p = p.borrow();
    let (ws, bs) = if affine {
        (
            Some(p.var("weight", &[c], Init::Const(1.0))),
            Some(p.var("bias", &[c], Init::Const(0.0))),
        )
    } else {
        (None, None)
    };
    BatchNorm::with_affine(p, c, ws, bs)
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::batch_norm(
            xs,
            self.ws.as_ref(),
            self.bs.as_ref(),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}

/// PReLU has no tch module: one weight per channel, 0.25 at init, applied with `Tensor::prelu`.
pub fn prelu_weight<'a, P: std::borrow::Borrow<nn::Path<'a>>>(p: P, c: i64) -> Tensor {
    p.borrow().var("weight", &[c], Init::Const(0.25))
}

/// A face-embedding network; `forward_t(xs, train)` gives raw (unnormalised) embeddings.
#[derive(Debug)]
pub enum Backbone {
    IResNet(IResNet),
    MobileFaceNet(MobileFaceNet),
}

impl Backbone {
    /// Create the variables of `arch` under `p` (the root of a VarStore for reference key names).
    pub fn new(p: &nn::Path, arch: &Arch) -> anyhow::Result<Self> {
        arch.check()?;
        let (h, w, e) = (arch.input_h, arch.input_w, arch.embedding_size);
        let ir = |cfg| Backbone::IResNet(IResNet::new(p, cfg, h, w, e, arch.dropout));
        Ok(match arch.network {
            Network::Iresnet18 => ir(IResNetConfig::r18()),
            Network::Iresnet34 => ir(IResNetConfig::r34()),
            Network::Iresnet50 => ir(IResNetConfig::r50()),
            Network::Iresnet100 => ir(IResNetConfig::r100()),
            Network::IresnetTiny => ir(IResNetConfig::tiny()),
            Network::Mobilefacenet => Backbone::MobileFaceNet(MobileFaceNet::new(p, h, w, e)),
        })
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Backbone::IResNet(n) => n.forward_t(xs, train),
            Backbone::MobileFaceNet(n) => n.forward_t(xs, train),
        }
    }
}

/// Number of trainable scalars (what PyTorch counts with `requires_grad`).
pub fn trainable_params(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (trainable params, PyTorch state_dict entries = vars + one `num_batches_tracked` per BN).
    fn count(network: Network, h: i64) -> (i64, usize) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let arch = Arch {
            network,
            input_h: h,
            input_w: h,
            embedding_size: 512,
            dropout: 0.0,
        };
        let _net = Backbone::new(&vs.root(), &arch).expect("valid arch");
        let vars = vs.variables();
        let bns = vars.keys().filter(|k| k.ends_with("running_mean")).count();
        (trainable_params(&vs), vars.len() + bns)
    }

    #[test]
    fn param_counts_match_the_reference() {
        // formats.md §4: trainable counts; state_dict entries minus BN's `num_batches_tracked`.
        for (net, params, entries) in [
            (Network::Iresnet18, 24_025_088, 187),
            (Network::Iresnet34, 34_138_816, 331),
            (Network::Iresnet50, 43_590_336, 475),
            (Network::Iresnet100, 65_155_648, 925),
        ] {
            let (p, n) = count(net, 112);
            assert_eq!(p, params, "{net:?} trainable params");
            assert_eq!(n, entries, "{net:?} state_dict entries");
        }
        assert_eq!(count(Network::Mobilefacenet, 112).0, 1_199_488);
    }

    #[test]
    fn tiny_preset_fits_small_images() {
        tch::manual_seed(0);
        for size in [32, 48, 112] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let arch = Arch {
                network: Network::IresnetTiny,
                input_h: size,
                input_w: size,
                embedding_size: 64,
                dropout: 0.4,
            };
            let net = Backbone::new(&vs.root(), &arch).expect("valid arch");
            let y = net.forward_t(
                &Tensor::randn([2, 3, size, size], (tch::Kind::Float, tch::Device::Cpu)),
                true,
            );
            assert_eq!(y.size(), vec![2, 64]);
        }
    }
}
