//! [`Matrix`]: the `matrix:` section as data, and its expansion into cells ([`IndexCells`]:
//! one value index per axis and cell, so that a large matrix costs 4 bytes per axis and cell).
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
        let ix = self.index_cells();
        (0..ix.len())
            .map(|c| {
                ix.cell(c)
                    .iter()
                    .enumerate()
                    .map(|(a, v)| ix.values[a][*v as usize].clone())
                    .collect()
            })
            .collect()
    }

    /// Exclude entries as (axis, value index) constraints; `None` for an entry that can match
    /// no cell (it names an axis or a value the matrix does not have).
    fn exclude_rules(&self) -> Vec<Option<Vec<(usize, u32)>>> {
        self.exclude
            .iter()
            .map(|e| {
                e.iter()
                    .map(|(k, v)| {
                        let a = self.axes.iter().position(|(n, _)| n == k)?;
                        let i = self.axes[a].1.iter().position(|x| x == v)?;
                        Some((a, i as u32))
                    })
                    .collect()
            })
            .collect()
    }

    /// How many cells [`Matrix::index_cells`] gives, computed without building them (so that
    /// a matrix too large to expand is refused before memory is spent): the product of the
    /// axis sizes, minus the excluded cells (by inclusion-exclusion over the exclude entries),
    /// plus the include entries that add a cell. With more than 16 exclude entries the product
    /// is scanned instead when it is at most `scan_limit` cells; beyond that the answer is a
    /// lower bound (`exact` false: each entry removes at most the cells it can match).
    pub fn count_cells(&self, scan_limit: u128) -> CellCount {
        let sizes: Vec<u128> = self.axes.iter().map(|(_, v)| v.len() as u128).collect();
        let product = sizes.iter().fold(1u128, |p, s| p.saturating_mul(*s));
        let rules: Vec<Vec<(usize, u32)>> = self.exclude_rules().into_iter().flatten().collect();
        if rules.len() > 16 {
            if product <= scan_limit {
                let mut n: u128 = 0;
                self.product_cells(&rules, |_| n += 1);
                return CellCount {
                    n: n + self.added_by_include(&rules),
                    exact: true,
                };
            }
            let removable: u128 = rules
                .iter()
                .map(|r| {
                    let fixed: u128 = r
                        .iter()
                        .fold(1u128, |p, (a, _)| p.saturating_mul(sizes[*a].max(1)));
                    product / fixed
                })
                .fold(0u128, |t, x| t.saturating_add(x));
            return CellCount {
                n: product.saturating_sub(removable),
                exact: false,
            };
        }
        // Cells matching every entry of a subset: the entries must agree; then the free axes
        // multiply.
        let mut excluded: i128 = 0;
        for mask in 1u32..(1u32 << rules.len()) {
            let mut fixed: Vec<Option<u32>> = vec![None; sizes.len()];
            let mut consistent = true;
            for (r, rule) in rules.iter().enumerate() {
                if mask & (1 << r) == 0 {
                    continue;
                }
                for &(a, v) in rule {
                    match fixed[a] {
                        Some(w) if w != v => consistent = false,
                        _ => fixed[a] = Some(v),
                    }
                }
            }
            if !consistent {
                continue;
            }
            let n = fixed
                .iter()
                .zip(&sizes)
                .filter(|(f, _)| f.is_none())
                .fold(1u128, |p, (_, s)| p.saturating_mul(*s));
            let n = n.min(i128::MAX as u128) as i128;
            if mask.count_ones() % 2 == 1 {
                excluded = excluded.saturating_add(n);
            } else {
                excluded = excluded.saturating_sub(n);
            }
        }
        let count = product.saturating_sub(excluded.max(0) as u128);
        CellCount {
            n: count.saturating_add(self.added_by_include(&rules)),
            exact: true,
        }
    }

    /// How many cells the include entries add (those not in the product already).
    fn added_by_include(&self, rules: &[Vec<(usize, u32)>]) -> u128 {
        let mut values: Vec<Vec<Value>> = self.axes.iter().map(|(_, v)| v.clone()).collect();
        let mut added: Vec<Vec<u32>> = Vec::new();
        for cell in self.include_cells(&mut values) {
            if !self.in_product(&cell, rules) && !added.contains(&cell) {
                added.push(cell);
            }
        }
        added.len() as u128
    }

    /// Call `f` with every cell of the product (first axis slowest) that no rule excludes.
    fn product_cells(&self, rules: &[Vec<(usize, u32)>], mut f: impl FnMut(&[u32])) {
        let sizes: Vec<usize> = self.axes.iter().map(|(_, v)| v.len()).collect();
        if sizes.contains(&0) {
            return;
        }
        let mut cell = vec![0u32; sizes.len()];
        'cells: loop {
            if !rules.iter().any(|r| r.iter().all(|&(a, v)| cell[a] == v)) {
                f(&cell);
            }
            // Odometer: the last axis varies fastest.
            let mut a = sizes.len();
            loop {
                if a == 0 {
                    break 'cells;
                }
                a -= 1;
                cell[a] += 1;
                if (cell[a] as usize) < sizes[a] {
                    continue 'cells;
                }
                cell[a] = 0;
            }
        }
    }

    /// Include entries that give a value for every axis, as value indices; values the axes do
    /// not list are appended to `values`.
    fn include_cells(&self, values: &mut [Vec<Value>]) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        'entries: for inc in &self.include {
            let mut cell = Vec::with_capacity(self.axes.len());
            for (a, (name, _)) in self.axes.iter().enumerate() {
                let Some(v) = inc.get(name) else {
                    continue 'entries;
                };
                let i = match values[a].iter().position(|x| x == v) {
                    Some(i) => i,
                    None => {
                        values[a].push(v.clone());
                        values[a].len() - 1
                    }
                };
                cell.push(i as u32);
            }
            out.push(cell);
        }
        out
    }

    /// Whether a cell (value indices) is in the product and not excluded.
    fn in_product(&self, cell: &[u32], rules: &[Vec<(usize, u32)>]) -> bool {
        let listed = cell
            .iter()
            .zip(&self.axes)
            .all(|(v, (_, vals))| (*v as usize) < vals.len());
        listed && !rules.iter().any(|r| r.iter().all(|&(a, v)| cell[a] == v))
    }

    /// Every cell as one value index per axis, in expansion order: the product (first axis
    /// slowest), without the excluded cells, then the include cells not already there. Memory:
    /// one `u32` per axis and cell.
    pub fn index_cells(&self) -> IndexCells {
        let mut values: Vec<Vec<Value>> = self.axes.iter().map(|(_, v)| v.clone()).collect();
        let rules: Vec<Vec<(usize, u32)>> = self.exclude_rules().into_iter().flatten().collect();
        let n_axes = self.axes.len();
        let mut flat = Vec::new();
        let mut n = 0;
        self.product_cells(&rules, |cell| {
            flat.extend_from_slice(cell);
            n += 1;
        });
        let mut added: Vec<Vec<u32>> = Vec::new();
        for inc in self.include_cells(&mut values) {
            if !self.in_product(&inc, &rules) && !added.contains(&inc) {
                flat.extend_from_slice(&inc);
                added.push(inc);
                n += 1;
            }
        }
        IndexCells {
            values,
            n_axes,
            n,
            flat,
        }
    }
}

