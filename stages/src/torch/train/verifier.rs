//! [`EpochVerifier`]: the `.bin` packs of the `train` stage's optional `pairs` input, decoded once
//! at the training image size; after each epoch the 10-fold accuracy of flip-summed, normalised
//! embeddings, computed as the `verify` stage does (formats.md §2.4-2.5).

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use tch::Device;

use crate::eval::verification::{evaluate, pair_distances, test_embeddings};
use crate::torch::embed::{embed_views, pick_sets, read_pack};
use crate::torch::nn::Backbone;

pub struct EpochVerifier {
    sets: Vec<(String, Vec<u8>, Vec<bool>)>,
    h: usize,
    w: usize,
}

impl EpochVerifier {
    /// `pairs`: one `.bin` file or a folder of them.
    pub fn open(pairs: &Path, h: usize, w: usize) -> Result<Self> {
        let mut sets = Vec::new();
        for (name, path) in pick_sets(pairs, &[])? {
            let (rgb, issame) = read_pack(&path, h, w)?;
            sets.push((name, rgb, issame));
        }
        Ok(EpochVerifier { sets, h, w })
    }

    pub fn evaluate(&self, backbone: &Backbone, device: Device) -> Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, rgb, issame) in &self.sets {
            let views = embed_views(backbone, device, rgb, self.h, self.w, true, 128)?;
            let dim = views[0].len() / (issame.len() * 2).max(1);
            let views: Vec<&[f32]> = views.iter().map(|v| v.as_slice()).collect();
            let (emb, _) = test_embeddings(&views, dim);
            let dist = pair_distances(&emb, dim);
            let r =
                evaluate(&dist, issame, 10, 1e-3).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            out.insert(name.clone(), json!({"accuracy": r.accuracy, "std": r.std}));
        }
        Ok(serde_json::Value::Object(out))
    }
}
