//! Which training images to render: how many per identity ([`image_counts`]) and, per image, its
//! label, its true identity and whether it is a near-duplicate ([`plan_train`]).

use rand::seq::SliceRandom;
use rand::Rng;

use super::{normal, rng_of, seed_of};
use crate::kinds::data::SyntheticFacesParams;

/// One training image to render.
#[derive(Debug, Clone)]
pub(super) struct TrainImage {
    pub label: usize,
    pub true_id: usize,
    /// (identity, image) seed of the shot; a near-duplicate reuses its source's.
    pub shot: (u64, u64),
    pub duplicate_of: Option<usize>,
}

/// Long-tailed image counts: log-normal weights (σ = `images_per_identity_sigma`) scaled so that,
/// clamped to [`images_per_identity_min`, max_ratio × mean], they sum to exactly
/// `identities × images_per_identity`; the remainder after flooring goes to the largest fractions.
///
/// Guarantees (validation makes min ≤ mean ≤ cap): every count in [min, cap] and the mean exact.
pub(super) fn image_counts(p: &SyntheticFacesParams) -> Vec<usize> {
    let n = p.identities as usize;
    let mut r = rng_of(&[p.seed, 2]);
    let w: Vec<f64> = (0..n)
        .map(|_| (p.images_per_identity_sigma * normal(&mut r) as f64).exp())
        .collect();
    let (lo, hi) = (
        p.images_per_identity_min as f64,
        p.max_images_per_identity() as f64,
    );
    let total = n * p.images_per_identity as usize;
    let sum_at = |k: f64| w.iter().map(|&x| (k * x).clamp(lo, hi)).sum::<f64>();
    // The clamped sum grows with k from n·lo (k = 0) to n·hi (k = hi / min w): bisect for `total`.
    let w_min = w.iter().cloned().fold(f64::INFINITY, f64::min);
    let (mut a, mut b) = (0.0, hi / w_min);
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if sum_at(m) < total as f64 {
            a = m;
        } else {
            b = m;
        }
    }
    let x: Vec<f64> = w.iter().map(|&v| (b * v).clamp(lo, hi)).collect();
    let mut counts: Vec<usize> = x.iter().map(|v| v.floor() as usize).collect();
    let rest = total.saturating_sub(counts.iter().sum());
    let mut open: Vec<usize> = (0..n).filter(|&i| counts[i] < hi as usize).collect();
    // Largest fraction first; ties by index, so the order does not depend on the sort.
    open.sort_by(|&i, &j| {
        (x[j] - x[j].floor())
            .total_cmp(&(x[i] - x[i].floor()))
            .then(i.cmp(&j))
    });
    for &i in open.iter().cycle().take(rest) {
        counts[i] += 1;
    }
    counts
}

/// The training images in label order. Exactly round(duplicates × N) images are near-duplicates
/// and round(label_noise × N) carry a wrong label (a uniformly drawn other identity), both drawn
/// without replacement among the images other than each identity's first, which stays a clean
/// original; a near-duplicate copies the shot of an earlier clean original of its identity.
pub(super) fn plan_train(p: &SyntheticFacesParams) -> Vec<TrainImage> {
    let counts = image_counts(p);
    let ids = p.identities as usize;
    let total: usize = counts.iter().sum();
    let mut starts = Vec::with_capacity(ids);
    let mut open = Vec::with_capacity(total);
    let mut at = 0;
    for &c in &counts {
        starts.push(at);
        open.extend(at + 1..at + c);
        at += c;
    }
    open.shuffle(&mut rng_of(&[p.seed, 3]));
    let dups = ((p.duplicates * total as f64).round() as usize).min(open.len());
    let noisy = ((p.label_noise * total as f64).round() as usize).min(open.len() - dups);
    // 0 = clean original, 1 = near-duplicate, 2 = mislabeled original.
    let mut role = vec![0u8; total];
    for &pos in &open[..dups] {
        role[pos] = 1;
    }
    for &pos in &open[dups..dups + noisy] {
        role[pos] = 2;
    }
    let mut out: Vec<TrainImage> = Vec::with_capacity(total);
    for (label, (&first, &n)) in starts.iter().zip(&counts).enumerate() {
        let mut r = rng_of(&[p.seed, 3, label as u64]);
        for pos in first..first + n {
            let true_id = match role[pos] {
                1 => {
                    let sources: Vec<usize> = (first..pos).filter(|&q| role[q] == 0).collect();
                    let src = sources[r.gen_range(0..sources.len())];
                    out.push(TrainImage {
                        label,
                        true_id: label,
                        shot: out[src].shot,
                        duplicate_of: Some(src),
                    });
                    continue;
                }
                2 => (label + r.gen_range(1..ids)) % ids,
                _ => label,
            };
            out.push(TrainImage {
                label,
                true_id,
                shot: (true_id as u64, seed_of(&[p.seed, 4, pos as u64])),
                duplicate_of: None,
            });
        }
    }
    out
}
