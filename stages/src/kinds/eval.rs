//! Params and ports of the evaluation kinds: `verify` and `ijbc` (formats.md §2, §3).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamError, Params, Port};
use crate::kind_spec;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyParams {
    /// Set names to evaluate when `pairs` is a folder (file stems, e.g. `lfw`); empty = every `.bin`.
    pub sets: Vec<String>,
    pub batch_size: u32,
    /// Sum the embeddings of the image and its horizontal flip (the reference).
    pub flip: bool,
}

impl Default for VerifyParams {
    fn default() -> Self {
        VerifyParams {
            sets: Vec::new(),
            batch_size: 64,
            flip: true,
        }
    }
}

impl Params for VerifyParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        if self.batch_size == 0 {
            return Err(vec![ParamError::new("batch_size", "must be at least 1")]);
        }
        Ok(())
    }
}

/// Version 3: each distinct image of a pack (by its JPEG bytes) is embedded once and reused for
/// every pair that repeats it; the results report `distinct_images`.
pub static VERIFY: super::KindSpec = kind_spec!(VerifyParams,
    name: "verify",
    worker: Torch,
    version: 3,
    summary: "10-fold verification accuracy on insightface .bin pair sets (LFW, CFP-FP, AgeDB-30, ...)",
    inputs: &[
        Port::input("model", true, "`model` of a train stage"),
        Port::input("pairs", true, "a .bin file, or a folder of .bin files"),
    ],
    outputs: &[Port::output("results", "verify.json", "per set: accuracy mean/std, threshold, TAR@FAR=1e-3")],
    default_gpus: 1,
);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IjbcParams {
    /// `IJBC` or `IJBB` (file name prefix in meta/).
    pub target: String,
    pub batch_size: u32,
    /// f = f(img) + f(flip).
    pub use_flip_test: bool,
    /// Keep the feature norm (no per-image normalisation).
    pub use_norm_score: bool,
    /// Multiply features by the detector (faceness) score.
    pub use_detector_score: bool,
}

impl Default for IjbcParams {
    fn default() -> Self {
        IjbcParams {
            target: "IJBC".into(),
            batch_size: 256,
            use_flip_test: true,
            use_norm_score: true,
            use_detector_score: true,
        }
    }
}

impl Params for IjbcParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if self.target != "IJBC" && self.target != "IJBB" {
            errs.push(ParamError::new(
                "target",
                format!("must be IJBC or IJBB, got {:?}", self.target),
            ));
        }
        if self.batch_size == 0 {
            errs.push(ParamError::new("batch_size", "must be at least 1"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Version 3: each distinct (loose crop, landmarks) is embedded once and reused for every row that
/// repeats it (`distinct_images`); the results mark the FARs the pair list cannot measure:
/// `far_floor` = 1/impostor pairs, and `tar_at_far_measurable` (and `measurable` in
/// `roc_points_picked`) false for a target below it, where the TAR reported is TAR at FAR 0.
pub static IJBC: super::KindSpec = kind_spec!(IjbcParams,
    name: "ijbc",
    worker: Torch,
    version: 3,
    summary: "IJB-C / IJB-B 1:1 verification: TAR@FAR 1e-6..1e-1, AUC, ROC plot",
    inputs: &[
        Port::input("model", true, "`model` of a train stage"),
        Port::input("benchmark", true, "IJB release folder (meta/ + loose_crop/)"),
    ],
    outputs: &[
        Port::output("scores", "score.npy", "cosine score of every template pair (<f8, as eval_ijbc.py)"),
        Port::output("roc", "roc/", "roc.svg, roc.png, roc.csv"),
        Port::output("results", "ijbc.json", "TAR@FAR table, AUC, far_floor and per-target measurable flags"),
    ],
    default_gpus: 1,
);
