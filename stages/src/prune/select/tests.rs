//! Tests of [`super`]: the walk, the searches and their brackets, against plain oracles.

use super::*;
use crate::prune::inputs::Labels;
use proptest::prelude::*;

/// The reference rules written plainly: per identity, a fresh sort and a scan (the
/// reference's `while len(final) < min` as a do-while, §2.6).
fn plain_diffprob(labels: &[i64], values: &[f64], flags: &[u8], t: f64, min: usize) -> Vec<usize> {
    let c = labels.iter().max().map_or(0, |m| *m + 1);
    let mut keep = Vec::new();
    for id in 0..c {
        let mut s: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] == id && flags[i] == 0)
            .collect();
        s.sort_by(|&a, &b| values[a].partial_cmp(&values[b]).unwrap().then(a.cmp(&b)));
        if s.len() <= min {
            keep.extend(s);
            continue;
        }
        // The reference: `final = [top]; while len(final) < min: <walk>` (+ R9).
        let mut d = 0.0f64;
        let mut fin = vec![s[s.len() - 1]];
        while fin.len() < min {
            let tau = (1.0 + d) * t;
            fin = vec![s[s.len() - 1]];
            let mut anchor = values[s[s.len() - 1]];
            for j in (0..s.len() - 1).rev() {
                if anchor - values[s[j]] > tau {
                    fin.push(s[j]);
                    anchor = values[s[j]];
                }
            }
            if fin.len() < min && tau <= 0.0 {
                fin.clone_from(&s);
                break;
            }
            d -= 0.01;
        }
        keep.extend(fin);
    }
    keep.sort_unstable();
    keep
}

fn plain_topk(
    labels: &[i64],
    values: &[f64],
    flags: &[u8],
    fraction: f64,
    min: usize,
) -> Vec<usize> {
    let c = labels.iter().max().map_or(0, |m| *m + 1);
    let mut keep = Vec::new();
    for id in 0..c {
        let mut s: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] == id && flags[i] == 0)
            .collect();
        s.sort_by(|&a, &b| values[a].partial_cmp(&values[b]).unwrap().then(a.cmp(&b)));
        let mut k = (s.len() as f64 * fraction) as usize;
        if k < min {
            k = if s.len() > min { min } else { s.len() };
        }
        keep.extend(s[s.len() - k..].iter().copied());
    }
    keep.sort_unstable();
    keep
}

fn plain_last_k(labels: &[i64], flags: &[u8], fraction: f64, min: usize) -> Vec<usize> {
    let pos: Vec<f64> = (0..labels.len()).map(|i| i as f64).collect();
    plain_topk(labels, &pos, flags, fraction, min)
}

/// Labels with every identity present, distinct values, and some flags.
fn case() -> impl Strategy<Value = (Vec<i64>, Vec<f64>, Vec<u8>)> {
    (1usize..12, 1usize..160).prop_flat_map(|(c, extra)| {
        let n = c + extra;
        (
            proptest::collection::vec(0..c as i64, extra),
            proptest::collection::vec(0.0f64..1.0, n),
            proptest::collection::vec(prop_oneof![9 => Just(0u8), 1 => Just(1u8)], n),
            Just(c),
        )
            .prop_map(|(mut labels, mut vals, flags, c)| {
                labels.extend(0..c as i64);
                // Distinct values (R3: parity needs them); a coarse grid makes gaps near t likely.
                let mut seen = std::collections::HashSet::new();
                for (i, v) in vals.iter_mut().enumerate() {
                    *v = (*v * 64.0).floor() / 64.0 + i as f64 * 1e-9;
                    assert!(seen.insert(v.to_bits()));
                }
                (labels, vals, flags)
            })
    })
}

