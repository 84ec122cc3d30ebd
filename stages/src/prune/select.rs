//! The per-identity selection rules of `prune` (diffprob.md §2.6), pure and fast:
//! [`Ranked`] (each identity's samples pre-sorted once by (value, position) descending) with the
//! DiffProb walk ([`Ranked::count`], [`Ranked::select`], [`Ranked::search_threshold`], R4), the
//! DynUnc/Rand k rule ([`k_for`], [`Ranked::top_k`], [`search_fraction`]), the reference's Rand
//! lists ([`last_k`], R5) and the seeded per-identity keys of `method: rand` ([`rand_keys`]).
//!
//! Every K(t) is one O(N) pass over the pre-sorted values, parallel over identities.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::inputs::Identities;

/// Identities whose samples are ordered by (value, position) **descending**, so the DiffProb
/// walk and "the last k in ascending order" both read a prefix.
#[derive(Debug, Clone)]
pub struct Ranked {
    offsets: Vec<usize>,
    positions: Vec<u32>,
    values: Vec<f64>,
}

/// Outcome of the DiffProb walk on one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalkCount {
    pub kept: usize,
    /// Passes after the first (threshold lowered by 1 % of t each).
    pub retries: usize,
}

/// A summary of one selection over all identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub kept: usize,
    /// Identities that needed the retry loop.
    pub retried: usize,
}

impl Ranked {
    pub fn new(ids: &Identities, values: &[f64]) -> Ranked {
        let offsets = ids.offsets().to_vec();
        // (sortable value bits, position) pairs sort without indirection; (value, position) is a
        // total order, so the result does not depend on the sort algorithm (R3).
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(ids.total());
        for c in 0..ids.classes() {
            keyed.extend(
                ids.members(c)
                    .iter()
                    .map(|&p| (sortable(values[p as usize]), p)),
            );
        }
        let mut slices: Vec<&mut [(u64, u32)]> = Vec::with_capacity(ids.classes());
        let mut rest = keyed.as_mut_slice();
        for c in 0..ids.classes() {
            let (head, tail) = rest.split_at_mut(offsets[c + 1] - offsets[c]);
            slices.push(head);
            rest = tail;
        }
        slices
            .par_iter_mut()
            .with_min_len(64)
            .for_each(|s| s.sort_unstable_by(|a, b| b.cmp(a)));
        let positions: Vec<u32> = keyed.iter().map(|&(_, p)| p).collect();
        let values = keyed.iter().map(|&(k, _)| unsortable(k)).collect();
        Ranked {
            offsets,
            positions,
            values,
        }
    }

    pub fn classes(&self) -> usize {
        self.offsets.len() - 1
    }

    fn range(&self, c: usize) -> std::ops::Range<usize> {
        self.offsets[c]..self.offsets[c + 1]
    }

    /// Values of identity `c`, descending.
    pub fn values(&self, c: usize) -> &[f64] {
        &self.values[self.range(c)]
    }

    /// Positions of identity `c` in (value, position) descending order.
    pub fn positions(&self, c: usize) -> &[u32] {
        &self.positions[self.range(c)]
    }

    /// K(t): samples the DiffProb walk keeps at threshold `t`, and identities that retried.
    pub fn count(&self, t: f64, min_per_id: usize) -> Tally {
        (0..self.classes())
            .into_par_iter()
            .with_min_len(64)
            .map(|c| {
                let w = walk(self.values(c), t, min_per_id, None);
                Tally {
                    kept: w.kept,
                    retried: usize::from(w.retries > 0),
                }
            })
            .reduce(Tally::default, |a, b| Tally {
                kept: a.kept + b.kept,
                retried: a.retried + b.retried,
            })
    }

    /// The DiffProb selection at threshold `t`: kept positions ascending, the tally, and the
    /// kept count of each identity.
    pub fn select(&self, t: f64, min_per_id: usize) -> (Vec<usize>, Tally, Vec<usize>) {
        let per_id: Vec<(Vec<u32>, WalkCount)> = (0..self.classes())
            .into_par_iter()
            .with_min_len(64)
            .map(|c| {
                let mut idx = Vec::new();
                let w = walk(self.values(c), t, min_per_id, Some(&mut idx));
                let pos = self.positions(c);
                (idx.into_iter().map(|i| pos[i as usize]).collect(), w)
            })
            .collect();
        gather(per_id)
    }

