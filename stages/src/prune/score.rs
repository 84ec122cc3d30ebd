//! The `score` stage (diffprob.md §2.4): the per-sample value that `prune` orders by, written as
//! `scores/score.npy` (`<f8`), `score.txt` (np.savetxt) and `score.json` ([`ScoreMeta`], which
//! tells `prune` the selection rule). [`dynamic_uncertainty`] is DynUnc's windowed std (R6).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::inputs::{self, History, Identities, Labels};
use super::select;
use crate::formats::{npy, text};
use crate::kinds::prune::{ScoreMethod, ScoreParams};
use crate::Invocation;

/// `score.json`: how the scores were made; `prune` picks its rule from `method`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreMeta {
    pub method: ScoreMethod,
    /// Samples (full dataset).
    pub n: usize,
    /// `rand`: the seed of the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `dynunc`: window length and windows averaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<usize>,
}

/// Samples processed together by one thread of [`dynamic_uncertainty`] (windows stay in cache).
const BLOCK: usize = 1024;

/// DynUnc of a loaded [`History`] (see [`dynamic_uncertainty`]).
pub fn history_uncertainty(h: &History, window: usize, include_final: bool) -> Result<Vec<f64>> {
    match h {
        History::F32 { epochs, n, data } => {
            let rows: Vec<&[f32]> = (0..*epochs).map(|e| &data[e * n..(e + 1) * n]).collect();
            dynamic_uncertainty(&rows, window, include_final)
        }
        History::F64(rows) => {
            let rows: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
            dynamic_uncertainty(&rows, window, include_final)
        }
    }
}

/// DynUnc (coreset_dynunc.py) in f64: per sample a window of `window` values, initially 0; each
/// epoch's non-zero value shifts in; for e in window−1 ..= E−2 (E−1 with `include_final`),
/// U_e = 10 · unbiased std of the window; the score is the mean of the recorded U_e.
pub fn dynamic_uncertainty<T: Copy + Into<f64> + Sync>(
    history: &[&[T]],
    window: usize,
    include_final: bool,
) -> Result<Vec<f64>> {
    let epochs = history.len();
    if window < 2 {
        bail!("window must be at least 2, got {window}");
    }
    if epochs <= window {
        bail!(
            "the history has {epochs} epochs, DynUnc needs more than `window` = {window} (windows end at epochs {}..{})",
            window - 1,
            epochs.saturating_sub(2)
        );
    }
    let n = history[0].len();
    if let Some((e, r)) = history.iter().enumerate().find(|(_, r)| r.len() != n) {
        bail!("history row {e} has {} values, row 0 has {n}", r.len());
    }
    let last = if include_final {
        epochs - 1
    } else {
        epochs - 2
    };
    let recorded = (last + 2 - window) as f64;
    let mut scores = vec![0.0f64; n];
    scores
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, out)| {
            // The default window as a constant lets the compiler unroll the window loops.
            if window == 10 {
                uncertainty_block(history, b * BLOCK, out, 10, last, recorded);
            } else {
                uncertainty_block(history, b * BLOCK, out, window, last, recorded);
            }
        });
    Ok(scores)
}

