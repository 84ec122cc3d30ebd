//! [`Matrix`]: the `matrix:` section as data, and its expansion into cells.
//!
//! Semantics (documented in the schema too): the cartesian product of the axes in axis order
//! (the first axis varies slowest), then every `exclude` entry removes the cells it matches (an
//! entry matches a cell when each of its keys has the same value; keys it omits match anything),
//! then every `include` entry (a value for every axis, and only axes) appends its cell unless an
//! identical cell is already there. Unlike GitHub Actions, an include never merges extra keys
//! into existing cells: a cell is exactly one value per axis, which keeps instance ids total.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    /// Axis name and its values, in file order.
    pub axes: Vec<(String, Vec<Value>)>,
    /// Partial cells (axis -> value) to remove.
    pub exclude: Vec<BTreeMap<String, Value>>,
    /// Full cells (a value for every axis) to add.
    pub include: Vec<BTreeMap<String, Value>>,
}

impl Matrix {
    pub fn axis_names(&self) -> Vec<String> {
        self.axes.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Every cell: one value per axis, in axis order. Without axes, one empty cell.
    pub fn cells(&self) -> Vec<Vec<Value>> {
        let mut cells: Vec<Vec<Value>> = vec![Vec::new()];
        for (_, values) in &self.axes {
            let mut next = Vec::with_capacity(cells.len() * values.len());
            for c in &cells {
                for v in values {
                    let mut c2 = c.clone();
                    c2.push(v.clone());
                    next.push(c2);
                }
            }
            cells = next;
        }
        let names = self.axis_names();
        let matches = |cell: &[Value], entry: &BTreeMap<String, Value>| {
            entry.iter().all(|(k, v)| {
                names
                    .iter()
                    .position(|n| n == k)
                    .is_some_and(|i| &cell[i] == v)
            })
        };
        cells.retain(|c| !self.exclude.iter().any(|e| matches(c, e)));
        for inc in &self.include {
            let cell: Option<Vec<Value>> = names.iter().map(|n| inc.get(n).cloned()).collect();
            if let Some(cell) = cell {
                if !cells.contains(&cell) {
                    cells.push(cell);
                }
            }
        }
        cells
    }
}

/// A matrix value as it appears in instance ids: scalars as written; a map with a scalar `name`
/// key as that name (`{name: diffprob, flags: clean.flags}` -> `diffprob`); any other map or a
/// list as its values joined by `+` (`{net: iresnet-tiny, loss: cosface}` ->
/// `iresnet-tiny+cosface`; the loader renders maps in file order and skips their null values).
/// Short, stable and free of shell metacharacters for the usual values; the loader rejects
/// an axis whose distinct values render the same.
pub fn render_id_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render_id_value).collect::<Vec<_>>().join("+"),
        Value::Object(m) => match m
            .get("name")
            .filter(|n| !(n.is_object() || n.is_array() || n.is_null()))
        {
            Some(n) => render_id_value(n),
            None => m
                .values()
                .filter(|v| !v.is_null())
                .map(render_id_value)
                .collect::<Vec<_>>()
                .join("+"),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn m(axes: &[(&str, Vec<Value>)]) -> Matrix {
        Matrix {
            axes: axes
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn product_in_axis_order_then_exclude_then_include() {
        let mut mx = m(&[
            ("method", vec![json!("a"), json!("b")]),
            ("ratio", vec![json!(1), json!(2)]),
        ]);
        mx.exclude.push(
            [
                ("method".to_string(), json!("b")),
                ("ratio".to_string(), json!(2)),
            ]
            .into(),
        );
        mx.include.push(
            [
                ("method".to_string(), json!("c")),
                ("ratio".to_string(), json!(1)),
            ]
            .into(),
        );
        mx.include.push(
            [
                ("method".to_string(), json!("a")),
                ("ratio".to_string(), json!(1)),
            ]
            .into(),
        );
        let cells = mx.cells();
        assert_eq!(
            cells,
            vec![
                vec![json!("a"), json!(1)],
                vec![json!("a"), json!(2)],
                vec![json!("b"), json!(1)],
                vec![json!("c"), json!(1)]
            ]
        );
    }

    #[test]
    fn id_values_are_compact() {
        assert_eq!(
            render_id_value(&json!({"net": "iresnet-tiny", "loss": "cosface"})),
            "cosface+iresnet-tiny"
        );
        assert_eq!(render_id_value(&json!(0.25)), "0.25");
        assert_eq!(render_id_value(&json!(true)), "true");
        assert_eq!(
            render_id_value(&json!({"name": "diffprob", "flags": "clean.flags"})),
            "diffprob"
        );
    }

    /// The oracle: nested loops over index tuples, filters written out longhand.
    fn oracle(
        sizes: &[usize],
        exclude: &[Vec<Option<usize>>],
        include: &[Vec<usize>],
    ) -> Vec<Vec<usize>> {
        let total: usize = sizes.iter().product();
        let mut out = Vec::new();
        for mut n in 0..total {
            let mut idx = vec![0; sizes.len()];
            for a in (0..sizes.len()).rev() {
                idx[a] = n % sizes[a];
                n /= sizes[a];
            }
            let excluded = exclude.iter().any(|e| {
                e.iter()
                    .enumerate()
                    .all(|(a, v)| v.is_none_or(|v| v == idx[a]))
            });
            if !excluded {
                out.push(idx);
            }
        }
        for inc in include {
            if !out.contains(inc) {
                out.push(inc.clone());
            }
        }
        out
    }

    proptest! {
        #[test]
        fn expansion_matches_the_oracle(
            sizes in proptest::collection::vec(1usize..4, 0..4),
            raw_ex in proptest::collection::vec(proptest::collection::vec(proptest::option::of(0usize..5), 4), 0..4),
            raw_inc in proptest::collection::vec(proptest::collection::vec(0usize..5, 4), 0..3),
        ) {
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("a{i}")).collect();
            let axes: Vec<(String, Vec<Value>)> = sizes.iter().enumerate().map(|(i, s)| (names[i].clone(), (0..*s).map(|v| json!(v)).collect())).collect();
            // Exclude entries name a subset of axes (at least one); include entries name all.
            let exclude: Vec<Vec<Option<usize>>> = raw_ex.iter().map(|e| e[..sizes.len()].to_vec()).filter(|e| e.iter().any(Option::is_some)).collect();
            let include: Vec<Vec<usize>> = if sizes.is_empty() { vec![] } else { raw_inc.iter().map(|e| e[..sizes.len()].to_vec()).collect() };
            let mx = Matrix {
                axes,
                exclude: exclude.iter().map(|e| e.iter().enumerate().filter_map(|(a, v)| v.map(|v| (names[a].clone(), json!(v)))).collect()).collect(),
                include: include.iter().map(|e| e.iter().enumerate().map(|(a, v)| (names[a].clone(), json!(v))).collect()).collect(),
            };
            let got: Vec<Vec<usize>> = mx.cells().iter().map(|c| c.iter().map(|v| v.as_u64().unwrap() as usize).collect()).collect();
            prop_assert_eq!(got, oracle(&sizes, &exclude, &include));
        }
    }
}
