//! [`Head`]: the margin heads of the reference's `utils/losses.py` (formats.md §5): CosFace, ArcFace,
//! CurricularFace, AdaFace and ElasticFace (Cos/Arc, plain and Plus). The kernel is [E, C] (in × out,
//! as the reference's `header.pth`), kept in its own VarStore so that only the backbone is clipped.
//!
//! Every head takes the *raw* backbone embedding and normalises it itself. For AdaFace this means
//! the feature norms are real (the paper's AdaFace, the default); the reference passes an already
//! normalised embedding, so its "AdaFace" degenerates to CosFace m = 0.4 (diffprob.md §8 bug 6):
//! [`AdafaceVariant::Reference`] reproduces that by normalising before the head, as it does.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::kinds::train::{AdafaceVariant, Loss};

/// A head's hyper-parameters with every default of the reference filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadConfig {
    pub loss: Loss,
    pub s: f64,
    pub m: f64,
    /// Std of the per-sample margin (ElasticFace only).
    pub sigma: f64,
    /// AdaFace's h.
    pub h: f64,
    /// AdaFace on the raw embedding (paper) or on the normalised one (the reference's run).
    pub adaface_variant: AdafaceVariant,
    pub embedding_size: i64,
    pub num_classes: i64,
}

impl HeadConfig {
    /// Defaults of the reference: s 64; m CosFace 0.35, ArcFace/CurricularFace 0.5, AdaFace 0.4;
    /// σ ElasticCos 0.05 (Plus 0.02), ElasticArc 0.05 (Plus 0.0175).
    pub fn new(
        loss: Loss,
        s: Option<f64>,
        m: Option<f64>,
        embedding_size: i64,
        num_classes: i64,
    ) -> Self {
        let (m0, sigma) = match loss {
            Loss::Cosface => (0.35, 0.0),
            Loss::Arcface | Loss::Curricularface => (0.5, 0.0),
            Loss::Adaface => (0.4, 0.0),
            Loss::Elasticcosface => (0.35, 0.05),
            Loss::ElasticcosfacePlus => (0.35, 0.02),
            Loss::Elasticarcface => (0.5, 0.05),
            Loss::ElasticarcfacePlus => (0.5, 0.0175),
        };
        HeadConfig {
            loss,
            s: s.unwrap_or(64.0),
            m: m.unwrap_or(m0),
            sigma,
            h: 0.333,
            adaface_variant: AdafaceVariant::Paper,
            embedding_size,
            num_classes,
        }
    }
}

/// Row-wise (dim 1) or column-wise (dim 0) L2 normalisation, as the reference's `l2_norm`.
pub fn l2_norm(x: &Tensor, dim: i64) -> Tensor {
    x / x.norm_scalaropt_dim(2, [dim], true)
}

/// A margin head; `forward` gives the training logits (margin on the ground-truth column).
#[derive(Debug)]
pub struct Head {
    pub cfg: HeadConfig,
    pub kernel: Tensor,
    /// CurricularFace's EMA `t` buffer (saved with the head, key `t`).
    t: Option<Tensor>,
}

impl Head {
    pub fn new(p: &nn::Path, cfg: HeadConfig) -> Self {
        let dims = [cfg.embedding_size, cfg.num_classes];
        let kernel = if cfg.loss == Loss::Adaface {
            // uniform(−1, 1), then every column renormed to unit length (renorm(2, 1, 1e-5)·1e5).
            let k = Tensor::empty(dims, (Kind::Float, p.device())).uniform_(-1.0, 1.0);
            let k = tch::no_grad(|| l2_norm(&k, 0));
            p.var_copy("kernel", &k)
        } else {
            p.var(
                "kernel",
                &dims,
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
            )
        };
        let t = (cfg.loss == Loss::Curricularface).then(|| p.zeros_no_train("t", &[1]));
        Head { cfg, kernel, t }
    }

    /// CurricularFace's current `t` (None for the other heads).
    pub fn t(&self) -> Option<&Tensor> {
        self.t.as_ref()
    }

    /// clamp(l2norm(x rows) · l2norm(kernel columns), −1, 1).
    pub fn cosine(&self, emb: &Tensor) -> Tensor {
        l2_norm(emb, 1)
            .mm(&l2_norm(&self.kernel, 0))
            .clamp(-1.0, 1.0)
    }

    /// Training logits for raw embeddings `emb` [B, E] and labels [B] (i64); ElasticFace margins are
    /// drawn from libtorch's generator.
    pub fn forward(&self, emb: &Tensor, labels: &Tensor) -> Tensor {
        let margins = self.is_elastic().then(|| {
            let b = labels.size()[0];
            Tensor::randn([b, 1], (Kind::Float, emb.device())) * self.cfg.sigma + self.cfg.m
        });
        self.forward_with_margins(emb, labels, margins.as_ref())
    }

    fn is_elastic(&self) -> bool {
        matches!(
            self.cfg.loss,
            Loss::Elasticcosface
                | Loss::Elasticarcface
                | Loss::ElasticcosfacePlus
                | Loss::ElasticarcfacePlus
        )
    }

