//! Params and ports of the pruning family: `score`, `prune`, `clean`, `relabel`
//! (diffprob.md §2.4 - §2.7). A `labels` input is a text file of one integer per line or an
//! integer `.npy`; a `train` input is a dataset `train` folder. Exactly one of them is needed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamError, Params, Port};
use crate::kind_spec;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScoreMethod {
    Diffprob,
    Dynunc,
    Rand,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreParams {
    pub method: ScoreMethod,
    /// `rand`: seed of the scores.
    pub seed: u64,
    /// `dynunc`: window length.
    pub window: u32,
    /// `dynunc`: also record the window ending at the last epoch (the reference drops it).
    pub include_final_window: bool,
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            method: ScoreMethod::Diffprob,
            seed: 0,
            window: 10,
            include_final_window: false,
        }
    }
}

impl Params for ScoreParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        if self.window < 2 {
            return Err(vec![ParamError::new(
                "window",
                format!("must be at least 2, got {}", self.window),
            )]);
        }
        Ok(())
    }
}

const LABEL_INPUTS: [Port; 2] = [
    Port::input(
        "labels",
        false,
        "labels: text (one integer per line) or integer .npy",
    ),
    Port::input("train", false, "dataset `train` folder (its labels.npy)"),
];

pub static SCORE: super::KindSpec = kind_spec!(ScoreParams,
    name: "score",
    worker: Lite,
    version: 1,
    summary: "per-sample score for a pruning method (diffprob: p(x); dynunc: dynamic uncertainty; rand)",
    inputs: &[
        Port::input("probs", false, "diffprob: eval-trainset probs (a file, or a folder of per-epoch files to average)"),
        Port::input("history", false, "dynunc: train history (history.npy, or a folder of prob_<e>.txt)"),
        LABEL_INPUTS[0],
        LABEL_INPUTS[1],
    ],
    outputs: &[Port::output("scores", "scores/", "score.npy (<f8), score.txt, score.json (method)")],
    default_gpus: 0,
);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RandOrder {
    /// A uniform k-subset per identity, seeded by (seed, identity).
    Random,
    /// The reference's deterministic last k positions of each identity.
    Reference,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PruneParams {
    /// diffprob: keep a sample when it is more than t below the last kept one.
    pub threshold: Option<f64>,
    /// dynunc / rand: fraction kept per identity.
    pub fraction: Option<f64>,
    /// any method: kept / N to reach (the threshold or fraction is searched).
    pub target_ratio: Option<f64>,
    /// Samples an identity keeps at least (identities this small or smaller keep everything).
    /// diffprob: the threshold is lowered by 1 % of t per retry until the walk keeps this many.
    /// As the reference's `while len(final) < min_per_id` loop, `min_per_id: 1` never walks: every
    /// identity with more than one sample keeps only its top sample, whatever the threshold.
    pub min_per_id: u32,
    /// rand: `random` or `reference`.
    pub order: RandOrder,
    pub seed: u64,
}

impl Default for PruneParams {
    fn default() -> Self {
        PruneParams {
            threshold: None,
            fraction: None,
            target_ratio: None,
            min_per_id: 5,
            order: RandOrder::Random,
            seed: 0,
        }
    }
}

impl Params for PruneParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        let set = [
            self.threshold.is_some(),
            self.fraction.is_some(),
            self.target_ratio.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.push(
                ParamError::new(
                    "",
                    "exactly one of `threshold`, `fraction`, `target_ratio` must be set",
                )
                .with_hint("e.g. `target_ratio: 0.5` keeps half of the dataset with any method"),
            );
        }
        if let Some(t) = self.threshold {
            if !(t >= 0.0 && t.is_finite()) {
                errs.push(ParamError::new(
                    "threshold",
                    format!("must be a finite number >= 0, got {t}"),
                ));
            }
        }
        if let Some(f) = self.fraction {
            if !(f > 0.0 && f <= 1.0) {
                errs.push(ParamError::new(
                    "fraction",
                    format!("must be in (0, 1], got {f}"),
                ));
            }
        }
        if let Some(r) = self.target_ratio {
            if !(r > 0.0 && r <= 1.0) {
                errs.push(ParamError::new(
                    "target_ratio",
                    format!("must be in (0, 1], got {r}"),
                ));
            }
        }
        if self.min_per_id == 0 {
            errs.push(ParamError::new("min_per_id", "must be at least 1"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

pub static PRUNE: super::KindSpec = kind_spec!(PruneParams,
    name: "prune",
    worker: Lite,
    version: 2,
    summary: "per-identity selection (DiffProb walk, DynUnc top fraction, Rand) with a minimum per identity",
    inputs: &[
        Port::input("scores", true, "`scores` of a score stage"),
        LABEL_INPUTS[0],
        LABEL_INPUTS[1],
        Port::input("flags", false, "`flags` of clean: flagged samples are removed first"),
    ],
    outputs: &[
        Port::output("kept", "kept.txt", "kept_index = [...] (the reference's text)"),
        Port::output("kept_npy", "kept.npy", "kept positions (<i8)"),
    ],
    default_gpus: 0,
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CleanParams {}

impl Params for CleanParams {}

pub static CLEAN: super::KindSpec = kind_spec!(CleanParams,
    name: "clean",
    worker: Lite,
    version: 1,
    summary: "flag samples whose margin-free prediction differs from their label",
    inputs: &[
        Port::input("predictions", true, "pred_label.npy of eval-trainset"),
        Port::input("probs", false, "eval-trainset probs, for prob_clean (p, or -1 where flagged)"),
        LABEL_INPUTS[0],
        LABEL_INPUTS[1],
        Port::input("noise", false, "synthetic-faces noise ground truth: precision/recall of the flags"),
    ],
    outputs: &[
        Port::output("flags", "flags.npy", "1 = flagged (|u1)"),
        Port::output("kept", "kept.txt", "every unflagged position"),
        Port::output("kept_npy", "kept.npy", "every unflagged position (<i8)"),
        Port { name: "prob_clean", required: false, path: "prob_clean/", doc: "prob_clean.npy / .txt: p, or -1 where flagged" },
    ],
    default_gpus: 0,
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelParams {}

impl Params for RelabelParams {}

pub static RELABEL: super::KindSpec = kind_spec!(RelabelParams,
    name: "relabel",
    worker: Lite,
    version: 1,
    summary: "contiguous new class ids for the identities a kept list keeps",
    inputs: &[Port::input("kept", true, "kept list"), LABEL_INPUTS[0], LABEL_INPUTS[1]],
    outputs: &[Port::output("map", "label_map.json", "old id -> new id")],
    default_gpus: 0,
);
