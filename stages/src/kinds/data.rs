//! Params and ports of the dataset kinds: `synthetic-faces`, `recordio`, `image-folder`.
//!
//! Every dataset kind publishes the same `train` folder (diffprob.md §2.1): `dataset.json`,
//! `labels.npy`, `label_dict.json`, and the RecordIO files (or, for `recordio`, a reference to
//! the external folder, which is never copied).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamError, Params, Port};
use crate::kind_spec;

/// The embedded default: a seeded stand-in for CASIA-WebFace plus LFW-style pairs and an
/// IJB-C-style 1:1 benchmark, written in the real formats.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticFacesParams {
    /// Training identities.
    pub identities: u32,
    /// Mean images per training identity (the counts are long-tailed around it).
    pub images_per_identity: u32,
    /// Square image side in pixels.
    pub size: u32,
    pub seed: u64,
    /// Fraction of training images given a wrong label (recorded in `noise`).
    pub label_noise: f64,
    /// Fraction of training images that are near-duplicates of another image of their identity.
    pub duplicates: f64,
    /// Held-out identities used for the verification pairs.
    pub verification_identities: u32,
    /// Images rendered per verification identity; the pairs draw from this pool, so images repeat
    /// across pairs (a genuine pair is two different images of the pool).
    pub verification_pool: u32,
    /// Verification pairs (half genuine, half impostor; a multiple of 10 for the 10 folds).
    pub pairs: u32,
    /// Held-out identities (subjects) of the IJB-C-style benchmark.
    pub ijbc_subjects: u32,
    /// Templates per IJB-C-style subject; every pair of templates is listed, so the pairs grow
    /// quadratically (genuine: subjects·C(templates, 2)).
    pub ijbc_templates_per_subject: u32,
    /// Media (stills or 2-3-frame videos) per IJB-C-style subject; each template picks 1-3 of them.
    pub ijbc_media_per_subject: u32,
}

impl Default for SyntheticFacesParams {
    fn default() -> Self {
        SyntheticFacesParams {
            identities: 300,
            images_per_identity: 24,
            size: 112,
            seed: 7,
            label_noise: 0.02,
            duplicates: 0.2,
            verification_identities: 100,
            verification_pool: 20,
            pairs: 6000,
            ijbc_subjects: 150,
            ijbc_templates_per_subject: 10,
            ijbc_media_per_subject: 10,
        }
    }
}

impl Params for SyntheticFacesParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if self.identities < 2 {
            errs.push(ParamError::new("identities", "must be at least 2"));
        }
        if self.images_per_identity < 1 {
            errs.push(ParamError::new("images_per_identity", "must be at least 1"));
        }
        if !(16..=512).contains(&self.size) || !self.size.is_multiple_of(4) {
            errs.push(ParamError::new(
                "size",
                format!("must be a multiple of 4 in 16..=512, got {}", self.size),
            ));
        }
        if !(0.0..0.5).contains(&self.label_noise) {
            errs.push(ParamError::new(
                "label_noise",
                format!("must be in [0, 0.5), got {}", self.label_noise),
            ));
        }
        if !(0.0..0.9).contains(&self.duplicates) {
            errs.push(ParamError::new(
                "duplicates",
                format!("must be in [0, 0.9), got {}", self.duplicates),
            ));
        }
        if self.pairs < 20 || !self.pairs.is_multiple_of(10) {
            errs.push(ParamError::new(
                "pairs",
                format!("must be a multiple of 10, at least 20, got {}", self.pairs),
            ));
        }
        if self.verification_identities < 2 {
            errs.push(ParamError::new(
                "verification_identities",
                "must be at least 2",
            ));
        }
        if self.verification_pool < 2 {
            errs.push(
                ParamError::new(
                    "verification_pool",
                    format!(
                        "must be at least 2 (a genuine pair needs two images), got {}",
                        self.verification_pool
                    ),
                )
                .with_hint("the default is 20 images per verification identity"),
            );
        }
        if self.ijbc_subjects < 2 {
            errs.push(ParamError::new("ijbc_subjects", "must be at least 2"));
        }
        if self.ijbc_templates_per_subject < 2 {
            errs.push(
                ParamError::new(
                    "ijbc_templates_per_subject",
                    format!(
                        "must be at least 2 (genuine pairs are two templates of one subject), got {}",
                        self.ijbc_templates_per_subject
                    ),
                )
                .with_hint("the default is 10"),
            );
        }
        if self.ijbc_media_per_subject < 1 {
            errs.push(ParamError::new(
                "ijbc_media_per_subject",
                "must be at least 1",
            ));
        }
        // All template pairs are listed: keep the pair file within reason (~80 MB of text).
        let templates = self.ijbc_subjects as u64 * self.ijbc_templates_per_subject as u64;
        if templates > 5_000 {
            errs.push(
                ParamError::new(
                    "ijbc_templates_per_subject",
                    format!(
                        "ijbc_subjects × ijbc_templates_per_subject = {templates} templates, more than 5000 \
                         (every pair is listed: {} pairs)",
                        templates * (templates - 1) / 2
                    ),
                )
                .with_hint("lower ijbc_subjects or ijbc_templates_per_subject"),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Version 2: pairs drawn from a pool of images per verification identity (6,000 by default)
/// and IJB-C-style templates built from a pool of media per subject (1,500 templates, every pair
/// listed: ≥ 10^6 impostor pairs), so the benchmark can tell 1 point of accuracy apart.
pub static SYNTHETIC_FACES: super::KindSpec = kind_spec!(SyntheticFacesParams,
    name: "synthetic-faces",
    worker: Lite,
    version: 2,
    summary: "seeded stand-in for CASIA-WebFace + LFW-style pairs + IJB-C-style 1:1, in the real formats",
    inputs: &[],
    outputs: &[
        Port::output("train", "train/", "insightface RecordIO folder + dataset.json, labels.npy, label_dict.json"),
        Port::output("pairs", "pairs.bin", "verification pairs of held-out identities (insightface .bin)"),
        Port::output("ijbc", "ijbc/", "IJB-C-style 1:1 benchmark folder (meta/ + loose_crop/)"),
        Port::output("noise", "noise.json", "ground truth of the injected label noise and duplicates"),
    ],
    default_gpus: 0,
);

/// An existing insightface RecordIO folder (`train.rec`, `train.idx`, optional `property`),
/// e.g. CASIA-WebFace `faces_webface_112x112`. Read in place, never copied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordioParams {
    /// Check that every record decodes, and scan the `.rec` for records its `.idx` does not list
    /// (a full pass over the data); off = header checks only.
    pub verify_images: bool,
    /// With `verify_images`: records missing from the `.idx` are an error (default: a warning,
    /// and the dataset is the records the `.idx` lists).
    pub strict: bool,
}

impl Params for RecordioParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        if self.strict && !self.verify_images {
            return Err(vec![ParamError::new(
                "strict",
                "needs verify_images: true (the check scans the whole .rec)",
            )
            .with_hint("set verify_images: true, or drop strict")]);
        }
        Ok(())
    }
}

