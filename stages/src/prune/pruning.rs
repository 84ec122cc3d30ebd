//! The `prune` stage (diffprob.md §2.6): reads a `scores/` folder, the labels and optional clean
//! flags, applies the rule of the scores' method ([`Rule`]) with a threshold, a fraction or a
//! target ratio (R4), and writes `kept.txt` / `kept.npy` with its metrics.

use anyhow::{bail, Result};
use serde_json::json;

use super::inputs::{self, Identities};
use super::score;
use super::select::{self, Ranked, Search, Unreachable};
use crate::kinds::prune::{PruneParams, RandOrder, ScoreMethod};
use crate::Invocation;

/// How much to keep, resolved from the params.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Threshold(f64),
    Fraction(f64),
    /// Kept / N with N = the full dataset (flags included).
    TargetRatio(f64),
}

/// The selection rule of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// DiffProb walk on p.
    DiffProb,
    /// The k highest scores per identity (DynUnc; `rand` with `order: random`).
    TopK,
    /// The last k positions per identity (`rand` with `order: reference`).
    LastK,
}

/// Result of one selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub kept: Vec<usize>,
    /// Kept count of each identity.
    pub per_id: Vec<usize>,
    /// The threshold (DiffProb) or fraction (k rule) used.
    pub value: f64,
    pub retried: usize,
    pub search: Option<Search>,
    pub target: Option<usize>,
}

/// Run `rule` over `ids` (flagged samples already removed); `n` = full dataset size.
pub fn select(
    rule: Rule,
    ids: &Identities,
    scores: &[f64],
    amount: Amount,
    min_per_id: usize,
    n: usize,
) -> Result<Selection> {
    let target = match amount {
        Amount::TargetRatio(r) => Some(((r * n as f64).ceil() as usize).min(n)),
        _ => None,
    };
    let unreachable = |u: Unreachable, t: usize| {
        anyhow::anyhow!(
            "target ratio {:.6} ({t} of {n} samples) is unreachable: at most {} samples ({:.6}) can be kept{}",
            t as f64 / n as f64,
            u.max_kept,
            u.max_kept as f64 / n as f64,
            if rule == Rule::DiffProb { " (t = 0 keeps one sample per distinct value)" } else { " (flagged samples are removed)" }
        )
    };
    match rule {
        Rule::DiffProb => {
            let ranked = Ranked::new(ids, scores);
            let (t, search) = match amount {
                Amount::Threshold(t) => (t, None),
                Amount::TargetRatio(_) => {
                    let tg = target.unwrap_or(0);
                    let s = ranked
                        .search_threshold(tg, min_per_id)
                        .map_err(|u| unreachable(u, tg))?;
                    (s.value, Some(s))
                }
                Amount::Fraction(_) => {
                    bail!("DiffProb scores take `threshold` or `target_ratio`, not `fraction`")
                }
            };
            let (kept, tally, per_id) = ranked.select(t, min_per_id);
            Ok(Selection {
                kept,
                per_id,
                value: t,
                retried: tally.retried,
                search,
                target,
            })
        }
        Rule::TopK | Rule::LastK => {
            let sizes: Vec<usize> = (0..ids.classes()).map(|c| ids.members(c).len()).collect();
            let (f, search) = match amount {
                Amount::Fraction(f) => (f, None),
                Amount::TargetRatio(_) => {
                    let tg = target.unwrap_or(0);
                    let s = select::search_fraction(&sizes, tg, min_per_id)
                        .map_err(|u| unreachable(u, tg))?;
                    (s.value, Some(s))
                }
                Amount::Threshold(_) => bail!(
                    "DynUnc and Rand scores take `fraction` or `target_ratio`, not `threshold`"
                ),
            };
            let (kept, per_id) = if rule == Rule::TopK {
                Ranked::new(ids, scores).top_k(f, min_per_id)
            } else {
                select::last_k(ids, f, min_per_id)
            };
            Ok(Selection {
                kept,
                per_id,
                value: f,
                retried: 0,
                search,
                target,
            })
        }
    }
}

