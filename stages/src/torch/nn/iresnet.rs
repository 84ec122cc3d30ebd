//! [`IResNet`]: the arcface_torch iResNet (formats.md §4.1), with variables named exactly like the
//! PyTorch `state_dict` keys so that reference weights load 1:1, plus a small CPU preset.

use tch::nn::{self, ConvConfig, Init, LinearConfig, ModuleT};
use tch::Tensor;

use super::{batch_norm, prelu_weight, BatchNorm};

/// Depth and widths of an iResNet. The reference presets have a 64-wide stem and stages 64/128/256/512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IResNetConfig {
    pub layers: [usize; 4],
    pub widths: [i64; 4],
    pub stem: i64,
}

impl IResNetConfig {
    const REFERENCE_WIDTHS: [i64; 4] = [64, 128, 256, 512];

    pub fn r18() -> Self {
        IResNetConfig {
            layers: [2, 2, 2, 2],
            widths: Self::REFERENCE_WIDTHS,
            stem: 64,
        }
    }
    pub fn r34() -> Self {
        IResNetConfig {
            layers: [3, 4, 6, 3],
            widths: Self::REFERENCE_WIDTHS,
            stem: 64,
        }
    }
    pub fn r50() -> Self {
        IResNetConfig {
            layers: [3, 4, 14, 3],
            widths: Self::REFERENCE_WIDTHS,
            stem: 64,
        }
    }
    pub fn r100() -> Self {
        IResNetConfig {
            layers: [3, 13, 30, 3],
            widths: Self::REFERENCE_WIDTHS,
            stem: 64,
        }
    }
    /// One block per stage and a quarter of the width: trains in minutes on a CPU at 32-112 px.
    pub fn tiny() -> Self {
        IResNetConfig {
            layers: [1, 1, 1, 1],
            widths: [16, 32, 64, 128],
            stem: 16,
        }
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: Init::Randn {
            mean: 0.0,
            stdev: 0.1,
        },
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// `IBasicBlock`: bn1 → conv1 → bn2 → prelu → conv2 (carries the stride) → bn3, + identity.
#[derive(Debug)]
struct Block {
    bn1: BatchNorm,
    conv1: nn::Conv2D,
    bn2: BatchNorm,
    prelu: Tensor,
    conv2: nn::Conv2D,
    bn3: BatchNorm,
    downsample: Option<(nn::Conv2D, BatchNorm)>,
}

impl Block {
    fn new(p: nn::Path, cin: i64, planes: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || cin != planes).then(|| {
            let d = &p / "downsample";
            (
                conv(&d / 0, cin, planes, 1, stride),
                batch_norm(&d / 1, planes, true),
            )
        });
        Block {
            bn1: batch_norm(&p / "bn1", cin, true),
            conv1: conv(&p / "conv1", cin, planes, 3, 1),
            bn2: batch_norm(&p / "bn2", planes, true),
            prelu: prelu_weight(&p / "prelu", planes),
            conv2: conv(&p / "conv2", planes, planes, 3, stride),
            bn3: batch_norm(&p / "bn3", planes, true),
            downsample,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply_t(&self.bn1, train)
            .apply(&self.conv1)
            .apply_t(&self.bn2, train)
            .prelu(&self.prelu)
            .apply(&self.conv2)
            .apply_t(&self.bn3, train);
        let identity = match &self.downsample {
            Some((c, bn)) => xs.apply(c).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        out + identity
    }
}

/// The network; `forward_t` maps B×3×H×W in [−1, 1] to B×E embeddings (not normalised).
#[derive(Debug)]
pub struct IResNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm,
    prelu: Tensor,
    blocks: Vec<Block>,
    bn2: BatchNorm,
    dropout: f64,
    fc: nn::Linear,
    features: BatchNorm,
}

/// Spatial size after a 3×3, padding 1, stride 2 convolution.
fn halve(x: i64) -> i64 {
    (x - 1) / 2 + 1
}

impl IResNet {
    pub fn new(
        p: &nn::Path,
        cfg: IResNetConfig,
        h: i64,
        w: i64,
        embedding: i64,
        dropout: f64,
    ) -> Self {
        let mut blocks = Vec::new();
        let mut cin = cfg.stem;
        for (stage, (&n, &planes)) in cfg.layers.iter().zip(cfg.widths.iter()).enumerate() {
            let lp = p / format!("layer{}", stage + 1);
            for b in 0..n {
                let stride = if b == 0 { 2 } else { 1 };
                blocks.push(Block::new(&lp / b, cin, planes, stride));
                cin = planes;
            }
        }
        let (fh, fw) = (0..4).fold((h, w), |(a, b), _| (halve(a), halve(b)));
        let fc_in = cin * fh * fw;
        let bound = 1.0 / (fc_in as f64).sqrt();
        let fc = nn::linear(
            p / "fc",
            fc_in,
            embedding,
            LinearConfig {
                ws_init: Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bs_init: Some(Init::Uniform {
                    lo: -bound,
                    up: bound,
                }),
                bias: true,
            },
        );
        // `features.weight` is frozen at 1 in the reference: a non-trainable var keeps its key.
        let features = BatchNorm::frozen_weight(&(p / "features"), embedding);
        IResNet {
            conv1: conv(p / "conv1", 3, cfg.stem, 3, 1),
            bn1: batch_norm(p / "bn1", cfg.stem, true),
            prelu: prelu_weight(p / "prelu", cfg.stem),
            blocks,
            bn2: batch_norm(p / "bn2", cin, true),
            dropout,
            fc,
            features,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .prelu(&self.prelu);
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        x.apply_t(&self.bn2, train)
            .flatten(1, -1)
            .dropout(self.dropout, train)
            .apply(&self.fc)
            .apply_t(&self.features, train)
    }
}

impl ModuleT for IResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        IResNet::forward_t(self, xs, train)
    }
}
