//! Params and ports of `train` and `eval-trainset` (diffprob.md §2.2, §2.3, §5).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamError, Params, Port};
use crate::kind_spec;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    Iresnet18,
    Iresnet34,
    Iresnet50,
    Iresnet100,
    Mobilefacenet,
    /// A small iResNet that trains in minutes on a CPU (the embedded default).
    IresnetTiny,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    Cosface,
    Arcface,
    Curricularface,
    Adaface,
    Elasticcosface,
    Elasticarcface,
    ElasticcosfacePlus,
    ElasticarcfacePlus,
}

/// Which AdaFace `loss: adaface` trains (diffprob.md §8 bug 6).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AdafaceVariant {
    /// The paper's AdaFace: the head sees the raw embedding, so the feature norms steer the margin.
    #[default]
    Paper,
    /// What the reference's train_everything.py runs: the embedding is L2-normalised before the
    /// head, every norm is 1, the margin scaler is ~0, and the head is effectively CosFace with
    /// m = 0.4, s = 64 and the cosine clamped to [-1+1e-3, 1-1e-3] (Table B's AdaFace rows).
    Reference,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// CUDA autocast in fp16 with dynamic loss scaling (PyTorch's GradScaler), as the reference
    /// trains; fp32 on the CPU.
    Amp,
    /// CUDA autocast in bfloat16 (no loss scaling needed); fp32 on the CPU.
    Bf16,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    pub network: Network,
    pub loss: Loss,
    /// Margin-head scale; null = the loss's default (64).
    pub s: Option<f64>,
    /// Margin; null = the loss's default (CosFace 0.35, ArcFace 0.5, ...).
    pub m: Option<f64>,
    /// `loss: adaface` only: `paper` (default) or `reference` (the reference's normalised-input
    /// AdaFace, effectively CosFace m = 0.4).
    pub adaface_variant: AdafaceVariant,
    pub embedding_size: u32,
    pub epochs: u32,
    /// Global batch size (drop_last).
    pub batch_size: u32,
    /// Learning rate at `lr_batch` samples per step; scaled linearly to `batch_size`.
    pub lr: f64,
    pub lr_batch: u32,
    /// 1-based epochs at whose start the lr is multiplied by `lr_decay`.
    pub milestones: Vec<u32>,
    pub lr_decay: f64,
    pub warmup_epochs: u32,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Max L2 norm of the backbone gradients (0 = off).
    pub clip_grad_norm: f64,
    pub dropout: f64,
    pub seed: u64,
    /// Record each sample's ground-truth probability every epoch (`history`, the DynUnc input).
    pub record_history: bool,
    /// Also write `history/prob_{e}.txt` like the reference's `pred_prob_history/`.
    pub export_history_txt: bool,
    pub precision: Precision,
    /// Data-loading threads.
    pub workers: u32,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            network: Network::Iresnet50,
            loss: Loss::Cosface,
            s: None,
            m: None,
            adaface_variant: AdafaceVariant::Paper,
            embedding_size: 512,
            epochs: 34,
            batch_size: 512,
            lr: 0.1,
            lr_batch: 512,
            milestones: vec![20, 28, 32],
            lr_decay: 0.1,
            warmup_epochs: 0,
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_grad_norm: 5.0,
            dropout: 0.4,
            seed: 0,
            record_history: false,
            export_history_txt: false,
            precision: Precision::Fp32,
            workers: 2,
        }
    }
}

impl Params for TrainParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if self.epochs == 0 {
            errs.push(ParamError::new("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            errs.push(ParamError::new("batch_size", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            errs.push(ParamError::new(
                "lr",
                format!("must be > 0, got {}", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            errs.push(ParamError::new(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        if self.milestones.windows(2).any(|w| w[0] >= w[1]) {
            errs.push(ParamError::new("milestones", "must be strictly increasing"));
        }
        if self.embedding_size == 0 {
            errs.push(ParamError::new("embedding_size", "must be at least 1"));
        }
        if self.adaface_variant == AdafaceVariant::Reference && self.loss != Loss::Adaface {
            errs.push(
                ParamError::new(
                    "adaface_variant",
                    format!(
                        "`reference` applies to loss: adaface, but loss is {}",
                        serde_json::to_value(self.loss)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ),
                )
                .with_hint("drop adaface_variant, or set loss: adaface"),
            );
        }
        if self.export_history_txt && !self.record_history {
            errs.push(
                ParamError::new("export_history_txt", "needs record_history: true")
                    .with_hint("set record_history: true or drop export_history_txt"),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

pub static TRAIN: super::KindSpec = kind_spec!(TrainParams,
    name: "train",
    worker: Torch,
    version: 2,
    summary: "train a backbone + margin head (SGD recipe of the reference), checkpointing every epoch",
    inputs: &[
        Port::input("train", true, "dataset `train` folder"),
        Port::input("kept", false, "kept list (kept.txt or kept.npy); default: every sample"),
        Port::input("label_map", false, "label_map.json from relabel; required when the kept list empties an identity"),
        Port::input("pairs", false, "verification .bin evaluated after every epoch"),
    ],
    outputs: &[
        Port::output("model", "model/", "backbone.safetensors, header.safetensors, model.json"),
        Port { name: "history", required: false, path: "history/", doc: "history.npy [E, N] f32 of GT probabilities (record_history)" },
    ],
    default_gpus: 1,
);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Flip {
    /// Deterministic, unflipped images.
    None,
    /// Flip each image with probability 0.5 (seeded), the reference's behaviour.
    Random,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalTrainsetParams {
    /// p with the CosFace margin on the GT logit (the reference); false = m = 0, f64 softmax.
    pub margin: bool,
    pub flip: Flip,
    pub seed: u64,
    pub s: f64,
    pub m: f64,
    pub batch_size: u32,
    pub workers: u32,
}

impl Default for EvalTrainsetParams {
    fn default() -> Self {
        EvalTrainsetParams {
            margin: true,
            flip: Flip::None,
            seed: 0,
            s: 64.0,
            m: 0.35,
            batch_size: 256,
            workers: 2,
        }
    }
}

impl Params for EvalTrainsetParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if self.batch_size == 0 {
            errs.push(ParamError::new("batch_size", "must be at least 1"));
        }
        if self.s.is_nan() || self.s <= 0.0 {
            errs.push(ParamError::new("s", format!("must be > 0, got {}", self.s)));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

pub static EVAL_TRAINSET: super::KindSpec = kind_spec!(EvalTrainsetParams,
    name: "eval-trainset",
    worker: Torch,
    version: 2,
    summary: "per-sample ground-truth probability p(x) and margin-free predicted label of the training set",
    inputs: &[
        Port::input("model", true, "`model` of a train stage"),
        Port::input("train", true, "dataset `train` folder (the full set the model was trained on)"),
    ],
    outputs: &[
        Port::output("probs", "probs/", "prob.npy (<f8), prob.txt (np.savetxt), in dataset order"),
        Port::output("predictions", "pred_label.npy", "argmax of the margin-free logits (<i8)"),
    ],
    default_gpus: 1,
);
