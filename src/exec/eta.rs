//! The run's overall progress for the live view: counts and an ETA from recorded durations.
//!
//! How long an instance is expected to take ([`expected`]): its own last recorded duration
//! (the manifest of its previous fingerprint), else the median of the durations known for its
//! stage (its other instances' recorded durations and those finished in this run), else
//! unknown. The ETA ([`eta`]) is the larger of the longest remaining chain of the DAG and the
//! remaining work spread over the run's slots (`--jobs` plus the GPUs), both over what is left
//! of each instance (a running one: its expected duration less the time it has run, floored at
//! 0). It is absent while any instance still to run has no expected duration.

use std::collections::HashMap;
use std::time::Duration;

/// What the live view shows about the whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overall {
    /// Instances that are done (ran or cached).
    pub done: usize,
    pub total: usize,
    pub running: usize,
    pub failed: usize,
    pub skipped: usize,
    pub eta: Option<Duration>,
}

impl Overall {
    /// `3/8 done, 1 running, 0 failed, ETA 12.0s` (skipped only when some are).
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}/{} done, {} running, {} failed",
            self.done, self.total, self.running, self.failed
        );
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        if let Some(e) = self.eta {
            s.push_str(&format!(", ETA {}", super::view::fmt_duration(e)));
        }
        s
    }
}

/// The median of `xs` (the mean of the two middle values for an even count); `None` if empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    // Selection, not a sort: linear in the number of durations.
    let mut v = xs.to_vec();
    let n = v.len();
    let (below, &mut upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    Some(if n % 2 == 1 {
        upper
    } else {
        let lower = below
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .expect("n >= 2");
        (lower + upper) / 2.0
    })
}

/// Expected seconds per instance: `own[i]` when recorded, else the median of what is known for
/// its stage (`stage[i]`): every `own` of that stage plus `finished` (durations of its
/// instances finished in this run), else `None`.
pub fn expected(
    stage: &[&str],
    own: &[Option<f64>],
    finished: &HashMap<String, Vec<f64>>,
) -> Vec<Option<f64>> {
    let mut known: HashMap<&str, Vec<f64>> = HashMap::new();
    for (s, d) in stage.iter().zip(own) {
        if let Some(d) = d {
            known.entry(s).or_default().push(*d);
        }
    }
    for (s, ds) in finished {
        known.entry(s.as_str()).or_default().extend(ds);
    }
    let medians: HashMap<&str, Option<f64>> =
        known.iter().map(|(s, ds)| (*s, median(ds))).collect();
    stage
        .iter()
        .zip(own)
        .map(|(s, d)| d.or_else(|| medians.get(s).copied().flatten()))
        .collect()
}

/// The ETA in seconds from what is left per instance (`Some(0.0)` for one that is settled,
/// `None` when unknown), the longest chain of what is left, and the slots that run in parallel;
/// `None` when anything left is unknown.
pub fn eta(left: &[Option<f64>], longest_chain: f64, slots: usize) -> Option<f64> {
    let mut work = 0.0;
    for l in left {
        work += (*l)?;
    }
    Some(longest_chain.max(work / slots.max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[9.0, 1.0, 4.0]), Some(4.0));
        assert_eq!(median(&[4.0, 1.0, 10.0, 2.0]), Some(3.0));
    }

    #[test]
    fn expected_prefers_own_then_stage_median_else_unknown() {
        let stage = ["train", "train", "train", "eval", "report"];
        let own = [Some(10.0), None, Some(30.0), None, None];
        let mut finished = HashMap::new();
        finished.insert("train".to_string(), vec![14.0]);
        finished.insert("eval".to_string(), vec![2.0, 4.0]);
        let e = expected(&stage, &own, &finished);
        // train: own where recorded; the other takes the median of 10, 30 and 14.
        assert_eq!(e, vec![Some(10.0), Some(14.0), Some(30.0), Some(3.0), None]);
    }

    #[test]
    fn eta_is_the_longer_of_the_chain_and_the_work_per_slot() {
        // 4 x 10 s on 2 slots: 20 s of work each; the chain is 10 s.
        assert_eq!(eta(&[Some(10.0); 4], 10.0, 2), Some(20.0));
        // A 30 s chain dominates 40 s of work over 4 slots.
        assert_eq!(eta(&[Some(10.0); 4], 30.0, 4), Some(30.0));
        // Settled instances count nothing; zero slots count as one.
        assert_eq!(eta(&[Some(0.0), Some(6.0)], 6.0, 0), Some(6.0));
        // Anything unknown: no ETA.
        assert_eq!(eta(&[Some(10.0), None], 10.0, 2), None);
        assert_eq!(eta(&[], 0.0, 1), Some(0.0));
    }

    #[test]
    fn overall_renders_counts_and_eta_when_known() {
        let mut o = Overall {
            done: 3,
            total: 8,
            running: 1,
            ..Overall::default()
        };
        assert_eq!(o.render(), "3/8 done, 1 running, 0 failed");
        o.eta = Some(Duration::from_secs(75));
        o.skipped = 2;
        assert_eq!(
            o.render(),
            "3/8 done, 1 running, 0 failed, 2 skipped, ETA 1m15s"
        );
    }
}
