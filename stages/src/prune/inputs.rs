//! Reading the pruning family's inputs: [`Labels`] (a `labels` file or a dataset `train/` folder),
//! [`Identities`] (each identity's positions, flagged samples removed), probability vectors,
//! histories, flags and kept lists, each validated with errors that name the file and the place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::formats::{npy, text};
use crate::Invocation;

/// Dataset labels: `ids[i]` = identity of position i, identities `0..classes`, none empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub ids: Vec<u32>,
    pub classes: usize,
    /// The file they came from (for messages).
    pub source: String,
}

impl Labels {
    /// Validate raw labels: non-negative, and every identity `0..classes` has a sample.
    /// `classes` = `declared` when given (a dataset's `c`), else max + 1.
    pub fn new(raw: &[i64], declared: Option<usize>, source: &str) -> Result<Labels> {
        let mut ids = Vec::with_capacity(raw.len());
        let mut max = -1i64;
        for (i, &l) in raw.iter().enumerate() {
            if l < 0 || l > u32::MAX as i64 / 2 {
                bail!("{source}: position {i} has label {l}; labels must be identity ids 0..C-1");
            }
            max = max.max(l);
            ids.push(l as u32);
        }
        let classes = declared.unwrap_or((max + 1) as usize);
        if (max + 1) as usize > classes {
            bail!("{source}: label {max} is out of range for the dataset's {classes} classes");
        }
        let mut seen = vec![false; classes];
        for &l in &ids {
            seen[l as usize] = true;
        }
        if let Some(empty) = seen.iter().position(|s| !s) {
            let count = seen.iter().filter(|s| !**s).count();
            bail!(
                "{source}: identity {empty} has no sample ({count} of the {classes} ids 0..{} are empty); \
                 identities must be numbered 0..C-1 without gaps\nhint: give the dataset's own labels.npy",
                classes - 1
            );
        }
        Ok(Labels {
            ids,
            classes,
            source: source.to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Error unless `len` values from `what` match the labels one to one.
    pub fn check_len(&self, len: usize, what: &str) -> Result<()> {
        if len != self.ids.len() {
            bail!(
                "{what} has {len} values but {} has {} labels; both must index the full dataset by position",
                self.source,
                self.ids.len()
            );
        }
        Ok(())
    }
}

/// Each identity's positions, ascending, in compressed rows: identity `c` owns
/// `members[offsets[c]..offsets[c + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identities {
    offsets: Vec<usize>,
    members: Vec<u32>,
}

impl Identities {
    /// Group positions by identity; positions with `flags[i] != 0` are left out.
    pub fn new(labels: &Labels, flags: Option<&[u8]>) -> Identities {
        let mut counts = vec![0usize; labels.classes + 1];
        for (i, &l) in labels.ids.iter().enumerate() {
            if flags.is_none_or(|f| f[i] == 0) {
                counts[l as usize + 1] += 1;
            }
        }
        for c in 1..counts.len() {
            counts[c] += counts[c - 1];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut members = vec![0u32; offsets[labels.classes]];
        for (i, &l) in labels.ids.iter().enumerate() {
            if flags.is_none_or(|f| f[i] == 0) {
                members[fill[l as usize]] = i as u32;
                fill[l as usize] += 1;
            }
        }
        Identities { offsets, members }
    }

    pub fn classes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Positions of identity `c`, ascending.
    pub fn members(&self, c: usize) -> &[u32] {
        &self.members[self.offsets[c]..self.offsets[c + 1]]
    }

    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Samples over all identities.
    pub fn total(&self) -> usize {
        self.members.len()
    }
}

/// `dir/name` when `path` is a folder, else `path` itself.
pub fn file_in(path: &Path, name: &str) -> PathBuf {
    if path.is_dir() {
        path.join(name)
    } else {
        path.to_path_buf()
    }
}

/// Integer vector from `.npy` (any integer dtype) or text (one per line).
pub fn read_int_vector(path: &Path) -> Result<Vec<i64>> {
    if is_npy(path) {
        npy::read(path)?
            .to_i64()
            .with_context(|| format!("{}: expected integers", path.display()))
    } else {
        text::read_ints(path)
    }
}

/// Float vector from `.npy` (float dtype, widened to f64) or `np.savetxt` text.
pub fn read_float_vector(path: &Path) -> Result<Vec<f64>> {
    if is_npy(path) {
        let a = npy::read(path)?;
        if a.shape.len() != 1 {
            bail!(
                "{}: expected a 1-D array, found shape {:?}",
                path.display(),
                a.shape
            );
        }
        a.to_f64()
            .with_context(|| format!("{}: expected floats", path.display()))
    } else {
        text::read_floats(path)
    }
}

fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "npy")
}

/// The labels of a stage: its `labels` input (text or `.npy`; a folder = its `labels.npy`) or its
/// `train` input (a dataset folder: `labels.npy`, and `c` from `dataset.json` when present).
pub fn load_labels(inv: &Invocation) -> Result<Labels> {
    match (inv.opt_input("labels"), inv.opt_input("train")) {
        (Some(_), Some(_)) => bail!(
            "stage `{}`: give either `labels` or `train`, not both\nhint: `train` reads the dataset's labels.npy",
            inv.stage_id
        ),
        (None, None) => bail!(
            "stage `{}` ({}) needs the dataset labels: an input `labels` (one integer per line, or an integer .npy) or `train` (a dataset train/ folder)",
            inv.stage_id,
            inv.kind
        ),
        (Some(p), None) => {
            let p = file_in(p, "labels.npy");
            Labels::new(&read_int_vector(&p)?, None, &p.display().to_string())
        }
        (None, Some(dir)) => load_train_labels(dir),
    }
}

pub fn load_train_labels(dir: &Path) -> Result<Labels> {
    let p = dir.join("labels.npy");
    if !p.is_file() {
        bail!("{}: no labels.npy in this dataset folder\nhint: `train` must be a dataset stage's `train` output", dir.display());
    }
    let raw = npy::read(&p)?
        .to_i64()
        .with_context(|| format!("{}: expected integer labels", p.display()))?;
    let meta = dir.join("dataset.json");
    let declared = if meta.is_file() {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&meta).with_context(|| format!("cannot read {}", meta.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON", meta.display()))?;
        v.get("c").and_then(|c| c.as_u64()).map(|c| c as usize)
    } else {
        None
    };
    Labels::new(&raw, declared, &p.display().to_string())
}

/// Reject NaN and values outside [0, 1]; the message names the position.
pub fn check_probabilities(values: &[f64], what: &str) -> Result<()> {
    for (i, &p) in values.iter().enumerate() {
        if p.is_nan() {
            bail!("{what}: position {i} is NaN; probabilities must be numbers in [0, 1]");
        }
        if !(0.0..=1.0).contains(&p) {
            let hint = if p == -1.0 {
                "\nhint: -1 marks a sample flagged by `clean` (prob_clean); give clean's `flags` to prune and the unflagged probabilities here"
            } else {
                ""
            };
            bail!("{what}: position {i} has {p:e}, outside [0, 1]{hint}");
        }
    }
    Ok(())
}

/// A `prob_<epoch>` file of a per-epoch folder, with its epoch.
fn epoch_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(stem) = name
            .strip_suffix(".txt")
            .or_else(|| name.strip_suffix(".npy"))
        else {
            continue;
        };
        let Some(num) = stem.strip_prefix("prob_") else {
            continue;
        };
        if let Ok(e) = num.parse::<u64>() {
            out.push((e, path));
        }
    }
    out.sort();
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            bail!(
                "{}: epoch {} appears twice ({} and {})",
                dir.display(),
                w[0].0,
                w[0].1.display(),
                w[1].1.display()
            );
        }
    }
    Ok(out)
}