/// The `prune` stage.
pub fn run(inv: &Invocation) -> Result<serde_json::Value> {
    let p: PruneParams = inv.params()?;
    let amount = amount(&p, &inv.stage_id)?;
    let min_per_id = p.min_per_id as usize;
    if min_per_id == 0 {
        bail!("stage `{}`: min_per_id must be at least 1", inv.stage_id);
    }
    let (meta, mut scores, scores_name) = score::read_scores(inv.input("scores")?)?;
    let labels = inputs::load_labels(inv)?;
    labels.check_len(scores.len(), &scores_name)?;
    let flags = match inv.opt_input("flags") {
        Some(path) => Some(inputs::load_flags(path, &labels)?),
        None => None,
    };
    let n = labels.len();
    let rule = match (meta.method, p.order) {
        (ScoreMethod::Diffprob, _) => Rule::DiffProb,
        (ScoreMethod::Dynunc, _) => Rule::TopK,
        (ScoreMethod::Rand, RandOrder::Random) => Rule::TopK,
        (ScoreMethod::Rand, RandOrder::Reference) => Rule::LastK,
    };
    if meta.method == ScoreMethod::Diffprob {
        inputs::check_probabilities(&scores, &scores_name)?;
    }
    if rule == Rule::TopK && meta.method == ScoreMethod::Rand && p.seed != 0 {
        // A prune-level seed redraws the keys, so one score stage serves a sweep over seeds.
        scores = select::rand_keys(&Identities::new(&labels, None), n, p.seed);
    }
    let ids = Identities::new(&labels, flags.as_deref());
    let sel = select(rule, &ids, &scores, amount, min_per_id, n)
        .map_err(|e| anyhow::anyhow!("stage `{}`: {e}", inv.stage_id))?;
    inputs::write_kept_outputs(inv, &sel.kept)?;
    let warnings = search_warnings(&sel, rule, min_per_id);
    let m = metrics(&p, meta.method, rule, &ids, n, &sel, &warnings);
    for w in &warnings {
        inv.progress().message(&format!("warning: {w}"));
    }
    Ok(m)
}

/// The one amount the params set (threshold, fraction or target ratio), checked.
fn amount(p: &PruneParams, stage_id: &str) -> Result<Amount> {
    Ok(match (p.threshold, p.fraction, p.target_ratio) {
        (Some(t), None, None) => {
            if !(t >= 0.0 && t.is_finite()) {
                bail!("stage `{stage_id}`: threshold must be a finite number >= 0, got {t}");
            }
            Amount::Threshold(t)
        }
        (None, Some(f), None) => {
            if !(f > 0.0 && f <= 1.0) {
                bail!("stage `{stage_id}`: fraction must be in (0, 1], got {f}");
            }
            Amount::Fraction(f)
        }
        (None, None, Some(r)) => {
            if !(r > 0.0 && r <= 1.0) {
                bail!("stage `{stage_id}`: target_ratio must be in (0, 1], got {r}");
            }
            Amount::TargetRatio(r)
        }
        _ => {
            bail!("stage `{stage_id}`: set exactly one of `threshold`, `fraction`, `target_ratio`")
        }
    })
}

/// The name of the value a rule selects by, in metrics and warnings.
fn value_key(rule: Rule) -> &'static str {
    if rule == Rule::DiffProb {
        "threshold"
    } else {
        "fraction"
    }
}

/// What a target-ratio search could not do: reach below the floor, or hit the target exactly.
fn search_warnings(sel: &Selection, rule: Rule, min_per_id: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(s) = sel.search {
        if s.below_floor {
            warnings.push(format!(
                "target below the floor: the smallest selection keeps {} samples (min_per_id = {min_per_id} per identity)",
                s.kept
            ));
        }
        if let Some(step) = s.step {
            warnings.push(format!(
                "target not reachable exactly: the kept count steps from {} ({key} = {}) to {} ({key} = {}); kept {}",
                s.kept,
                s.value,
                step.kept,
                step.value,
                s.kept,
                key = value_key(rule),
            ));
        }
    }
    warnings
}

