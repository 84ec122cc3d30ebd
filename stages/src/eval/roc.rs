//! [`RocCurve`]: scikit-learn's `roc_curve(drop_intermediate=True)` reproduced exactly, the IJB
//! reference's nearest-FPR TAR@FAR pick ([`tar_at_far`]) and the trapezoid AUC ([`auc`]) (formats.md §3.4).
//!
//! Exactness: the ROC points are integer counts divided once in f64, as scikit-learn does, so every
//! FPR/TPR is bit-identical; the AUC replays NumPy's pairwise summation. The scores are split into
//! genuine and impostor lists, each radix-sorted on an order-preserving integer key, and merged by
//! value: tied runs collapse to one point, so the order inside a tie never matters (scikit-learn's
//! stable sort only fixes an order that does not change the counts at a run's end).

use rayon::prelude::*;

/// The FAR targets of the IJB tables (formats.md §3.4).
pub const IJB_FAR_TARGETS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// A score type the ROC accepts; `key` is monotone in the value and equal for `0.0` and `-0.0`.
pub trait Score: Copy + Send + Sync {
    fn to_f64(self) -> f64;
    fn key(self) -> u64;
}

impl Score for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn key(self) -> u64 {
        let x = if self == 0.0 { 0.0f64 } else { self };
        let b = x.to_bits();
        if b >> 63 == 1 {
            !b
        } else {
            b | (1 << 63)
        }
    }
}

impl Score for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn key(self) -> u64 {
        let x = if self == 0.0 { 0.0f32 } else { self };
        let b = x.to_bits();
        (if b >> 31 == 1 { !b } else { b | (1 << 31) }) as u64
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RocError {
    #[error(
        "{scores} scores but {labels} labels; every score needs exactly one genuine/impostor label"
    )]
    LengthMismatch { scores: usize, labels: usize },
    #[error("score {index} is NaN or infinite; a ROC needs finite scores\nhint: check the features for NaN (an untrained model can overflow)")]
    NotFinite { index: usize },
    #[error("no {0} pairs: a ROC needs both genuine (label 1) and impostor (label 0) pairs")]
    MissingClass(&'static str),
}

/// A ROC curve as scikit-learn returns it: `fpr[0] = tpr[0] = 0`, `thresholds[0] = +inf`, then one
/// point per kept distinct score in decreasing order.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
    pub positives: u64,
    pub negatives: u64,
}

/// One row of the TAR@FAR table: the ROC point picked for `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TarAtFar {
    pub target: f64,
    pub tar: f64,
    pub far: f64,
    pub threshold: f64,
}

/// `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=True)`; label `true` = genuine.
pub fn roc_curve<S: Score>(scores: &[S], genuine: &[bool]) -> Result<RocCurve, RocError> {
    if scores.len() != genuine.len() {
        return Err(RocError::LengthMismatch {
            scores: scores.len(),
            labels: genuine.len(),
        });
    }
    if let Some(index) = scores
        .par_iter()
        .position_first(|s| !s.to_f64().is_finite())
    {
        return Err(RocError::NotFinite { index });
    }
    // f32 keys fit in 32 bits: sorting u32 halves the memory traffic of the radix passes.
    if std::mem::size_of::<S>() == 4 {
        let (pos, neg) = split_sorted::<S, u32>(scores, genuine, |k| k as u32)?;
        Ok(sweep(&pos, &neg, |k| key_to_f64::<S>(k as u64)))
    } else {
        let (pos, neg) = split_sorted::<S, u64>(scores, genuine, |k| k)?;
        Ok(sweep(&pos, &neg, key_to_f64::<S>))
    }
}

/// Genuine and impostor keys, each sorted ascending.
fn split_sorted<S: Score, K: RadixKey>(
    scores: &[S],
    genuine: &[bool],
    narrow: impl Fn(u64) -> K + Sync,
) -> Result<(Vec<K>, Vec<K>), RocError> {
    let (mut pos, mut neg): (Vec<K>, Vec<K>) = rayon::join(
        || {
            scores
                .par_iter()
                .zip(genuine.par_iter())
                .filter(|(_, &g)| g)
                .map(|(s, _)| narrow(s.key()))
                .collect()
        },
        || {
            scores
                .par_iter()
                .zip(genuine.par_iter())
                .filter(|(_, &g)| !g)
                .map(|(s, _)| narrow(s.key()))
                .collect()
        },
    );
    if pos.is_empty() {
        return Err(RocError::MissingClass("genuine"));
    }
    if neg.is_empty() {
        return Err(RocError::MissingClass("impostor"));
    }
    rayon::join(|| radix_sort(&mut pos), || radix_sort(&mut neg));
    Ok((pos, neg))
}