/// DynUnc of samples `base..base + out.len()`.
///
/// The windows are stored slot-major (`ring[slot * m + j]`, sample j's next write slot `head[j]`),
/// so the mean and the squared deviations are summed over slots for many samples at once (SIMD).
/// A window is summed in slot order, a rotation of epoch order: the same values, rounded in
/// another order (the reference's numpy/torch reductions have their own order too).
#[inline(always)]
fn uncertainty_block<T: Copy + Into<f64>>(
    history: &[&[T]],
    base: usize,
    out: &mut [f64],
    w: usize,
    last: usize,
    recorded: f64,
) {
    let m = out.len();
    let (wf, wm1) = (w as f64, (w - 1) as f64);
    let mut ring = vec![0.0f64; w * m];
    let mut head = vec![0usize; m];
    let mut acc = vec![0.0f64; m];
    let mut mean = vec![0.0f64; m];
    let mut ss = vec![0.0f64; m];
    for (e, row) in history.iter().enumerate() {
        for (j, &v) in row[base..base + m].iter().enumerate() {
            let v: f64 = v.into();
            if v != 0.0 {
                let h = head[j];
                ring[h * m + j] = v;
                head[j] = if h + 1 == w { 0 } else { h + 1 };
            }
        }
        if e + 1 >= w && e <= last {
            mean.iter_mut().for_each(|x| *x = 0.0);
            ss.iter_mut().for_each(|x| *x = 0.0);
            for slot in ring.chunks_exact(m) {
                mean.iter_mut().zip(slot).for_each(|(s, &x)| *s += x);
            }
            mean.iter_mut().for_each(|s| *s /= wf);
            for slot in ring.chunks_exact(m) {
                ss.iter_mut()
                    .zip(slot)
                    .zip(&mean)
                    .for_each(|((q, &x), &mu)| *q += (x - mu) * (x - mu));
            }
            acc.iter_mut()
                .zip(&ss)
                .for_each(|(a, &q)| *a += (q / wm1).sqrt() * 10.0);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a / recorded;
    }
}

/// The `score` stage.
pub fn run(inv: &Invocation) -> Result<serde_json::Value> {
    let params: ScoreParams = inv.params()?;
    let labels = match (inv.opt_input("labels"), inv.opt_input("train")) {
        (None, None) => None,
        _ => Some(inputs::load_labels(inv)?),
    };
    let progress = inv.progress();
    let (scores, meta, source) = match params.method {
        ScoreMethod::Diffprob => {
            let path = inv.opt_input("probs").with_context(|| {
                format!("stage `{}`: `method: diffprob` needs input `probs` (eval-trainset's `probs` output, or one prob file)", inv.stage_id)
            })?;
            let (p, source) = inputs::load_probabilities(path)?;
            if let Some(l) = &labels {
                l.check_len(p.len(), &source)?;
            }
            let meta = ScoreMeta {
                method: params.method,
                n: p.len(),
                seed: None,
                window: None,
                windows: None,
            };
            (p, meta, source)
        }
        ScoreMethod::Dynunc => {
            let path = inv.opt_input("history").with_context(|| {
                format!("stage `{}`: `method: dynunc` needs input `history` (the original training's `history` output)", inv.stage_id)
            })?;
            let (h, source) = inputs::load_history(path)?;
            let window = params.window as usize;
            let u = history_uncertainty(&h, window, params.include_final_window)
                .with_context(|| source.clone())?;
            if let Some(l) = &labels {
                l.check_len(u.len(), &source)?;
            }
            let last = if params.include_final_window {
                h.epochs() - 1
            } else {
                h.epochs() - 2
            };
            let windows = last + 2 - window;
            let meta = ScoreMeta {
                method: params.method,
                n: u.len(),
                seed: None,
                window: Some(params.window),
                windows: Some(windows),
            };
            (u, meta, source)
        }
        ScoreMethod::Rand => {
            let l: &Labels = labels.as_ref().with_context(|| {
                format!("stage `{}`: `method: rand` needs the dataset labels (input `labels` or `train`)", inv.stage_id)
            })?;
            let ids = Identities::new(l, None);
            let keys = select::rand_keys(&ids, l.len(), params.seed);
            let meta = ScoreMeta {
                method: params.method,
                n: keys.len(),
                seed: Some(params.seed),
                window: None,
                windows: None,
            };
            (keys, meta, format!("seed {}", params.seed))
        }
    };
    progress.message(&format!("scores from {source}"));
    let dir = inv.output("scores")?;
    write_scores(dir, &scores, &meta)?;
    let (min, max, mean) = summary(&scores);
    Ok(json!({
        "method": meta.method,
        "n": scores.len(),
        "source": source,
        "windows": meta.windows,
        "min": min,
        "max": max,
        "mean": mean,
    }))
}

pub fn write_scores(dir: &Path, scores: &[f64], meta: &ScoreMeta) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    npy::write_1d(&dir.join("score.npy"), scores)?;
    text::write_floats(&dir.join("score.txt"), scores)?;
    let j = serde_json::to_vec_pretty(meta)?;
    std::fs::write(dir.join("score.json"), j)
        .with_context(|| format!("cannot write {}", dir.join("score.json").display()))
}