/// See [`Matrix::count_cells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellCount {
    pub n: u128,
    /// False: `n` is a lower bound.
    pub exact: bool,
}

/// The cells of a matrix as value indices (see [`Matrix::index_cells`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexCells {
    /// Per axis, its values: the axis' own list, then values only include entries give.
    pub values: Vec<Vec<Value>>,
    pub n_axes: usize,
    n: usize,
    flat: Vec<u32>,
}

impl IndexCells {
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Cell `c`: one value index per axis.
    pub fn cell(&self, c: usize) -> &[u32] {
        &self.flat[c * self.n_axes..(c + 1) * self.n_axes]
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.n).map(|c| self.cell(c))
    }
    /// The indices of every cell, one after the other.
    pub fn into_flat(self) -> Vec<u32> {
        self.flat
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
    fn many_exclude_entries_are_counted_by_scanning_or_bounded() {
        let mut mx = m(&[
            ("a", (0..10).map(|i| json!(i)).collect()),
            ("b", (0..10).map(|i| json!(i)).collect()),
        ]);
        for i in 0..20 {
            mx.exclude.push(
                [
                    ("a".to_string(), json!(i % 10)),
                    ("b".to_string(), json!(i / 2)),
                ]
                .into(),
            );
        }
        let n = mx.index_cells().len() as u128;
        assert_eq!(mx.count_cells(1000), CellCount { n, exact: true });
        let bound = mx.count_cells(10);
        assert!(!bound.exact && bound.n <= n, "{bound:?} vs {n}");
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
            prop_assert_eq!(mx.count_cells(0), CellCount { n: mx.index_cells().len() as u128, exact: true });
            let got: Vec<Vec<usize>> = mx.cells().iter().map(|c| c.iter().map(|v| v.as_u64().unwrap() as usize).collect()).collect();
            prop_assert_eq!(got, oracle(&sizes, &exclude, &include));
        }
    }
}
