//! The columns one stage instance's metrics give a report row ([`absorb`]), by its kind, and
//! their order.

use super::*;

/// The warning a `prune` stage gives when its target is below what the per-identity floor
/// (`min_per_id`) allows: it then keeps more than the target.
pub const BELOW_FLOOR: &str = "target below the floor";

/// How far above its target a prune's kept ratio may be and still count as at the target
/// (half a percentage point of the data). Rand and DynUnc keep ⌊n · fraction⌋ of each identity,
/// so their kept count moves in steps (at a fraction of 0.5 every identity of even size gains a
/// sample at once) and the floor of `min_per_id` adds to it: the nearest count at or above a
/// target can be well above it. A cell that far above keeps materially more data than the cells
/// it would be ranked against.
pub const OVER_TARGET: f64 = 0.005;

/// Whether a prune's metrics say it kept more than its target: the floor warning, or a kept
/// ratio [`OVER_TARGET`] or more above `target_ratio`.
fn kept_over_target(m: &serde_json::Value, warnings: &[String]) -> bool {
    let stepped = match (num(m, "ratio"), num(m, "target_ratio")) {
        (Some(kept), Some(target)) => kept - target >= OVER_TARGET - 1e-12,
        _ => false,
    };
    stepped || warnings.iter().any(|w| w.starts_with(BELOW_FLOOR))
}

/// One column value an instance contributes: key, title, accuracy-like, value.
type Put = (String, String, bool, Option<f64>);

/// Add the columns one instance's metrics contribute, its warnings (the `warnings` list of its
/// metrics.json, any stage), and for a `prune` that kept more than its target
/// ([`kept_over_target`]) the mark that says so.
pub(super) fn absorb(src: &Source, cur: &Current, row: &mut Row, columns: &mut Vec<Column>) {
    let (kind, id) = (src.kind.as_str(), src.id.as_str());
    let m = &cur.metrics;
    if kind == "ijbc" {
        if let Some(p) = &cur.roc_csv {
            row.roc_csv = Some(p.clone());
            row.roc_auc = m.get("auc").and_then(|a| a.as_f64());
        }
        if let Some(n) = m.get("impostor_pairs").and_then(|n| n.as_f64()) {
            row.far_floor = (n > 0.0).then(|| 1.0 / n);
        }
    }
    let warnings = stage_warnings(m);
    if kind == "prune" && kept_over_target(m, &warnings) {
        row.over_target = true;
    }
    for w in warnings {
        row.warnings.push(format!("{id}: {w}"));
    }
    let has_ids = row.values.contains_key("identities");
    let puts: Vec<Put> = match kind {
        "prune" => prune_columns(m),
        "train" => train_columns(m, cur.duration_s, has_ids),
        "verify" => verify_columns(m),
        "ijbc" => ijbc_columns(m),
        "run" => {
            // A shell stage's metrics.json: every number, nested keys joined with `.`.
            let mut flat = Vec::new();
            flatten_numbers("", m, &mut flat);
            flat.into_iter()
                .map(|(k, v)| {
                    let key = format!("{}.{k}", src.stage);
                    (key, format!("{} {k}", src.stage), false, Some(v))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    for (key, title, score, v) in puts {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            continue;
        };
        if !columns.iter().any(|c| c.key == key) {
            columns.push(Column {
                key: key.clone(),
                title,
                score,
            });
        }
        row.sources.insert(key.clone(), id.to_string());
        row.values.insert(key, v);
    }
}

/// The `warnings` strings of a stage's metrics.json (none when absent).
pub fn stage_warnings(metrics: &serde_json::Value) -> Vec<String> {
    metrics
        .get("warnings")
        .and_then(|w| w.as_array())
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn num(m: &serde_json::Value, key: &str) -> Option<f64> {
    m.get(key).and_then(|v| v.as_f64())
}

/// `prune`: the target ratio next to the achieved one (they differ where the floor keeps more).
fn prune_columns(m: &serde_json::Value) -> Vec<Put> {
    vec![
        (
            "target_percent".into(),
            "Target %".into(),
            false,
            num(m, "target_ratio").map(|r| r * 100.0),
        ),
        (
            "kept_percent".into(),
            "Kept %".into(),
            false,
            num(m, "ratio").map(|r| r * 100.0),
        ),
        (
            "identities".into(),
            "Ids".into(),
            false,
            num(m, "identities_kept"),
        ),
    ]
}

/// `train`: its run time (when known) and, without a prune in the row, its classes.
fn train_columns(m: &serde_json::Value, duration_s: Option<f64>, has_ids: bool) -> Vec<Put> {
    let mut out: Vec<Put> = Vec::new();
    if let Some(d) = duration_s {
        out.push((
            "train_minutes".into(),
            "Train min".into(),
            false,
            Some(d / 60.0),
        ));
    }
    if !has_ids {
        out.push((
            "identities".into(),
            "Ids".into(),
            false,
            num(m, "num_classes"),
        ));
    }
    out
}

/// `verify`: each set's accuracy and the spread over its 10 folds, in the paper's order, then
/// their average.
fn verify_columns(m: &serde_json::Value) -> Vec<Put> {
    let mut out = Vec::new();
    if let Some(sets) = m.get("sets").and_then(|s| s.as_object()) {
        let mut names: Vec<&String> = sets.keys().collect();
        names.sort_by_key(|n| {
            (
                PAPER_SETS.iter().position(|p| p == n).unwrap_or(usize::MAX),
                (*n).clone(),
            )
        });
        for name in names {
            let title = name.to_uppercase().replace('_', "-");
            let acc = num(&sets[name], "accuracy").map(|a| a * 100.0);
            out.push((format!("verify.{name}"), title.clone(), true, acc));
            // The spread over the 10 folds of that one model (np.std, ddof 0).
            let folds = num(&sets[name], "std").map(|s| s * 100.0);
            out.push((
                format!("verify.{name}.fold_std"),
                format!("{title} fold σ"),
                false,
                folds,
            ));
        }
    }
    out.push((
        "verify.avg".into(),
        "Avg".into(),
        true,
        num(m, "avg").map(|a| a * 100.0),
    ));
    out
}

fn ijbc_columns(m: &serde_json::Value) -> Vec<Put> {
    let tar = m.get("tar_at_far_percent");
    [("1e-05", "IJB-C 1e-5"), ("1e-04", "IJB-C 1e-4")]
        .into_iter()
        .map(|(k, t)| {
            let v = tar.and_then(|x| x.get(k)).and_then(|v| v.as_f64());
            (format!("ijbc.{k}"), t.to_string(), true, v)
        })
        .collect()
}

/// Every number below `v` with its dotted path (objects only; arrays are not columns).
fn flatten_numbers(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_numbers(&key, x, out);
            }
        }
        _ => {}
    }
}

/// Column order: target and kept %, ids, verification sets (paper order), avg, IJB-C, train
/// time and other stages' columns, GPU-hours.
pub(super) fn column_rank(c: &Column) -> u8 {
    match c.key.as_str() {
        "target_percent" => 0,
        "kept_percent" => 1,
        "identities" => 2,
        "verify.avg" => 4,
        k if k.starts_with("verify.") => 3,
        k if k.starts_with("ijbc.") => 5,
        "gpu_hours" => 7,
        _ => 6,
    }
}