    /// As [`Head::forward`] with the ElasticFace per-sample margins given ([B, 1]); other heads
    /// ignore `margins`.
    pub fn forward_with_margins(
        &self,
        emb: &Tensor,
        labels: &Tensor,
        margins: Option<&Tensor>,
    ) -> Tensor {
        let (s, m) = (self.cfg.s, self.cfg.m);
        let y = labels.unsqueeze(1);
        match self.cfg.loss {
            Loss::Cosface => {
                let cos = self.cosine(emb);
                let mh = cos.zeros_like().scatter_value(1, &y, m);
                (cos - mh) * s
            }
            Loss::Arcface => {
                let cos = self.cosine(emb);
                let mh = cos.zeros_like().scatter_value(1, &y, m);
                (cos.acos() + mh).cos() * s
            }
            Loss::Elasticcosface
            | Loss::ElasticcosfacePlus
            | Loss::Elasticarcface
            | Loss::ElasticarcfacePlus => self.elastic(emb, labels, &y, margins),
            Loss::Curricularface => self.curricular(emb, &y),
            Loss::Adaface if self.cfg.adaface_variant == AdafaceVariant::Reference => {
                // train_everything.py: `header(F.normalize(backbone(img)), label)`.
                let cfg = HeadConfig {
                    adaface_variant: AdafaceVariant::Paper,
                    ..self.cfg
                };
                let paper = Head {
                    cfg,
                    kernel: self.kernel.shallow_clone(),
                    t: None,
                };
                paper.forward_with_margins(&l2_norm(emb, 1), labels, margins)
            }
            Loss::Adaface => self.adaface(emb, &y),
        }
    }

    /// ElasticFace: CosFace or ArcFace with a margin per sample (`margins`, [B, 1]; `m` for
    /// all when none), which the `+` variants reorder by the target cosines (§5).
    fn elastic(
        &self,
        emb: &Tensor,
        labels: &Tensor,
        y: &Tensor,
        margins: Option<&Tensor>,
    ) -> Tensor {
        let (s, m) = (self.cfg.s, self.cfg.m);
        let cos = self.cosine(emb);
        let b = labels.size()[0];
        let drawn = match margins {
            Some(t) => t.shallow_clone(),
            None => Tensor::full([b, 1], m, (Kind::Float, emb.device())),
        };
        let per_sample = if matches!(
            self.cfg.loss,
            Loss::ElasticcosfacePlus | Loss::ElasticarcfacePlus
        ) {
            // Sample i gets sorted_margins[argsort(cos_y, descending)[i]], literally (§5).
            tch::no_grad(|| {
                let cos_y = cos.gather(1, y, false).view([-1]);
                let (_, order) = cos_y.sort(0, true);
                let (sorted, _) = drawn.view([-1]).sort(0, false);
                sorted.index_select(0, &order).view([-1, 1])
            })
        } else {
            drawn
        };
        let mh = cos
            .zeros_like()
            .scatter(1, y, &per_sample.to_kind(cos.kind()));
        if matches!(
            self.cfg.loss,
            Loss::Elasticcosface | Loss::ElasticcosfacePlus
        ) {
            (cos - mh) * s
        } else {
            (cos.acos() + mh).cos() * s
        }
    }

    /// CurricularFace: the margin on the target, and hard negatives weighted by the running
    /// mean `t` of the target cosine (updated here, without gradient).
    fn curricular(&self, emb: &Tensor, y: &Tensor) -> Tensor {
        let (s, m) = (self.cfg.s, self.cfg.m);
        let cos = self.cosine(emb);
        let target = cos.gather(1, y, false);
        let sin = (-target.pow_tensor_scalar(2.0) + 1.0).sqrt();
        let cos_m = &target * m.cos() - &sin * m.sin();
        let mask = cos.gt_tensor(&cos_m);
        let threshold = (std::f64::consts::PI - m).cos();
        let mm = (std::f64::consts::PI - m).sin() * m;
        let final_target = cos_m.where_self(&target.gt(threshold), &(&target - mm));
        let t = self
            .t
            .as_ref()
            .expect("CurricularFace head has its t buffer");
        tch::no_grad(|| {
            let new_t = target.mean(Kind::Float) * 0.01 + t * 0.99;
            let mut t = t.shallow_clone();
            t.copy_(&new_t.view([1]));
        });
        let t = t.detach();
        let hard = &cos * (&t + &cos);
        let out = hard.where_self(&mask, &cos);
        out.scatter(1, y, &final_target) * s
    }

    /// AdaFace (paper variant): angular and additive margins scaled by each sample's feature
    /// norm relative to the batch.
    fn adaface(&self, emb: &Tensor, y: &Tensor) -> Tensor {
        let (s, m) = (self.cfg.s, self.cfg.m);
        let eps = 1e-3;
        let norms = emb.norm_scalaropt_dim(2, [1], true);
        let cos = l2_norm(emb, 1)
            .mm(&l2_norm(&self.kernel, 0))
            .clamp(-1.0 + eps, 1.0 - eps);
        let safe = norms.clamp(0.001, 100.0).detach();
        let mean = safe.mean(Kind::Float);
        let std = safe.std(true);
        let ms = ((&safe - mean) / (std + eps) * self.cfg.h).clamp(-1.0, 1.0);
        let g_ang = &ms * (-m);
        let m_arc = cos.zeros_like().scatter_value(1, y, 1.0) * &g_ang;
        let theta_m = (cos.acos() + m_arc).clamp(eps, std::f64::consts::PI - eps);
        let g_add = &ms * m + m;
        let m_cos = theta_m.zeros_like().scatter_value(1, y, 1.0) * g_add;
        (theta_m.cos() - m_cos) * s
    }
}

/// Mean cross-entropy of the logits (the reference's `CrossEntropyLoss`).
pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(labels)
}

/// softmax(logits)[y] per sample ([B], f32), the DiffProb probability.
pub fn gt_prob(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .softmax(-1, Kind::Float)
        .gather(1, &labels.unsqueeze(1), false)
        .view([-1])
}
