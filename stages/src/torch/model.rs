//! The `model/` folder of a `train` stage: `backbone.safetensors`, `header.safetensors` and
//! `model.json` ([`ModelInfo`]). [`load_backbone`] is the one way every later stage gets a network;
//! [`load_vars`] checks names and shapes so that a wrong-architecture file is a clear error.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::heads::{Head, HeadConfig};
use super::nn::{Arch, Backbone};
use crate::kinds::train::{AdafaceVariant, Loss, Network};

pub const BACKBONE_FILE: &str = "backbone.safetensors";
pub const HEADER_FILE: &str = "header.safetensors";
pub const INFO_FILE: &str = "model.json";
/// Bumped when `model.json` changes incompatibly.
pub const MODEL_FORMAT: u32 = 1;

/// `model.json`: what it takes to rebuild the networks whose weights sit beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub format: u32,
    pub network: Network,
    pub loss: Loss,
    pub s: f64,
    pub m: f64,
    pub sigma: f64,
    pub embedding_size: i64,
    pub num_classes: i64,
    pub input_h: i64,
    pub input_w: i64,
    pub dropout: f64,
    pub epochs_trained: u32,
    /// Entries of the label map the head was trained with (None: dataset labels as they are).
    pub label_map_size: Option<usize>,
    /// The AdaFace the head was trained as (absent in older files: the paper's).
    #[serde(default)]
    pub adaface_variant: AdafaceVariant,
}

impl ModelInfo {
    pub fn arch(&self) -> Arch {
        Arch {
            network: self.network,
            input_h: self.input_h,
            input_w: self.input_w,
            embedding_size: self.embedding_size,
            dropout: self.dropout,
        }
    }

    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            sigma: self.sigma,
            adaface_variant: self.adaface_variant,
            ..HeadConfig::new(
                self.loss,
                Some(self.s),
                Some(self.m),
                self.embedding_size,
                self.num_classes,
            )
        }
    }

    pub fn read(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(INFO_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}\nhint: `model` must be the `model/` output of a train stage",
                path.display()
            )
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let info: ModelInfo = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!(
                "{}: invalid model description at `{}`: {}",
                path.display(),
                e.path(),
                e.inner()
            )
        })?;
        if info.format != MODEL_FORMAT {
            bail!("{}: model format {} is not {MODEL_FORMAT}\nhint: retrain with this version or use a matching worker", path.display(), info.format);
        }
        Ok(info)
    }

    pub fn write(&self, model_dir: &Path) -> Result<()> {
        let path = model_dir.join(INFO_FILE);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Save every variable of `vs` (trainable or not) as safetensors.
pub fn save_vars(vs: &VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Load `path` into `vs`, requiring the same names and shapes. PyTorch's `num_batches_tracked`
/// entries are ignored. A mismatch lists a few missing, unexpected and wrongly shaped names.
pub fn load_vars(vs: &VarStore, path: &Path, what: &str) -> Result<()> {
    let file = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} weights {}: {e}", path.display()))?;
    load_named_vars(
        vs,
        file.into_iter().collect(),
        &path.display().to_string(),
        what,
    )
}

/// As [`load_vars`] from tensors already in memory; `source` names them in errors.
pub fn load_named_vars(
    vs: &VarStore,
    file: HashMap<String, Tensor>,
    source: &str,
    what: &str,
) -> Result<()> {
    let file: HashMap<String, Tensor> = file
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let vars = vs.variables();
    let mut missing: Vec<&String> = vars.keys().filter(|k| !file.contains_key(*k)).collect();
    let mut unexpected: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    let mut shapes: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let f = file.get(k)?;
            (f.size() != v.size())
                .then(|| format!("{k}: file {:?}, model {:?}", f.size(), v.size()))
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !shapes.is_empty() {
        missing.sort();
        unexpected.sort();
        shapes.sort();
        let few = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if n > 5 {
                s.push_str(&format!(" (+{} more)", n - 5));
            }
            s
        };
        let mut msg = format!("{source} does not hold the {what} this model needs:");
        if !missing.is_empty() {
            msg.push_str(&format!(
                "\n  missing ({}): {}",
                missing.len(),
                few(missing.into_iter().cloned().collect())
            ));
        }
        if !unexpected.is_empty() {
            msg.push_str(&format!(
                "\n  unexpected ({}): {}",
                unexpected.len(),
                few(unexpected.into_iter().cloned().collect())
            ));
        }
        if !shapes.is_empty() {
            msg.push_str(&format!(
                "\n  wrong shape ({}): {}",
                shapes.len(),
                few(shapes)
            ));
        }
        msg.push_str("\nhint: the network, input size, embedding size and class count in model.json must be those the weights were trained with");
        bail!(msg);
    }
    tch::no_grad(|| -> Result<()> {
        for (k, v) in vars {
            let src = &file[&k];
            let mut dst = v;
            dst.f_copy_(&src.to_device(dst.device()).to_kind(dst.kind()))
                .with_context(|| format!("{source}: cannot copy `{k}`"))?;
        }
        Ok(())
    })
}

/// The backbone of a `model/` folder, in eval mode (no grad tracked), on `device`.
pub fn load_backbone(model_dir: &Path, device: Device) -> Result<(Backbone, ModelInfo)> {
    let info = ModelInfo::read(model_dir)?;
    let mut vs = VarStore::new(device);
    let net = Backbone::new(&vs.root(), &info.arch())?;
    load_vars(&vs, &model_dir.join(BACKBONE_FILE), "backbone")?;
    vs.freeze();
    Ok((net, info))
}

/// The margin head of a `model/` folder (kernel [E, C]), frozen, on `device`.
pub fn load_head(model_dir: &Path, info: &ModelInfo, device: Device) -> Result<Head> {
    let mut vs = VarStore::new(device);
    let head = Head::new(&vs.root(), info.head_config());
    load_vars(&vs, &model_dir.join(HEADER_FILE), "margin head")?;
    vs.freeze();
    Ok(head)
}