/// Version 2: the source folder's location is in the fingerprint (`in_place`) and its content
/// digest in `dataset.json`, so an output never points at another pipeline's folder and a
/// change of the data reaches every stage downstream; `verify_images` also scans the `.rec` for
/// records the `.idx` does not list (`strict`: an error).
pub static RECORDIO: super::KindSpec = kind_spec!(RecordioParams,
    name: "recordio",
    worker: Lite,
    version: 2,
    summary: "an existing insightface RecordIO dataset folder, indexed in place",
    inputs: &[Port::input("source", true, "folder with train.rec, train.idx (and property)")],
    outputs: &[Port::output("train", "train/", "dataset.json (pointing at the source), labels.npy, label_dict.json")],
    default_gpus: 0,
    in_place: &["source"],
);

/// One sub-folder per identity (sorted names = class ids), packed into RecordIO.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageFolderParams {
    /// Images are resized to this square side if they differ (aligned faces are usually 112).
    pub size: u32,
    /// JPEG quality when an image must be re-encoded.
    pub quality: u8,
}

impl Default for ImageFolderParams {
    fn default() -> Self {
        ImageFolderParams {
            size: 112,
            quality: 95,
        }
    }
}

impl Params for ImageFolderParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if !(16..=512).contains(&self.size) {
            errs.push(ParamError::new(
                "size",
                format!("must be in 16..=512, got {}", self.size),
            ));
        }
        if !(1..=100).contains(&self.quality) {
            errs.push(ParamError::new(
                "quality",
                format!("must be in 1..=100, got {}", self.quality),
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

pub static IMAGE_FOLDER: super::KindSpec = kind_spec!(ImageFolderParams,
    name: "image-folder",
    worker: Lite,
    version: 2,
    summary: "an image folder (one sub-folder per identity) packed into an insightface RecordIO dataset",
    inputs: &[Port::input("source", true, "folder with one sub-folder of images per identity")],
    outputs: &[Port::output("train", "train/", "insightface RecordIO folder + dataset files")],
    default_gpus: 0,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(p: SyntheticFacesParams) -> Vec<String> {
        p.validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect()
    }

    #[test]
    fn evaluation_set_sizes_are_validated() {
        assert!(SyntheticFacesParams::default().validate().is_ok());
        let d = SyntheticFacesParams::default;
        let e = errors(SyntheticFacesParams {
            verification_pool: 1,
            ..d()
        });
        assert!(e.len() == 1 && e[0].contains("verification_pool"), "{e:?}");
        let e = errors(SyntheticFacesParams {
            ijbc_templates_per_subject: 1,
            ..d()
        });
        assert!(
            e.len() == 1 && e[0].contains("ijbc_templates_per_subject"),
            "{e:?}"
        );
        let e = errors(SyntheticFacesParams {
            ijbc_media_per_subject: 0,
            ..d()
        });
        assert!(
            e.len() == 1 && e[0].contains("ijbc_media_per_subject"),
            "{e:?}"
        );
        // 501 × 10 templates: 12.5 million pairs would be listed.
        let e = errors(SyntheticFacesParams {
            ijbc_subjects: 501,
            ..d()
        });
        assert!(e.len() == 1 && e[0].contains("5010 templates"), "{e:?}");
        assert!(errors(SyntheticFacesParams {
            ijbc_subjects: 500,
            ..d()
        })
        .is_empty());
    }
}
