//! [`VerificationResult`]: the insightface 10-fold verification protocol on pair distances
//! (formats.md §2.5): accuracy mean ± std with per-fold best thresholds, and VAL@FAR=1e-3 with
//! SciPy's `interp1d(kind='slinear')` replayed exactly.
//!
//! Each threshold sweep is a counting problem: for every pair we find the first grid index whose
//! threshold exceeds its distance (the same f64 comparison as `np.less(dist, t)`), then prefix sums
//! give the confusion counts at all thresholds at once, so a fold costs O(pairs + thresholds).

use super::roc::{np_mean, np_std};

/// Accuracy thresholds `np.arange(0, 4, 0.01)`.
pub const ACC_STEP: f64 = 0.01;
pub const ACC_THRESHOLDS: usize = 400;
/// VAL thresholds `np.arange(0, 4, 0.001)`.
pub const VAL_STEP: f64 = 0.001;
pub const VAL_THRESHOLDS: usize = 4000;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerificationResult {
    pub pairs: usize,
    /// Mean of the fold accuracies (the reference's "Accuracy-Flip").
    pub accuracy: f64,
    /// `np.std` (ddof 0) of the fold accuracies.
    pub std: f64,
    pub fold_accuracies: Vec<f64>,
    /// Per fold, the training-set threshold with the best accuracy (first maximum).
    pub fold_thresholds: Vec<f64>,
    /// Mean of the per-fold thresholds (on the squared L2 distance of unit embeddings).
    pub best_threshold: f64,
    /// VAL (TAR) at FAR = `far_target`: mean and std over the folds, and the mean achieved FAR.
    pub far_target: f64,
    pub val: f64,
    pub val_std: f64,
    pub far: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerificationError {
    #[error("{dist} distances but {labels} issame labels")]
    LengthMismatch { dist: usize, labels: usize },
    #[error("only {pairs} pairs: {folds}-fold evaluation would leave fold {fold} empty\nhint: a verification set needs at least {folds} pairs")]
    EmptyFold {
        pairs: usize,
        folds: usize,
        fold: usize,
    },
    #[error("distance {index} is NaN")]
    NaN { index: usize },
}

/// `sklearn.model_selection.KFold(n_splits, shuffle=False)`: contiguous test blocks, the first
/// `n % k` folds one larger.
pub fn kfold_bounds(n: usize, folds: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(folds);
    let mut start = 0;
    for i in 0..folds {
        let len = n / folds + usize::from(i < n % folds);
        out.push((start, start + len));
        start += len;
    }
    out
}

/// The embeddings insightface's `verification.test()` compares, from the raw f32 outputs of the
/// network for each view (the images, and their horizontal flips when flip-testing; `dim` wide,
/// row-major): the views copied into f64 arrays (`np.zeros` is f64) and summed, every row
/// L2-normalised in f64 (`sklearn.preprocessing.normalize`; a zero row stays zero). Also returns
/// `xnorm`, the mean L2 norm of the raw rows of every view (the reference's `_xnorm` over
/// `embeddings_list`, both views).
pub fn test_embeddings(views: &[&[f32]], dim: usize) -> (Vec<f64>, f64) {
    let Some(first) = views.first() else {
        return (Vec::new(), 0.0);
    };
    let mut emb: Vec<f64> = first.iter().map(|&x| x as f64).collect();
    for v in &views[1..] {
        emb.iter_mut()
            .zip(v.iter())
            .for_each(|(e, &x)| *e += x as f64);
    }
    let norm = |r: &[f64]| r.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (mut total, mut count) = (0.0f64, 0usize);
    for v in views {
        for r in v.chunks_exact(dim.max(1)) {
            let r: Vec<f64> = r.iter().map(|&x| x as f64).collect();
            total += norm(&r);
            count += 1;
        }
    }
    for r in emb.chunks_exact_mut(dim.max(1)) {
        let n = norm(r);
        if n > 0.0 {
            r.iter_mut().for_each(|x| *x /= n);
        }
    }
    (emb, total / count.max(1) as f64)
}

/// Squared L2 distance between the rows `2k` and `2k + 1` of row-normalised f64 embeddings (`dim`
/// wide): `np.sum(np.square(e1 - e2), 1)` with NumPy's pairwise summation.
pub fn pair_distances(emb: &[f64], dim: usize) -> Vec<f64> {
    let mut sq = vec![0f64; dim];
    emb.chunks_exact(2 * dim)
        .map(|p| {
            let (a, b) = p.split_at(dim);
            sq.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(s, (x, y))| *s = (x - y) * (x - y));
            super::roc::np_sum(&sq)
        })
        .collect()
}

