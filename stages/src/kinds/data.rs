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
    /// Mean images per training identity, realised exactly: the counts sum to
    /// `identities × images_per_identity` (long-tailed, see the three params below).
    pub images_per_identity: u32,
    /// Fewest images of a training identity (CASIA-WebFace: 2).
    pub images_per_identity_min: u32,
    /// Most images of a training identity, as a multiple of the mean (CASIA-WebFace: about
    /// 800 / 46.75 ≈ 17), so the shape survives a smaller mean.
    pub images_per_identity_max_ratio: f64,
    /// Log-normal spread (σ of ln count) of the identity sizes before clamping; at 0.85 the
    /// largest of 10,575 identities (CASIA-WebFace's count) is about 17-18× the mean.
    pub images_per_identity_sigma: f64,
    /// Square image side in pixels.
    pub size: u32,
    pub seed: u64,
    /// Fraction of training images given a wrong label: exactly round(label_noise × images) of
    /// them (recorded in `noise`).
    pub label_noise: f64,
    /// Fraction of training images that are near-duplicates of another image of their identity:
    /// exactly round(duplicates × images) of them.
    pub duplicates: f64,
    /// How far a near-duplicate moves from its source shot: 1 = up to ±0.6 px shift and ±3 %
    /// gain, 0 = the same shot with fresh sensor noise and JPEG quality only.
    pub duplicate_strength: f64,
    /// Spread of the per-image difficulty of training images: each shot's pose, jitter,
    /// occlusion, blur and noise are scaled by exp(spread · z), z ~ N(0, 1); 0 = all alike.
    pub difficulty_spread: f64,
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
            images_per_identity_min: 2,
            images_per_identity_max_ratio: 17.0,
            images_per_identity_sigma: 0.85,
            size: 112,
            seed: 7,
            label_noise: 0.093,
            duplicates: 0.2,
            duplicate_strength: 1.0,
            difficulty_spread: 0.0,
            verification_identities: 100,
            verification_pool: 20,
            pairs: 6000,
            ijbc_subjects: 150,
            ijbc_templates_per_subject: 10,
            ijbc_media_per_subject: 10,
        }
    }
}

impl SyntheticFacesParams {
    /// The cap on one identity's images: max_ratio × mean, rounded, never below the mean.
    pub fn max_images_per_identity(&self) -> u32 {
        let cap = (self.images_per_identity_max_ratio * self.images_per_identity as f64).round();
        (cap.min(u32::MAX as f64) as u32).max(self.images_per_identity)
    }

    fn validate_identity_sizes(&self, errs: &mut Vec<ParamError>) {
        if self.images_per_identity_min < 2 {
            errs.push(
                ParamError::new(
                    "images_per_identity_min",
                    format!(
                        "must be at least 2 (every identity keeps one clean original and has a \
                         second image that may be a duplicate or mislabeled), got {}",
                        self.images_per_identity_min
                    ),
                )
                .with_hint("CASIA-WebFace's smallest identities have 2 images; the default is 2"),
            );
        }
        if self.images_per_identity < self.images_per_identity_min.max(2) {
            errs.push(
                ParamError::new(
                    "images_per_identity",
                    format!(
                        "the mean must be at least images_per_identity_min ({}), got {}",
                        self.images_per_identity_min.max(2),
                        self.images_per_identity
                    ),
                )
                .with_hint("raise images_per_identity or lower images_per_identity_min"),
            );
        }
        let r = self.images_per_identity_max_ratio;
        if !(r.is_finite() && (1.0..=1000.0).contains(&r)) {
            errs.push(
                ParamError::new(
                    "images_per_identity_max_ratio",
                    format!("must be in [1, 1000] (the cap is a multiple of the mean), got {r}"),
                )
                .with_hint("the default 17 is CASIA-WebFace's largest identity over its mean"),
            );
        }
        let s = self.images_per_identity_sigma;
        if !(s.is_finite() && (0.0..=3.0).contains(&s)) {
            errs.push(
                ParamError::new(
                    "images_per_identity_sigma",
                    format!("must be in [0, 3] (0 = every identity the same size), got {s}"),
                )
                .with_hint("the default is 0.85"),
            );
        }
    }

