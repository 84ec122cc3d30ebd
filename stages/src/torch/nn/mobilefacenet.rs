//! [`MobileFaceNet`]: the cavaface MobileFaceNet with the GDC head (formats.md §4.2), variables
//! named like the PyTorch `state_dict` keys (`conv1.conv.weight`, `conv_3.model.0.conv_dw.bn.bias`, …).

use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, ConvConfig, Init, LinearConfig};
use tch::Tensor;

use super::{batch_norm, prelu_weight, BatchNorm};

const KAIMING_FAN_OUT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// conv (no bias) + BN (+ PReLU unless `linear`): the reference's `Conv_block` / `Linear_block`.
#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    bn: BatchNorm,
    prelu: Option<Tensor>,
}

impl ConvBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
        groups: i64,
        linear: bool,
    ) -> Self {
        let cfg = ConvConfig {
            stride,
            padding: pad,
            groups,
            bias: false,
            ws_init: KAIMING_FAN_OUT,
            ..Default::default()
        };
        ConvBlock {
            conv: nn::conv2d(&p / "conv", cin, cout, k, cfg),
            bn: batch_norm(&p / "bn", cout, true),
            prelu: (!linear).then(|| prelu_weight(&p / "prelu", cout)),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = xs.apply(&self.conv).apply_t(&self.bn, train);
        match &self.prelu {
            Some(w) => x.prelu(w),
            None => x,
        }
    }
}

/// `Depth_Wise`: 1×1 expand to `g` → depthwise 3×3 (stride) → 1×1 project, optional residual.
#[derive(Debug)]
struct DepthWise {
    conv: ConvBlock,
    conv_dw: ConvBlock,
    project: ConvBlock,
    residual: bool,
}

impl DepthWise {
    fn new(p: nn::Path, cin: i64, cout: i64, g: i64, stride: i64, residual: bool) -> Self {
        DepthWise {
            conv: ConvBlock::new(&p / "conv", cin, g, 1, 1, 0, 1, false),
            conv_dw: ConvBlock::new(&p / "conv_dw", g, g, 3, stride, 1, g, false),
            project: ConvBlock::new(&p / "project", g, cout, 1, 1, 0, 1, true),
            residual,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.project.forward_t(
            &self
                .conv_dw
                .forward_t(&self.conv.forward_t(xs, train), train),
            train,
        );
        if self.residual {
            x + xs
        } else {
            x
        }
    }
}

/// The network; `forward_t` maps B×3×H×W to B×E embeddings (not normalised).
#[derive(Debug)]
pub struct MobileFaceNet {
    stem: Vec<ConvBlock>,
    body: Vec<DepthWise>,
    conv_6_sep: ConvBlock,
    conv_6_dw: ConvBlock,
    linear: nn::Linear,
    bn: BatchNorm,
}

impl MobileFaceNet {
    /// The GDC depthwise kernel covers the whole final map (7×7 at 112×112, as the reference).
    pub fn new(p: &nn::Path, h: i64, w: i64, embedding: i64) -> Self {
        let stem = vec![
            ConvBlock::new(p / "conv1", 3, 64, 3, 2, 1, 1, false),
            ConvBlock::new(p / "conv2_dw", 64, 64, 3, 1, 1, 64, false),
        ];
        let mut body = vec![DepthWise::new(p / "conv_23", 64, 64, 128, 2, false)];
        let residual = |body: &mut Vec<DepthWise>, name: &str, c: i64, n: usize, g: i64| {
            let rp = p / name / "model";
            for i in 0..n {
                body.push(DepthWise::new(&rp / i, c, c, g, 1, true));
            }
        };
        residual(&mut body, "conv_3", 64, 4, 128);
        body.push(DepthWise::new(p / "conv_34", 64, 128, 256, 2, false));
        residual(&mut body, "conv_4", 128, 6, 256);
        body.push(DepthWise::new(p / "conv_45", 128, 128, 512, 2, false));
        residual(&mut body, "conv_5", 128, 2, 256);
        let half = |x: i64| (x - 1) / 2 + 1;
        let (fh, fw) = (0..4).fold((h, w), |(a, b), _| (half(a), half(b)));
        let op = p / "output_layer";
        let cfg = nn::ConvConfigND::<[i64; 2]> {
            groups: 512,
            bias: false,
            ws_init: KAIMING_FAN_OUT,
            ..Default::default()
        };
        let conv_6_dw = ConvBlock {
            conv: nn::conv(&op / "conv_6_dw" / "conv", 512, 512, [fh, fw], cfg),
            bn: batch_norm(&op / "conv_6_dw" / "bn", 512, true),
            prelu: None,
        };
        MobileFaceNet {
            stem,
            body,
            conv_6_sep: ConvBlock::new(p / "conv_6_sep", 128, 512, 1, 1, 0, 1, false),
            conv_6_dw,
            linear: nn::linear(
                &op / "linear",
                512,
                embedding,
                LinearConfig {
                    ws_init: KAIMING_FAN_OUT,
                    bs_init: None,
                    bias: false,
                },
            ),
            bn: batch_norm(&op / "bn", embedding, false),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for c in &self.stem {
            x = c.forward_t(&x, train);
        }
        for b in &self.body {
            x = b.forward_t(&x, train);
        }
        self.conv_6_dw
            .forward_t(&self.conv_6_sep.forward_t(&x, train), train)
            .flatten(1, -1)
            .apply(&self.linear)
            .apply_t(&self.bn, train)
    }
}