/// Read a `scores/` folder: its `score.json` and `score.npy` (or `score.txt`).
pub fn read_scores(dir: &Path) -> Result<(ScoreMeta, Vec<f64>, String)> {
    if !dir.is_dir() {
        bail!(
            "{}: expected a score stage's `scores/` folder (score.json + score.npy)",
            dir.display()
        );
    }
    let mp = dir.join("score.json");
    let meta: ScoreMeta = serde_json::from_slice(&std::fs::read(&mp).with_context(|| {
        format!(
            "cannot read {}\nhint: `scores` must be the `scores` output of a score stage",
            mp.display()
        )
    })?)
    .with_context(|| format!("{} is not a valid score.json", mp.display()))?;
    let p = if dir.join("score.npy").is_file() {
        dir.join("score.npy")
    } else {
        dir.join("score.txt")
    };
    let v = inputs::read_float_vector(&p)?;
    let name = p.display().to_string();
    if v.len() != meta.n {
        bail!(
            "{name} has {} values, {} says n = {}",
            v.len(),
            mp.display(),
            meta.n
        );
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        bail!("{name}: position {i} is {}; scores must be finite", v[i]);
    }
    Ok((meta, v, name))
}

fn summary(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max, v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's loop as written: shift the whole window, record torch.std * 10.
    fn plain(history: &[Vec<f64>], window: usize, include_final: bool) -> Vec<f64> {
        let n = history[0].len();
        let mut w = vec![vec![0.0; window]; n];
        let mut rec: Vec<Vec<f64>> = Vec::new();
        let e_max = if include_final {
            history.len()
        } else {
            history.len() - 1
        };
        for (e, row) in history.iter().enumerate() {
            for i in 0..n {
                if row[i] != 0.0 {
                    w[i].remove(0);
                    w[i].push(row[i]);
                }
            }
            if e >= window - 1 && e < e_max {
                rec.push(
                    w.iter()
                        .map(|x| {
                            let m = x.iter().sum::<f64>() / window as f64;
                            (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (window - 1) as f64)
                                .sqrt()
                                * 10.0
                        })
                        .collect(),
                );
            }
        }
        (0..n)
            .map(|i| rec.iter().map(|r| r[i]).sum::<f64>() / rec.len() as f64)
            .collect()
    }

    #[test]
    fn dynunc_matches_the_plain_loop_and_drops_the_final_window() {
        let n = 9000; // more than one block
        let epochs = 14;
        let history: Vec<Vec<f64>> = (0..epochs)
            .map(|e| {
                (0..n)
                    .map(|i| {
                        if (i + e) % 7 == 0 {
                            0.0
                        } else {
                            (((i * 31 + e * 17) % 97) as f64) / 97.0
                        }
                    })
                    .collect()
            })
            .collect();
        let rows: Vec<&[f64]> = history.iter().map(Vec::as_slice).collect();
        for include_final in [false, true] {
            let got = dynamic_uncertainty(&rows, 10, include_final).unwrap();
            let want = plain(&history, 10, include_final);
            for i in 0..n {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-12 * want[i].abs().max(1.0),
                    "{i}: {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
        let a = dynamic_uncertainty(&rows, 10, false).unwrap();
        let b = dynamic_uncertainty(&rows, 10, true).unwrap();
        assert_ne!(a, b);
        // f32 rows give the same scores as their f64 widening.
        let h32: Vec<Vec<f32>> = history
            .iter()
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect();
        let h64: Vec<Vec<f64>> = h32
            .iter()
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect();
        let r32: Vec<&[f32]> = h32.iter().map(Vec::as_slice).collect();
        let r64: Vec<&[f64]> = h64.iter().map(Vec::as_slice).collect();
        assert_eq!(
            dynamic_uncertainty(&r32, 10, false).unwrap(),
            dynamic_uncertainty(&r64, 10, false).unwrap()
        );
    }

    #[test]
    fn dynunc_needs_more_epochs_than_the_window() {
        let row = [0.5f64; 3];
        let e = dynamic_uncertainty(&[&row[..]; 10], 10, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the history has 10 epochs, DynUnc needs more than `window` = 10"),
            "{e}"
        );
        assert_eq!(
            dynamic_uncertainty(&[&row[..]; 11], 10, false)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn scores_folder_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let meta = ScoreMeta {
            method: ScoreMethod::Dynunc,
            n: 2,
            seed: None,
            window: Some(10),
            windows: Some(24),
        };
        write_scores(dir.path(), &[0.25, 0.125], &meta).unwrap();
        let (m, v, _) = read_scores(dir.path()).unwrap();
        assert_eq!((m, v), (meta, vec![0.25, 0.125]));
        std::fs::remove_file(dir.path().join("score.npy")).unwrap();
        assert_eq!(read_scores(dir.path()).unwrap().1, vec![0.25, 0.125]);
    }
}
