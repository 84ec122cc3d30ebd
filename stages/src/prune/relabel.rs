//! The `relabel` stage (diffprob.md §2.7, label_mapping.py): [`label_map`] gives each original id
//! that keeps at least one sample the next contiguous new id, in original id order, and
//! [`format_label_map`] writes it as `label_map.json` with keys in ascending numeric order.

use anyhow::{Context, Result};
use serde_json::json;

use super::inputs::{self, Labels};
use crate::Invocation;

/// (old id, new id) for every identity with a kept sample, ascending.
pub fn label_map(labels: &Labels, kept: &[usize]) -> Vec<(usize, usize)> {
    let mut has = vec![false; labels.classes];
    for &k in kept {
        has[labels.ids[k] as usize] = true;
    }
    has.iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(old, _)| old)
        .enumerate()
        .map(|(new, old)| (old, new))
        .collect()
}

/// `{"0": 0, "2": 1, ...}`: keys ascending by number (a JSON map sorted as text would put "10"
/// before "2").
pub fn format_label_map(map: &[(usize, usize)]) -> String {
    let mut s = String::with_capacity(map.len() * 14 + 2);
    s.push('{');
    for (i, (old, new)) in map.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\n  \"{old}\": {new}"));
    }
    s.push_str(if map.is_empty() { "}\n" } else { "\n}\n" });
    s
}

/// The `relabel` stage.
pub fn run(inv: &Invocation) -> Result<serde_json::Value> {
    let labels = inputs::load_labels(inv)?;
    let kept = inputs::load_kept(inv.input("kept")?, labels.len())?;
    let map = label_map(&labels, &kept);
    let out = inv.output("map")?;
    inputs::ensure_parent(out)?;
    std::fs::write(out, format_label_map(&map))
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut lost = Vec::new();
    let mut next = map.iter().peekable();
    for c in 0..labels.classes {
        if next.peek().is_some_and(|(old, _)| *old == c) {
            next.next();
        } else {
            lost.push(c);
        }
    }
    Ok(json!({
        "kept": kept.len(),
        "classes": labels.classes,
        "classes_kept": map.len(),
        "classes_lost": lost.len(),
        "lost_ids": lost.iter().take(100).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_contiguous_in_id_order_with_numeric_keys() {
        let raw: Vec<i64> = (0..12).collect();
        let labels = Labels::new(&raw, None, "l").unwrap();
        let map = label_map(&labels, &[0, 2, 3, 10, 11]);
        assert_eq!(map, vec![(0, 0), (2, 1), (3, 2), (10, 3), (11, 4)]);
        let s = format_label_map(&map);
        assert_eq!(
            s,
            "{\n  \"0\": 0,\n  \"2\": 1,\n  \"3\": 2,\n  \"10\": 3,\n  \"11\": 4\n}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["10"], 3);
        assert_eq!(format_label_map(&[]), "{}\n");
    }
}