/// Walk both sorted lists from the top: one candidate point per distinct value (the end of its
/// tied run), dropped on the fly unless it is a corner (drop_intermediate), so memory stays
/// proportional to the kept points.
fn sweep<K: RadixKey>(pos: &[K], neg: &[K], value_of: impl Fn(K) -> f64) -> RocCurve {
    let (p, q) = (pos.len() as f64, neg.len() as f64);
    let mut curve = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
        positives: pos.len() as u64,
        negatives: neg.len() as u64,
    };
    let mut push = |(tp, fp, thr): (i64, i64, f64)| {
        curve.fpr.push(fp as f64 / q);
        curve.tpr.push(tp as f64 / p);
        curve.thresholds.push(thr);
    };
    // `prev` is the last candidate seen before `cur`; a candidate's fate is known once the next
    // one arrives (or at the end, where the last is always kept).
    let mut prev: Option<(i64, i64, f64)> = None;
    let mut cur: Option<(i64, i64, f64)> = None;
    let (mut i, mut j) = (pos.len(), neg.len());
    while i > 0 || j > 0 {
        let top = match (i, j) {
            (0, _) => neg[j - 1],
            (_, 0) => pos[i - 1],
            _ => pos[i - 1].max(neg[j - 1]),
        };
        while i > 0 && pos[i - 1] == top {
            i -= 1;
        }
        while j > 0 && neg[j - 1] == top {
            j -= 1;
        }
        let next = (
            (pos.len() - i) as i64,
            (neg.len() - j) as i64,
            value_of(top),
        );
        match (prev, cur) {
            (None, None) => cur = Some(next),
            (None, Some(c)) => {
                // The first candidate is always kept.
                push(c);
                prev = Some(c);
                cur = Some(next);
            }
            (Some(a), Some(c)) => {
                if a.1 - 2 * c.1 + next.1 != 0 || a.0 - 2 * c.0 + next.0 != 0 {
                    push(c);
                }
                prev = Some(c);
                cur = Some(next);
            }
            (Some(_), None) => unreachable!("cur is set whenever prev is"),
        }
    }
    if let Some(c) = cur {
        push(c);
    }
    curve
}

fn key_to_f64<S: Score>(key: u64) -> f64 {
    // Invert the f32 or f64 key (the width is told apart by which impl produced it).
    if std::mem::size_of::<S>() == 4 {
        let k = key as u32;
        let b = if k >> 31 == 1 { k & !(1 << 31) } else { !k };
        f32::from_bits(b) as f64
    } else {
        let b = if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        };
        f64::from_bits(b)
    }
}

/// An unsigned key for [`radix_sort`].
trait RadixKey: Copy + Ord + Default + Send + Sync {
    const BYTES: usize;
    fn byte(self, b: usize) -> usize;
}
impl RadixKey for u32 {
    const BYTES: usize = 4;
    fn byte(self, b: usize) -> usize {
        ((self >> (8 * b)) & 0xff) as usize
    }
}
impl RadixKey for u64 {
    const BYTES: usize = 8;
    fn byte(self, b: usize) -> usize {
        ((self >> (8 * b)) & 0xff) as usize
    }
}