fn ranked(labels: &[i64], vals: &[f64], flags: &[u8]) -> (Identities, Ranked) {
    let l = Labels::new(labels, None, "t").unwrap();
    let ids = Identities::new(&l, Some(flags));
    let r = Ranked::new(&ids, vals);
    (ids, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn diffprob_matches_the_plain_rules((labels, vals, flags) in case(), t in prop_oneof![Just(0.0), 0.0f64..0.2, Just(1.0)], min in 1usize..8) {
        let (_, r) = ranked(&labels, &vals, &flags);
        let (kept, tally, counts) = r.select(t, min);
        prop_assert_eq!(&kept, &plain_diffprob(&labels, &vals, &flags, t, min));
        prop_assert_eq!(tally.kept, kept.len());
        prop_assert_eq!(r.count(t, min), tally);
        prop_assert_eq!(counts.iter().sum::<usize>(), kept.len());
    }

    #[test]
    fn diffprob_invariants((labels, vals, flags) in case(), t in 0.0f64..0.3, min in 1usize..8) {
        let (ids, r) = ranked(&labels, &vals, &flags);
        let (kept, _, counts) = r.select(t, min);
        // kept ⊆ clean samples
        prop_assert!(kept.iter().all(|&k| flags[k] == 0));
        // ≥ min per identity unless the identity has fewer; never more than it has
        for (c, &k) in counts.iter().enumerate() {
            let n = ids.members(c).len();
            prop_assert!(k >= n.min(min) && k <= n);
        }
        // kept count non-increasing in the threshold (no retry with min = 1)
        let k_a = r.count(t, 1).kept;
        let k_b = r.count(t * 1.5 + 1e-3, 1).kept;
        prop_assert!(k_b <= k_a);
    }

    #[test]
    fn topk_and_reference_rand_match_the_plain_rules((labels, vals, flags) in case(), f in prop_oneof![Just(0.25), Just(0.5), Just(0.75), 0.01f64..1.0, Just(1.0)], min in 1usize..8) {
        let (ids, r) = ranked(&labels, &vals, &flags);
        let (kept, counts) = r.top_k(f, min);
        prop_assert_eq!(&kept, &plain_topk(&labels, &vals, &flags, f, min));
        prop_assert_eq!(counts.iter().sum::<usize>(), kept.len());
        prop_assert_eq!(last_k(&ids, f, min).0, plain_last_k(&labels, &flags, f, min));
        prop_assert!(kept.iter().all(|&k| flags[k] == 0));
    }

    #[test]
    fn threshold_search_finds_the_smallest_reachable_count((labels, vals, flags) in case(), r_target in 0.05f64..1.0) {
        // With min_per_id = 1 K(t) is a step function that only changes at a gap between two
        // values of one identity: try every gap and just below it.
        let (ids, r) = ranked(&labels, &vals, &flags);
        let target = ((r_target * ids.total() as f64).ceil() as usize).max(1);
        let mut reachable = vec![r.count(0.0, 1).kept, r.count(1.0, 1).kept];
        for c in 0..ids.classes() {
            let v = r.values(c);
            for a in 0..v.len() {
                for b in a + 1..v.len() {
                    let g = v[a] - v[b];
                    reachable.push(r.count(g, 1).kept);
                    reachable.push(r.count(f64::from_bits(g.to_bits().saturating_sub(1)), 1).kept);
                }
            }
        }
        let best = reachable.iter().copied().filter(|&k| k >= target).min();
        match r.search_threshold(target, 1) {
            Ok(s) => {
                prop_assert_eq!(r.count(s.value, 1).kept, s.kept);
                prop_assert!(s.kept >= target);
                if !s.below_floor {
                    prop_assert_eq!(Some(s.kept), best);
                }
            }
            Err(u) => prop_assert!(u.max_kept < target && best.is_none()),
        }
    }

    #[test]
    fn threshold_search_equals_the_plain_bisection((labels, vals, flags) in case(), r_target in 0.05f64..1.0, min in 1usize..7) {
        // R4 written plainly: every K(mid) a full pass over all identities.
        let (ids, r) = ranked(&labels, &vals, &flags);
        let target = ((r_target * labels.len() as f64).ceil() as usize).max(1);
        let k = |t: f64| r.count(t, min).kept;
        let plain = if k(0.0) < target {
            None
        } else if k(1.0) >= target {
            Some(1.0)
        } else {
            let (mut lo, mut hi) = (0.0f64, 1.0f64);
            let mut found = None;
            for _ in 0..64 {
                let mid = (lo + hi) / 2.0;
                let km = k(mid);
                if km == target {
                    found = Some(mid);
                    break;
                }
                if km > target { lo = mid } else { hi = mid }
            }
            Some(found.unwrap_or(lo))
        };
        prop_assert_eq!(r.search_threshold(target, min).ok().map(|s| s.value), plain);
        prop_assert!(ids.total() <= labels.len());
    }

    #[test]
    fn threshold_search_keeps_the_bracket_with_the_retry_floor((labels, vals, flags) in case(), r_target in 0.05f64..1.0, min in 2usize..7) {
        let (ids, r) = ranked(&labels, &vals, &flags);
        let target = ((r_target * labels.len() as f64).ceil() as usize).max(1);
        match r.search_threshold(target, min) {
            Ok(s) => {
                prop_assert!(s.kept >= target && r.count(s.value, min).kept == s.kept);
                // More than the target only at the floor, or where K steps over it.
                match s.step {
                    None => prop_assert!(s.kept == target || s.below_floor),
                    Some(st) => prop_assert!(
                        st.value > s.value && st.kept < target && r.count(st.value, min).kept == st.kept
                    ),
                }
            }
            Err(u) => prop_assert!(u.max_kept < target && u.max_kept == r.count(0.0, min).kept && ids.total() >= u.max_kept),
        }
    }

    #[test]
    fn fraction_search_finds_the_smallest_reachable_count(sizes in proptest::collection::vec(0usize..60, 1..30), r_target in 0.0f64..1.0, min in 1usize..7) {
        let total: usize = sizes.iter().sum();
        let target = (r_target * total as f64).ceil() as usize;
        let mut reachable = vec![count_fraction(&sizes, 0.0, min), count_fraction(&sizes, 1.0, min)];
        for &n in &sizes {
            for j in 1..=n {
                let f = j as f64 / n as f64;
                for g in [f, f64::from_bits(f.to_bits() - 1), f64::from_bits(f.to_bits() + 1)] {
                    if g <= 1.0 {
                        reachable.push(count_fraction(&sizes, g, min));
                    }
                }
            }
        }
        let best = reachable.iter().copied().filter(|&k| k >= target).min();
        match search_fraction(&sizes, target, min) {
            Ok(s) => {
                prop_assert_eq!(count_fraction(&sizes, s.value, min), s.kept);
                prop_assert_eq!(Some(s.kept), best);
                match s.step {
                    None => prop_assert!(s.kept == target || s.below_floor),
                    Some(st) => prop_assert!(
                        st.value < s.value && st.kept < target && count_fraction(&sizes, st.value, min) == st.kept
                    ),
                }
            }
            Err(u) => prop_assert!(u.max_kept < target && best.is_none()),
        }
    }
}

#[test]
fn walk_retries_lower_the_threshold_by_one_percent_steps() {
    // Gaps of 0.1: t = 0.105 down to 0.96t keep every other value (3 < 5); the fifth retry,
    // 0.95t = 0.09975, is below every gap and keeps all six.
    let v = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
    assert_eq!(
        walk(&v, 0.105, 5, None),
        WalkCount {
            kept: 6,
            retries: 5
        }
    );
    let mut idx = Vec::new();
    walk(&v, 0.15, 3, Some(&mut idx));
    assert_eq!(idx, vec![0, 2, 4]);
    // t = 0 with ties: never enough distinct values, so everything is kept (R9).
    assert_eq!(
        walk(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 0.0, 5, None),
        WalkCount {
            kept: 6,
            retries: 0
        }
    );
    // t > 0 with ties: the 101st pass has τ < 0 and keeps everything, as the reference.
    assert_eq!(
        walk(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 0.3, 5, None),
        WalkCount {
            kept: 6,
            retries: 100
        }
    );
}

#[test]
fn min_per_id_one_keeps_only_the_top_sample_as_the_reference_while_loop() {
    // labels [0,0,0], p [0.9,0.5,0.1], t = 0.1: the walk never runs, only the top is kept.
    let mut idx = Vec::new();
    let w = walk(&[0.9, 0.5, 0.1], 0.1, 1, Some(&mut idx));
    assert_eq!(
        (w, idx),
        (
            WalkCount {
                kept: 1,
                retries: 0
            },
            vec![0]
        )
    );
    assert_eq!(walk(&[0.9, 0.5, 0.1], 0.0, 1, None).kept, 1);
    assert_eq!(walk(&[0.9], 0.1, 1, None).kept, 1);
    assert_eq!(walk(&[], 0.1, 1, None).kept, 0);
    // min 2: the first pass runs (0.9 -> 0.5 -> 0.1 at t = 0.1).
    assert_eq!(walk(&[0.9, 0.5, 0.1], 0.1, 2, None).kept, 3);
}

#[test]
fn k_rule_follows_the_reference() {
    assert_eq!(k_for(100, 0.5, 5), 50);
    assert_eq!(k_for(8, 0.25, 5), 5);
    assert_eq!(k_for(4, 0.25, 5), 4);
    assert_eq!(k_for(0, 0.25, 5), 0);
    assert_eq!(k_for(10, 1.0, 5), 10);
}

#[test]
fn rand_keys_of_an_identity_do_not_depend_on_the_others() {
    let a = Labels::new(&[0, 1, 0, 1, 0], None, "a").unwrap();
    let b = Labels::new(&[0, 2, 0, 1, 0, 1, 1], None, "b").unwrap();
    let ka = rand_keys(&Identities::new(&a, None), 5, 7);
    let kb = rand_keys(&Identities::new(&b, None), 7, 7);
    assert_eq!([ka[0], ka[2], ka[4]], [kb[0], kb[2], kb[4]]);
    assert_ne!(ka, rand_keys(&Identities::new(&a, None), 5, 8));
}
