//! The `clean` stage (diffprob.md §2.5): flag every sample whose margin-free prediction differs
//! from its label ([`flag`]); write `flags.npy`, the unflagged kept list, optionally
//! `prob_clean/` (p, or −1 where flagged) and, against a synthetic dataset's `noise.json`
//! ([`read_noise`]), the precision and recall of the flags.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::inputs::{self, Identities, Labels};
use crate::formats::{npy, text};
use crate::Invocation;

/// 1 where `pred[i] != label[i]`.
pub fn flag(pred: &[i64], labels: &Labels) -> Vec<u8> {
    pred.iter()
        .zip(&labels.ids)
        .map(|(&p, &l)| u8::from(p != l as i64))
        .collect()
}

/// Keys of `noise.json` that may hold the mislabeled positions, in the order they are tried.
const NOISE_KEYS: [&str; 7] = [
    "label_noise",
    "mislabeled",
    "mislabeled_positions",
    "noisy",
    "noisy_positions",
    "flipped",
    "wrong_labels",
];

/// The mislabeled positions of a synthetic dataset's `noise.json` (data/synthetic.rs writes
/// `{"label_noise": [{"position": p, "label": .., "true_identity": ..}, ...], ...}`); also accepted:
/// a JSON array of positions, or another key of [`NOISE_KEYS`] holding positions or objects with
/// a `position`.
pub fn read_noise(path: &Path, n: usize) -> Result<Vec<usize>> {
    let name = path.display().to_string();
    let v: Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {name}"))?,
    )
    .with_context(|| format!("{name} is not valid JSON"))?;
    let (list, key) = match &v {
        Value::Array(a) => (a, String::new()),
        Value::Object(o) => {
            if let Some(m) = o.get("n").and_then(Value::as_u64) {
                if m as usize != n {
                    bail!("{name} describes a dataset of {m} samples, the labels have {n}\nhint: give the noise.json of the same synthetic dataset");
                }
            }
            let found = NOISE_KEYS.iter().find_map(|k| match o.get(*k) {
                Some(Value::Array(a)) => Some((a, k.to_string())),
                Some(Value::Object(inner)) => inner
                    .get("positions")
                    .and_then(Value::as_array)
                    .map(|a| (a, format!("{k}.positions"))),
                _ => None,
            });
            found.with_context(|| {
                format!(
                    "{name}: no list of mislabeled positions (looked for the keys {}; found {})",
                    NOISE_KEYS.join(", "),
                    o.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?
        }
        _ => {
            bail!("{name}: expected an object with `mislabeled` positions or an array of positions")
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let p = match e {
            Value::Object(o) => o
                .get("position")
                .or_else(|| o.get("pos"))
                .or_else(|| o.get("index"))
                .and_then(Value::as_u64),
            other => other.as_u64(),
        };
        let p = p.with_context(|| format!("{name}: {key}[{i}] is not a position (a non-negative integer or {{\"position\": ...}})"))?;
        if p as usize >= n {
            bail!("{name}: {key}[{i}] = {p} is out of range for a dataset of {n} samples");
        }
        out.push(p as usize);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Precision and recall of `flags` against the true mislabeled positions.
pub fn precision_recall(flags: &[u8], truth: &[usize]) -> (usize, f64, f64) {
    let hits = truth.iter().filter(|&&p| flags[p] != 0).count();
    let flagged = flags.iter().filter(|&&f| f != 0).count();
    let precision = if flagged == 0 {
        1.0
    } else {
        hits as f64 / flagged as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        hits as f64 / truth.len() as f64
    };
    (hits, precision, recall)
}

/// The `clean` stage.
pub fn run(inv: &Invocation) -> Result<Value> {
    let labels = inputs::load_labels(inv)?;
    let pred_path = inputs::file_in(inv.input("predictions")?, "pred_label.npy");
    let pred = inputs::read_int_vector(&pred_path)?;
    labels.check_len(pred.len(), &pred_path.display().to_string())?;
    if let Some(i) = pred.iter().position(|&p| p < 0) {
        bail!(
            "{}: position {i} predicts class {}; predictions are class ids >= 0",
            pred_path.display(),
            pred[i]
        );
    }
    let flags = flag(&pred, &labels);
    let flags_path = inv.output("flags")?;
    inputs::ensure_parent(flags_path)?;
    npy::write_1d(flags_path, &flags)?;
    let kept: Vec<usize> = (0..flags.len()).filter(|&i| flags[i] == 0).collect();
    inputs::write_kept_outputs(inv, &kept)?;

    let ids = Identities::new(&labels, Some(&flags));
    let empty: Vec<usize> = (0..ids.classes())
        .filter(|&c| ids.members(c).is_empty())
        .collect();
    let mut m = json!({
        "n": labels.len(),
        "flagged": labels.len() - kept.len(),
        "kept": kept.len(),
        "ratio": if labels.is_empty() { 0.0 } else { kept.len() as f64 / labels.len() as f64 },
        "identities": ids.classes(),
        "identities_without_clean_sample": empty.len(),
        "identities_lost": empty.iter().take(100).collect::<Vec<_>>(),
    });

    if let Some(probs) = inv.opt_input("probs") {
        let (p, source) = inputs::load_probabilities(probs)?;
        labels.check_len(p.len(), &source)?;
        let cleaned: Vec<f64> = p
            .iter()
            .zip(&flags)
            .map(|(&x, &f)| if f != 0 { -1.0 } else { x })
            .collect();
        match inv.outputs.get("prob_clean") {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                npy::write_1d(&dir.join("prob_clean.npy"), &cleaned)?;
                text::write_floats(&dir.join("prob_clean.txt"), &cleaned)?;
            }
            None => inv
                .progress()
                .message("`probs` given but the output `prob_clean` is not requested; not written"),
        }
    }
    if let Some(noise) = inv.opt_input("noise") {
        let truth = read_noise(noise, labels.len())?;
        let (hits, precision, recall) = precision_recall(&flags, &truth);
        m["noise"] = json!({ "mislabeled": truth.len(), "flagged_mislabeled": hits, "precision": precision, "recall": recall });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_scores_against_the_noise() {
        let labels = Labels::new(&[0, 0, 1, 1, 2], None, "l").unwrap();
        let f = flag(&[0, 1, 1, 0, 2], &labels);
        assert_eq!(f, vec![0, 1, 0, 1, 0]);
        let (hits, p, r) = precision_recall(&f, &[1, 4]);
        assert_eq!((hits, p, r), (1, 0.5, 0.5));
    }

    #[test]
    fn noise_json_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("noise.json");
        std::fs::write(
            &p,
            r#"{"mislabeled": [{"position": 3, "true": 1}, {"position": 1}], "duplicates": []}"#,
        )
        .unwrap();
        assert_eq!(read_noise(&p, 5).unwrap(), vec![1, 3]);
        std::fs::write(&p, r#"{"n": 5, "label_noise": [{"position": 2, "label": 0, "true_identity": 1, "duplicate_of": null}], "duplicates": [{"position": 4, "source": 0, "identity": 0}], "true_identity": [0, 0, 1, 1, 0]}"#).unwrap();
        assert_eq!(read_noise(&p, 5).unwrap(), vec![2]);
        assert!(read_noise(&p, 6)
            .unwrap_err()
            .to_string()
            .contains("describes a dataset of 5 samples, the labels have 6"));
        std::fs::write(&p, "[4, 0]").unwrap();
        assert_eq!(read_noise(&p, 5).unwrap(), vec![0, 4]);
        std::fs::write(&p, r#"{"mislabeled": [7]}"#).unwrap();
        assert!(read_noise(&p, 5)
            .unwrap_err()
            .to_string()
            .contains("mislabeled[0] = 7 is out of range"));
        std::fs::write(&p, r#"{"other": [1]}"#).unwrap();
        assert!(read_noise(&p, 5)
            .unwrap_err()
            .to_string()
            .contains("found other"));
    }
}