/// LSD radix sort on bytes, skipping the bytes that all keys share.
fn radix_sort<K: RadixKey>(keys: &mut Vec<K>) {
    if keys.len() < 256 {
        keys.sort_unstable();
        return;
    }
    let mut counts = vec![[0usize; 256]; K::BYTES];
    for &k in keys.iter() {
        for (b, c) in counts.iter_mut().enumerate() {
            c[k.byte(b)] += 1;
        }
    }
    let mut buf = vec![K::default(); keys.len()];
    let n = keys.len();
    for (b, c) in counts.iter().enumerate() {
        if c.contains(&n) {
            continue;
        }
        let mut offs = [0usize; 256];
        let mut acc = 0;
        for d in 0..256 {
            offs[d] = acc;
            acc += c[d];
        }
        for &k in keys.iter() {
            let d = k.byte(b);
            buf[offs[d]] = k;
            offs[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
    }
}

/// The IJB reference's pick: flip the curve, then the index minimising `(|fpr − x|, index)`; among
/// equal FPRs that is the highest TPR, among equal distances the larger FPR. Not interpolation.
pub fn tar_at_far(curve: &RocCurve, targets: &[f64]) -> Vec<TarAtFar> {
    targets
        .iter()
        .map(|&x| {
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            // In original order the flipped index shrinks as k grows, so ties go to the later k.
            for (k, &f) in curve.fpr.iter().enumerate() {
                let d = (f - x).abs();
                if d <= best_d {
                    best_d = d;
                    best = k;
                }
            }
            TarAtFar {
                target: x,
                tar: curve.tpr[best],
                far: curve.fpr[best],
                threshold: curve.thresholds[best],
            }
        })
        .collect()
}

/// `sklearn.metrics.auc(fpr, tpr)`: the trapezoid rule summed as NumPy sums (pairwise).
pub fn auc(x: &[f64], y: &[f64]) -> f64 {
    if x.len() < 2 || x.len() != y.len() {
        return f64::NAN;
    }
    let decreasing = x.windows(2).any(|w| w[1] - w[0] < 0.0);
    let terms: Vec<f64> = (0..x.len() - 1)
        .map(|i| (x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2.0)
        .collect();
    let area = np_sum(&terms);
    if decreasing {
        -area
    } else {
        area
    }
}

/// `np.sum` of a contiguous f64 array: NumPy's pairwise summation (8 accumulators, blocks of 128).
pub fn np_sum(a: &[f64]) -> f64 {
    0.0 + pairwise(a)
}

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// `np.mean` of a contiguous f64 array.
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `np.std` (ddof 0) of a contiguous f64 array.
pub fn np_std(a: &[f64]) -> f64 {
    let m = np_mean(a);
    let sq: Vec<f64> = a.iter().map(|&v| (v - m) * (v - m)).collect();
    (np_sum(&sq) / a.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_curve_matches_hand_computation() {
        // sklearn: roc_curve([0,0,1,1], [0.1,0.4,0.35,0.8]) -> fpr [0,0,.5,.5,1], tpr [0,.5,.5,1,1]
        let c = roc_curve(&[0.1f64, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert_eq!(c.fpr, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
        assert_eq!(c.tpr, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(c.thresholds, vec![f64::INFINITY, 0.8, 0.4, 0.35, 0.1]);
        assert_eq!(auc(&c.fpr, &c.tpr), 0.75);
    }

    #[test]
    fn ties_collapse_and_intermediates_drop() {
        // Four tied scores form one point; a straight run of impostors keeps only its ends.
        let s = [0.9f32, 0.5, 0.5, 0.5, 0.5, 0.3, 0.2, 0.1];
        let l = [true, true, false, true, false, false, false, false];
        let c = roc_curve(&s, &l).unwrap();
        assert_eq!(
            c.thresholds,
            vec![f64::INFINITY, 0.9f32 as f64, 0.5, 0.1f32 as f64]
        );
        assert_eq!(c.tpr, vec![0.0, 1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(c.fpr, vec![0.0, 0.0, 0.4, 1.0]);
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let c = roc_curve(&[0.0f64, -0.0, 1.0], &[true, false, true]).unwrap();
        assert_eq!(c.thresholds.len(), 3);
        assert_eq!(c.fpr, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(
            roc_curve(&[0.1f64], &[true, false]),
            Err(RocError::LengthMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert_eq!(
            roc_curve(&[0.1f64, f64::NAN], &[true, false]),
            Err(RocError::NotFinite { index: 1 })
        );
        assert_eq!(
            roc_curve(&[0.1f64, 0.2], &[true, true]),
            Err(RocError::MissingClass("impostor"))
        );
        assert!(roc_curve(&[0.1f64, 0.2], &[false, false])
            .unwrap_err()
            .to_string()
            .contains("genuine"));
    }

    #[test]
    fn pick_prefers_highest_tpr_then_larger_far() {
        let c = RocCurve {
            fpr: vec![0.0, 0.1, 0.1, 0.3, 1.0],
            tpr: vec![0.0, 0.4, 0.6, 0.8, 1.0],
            thresholds: vec![f64::INFINITY, 4.0, 3.0, 2.0, 1.0],
            positives: 5,
            negatives: 10,
        };
        let r = tar_at_far(&c, &[0.1, 0.2]);
        assert_eq!(r[0].tar, 0.6);
        // 0.2 is 0.1 away from both 0.1 and 0.3 (in f64 not exactly; the nearer one wins).
        let d1 = (0.1f64 - 0.2).abs();
        let d3 = (0.3f64 - 0.2).abs();
        assert_eq!(r[1].far, if d3 <= d1 { 0.3 } else { 0.1 });
    }

    #[test]
    fn radix_sort_sorts() {
        let mut v: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7)
            .collect();
        let mut w = v.clone();
        radix_sort(&mut v);
        w.sort_unstable();
        assert_eq!(v, w);
        let mut keys: Vec<u64> = [-2.5f32, -0.0, 0.0, 1e-30, -1e-30, 3.0]
            .iter()
            .map(|s| s.key())
            .collect();
        keys.sort_unstable();
        let back: Vec<f64> = keys.iter().map(|&k| key_to_f64::<f32>(k)).collect();
        assert_eq!(
            back,
            vec![-2.5, -1e-30f32 as f64, 0.0, 0.0, 1e-30f32 as f64, 3.0]
        );
    }

    #[test]
    fn np_sum_blocks() {
        let a: Vec<f64> = (0..1000).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let naive: f64 = a.iter().sum();
        assert!((np_sum(&a) - naive).abs() < 1e-12);
        assert_eq!(np_sum(&[]), 0.0);
        assert_eq!(np_std(&[1.0, 3.0]), 1.0);
    }
}