/// DiffProb probabilities: a `.npy`/`.txt` file, a folder with `prob.npy` (or `prob.txt`), or a
/// folder of per-epoch `prob_<e>.txt`/`.npy` files, averaged per sample (the reference's
/// `use_all_epochs`). Returns the values and a description of where they came from.
pub fn load_probabilities(path: &Path) -> Result<(Vec<f64>, String)> {
    if !path.is_dir() {
        let v = read_float_vector(path)?;
        check_probabilities(&v, &path.display().to_string())?;
        return Ok((v, path.display().to_string()));
    }
    for name in ["prob.npy", "prob.txt"] {
        let p = path.join(name);
        if p.is_file() {
            let v = read_float_vector(&p)?;
            check_probabilities(&v, &p.display().to_string())?;
            return Ok((v, p.display().to_string()));
        }
    }
    let files = epoch_files(path)?;
    if files.is_empty() {
        bail!(
            "{}: no prob.npy, prob.txt or prob_<epoch>.txt/.npy files in this folder\nhint: `probs` is eval-trainset's `probs` output or one probability file",
            path.display()
        );
    }
    let mut sum: Vec<f64> = Vec::new();
    for (_, f) in &files {
        let v = read_float_vector(f)?;
        check_probabilities(&v, &f.display().to_string())?;
        if sum.is_empty() {
            sum = v;
        } else if v.len() != sum.len() {
            bail!(
                "{} has {} values but {} has {}",
                f.display(),
                v.len(),
                files[0].1.display(),
                sum.len()
            );
        } else {
            sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
        }
    }
    let e = files.len() as f64;
    sum.iter_mut().for_each(|s| *s /= e);
    Ok((
        sum,
        format!("mean of {} epoch files in {}", files.len(), path.display()),
    ))
}

