//! Dataset kinds and readers: the `synthetic-faces` generator ([`synthetic`]), `recordio`
//! ([`recordio_kind`]), `image-folder` ([`image_folder`]), the dataset `train` folder contract
//! ([`dataset::Dataset`]), and the multi-threaded [`loader::Loader`] (its tensor end is in `torch`).

pub mod dataset;
pub mod image_folder;
pub mod loader;
pub mod recordio_kind;
pub mod synthetic;

use anyhow::Result;

use crate::Invocation;

/// Run a dataset kind; `None` when `inv.kind` is not one of them.
pub fn run(inv: &Invocation) -> Option<Result<serde_json::Value>> {
    match inv.kind.as_str() {
        "synthetic-faces" => Some(run_synthetic(inv)),
        "recordio" => Some(inv.params().and_then(|p| {
            recordio_kind::run(
                &p,
                inv.input("source")?,
                inv.output("train")?,
                &inv.progress(),
            )
        })),
        "image-folder" => Some(
            inv.params()
                .and_then(|p| image_folder::run(&p, inv.input("source")?, inv.output("train")?)),
        ),
        _ => None,
    }
}

fn run_synthetic(inv: &Invocation) -> Result<serde_json::Value> {
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
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::invocation::{Device, INVOCATION_VERSION};

    fn inv(
        dir: &Path,
        kind: &str,
        params: serde_json::Value,
        inputs: &[(&str, &Path)],
        outputs: &[(&str, &str)],
    ) -> Invocation {
        Invocation {
            version: INVOCATION_VERSION,
            kind: kind.into(),
            stage_id: format!("{kind}-test"),
            params,
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_path_buf()))
                .collect(),
            outputs: outputs
                .iter()
                .map(|(k, v)| (k.to_string(), dir.join(v)))
                .collect::<BTreeMap<_, _>>(),
            out_dir: dir.to_path_buf(),
            work_dir: dir.join("work"),
            device: Device::Cpu,
            progress: dir.join("progress.jsonl"),
        }
    }

    #[test]
    fn kinds_run_through_the_invocation() {
        let d = tempfile::tempdir().unwrap();
        let gen = d.path().join("gen");
        std::fs::create_dir_all(&gen).unwrap();
        let params = serde_json::json!({"identities": 4, "images_per_identity": 3, "size": 16, "seed": 1,
            "label_noise": 0.0, "duplicates": 0.0, "verification_identities": 2, "pairs": 20, "ijbc_subjects": 2});
        let i = inv(
            &gen,
            "synthetic-faces",
            params,
            &[],
            &[
                ("train", "train"),
                ("pairs", "pairs.bin"),
                ("ijbc", "ijbc"),
                ("noise", "noise.json"),
            ],
        );
        let m = run(&i).unwrap().unwrap();
        assert_eq!(m["classes"], 4);
        assert!(gen.join("ijbc/meta/ijbc_template_pair_label.txt").is_file());

        // `recordio` indexes the generated folder in place: dataset.json points at it by absolute path.
        let rio = d.path().join("rio");
        std::fs::create_dir_all(&rio).unwrap();
        let i = inv(
            &rio,
            "recordio",
            serde_json::json!({"verify_images": true}),
            &[("source", &gen.join("train"))],
            &[("train", "train")],
        );
        let m2 = run(&i).unwrap().unwrap();
        assert_eq!(m2["images"], m["images"]);
        let a = dataset::Dataset::open(&gen.join("train")).unwrap();
        let b = dataset::Dataset::open(&rio.join("train")).unwrap();
        assert!(b.meta().rec.is_absolute());
        assert!(!rio.join("train/train.rec").exists());
        assert_eq!(a.labels(), b.labels());
        assert_eq!(a.record_bytes(3).unwrap(), b.record_bytes(3).unwrap());

        let e = run(&inv(
            &rio,
            "recordio",
            serde_json::json!({"verify_images": false}),
            &[("source", d.path())],
            &[("train", "t2")],
        ))
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(e.contains("no train.rec"), "{e}");
        assert!(run(&inv(d.path(), "prune", serde_json::json!({}), &[], &[])).is_none());
    }
}