/// Index of the first grid threshold `j · step` (j < len) strictly above `d`; `len` if none.
fn first_above(d: f64, step: f64, len: usize) -> usize {
    let t = |j: usize| j as f64 * step;
    let mut k = if d <= 0.0 {
        0
    } else {
        ((d / step).floor() as usize).min(len)
    };
    while k < len && t(k) <= d {
        k += 1;
    }
    while k > 0 && t(k - 1) > d {
        k -= 1;
    }
    k
}

/// Confusion counts at every grid threshold for the pairs `idx`: (true accepts, false accepts).
fn sweep(
    cut: &[usize],
    issame: &[bool],
    idx: impl Iterator<Item = usize>,
    len: usize,
) -> (Vec<u32>, Vec<u32>) {
    let mut ta = vec![0u32; len + 1];
    let mut fa = vec![0u32; len + 1];
    for i in idx {
        if issame[i] {
            ta[cut[i]] += 1;
        } else {
            fa[cut[i]] += 1;
        }
    }
    // A pair whose first threshold above is k is accepted at every j >= k.
    for j in 1..=len {
        ta[j] += ta[j - 1];
        fa[j] += fa[j - 1];
    }
    ta.truncate(len);
    fa.truncate(len);
    (ta, fa)
}

/// The whole protocol: `folds`-fold accuracy and VAL@`far_target` on distances (smaller = same).
pub fn evaluate(
    dist: &[f64],
    issame: &[bool],
    folds: usize,
    far_target: f64,
) -> Result<VerificationResult, VerificationError> {
    if dist.len() != issame.len() {
        return Err(VerificationError::LengthMismatch {
            dist: dist.len(),
            labels: issame.len(),
        });
    }
    if let Some(index) = dist.iter().position(|d| d.is_nan()) {
        return Err(VerificationError::NaN { index });
    }
    let n = dist.len();
    let bounds = kfold_bounds(n, folds);
    if let Some(fold) = bounds.iter().position(|(a, b)| a == b) {
        return Err(VerificationError::EmptyFold {
            pairs: n,
            folds,
            fold,
        });
    }
    let acc_cut: Vec<usize> = dist
        .iter()
        .map(|&d| first_above(d, ACC_STEP, ACC_THRESHOLDS))
        .collect();
    let val_cut: Vec<usize> = dist
        .iter()
        .map(|&d| first_above(d, VAL_STEP, VAL_THRESHOLDS))
        .collect();
    let (mut accs, mut thrs, mut vals, mut fars) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(a, b) in &bounds {
        let train = (0..a).chain(b..n);
        let test = a..b;

        // Accuracy: (TP + TN) / n with n fixed per fold, so compare counts; first maximum wins.
        let n_same = train.clone().filter(|&i| issame[i]).count() as i64;
        let n_train = (n - (b - a)) as i64;
        let (ta, fa) = sweep(&acc_cut, issame, train.clone(), ACC_THRESHOLDS);
        let mut best = 0;
        let mut best_correct = i64::MIN;
        for j in 0..ACC_THRESHOLDS {
            let correct = ta[j] as i64 + (n_train - n_same - fa[j] as i64);
            if correct > best_correct {
                best_correct = correct;
                best = j;
            }
        }
        let thr = best as f64 * ACC_STEP;
        let test_correct = test
            .clone()
            .filter(|&i| (dist[i] < thr) == issame[i])
            .count();
        accs.push(test_correct as f64 / (b - a) as f64);
        thrs.push(thr);

        // VAL: interpolate the threshold at far_target on the training FARs, then score the test fold.
        let n_diff = n_train - n_same;
        let (_, vfa) = sweep(&val_cut, issame, train, VAL_THRESHOLDS);
        let far_train: Vec<f64> = vfa.iter().map(|&c| c as f64 / n_diff as f64).collect();
        let max_far = far_train.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let threshold = if max_far >= far_target {
            slinear_interp(&far_train, VAL_STEP, far_target)
        } else {
            0.0
        };
        let (mut ta_t, mut fa_t, mut same_t, mut diff_t) = (0u64, 0u64, 0u64, 0u64);
        for i in test {
            let accept = dist[i] < threshold;
            if issame[i] {
                same_t += 1;
                ta_t += u64::from(accept);
            } else {
                diff_t += 1;
                fa_t += u64::from(accept);
            }
        }
        // The reference divides by zero here (NaN with a warning); keep NaN to stay comparable.
        vals.push(ta_t as f64 / same_t as f64);
        fars.push(fa_t as f64 / diff_t as f64);
    }
    Ok(VerificationResult {
        pairs: n,
        accuracy: np_mean(&accs),
        std: np_std(&accs),
        best_threshold: np_mean(&thrs),
        fold_accuracies: accs,
        fold_thresholds: thrs,
        far_target,
        val: np_mean(&vals),
        val_std: np_std(&vals),
        far: np_mean(&fars),
    })
}