    /// The k highest (value, position) samples of each identity, k = [`k_for`]`(n, fraction)`:
    /// DynUnc on uncertainties, `rand` on random keys.
    pub fn top_k(&self, fraction: f64, min_per_id: usize) -> (Vec<usize>, Vec<usize>) {
        let mut kept = Vec::new();
        let mut counts = Vec::with_capacity(self.classes());
        for c in 0..self.classes() {
            let pos = self.positions(c);
            let k = k_for(pos.len(), fraction, min_per_id);
            kept.extend(pos[..k].iter().map(|&p| p as usize));
            counts.push(k);
        }
        kept.par_sort_unstable();
        (kept, counts)
    }

    /// R4: the threshold whose K(t) reaches `target`, by bisection on [0, 1] (at most 64 halvings;
    /// K(mid) = target returns mid, else the last `lo` with K(lo) > target).
    ///
    /// Each K(mid) is exact, but only identities whose count can still change are walked: one
    /// with the same count at `lo` and `hi` and no retry at `hi` has chain(hi) ≥ `min_per_id`,
    /// so on [lo, hi] no retry happens and the chain count, non-increasing in τ (§2.6), is
    /// constant.
    pub fn search_threshold(
        &self,
        target: usize,
        min_per_id: usize,
    ) -> Result<Search, Unreachable> {
        let all: Vec<u32> = (0..self.classes() as u32).collect();
        let at_lo = self.walk_all(&all, 0.0, min_per_id);
        let k0: usize = at_lo.iter().map(|w| w.kept).sum();
        if k0 < target {
            return Err(Unreachable { max_kept: k0 });
        }
        let at_hi = self.walk_all(&all, 1.0, min_per_id);
        let k1: usize = at_hi.iter().map(|w| w.kept).sum();
        if k1 >= target {
            return Ok(Search {
                value: 1.0,
                kept: k1,
                evaluations: 2,
                below_floor: true,
                step: None,
            });
        }
        let mut k_hi = k1;
        let mut lo_count: Vec<usize> = at_lo.iter().map(|w| w.kept).collect();
        let mut hi_walk: Vec<WalkCount> = at_hi;
        let mut frozen = 0usize;
        let mut active = all;
        let (mut lo, mut hi, mut k_lo) = (0.0f64, 1.0f64, k0);
        let mut evaluations = 2;
        for _ in 0..64 {
            active.retain(|&c| {
                let c = c as usize;
                let settled = lo_count[c] == hi_walk[c].kept && hi_walk[c].retries == 0;
                if settled {
                    frozen += lo_count[c];
                }
                !settled
            });
            let mid = (lo + hi) / 2.0;
            let at_mid = self.walk_all(&active, mid, min_per_id);
            let k = frozen + at_mid.iter().map(|w| w.kept).sum::<usize>();
            evaluations += 1;
            if k == target {
                return Ok(Search {
                    value: mid,
                    kept: k,
                    evaluations,
                    below_floor: false,
                    step: None,
                });
            }
            if k > target {
                lo = mid;
                k_lo = k;
                active
                    .iter()
                    .zip(&at_mid)
                    .for_each(|(&c, w)| lo_count[c as usize] = w.kept);
            } else {
                hi = mid;
                k_hi = k;
                active
                    .iter()
                    .zip(&at_mid)
                    .for_each(|(&c, w)| hi_walk[c as usize] = *w);
            }
        }
        Ok(Search {
            value: lo,
            kept: k_lo,
            evaluations,
            below_floor: false,
            step: Some(Step {
                value: hi,
                kept: k_hi,
            }),
        })
    }

    /// The walk of each identity in `classes` at `t`.
    fn walk_all(&self, classes: &[u32], t: f64, min_per_id: usize) -> Vec<WalkCount> {
        classes
            .par_iter()
            .with_min_len(64)
            .map(|&c| walk(self.values(c as usize), t, min_per_id, None))
            .collect()
    }
}

/// f64 → u64 with the same order as `f64::total_cmp`.
fn sortable(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn unsortable(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// A target-ratio search result: the threshold or fraction, its kept count, K evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    pub value: f64,
    pub kept: usize,
    pub evaluations: usize,
    /// The target is below what the method can go down to (t = 1, or the per-identity floor).
    pub below_floor: bool,
    /// When no value reaches the target exactly: the other end of the final bracket, whose
    /// count lies on the other side of the target (K steps over it between the two values).
    pub step: Option<Step>,
}

/// One end of a bisection bracket: a threshold or fraction and its kept count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub value: f64,
    pub kept: usize,
}