/// A per-epoch probability history, [E][N]: `<f4` rows as stored in `history.npy`, or f64 rows
/// parsed from the reference's `prob_<e>.txt` files.
#[derive(Debug, Clone, PartialEq)]
pub enum History {
    F32 {
        epochs: usize,
        n: usize,
        data: Vec<f32>,
    },
    F64(Vec<Vec<f64>>),
}

impl History {
    pub fn epochs(&self) -> usize {
        match self {
            History::F32 { epochs, .. } => *epochs,
            History::F64(rows) => rows.len(),
        }
    }
}

/// The history of DynUnc: `history.npy` (`<f4` or `<f8`, [E, N]), a folder holding it, or a
/// folder of `prob_<e>.txt` files (the reference's `pred_prob_history/`, sorted by epoch).
pub fn load_history(path: &Path) -> Result<(History, String)> {
    let npy_path = file_in(path, "history.npy");
    if npy_path.is_file() && is_npy(&npy_path) {
        let a = npy::read(&npy_path)?;
        let name = npy_path.display().to_string();
        if a.shape.len() != 2 {
            bail!(
                "{name}: expected a 2-D [epochs, samples] array, found shape {:?}",
                a.shape
            );
        }
        let (epochs, n) = (a.shape[0], a.shape[1]);
        if a.descr != "<f4" {
            // Wider dtypes keep their precision.
            let flat = a
                .to_f64()
                .with_context(|| format!("{name}: expected floats"))?;
            let rows: Vec<Vec<f64>> = (0..epochs)
                .map(|e| flat[e * n..(e + 1) * n].to_vec())
                .collect();
            for (e, r) in rows.iter().enumerate() {
                check_probabilities(r, &format!("{name} row {e}"))?;
            }
            return Ok((History::F64(rows), name));
        }
        let data = a
            .to_f32()
            .with_context(|| format!("{name}: expected floats"))?;
        if let Some(i) = data.iter().position(|x| !(0.0..=1.0).contains(x)) {
            bail!(
                "{name}: epoch {} position {} has {:e}; probabilities must be numbers in [0, 1]",
                i / n.max(1),
                i % n.max(1),
                data[i]
            );
        }
        return Ok((History::F32 { epochs, n, data }, name));
    }
    if !path.is_dir() {
        bail!(
            "{}: expected history.npy or a folder of prob_<epoch>.txt files",
            path.display()
        );
    }
    let files = epoch_files(path)?;
    if files.is_empty() {
        bail!("{}: no history.npy and no prob_<epoch>.txt files\nhint: `history` is the original training's `history` output", path.display());
    }
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(files.len());
    for (_, f) in &files {
        let v = read_float_vector(f)?;
        check_probabilities(&v, &f.display().to_string())?;
        if let Some(first) = rows.first().map(Vec::len) {
            if v.len() != first {
                bail!(
                    "{} has {} values but {} has {first}",
                    f.display(),
                    v.len(),
                    files[0].1.display()
                );
            }
        }
        rows.push(v);
    }
    Ok((
        History::F64(rows),
        format!("{} epoch files in {}", files.len(), path.display()),
    ))
}

/// Clean's flags (`|u1`, 1 = flagged): a `flags.npy` file or a folder holding it.
pub fn load_flags(path: &Path, labels: &Labels) -> Result<Vec<u8>> {
    let p = file_in(path, "flags.npy");
    let v = npy::read(&p)?
        .to_u8()
        .with_context(|| format!("{}: expected 0/1 flags", p.display()))?;
    labels.check_len(v.len(), &p.display().to_string())?;
    if let Some(i) = v.iter().position(|&f| f > 1) {
        bail!(
            "{}: position {i} has flag {}; flags are 0 (clean) or 1 (flagged)",
            p.display(),
            v[i]
        );
    }
    Ok(v)
}

