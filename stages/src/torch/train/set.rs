//! [`TrainingSet`]: the samples a training uses and their classes, from a dataset, an optional kept
//! list ([`read_kept`]) and an optional label map ([`read_label_map`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::dataset::Dataset;
use crate::formats::{npy, text};

/// Which samples train and under which class: the kept list and label map applied to a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    /// Full-dataset positions used (ascending).
    pub positions: Vec<usize>,
    /// old class → new class (−1: absent), when a label map was given.
    pub label_map: Option<Vec<i64>>,
    /// Outputs of the head.
    pub num_classes: usize,
}

/// Read a kept list: `kept.txt` (`kept_index = [...]`) or `kept.npy` (`<i8`), or a folder holding one.
pub fn read_kept(path: &Path, n: usize) -> Result<Vec<usize>> {
    let path = if path.is_dir() {
        let txt = path.join("kept.txt");
        let npy = path.join("kept.npy");
        if txt.exists() {
            txt
        } else if npy.exists() {
            npy
        } else {
            bail!("{}: no kept.txt or kept.npy in this folder\nhint: `kept` must be a prune or clean output", path.display());
        }
    } else {
        path.to_path_buf()
    };
    if path.extension().is_some_and(|e| e == "npy") {
        let v = npy::read(&path)?.to_i64()?;
        let mut out = Vec::with_capacity(v.len());
        for (i, &p) in v.iter().enumerate() {
            if p < 0 || p as usize >= n {
                bail!(
                    "{}: entry {i}: position {p} is out of range for a dataset of {n} samples",
                    path.display()
                );
            }
            if let Some(&prev) = out.last() {
                if p as usize <= prev {
                    bail!("{}: entry {i}: position {p} after {prev}; kept lists must be strictly increasing", path.display());
                }
            }
            out.push(p as usize);
        }
        Ok(out)
    } else {
        text::read_kept(&path, Some(n))
    }
}

/// Read `label_map.json` (old id as a decimal string → new id) into a dense old → new table
/// over `c` dataset classes (−1 = not in the map).
pub fn read_label_map(path: &Path, c: usize) -> Result<(Vec<i64>, usize)> {
    let path = if path.is_dir() {
        path.join("label_map.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read label map {}", path.display()))?;
    let raw: BTreeMap<String, i64> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: line {}, column {}: not a JSON object of old id → new id: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let size = raw.len();
    let mut table = vec![-1i64; c];
    let mut used = vec![false; size];
    for (k, &v) in &raw {
        let old: usize = k.trim().parse().map_err(|_| {
            anyhow::anyhow!("{}: key `{k}` is not a decimal class id", path.display())
        })?;
        if old >= c {
            bail!(
                "{}: key `{k}`: class {old} does not exist; the dataset has {c} classes (0..{})",
                path.display(),
                c.saturating_sub(1)
            );
        }
        if v < 0 || v as usize >= size {
            bail!(
                "{}: key `{k}` maps to {v}, outside the head's {size} classes (0..{})\nhint: a label map's new ids must be 0..len(map)-1",
                path.display(),
                size.saturating_sub(1)
            );
        }
        if std::mem::replace(&mut used[v as usize], true) {
            bail!(
                "{}: new id {v} is given to more than one old class (second: `{k}`)",
                path.display()
            );
        }
        table[old] = v;
    }
    Ok((table, size))
}

impl TrainingSet {
    pub fn prepare(ds: &Dataset, kept: Option<&Path>, label_map: Option<&Path>) -> Result<Self> {
        let labels = ds.labels();
        let c = ds.num_classes();
        let positions = match kept {
            Some(p) => read_kept(p, ds.len())?,
            None => (0..ds.len()).collect(),
        };
        if positions.is_empty() {
            bail!(
                "the kept list {} is empty: nothing to train on",
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        match label_map {
            Some(lm) => {
                let (table, size) = read_label_map(lm, c)?;
                if let Some(&p) = positions.iter().find(|&&p| table[labels[p] as usize] < 0) {
                    bail!(
                        "position {p} (class {}) is kept but {} has no entry for class {}\nhint: the label map and the kept list must come from the same relabel/prune run",
                        labels[p],
                        lm.display(),
                        labels[p]
                    );
                }
                Ok(TrainingSet {
                    positions,
                    label_map: Some(table),
                    num_classes: size,
                })
            }
            None => {
                let mut seen = vec![false; c];
                for &p in &positions {
                    seen[labels[p] as usize] = true;
                }
                if let Some(id) = seen.iter().position(|s| !s) {
                    let empty = seen.iter().filter(|s| !**s).count();
                    bail!(
                        "the kept list leaves {empty} identit{} without samples (first: class {id}); the head would keep untrainable classes\nhint: add the `label_map` input from a relabel stage",
                        if empty == 1 { "y" } else { "ies" }
                    );
                }
                Ok(TrainingSet {
                    positions,
                    label_map: None,
                    num_classes: c,
                })
            }
        }
    }
}