/// The target is above the most the method can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    pub max_kept: usize,
}

fn gather(per_id: Vec<(Vec<u32>, WalkCount)>) -> (Vec<usize>, Tally, Vec<usize>) {
    let mut tally = Tally::default();
    let mut counts = Vec::with_capacity(per_id.len());
    let mut kept = Vec::with_capacity(per_id.iter().map(|p| p.0.len()).sum());
    for (pos, w) in per_id {
        tally.kept += w.kept;
        tally.retried += usize::from(w.retries > 0);
        counts.push(w.kept);
        kept.extend(pos.into_iter().map(|p| p as usize));
    }
    kept.par_sort_unstable();
    (kept, tally, counts)
}

/// Samples the chain at `tau` keeps from descending `vals` (the first is always kept); with `out`,
/// their indices into `vals` are pushed.
#[inline]
fn chain(vals: &[f64], tau: f64, out: Option<&mut Vec<u32>>) -> usize {
    let Some((&first, rest)) = vals.split_first() else {
        return 0;
    };
    let mut anchor = first;
    match out {
        None => {
            let mut kept = 1;
            for &v in rest {
                if anchor - v > tau {
                    kept += 1;
                    anchor = v;
                }
            }
            kept
        }
        Some(out) => {
            out.push(0);
            for (i, &v) in rest.iter().enumerate() {
                if anchor - v > tau {
                    out.push(i as u32 + 1);
                    anchor = v;
                }
            }
            out.len()
        }
    }
}

/// 1 + d after k retries: d = 0.0 decreased by 0.01 k times in f64, as the reference; up to the
/// first entry ≤ 0 (k = 100: 1 + d = −6.7e−16).
fn retry_factors() -> &'static [f64] {
    static FACTORS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    FACTORS.get_or_init(|| {
        let mut d = 0.0f64;
        let mut out = vec![1.0 + d];
        while 1.0 + d > 0.0 {
            d -= 0.01;
            out.push(1.0 + d);
        }
        out
    })
}