/// A kept list: `kept.txt` (the reference's text) or `kept.npy`, or a folder holding one;
/// validated against the dataset size.
pub fn load_kept(path: &Path, n: usize) -> Result<Vec<usize>> {
    let p = if path.is_dir() {
        let t = path.join("kept.txt");
        if t.is_file() {
            t
        } else {
            path.join("kept.npy")
        }
    } else {
        path.to_path_buf()
    };
    if !is_npy(&p) {
        return text::read_kept(&p, Some(n));
    }
    let raw = read_int_vector(&p)?;
    let name = p.display().to_string();
    let mut out = Vec::with_capacity(raw.len());
    for (i, &v) in raw.iter().enumerate() {
        if v < 0 || v as u64 >= n as u64 {
            bail!("{name}: entry {i}: position {v} is out of range for a dataset of {n} samples");
        }
        let v = v as usize;
        if let Some(&prev) = out.last() {
            if v <= prev {
                let what = if v == prev {
                    "duplicate position"
                } else {
                    "unsorted position"
                };
                bail!("{name}: entry {i}: {what} {v} after {prev}; kept lists are strictly increasing");
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// Write `kept.txt` and `kept.npy` at the paths of the outputs `kept` and `kept_npy`.
pub fn write_kept_outputs(inv: &Invocation, kept: &[usize]) -> Result<()> {
    let txt = inv.output("kept")?;
    ensure_parent(txt)?;
    text::write_kept(txt, kept)?;
    let npy_path = inv.output("kept_npy")?;
    ensure_parent(npy_path)?;
    let as_i64: Vec<i64> = kept.iter().map(|&k| k as i64).collect();
    npy::write_1d(npy_path, &as_i64)
}

pub fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_reject_gaps_and_negatives() {
        let e = Labels::new(&[0, 2, 2], None, "l.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("l.npy: identity 1 has no sample"), "{e}");
        let e = Labels::new(&[0, -3], None, "l.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("position 1 has label -3"), "{e}");
        let e = Labels::new(&[0, 1], Some(3), "l.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity 2 has no sample"), "{e}");
        let l = Labels::new(&[1, 0, 1], None, "l").unwrap();
        assert_eq!(l.classes, 2);
        let e = l.check_len(4, "p.npy").unwrap_err().to_string();
        assert!(e.contains("p.npy has 4 values but l has 3 labels"), "{e}");
    }

    #[test]
    fn identities_group_ascending_without_flagged() {
        let l = Labels::new(&[1, 0, 1, 0, 1], None, "l").unwrap();
        let ids = Identities::new(&l, Some(&[0, 0, 1, 0, 0]));
        assert_eq!(ids.members(0), &[1, 3]);
        assert_eq!(ids.members(1), &[0, 4]);
        assert_eq!(ids.total(), 4);
    }

    #[test]
    fn probabilities_name_the_bad_position() {
        let e = check_probabilities(&[0.5, f64::NAN], "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p: position 1 is NaN"), "{e}");
        let e = check_probabilities(&[0.5, 1.5], "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("position 1 has 1.5e0, outside [0, 1]"), "{e}");
        let e = check_probabilities(&[-1.0], "p").unwrap_err().to_string();
        assert!(e.contains("flagged by `clean`"), "{e}");
    }

    #[test]
    fn per_epoch_folders_are_averaged_in_epoch_order() {
        let dir = tempfile::tempdir().unwrap();
        text::write_floats(&dir.path().join("prob_10.txt"), &[0.5, 0.25]).unwrap();
        text::write_floats(&dir.path().join("prob_2.txt"), &[0.25, 0.75]).unwrap();
        let (v, _) = load_probabilities(dir.path()).unwrap();
        assert_eq!(v, vec![0.375, 0.5]);
        let (h, _) = load_history(dir.path()).unwrap();
        assert_eq!(h, History::F64(vec![vec![0.25, 0.75], vec![0.5, 0.25]]));
        text::write_floats(&dir.path().join("prob_3.txt"), &[0.25]).unwrap();
        let e = load_probabilities(dir.path()).unwrap_err().to_string();
        assert!(e.contains("prob_3.txt has 1 values but"), "{e}");
    }

    #[test]
    fn kept_npy_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kept.npy");
        npy::write_1d(&p, &[0i64, 4, 2]).unwrap();
        let e = load_kept(&p, 10).unwrap_err().to_string();
        assert!(e.contains("entry 2: unsorted position 2 after 4"), "{e}");
        npy::write_1d(&p, &[0i64, 10]).unwrap();
        assert!(load_kept(&p, 10)
            .unwrap_err()
            .to_string()
            .contains("position 10 is out of range"));
        npy::write_1d(&p, &[0i64, 9]).unwrap();
        assert_eq!(load_kept(&p, 10).unwrap(), vec![0, 9]);
    }
}