    fn validate_defects(&self, errs: &mut Vec<ParamError>) {
        if !(0.0..0.5).contains(&self.duplicates) {
            errs.push(ParamError::new(
                "duplicates",
                format!("must be in [0, 0.5), got {}", self.duplicates),
            ));
        }
        // Both defects go to images other than each identity's first; with at least 2 images per
        // identity those are at least half of the images.
        if self.label_noise >= 0.0
            && self.duplicates >= 0.0
            && self.label_noise + self.duplicates >= 0.5
        {
            errs.push(
                ParamError::new(
                    "label_noise",
                    format!(
                        "label_noise + duplicates must be below 0.5, got {} + {}",
                        self.label_noise, self.duplicates
                    ),
                )
                .with_hint("lower label_noise or duplicates"),
            );
        }
        let st = self.duplicate_strength;
        if !(st.is_finite() && (0.0..=5.0).contains(&st)) {
            errs.push(
                ParamError::new("duplicate_strength", format!("must be in [0, 5], got {st}"))
                    .with_hint("1 (the default) = up to ±0.6 px shift and ±3 % gain"),
            );
        }
        let d = self.difficulty_spread;
        if !(d.is_finite() && (0.0..=2.0).contains(&d)) {
            errs.push(
                ParamError::new("difficulty_spread", format!("must be in [0, 2], got {d}"))
                    .with_hint("0 (the default) = every training shot drawn from the same mix"),
            );
        }
    }
}

impl Params for SyntheticFacesParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if self.identities < 2 {
            errs.push(ParamError::new("identities", "must be at least 2"));
        }
        self.validate_identity_sizes(&mut errs);
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
        self.validate_defects(&mut errs);
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
/// Version 3: identity sizes with an exact mean, a floor and a cap (CASIA-WebFace's shape), label
/// noise and near-duplicates in exact counts, near-duplicate strength and difficulty spread.
pub static SYNTHETIC_FACES: super::KindSpec = kind_spec!(SyntheticFacesParams,
    name: "synthetic-faces",
    worker: Lite,
    version: 3,
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
    fn data_shape_params_are_validated() {
        let d = SyntheticFacesParams::default;
        for (p, name) in [
            (
                SyntheticFacesParams {
                    images_per_identity_min: 1,
                    ..d()
                },
                "images_per_identity_min",
            ),
            (
                SyntheticFacesParams {
                    images_per_identity: 1,
                    ..d()
                },
                "images_per_identity",
            ),
            (
                SyntheticFacesParams {
                    images_per_identity_max_ratio: 0.5,
                    ..d()
                },
                "images_per_identity_max_ratio",
            ),
            (
                SyntheticFacesParams {
                    images_per_identity_sigma: f64::NAN,
                    ..d()
                },
                "images_per_identity_sigma",
            ),
            (
                SyntheticFacesParams {
                    label_noise: 0.3,
                    duplicates: 0.2,
                    ..d()
                },
                "label_noise + duplicates",
            ),
            (
                SyntheticFacesParams {
                    duplicate_strength: -1.0,
                    ..d()
                },
                "duplicate_strength",
            ),
            (
                SyntheticFacesParams {
                    difficulty_spread: 3.0,
                    ..d()
                },
                "difficulty_spread",
            ),
        ] {
            let e = errors(p);
            assert!(e.len() == 1 && e[0].contains(name), "{name}: {e:?}");
        }
        // The cap never falls below the mean.
        let p = SyntheticFacesParams {
            images_per_identity_max_ratio: 1.0,
            ..d()
        };
        assert_eq!(p.max_images_per_identity(), 24);
        assert_eq!(d().max_images_per_identity(), 17 * 24);
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