/// The DiffProb walk of one identity (values descending): thresholds t, 0.99t, 0.98t, ... (the
/// reference's repeated f64 subtraction of 0.01) until `min_per_id` samples are kept; all of
/// them when the identity is no larger than `min_per_id`, or when τ ≤ 0 still keeps too few (R9).
///
/// The reference's loop is `final = [top]; while len(final) < min_per_id: <walk>`, a while and not
/// a do-while: with `min_per_id` ≤ 1 the walk never runs and an identity with n > 1 keeps only its
/// top sample, whatever t (diffprob.md §2.6). For `min_per_id` ≥ 2 the first pass always runs.
///
/// The retries are not walked one by one: τ_k decreases with k and the chain count does not
/// increase with τ, so "pass k keeps enough" is monotone in k and the first such k is found by
/// galloping and bisection (the same k the sequential loop stops at).
pub fn walk(vals: &[f64], t: f64, min_per_id: usize, out: Option<&mut Vec<u32>>) -> WalkCount {
    let n = vals.len();
    let keep_all = |out: Option<&mut Vec<u32>>| {
        if let Some(out) = out {
            out.extend(0..n as u32);
        }
        n
    };
    if n <= min_per_id {
        return WalkCount {
            kept: keep_all(out),
            retries: 0,
        };
    }
    if min_per_id <= 1 {
        if let Some(out) = out {
            out.push(0);
        }
        return WalkCount {
            kept: 1,
            retries: 0,
        };
    }
    let factors = retry_factors();
    let tau = |k: usize| factors[k] * t;
    let enough = |k: usize| chain(vals, tau(k), None) >= min_per_id;
    let finish = |k: usize, out: Option<&mut Vec<u32>>| {
        let kept = chain(vals, tau(k), None);
        if kept < min_per_id {
            // Only reachable at τ ≤ 0 (R9).
            return WalkCount {
                kept: keep_all(out),
                retries: k,
            };
        }
        if let Some(out) = out {
            chain(vals, tau(k), Some(out));
        }
        WalkCount { kept, retries: k }
    };
    if tau(0) <= 0.0 || enough(0) {
        return finish(0, out);
    }
    // The last pass is the first with τ ≤ 0: it keeps every sample (τ < 0) or falls under R9.
    let last = factors.partition_point(|&f| f * t > 0.0);
    let (mut bad, mut step) = (0usize, 1usize);
    let good = loop {
        let k = (bad + step).min(last);
        if k == last || enough(k) {
            break k;
        }
        bad = k;
        step *= 2;
    };
    // enough(bad) is false, enough(good) is true (or good = last); find the first good.
    let (mut lo, mut hi) = (bad, good);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if enough(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    finish(hi, out)
}

/// DynUnc/Rand per-identity count: ⌊n·fraction⌋ (f64 product, truncated), raised to
/// `min_per_id` (or n when n ≤ `min_per_id`).
pub fn k_for(n: usize, fraction: f64, min_per_id: usize) -> usize {
    let k = (n as f64 * fraction) as usize;
    if k < min_per_id {
        if n > min_per_id {
            min_per_id
        } else {
            n
        }
    } else {
        k.min(n)
    }
}

/// Kept count of the k rule over identity sizes `sizes`.
pub fn count_fraction(sizes: &[usize], fraction: f64, min_per_id: usize) -> usize {
    sizes.iter().map(|&n| k_for(n, fraction, min_per_id)).sum()
}

/// The smallest fraction-rule count ≥ `target`: bisection on (0, 1] (K is non-decreasing in the
/// fraction); returns the fraction and its count.
pub fn search_fraction(
    sizes: &[usize],
    target: usize,
    min_per_id: usize,
) -> Result<Search, Unreachable> {
    let k1 = count_fraction(sizes, 1.0, min_per_id);
    if k1 < target {
        return Err(Unreachable { max_kept: k1 });
    }
    let k0 = count_fraction(sizes, 0.0, min_per_id);
    if k0 >= target {
        return Ok(Search {
            value: 0.0,
            kept: k0,
            evaluations: 2,
            below_floor: true,
            step: None,
        });
    }
    let (mut lo, mut hi, mut k_hi, mut k_lo) = (0.0f64, 1.0f64, k1, k0);
    let mut evaluations = 2;
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        let k = count_fraction(sizes, mid, min_per_id);
        evaluations += 1;
        if k == target {
            return Ok(Search {
                value: mid,
                kept: k,
                evaluations,
                below_floor: false,
                step: None,
            });
        }
        if k < target {
            lo = mid;
            k_lo = k;
        } else {
            hi = mid;
            k_hi = k;
        }
    }
    Ok(Search {
        value: hi,
        kept: k_hi,
        evaluations,
        below_floor: false,
        step: Some(Step {
            value: lo,
            kept: k_lo,
        }),
    })
}

/// The reference's "Rand" (coreset_rand.py): the last k positions of each identity.
pub fn last_k(ids: &Identities, fraction: f64, min_per_id: usize) -> (Vec<usize>, Vec<usize>) {
    let mut kept = Vec::new();
    let mut counts = Vec::with_capacity(ids.classes());
    for c in 0..ids.classes() {
        let m = ids.members(c);
        let k = k_for(m.len(), fraction, min_per_id);
        kept.extend(m[m.len() - k..].iter().map(|&p| p as usize));
        counts.push(k);
    }
    kept.sort_unstable();
    (kept, counts)
}

/// `method: rand` keys (R5): one uniform draw in [0, 1) per sample, from a ChaCha8 generator
/// seeded by `seed` on stream = identity id, over the identity's positions ascending; so an
/// identity's keys (and the k-subset its top k form) do not depend on any other identity.
pub fn rand_keys(ids: &Identities, n: usize, seed: u64) -> Vec<f64> {
    let per_id: Vec<Vec<f64>> = (0..ids.classes())
        .into_par_iter()
        .with_min_len(64)
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64);
            ids.members(c).iter().map(|_| rng.gen::<f64>()).collect()
        })
        .collect();
    let mut keys = vec![0.0; n];
    for (c, ks) in per_id.into_iter().enumerate() {
        for (&p, k) in ids.members(c).iter().zip(ks) {
            keys[p as usize] = k;
        }
    }
    keys
}

#[cfg(test)]
mod tests;
