//! Dataset kinds and readers: the `synthetic-faces` generator ([`synthetic`]), `recordio`
//! ([`recordio_kind`]), `image-folder` ([`image_folder`]), the dataset `train` folder contract
//! ([`dataset::Dataset`]), image decoding as the reference does it ([`decode`]: libjpeg-turbo), and
//! the multi-threaded [`loader::Loader`] (its tensor end is in `torch`).

pub mod dataset;
pub mod decode;
pub mod image_folder;
pub mod loader;
pub mod recordio_kind;
pub mod synthetic;

use anyhow::Result;

use crate::Invocation;

/// The `recordio` stage.
pub fn run_recordio(inv: &Invocation) -> Result<serde_json::Value> {
    let p = inv.params()?;
    recordio_kind::run(
        &p,
        inv.input("source")?,
        inv.output("train")?,
        inv.input_digests.get("source").map(String::as_str),
        &inv.progress(),
    )
}

/// The `image-folder` stage.
pub fn run_image_folder(inv: &Invocation) -> Result<serde_json::Value> {
    let p = inv.params()?;
    image_folder::run(&p, inv.input("source")?, inv.output("train")?)
}

/// The `synthetic-faces` stage.
pub fn run_synthetic(inv: &Invocation) -> Result<serde_json::Value> {
    let p: crate::kinds::data::SyntheticFacesParams = inv.params()?;
    inv.progress().message(&format!(
        "generating {} identities x ~{} images at {}px",
        p.identities, p.images_per_identity, p.size
    ));
    let out = synthetic::Outputs {
        train: inv.output("train")?,
        pairs: inv.output("pairs")?,
        ijbc: inv.output("ijbc")?,
        noise: inv.output("noise")?,
    };
    synthetic::generate(&p, &out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::run::run_invocation;

    fn inv(
        dir: &Path,
        kind: &str,
        params: serde_json::Value,
        inputs: &[(&str, &Path)],
    ) -> Invocation {
        Invocation::standalone(kind, &format!("{kind}-test"), &params, inputs, dir).unwrap()
    }

    #[test]
    fn kinds_run_through_the_invocation() {
        let d = tempfile::tempdir().unwrap();
        let gen = d.path().join("gen");
        let params = serde_json::json!({"identities": 4, "images_per_identity": 3, "size": 16, "seed": 1,
            "label_noise": 0.0, "duplicates": 0.0, "verification_identities": 2, "pairs": 20, "ijbc_subjects": 2});
        let m = run_invocation(&inv(&gen, "synthetic-faces", params, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(m["classes"], 4);
        assert!(gen.join("ijbc/meta/ijbc_template_pair_label.txt").is_file());

        // `recordio` indexes the generated folder in place: dataset.json points at it by absolute path.
        let rio = d.path().join("rio");
        let i = inv(
            &rio,
            "recordio",
            serde_json::json!({"verify_images": true}),
            &[("source", &gen.join("train"))],
        );
        let m2 = run_invocation(&i).unwrap().unwrap();
        assert_eq!(m2["images"], m["images"]);
        assert_eq!(m2["records_not_in_idx"], 0);
        let a = dataset::Dataset::open(&gen.join("train")).unwrap();
        let b = dataset::Dataset::open(&rio.join("train")).unwrap();
        assert!(b.meta().rec.is_absolute());
        assert!(!rio.join("train/train.rec").exists());
        assert_eq!(a.labels(), b.labels());
        assert_eq!(a.record_bytes(3).unwrap(), b.record_bytes(3).unwrap());

        let e = run_invocation(&inv(
            &d.path().join("rio2"),
            "recordio",
            serde_json::json!({"verify_images": false}),
            &[("source", d.path())],
        ))
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(e.contains("no train.rec"), "{e}");
    }
}