/// `scipy.interpolate.interp1d(x, thresholds, kind='slinear')(x0)` with thresholds `j · step` and a
/// non-decreasing `x` that may repeat: SciPy builds a degree-1 B-spline with knots
/// `[x0, x…, x_last]` and coefficients = the thresholds, finds the last knot `≤ x0`, and evaluates
/// with de Boor's recursion; this replays that arithmetic.
fn slinear_interp(x: &[f64], step: f64, x0: f64) -> f64 {
    let y = |j: usize| j as f64 * step;
    let m = x.len();
    // Knot vector t[0] = x[0], t[1..=m] = x, t[m+1] = x[m-1]; the interval search runs over l in 1..m.
    let t = |l: usize| -> f64 {
        if l == 0 {
            x[0]
        } else if l > m {
            x[m - 1]
        } else {
            x[l - 1]
        }
    };
    let mut l = 1;
    while l < m && x0 >= t(l + 1) {
        l += 1;
    }
    // find_interval returns the last l (capped at m - 1 in t's numbering shifted by one).
    let l = l.min(m - 1);
    let (xa, xb) = (t(l), t(l + 1));
    if xb == xa {
        // de Boor gives both basis weights 0 on an empty interval (x0 at a repeated last knot).
        return 0.0;
    }
    let w = 1.0 / (xb - xa);
    let h0 = w * (xb - x0);
    let h1 = w * (x0 - xa);
    0.0 + y(l - 1) * h0 + y(l) * h1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfold_matches_sklearn_sizes() {
        assert_eq!(kfold_bounds(6000, 10)[0], (0, 600));
        let b = kfold_bounds(23, 10);
        assert_eq!(
            b.iter().map(|(a, b)| b - a).collect::<Vec<_>>(),
            vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
        );
        assert_eq!(b[9].1, 23);
    }

    #[test]
    fn first_above_is_strict() {
        assert_eq!(first_above(0.0, 0.01, 400), 1);
        assert_eq!(first_above(-1.0, 0.01, 400), 0);
        assert_eq!(first_above(0.5, 0.01, 400), 51);
        assert_eq!(first_above(0.505, 0.01, 400), 51);
        assert_eq!(first_above(10.0, 0.01, 400), 400);
        // 0.07 is not 7 * 0.01 in f64; compare exactly as NumPy would.
        let d = 0.07;
        let k = first_above(d, 0.01, 400);
        assert!(k as f64 * 0.01 > d && (k - 1) as f64 * 0.01 <= d);
    }

    #[test]
    fn separable_pairs_are_perfect() {
        let dist: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 0.5 } else { 1.5 })
            .collect();
        let same: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        let r = evaluate(&dist, &same, 10, 1e-3).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.std, 0.0);
        // The first threshold above 0.5 that separates: 0.51.
        assert!(r.fold_thresholds.iter().all(|&t| t == 51.0 * 0.01));
    }

    #[test]
    fn too_few_pairs_is_an_error() {
        let e = evaluate(&[0.1; 5], &[true; 5], 10, 1e-3).unwrap_err();
        assert_eq!(
            e,
            VerificationError::EmptyFold {
                pairs: 5,
                folds: 10,
                fold: 5
            }
        );
        assert!(e.to_string().contains("at least 10 pairs"));
        assert!(matches!(
            evaluate(&[0.1; 5], &[true; 4], 10, 1e-3),
            Err(VerificationError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn slinear_with_repeated_x() {
        // x = [0, 0, 0.5, 1] (thresholds 0, .001, .002, .003): 0.25 lies in [0, 0.5] between j=1 and j=2.
        let x = [0.0, 0.0, 0.5, 1.0];
        let v = slinear_interp(&x, 0.001, 0.25);
        assert!((v - 0.0015).abs() < 1e-15);
        assert_eq!(slinear_interp(&x, 0.001, 0.5), 0.002);
    }
}
