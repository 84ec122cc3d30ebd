//! Training-loss curves of the report: one per training stage instance (the `train` kind's
//! `loss_per_epoch`), averaged over the `report.aggregate` axes (one curve per method and ratio
//! of a sweep, not one per seed).

use super::*;

/// A training stage's mean loss per epoch over its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct LossCurve {
    /// The stage and the row's axis values, e.g. `retrain rand 0.5`.
    pub label: String,
    /// The instance's matrix cell without the aggregated axes.
    pub cell: BTreeMap<String, String>,
    /// Mean loss of each epoch (1, 2, …) over the repeats that reached it.
    pub loss: Vec<f64>,
    /// How many repeats the curve averages.
    pub n: usize,
}

/// The loss curves of every `train` instance with a current result, in pipeline order.
pub fn loss_curves(s: &Sources) -> Vec<LossCurve> {
    // (stage, cell without the aggregated axes) -> the repeats' per-epoch losses.
    type Key = (String, BTreeMap<String, String>);
    let mut groups: Vec<(Key, Vec<Vec<f64>>)> = Vec::new();
    for src in s.results.iter().filter(|r| r.kind == "train") {
        let Some(cur) = &src.result else { continue };
        let Some(loss) = cur.metrics.get("loss_per_epoch").and_then(|l| l.as_array()) else {
            continue;
        };
        let loss: Vec<f64> = loss.iter().filter_map(|x| x.as_f64()).collect();
        let mut cell = src.cell.clone();
        cell.retain(|k, _| !s.aggregate.contains(k));
        let key = (src.stage.clone(), cell);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(loss),
            None => groups.push((key, vec![loss])),
        }
    }
    groups
        .into_iter()
        .map(|((stage, cell), runs)| {
            let epochs = runs.iter().map(Vec::len).max().unwrap_or(0);
            let loss = (0..epochs)
                .map(|e| {
                    let xs: Vec<f64> = runs.iter().filter_map(|r| r.get(e).copied()).collect();
                    xs.iter().sum::<f64>() / xs.len() as f64
                })
                .collect();
            let label = std::iter::once(stage)
                .chain(s.axes.iter().filter_map(|a| cell.get(a).cloned()))
                .collect::<Vec<_>>()
                .join(" ");
            LossCurve {
                label,
                cell,
                loss,
                n: runs.len(),
            }
        })
        .collect()
}