/// The stage's metrics: what was kept, overall and per identity, by which rule and value.
fn metrics(
    p: &PruneParams,
    method: ScoreMethod,
    rule: Rule,
    ids: &Identities,
    n: usize,
    sel: &Selection,
    warnings: &[String],
) -> serde_json::Value {
    let flagged = n - ids.total();
    let classes = ids.classes();
    let kept_ids = sel.per_id.iter().filter(|&&k| k > 0).count();
    let mut counts: Vec<usize> = sel.per_id.iter().copied().filter(|&k| k > 0).collect();
    counts.sort_unstable();
    let ratio = if n == 0 {
        0.0
    } else {
        sel.kept.len() as f64 / n as f64
    };
    let method = match rule {
        Rule::DiffProb => "diffprob",
        Rule::TopK if method == ScoreMethod::Dynunc => "dynunc",
        Rule::TopK => "rand",
        Rule::LastK => "rand-reference",
    };
    let mut m = json!({
        "method": method,
        "kept": sel.kept.len(),
        "n": n,
        "ratio": ratio,
        "flagged_removed": flagged,
        "min_per_id": p.min_per_id as usize,
        "identities": classes,
        "identities_kept": kept_ids,
        "identities_lost": classes - kept_ids,
        "identities_retried": sel.retried,
        "per_identity": {
            "min": counts.first().copied().unwrap_or(0),
            "median": counts.get(counts.len() / 2).copied().unwrap_or(0),
            "max": counts.last().copied().unwrap_or(0),
            "mean": if counts.is_empty() { 0.0 } else { sel.kept.len() as f64 / counts.len() as f64 },
        },
        "warnings": warnings,
    });
    m[value_key(rule)] = json!(sel.value);
    if let (Some(t), Some(s)) = (sel.target, sel.search) {
        m["target_ratio"] = json!(p.target_ratio);
        m["target"] = json!(t);
        m["search_evaluations"] = json!(s.evaluations);
        if let Some(step) = s.step {
            m["search_step"] = json!({ "value": step.value, "kept": step.kept });
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::inputs::Labels;

    #[test]
    fn unreachable_targets_and_wrong_amounts_are_clear_errors() {
        // Ties: t = 0 keeps one sample per distinct value, so at most 3 of 6 here.
        let labels = Labels::new(&[0, 0, 0, 0, 0, 0], None, "l").unwrap();
        let ids = Identities::new(&labels, None);
        let v = [0.5, 0.5, 0.25, 0.25, 0.125, 0.125];
        let e = select(Rule::DiffProb, &ids, &v, Amount::TargetRatio(0.8), 2, 6)
            .unwrap_err()
            .to_string();
        assert!(e.contains("target ratio 0.833333 (5 of 6 samples) is unreachable: at most 3 samples (0.500000)"), "{e}");
        let s = select(Rule::DiffProb, &ids, &v, Amount::TargetRatio(0.5), 2, 6).unwrap();
        assert_eq!(s.kept.len(), 3);
        let e = select(Rule::TopK, &ids, &v, Amount::Threshold(0.1), 2, 6)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("take `fraction` or `target_ratio`, not `threshold`"),
            "{e}"
        );
        let e = select(Rule::DiffProb, &ids, &v, Amount::Fraction(0.5), 2, 6)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("take `threshold` or `target_ratio`, not `fraction`"),
            "{e}"
        );
        // Flags shrink what the k rule can reach; the ratio stays relative to the full N.
        let flagged = Identities::new(&labels, Some(&[1, 1, 0, 0, 0, 0]));
        let e = select(Rule::LastK, &flagged, &v, Amount::TargetRatio(1.0), 2, 6)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 4 samples (0.666667)"), "{e}");
    }
}
