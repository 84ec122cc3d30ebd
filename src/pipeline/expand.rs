//! The last passes: evaluate every stage once per distinct combination of its direct axes,
//! order the stages (dependency cycles reported with their path), and create the instances:
//! one per distinct projection of the cells on the axes a stage depends on (its own and its
//! upstream stages'), inputs wired to upstream instance indices.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use super::diagnostics::suggest;
use super::eval::{Ctx, InRef, StageEval};
use super::loader::Loader;
use super::model::{Action, Gathered, Input, Instance, Output};
use super::sections::{group_digits, Cells};
use super::stage::StageDef;
use super::yaml::{Loc, Node};

/// Each stage's evaluations, keyed by the projection of a cell on its direct axes.
pub(super) struct Evaluated {
    pub evals: Vec<HashMap<u128, Rc<StageEval>>>,
    /// Per stage, the upstream stages it reads (and where the first reference is written).
    pub edges: Vec<BTreeMap<usize, Loc>>,
}

impl Loader {
    pub(super) fn evaluate(
        &mut self,
        defs: &[StageDef],
        params: &BTreeMap<String, &Node>,
        cells: &Cells,
    ) -> Evaluated {
        let stage_index: HashMap<&str, usize> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        let mut evals = Vec::with_capacity(defs.len());
        let mut edges: Vec<BTreeMap<usize, Loc>> = vec![BTreeMap::new(); defs.len()];
        for (si, d) in defs.iter().enumerate() {
            let mut map: HashMap<u128, Rc<StageEval>> = HashMap::new();
            if d.ok {
                let axes: Vec<usize> = d.direct_axes.iter().copied().collect();
                let proj = cells.projection(&axes);
                let mut tried: HashSet<u128> = HashSet::new();
                for cell in cells.index.iter() {
                    let key = proj.key(cell);
                    if !tried.insert(key) {
                        continue;
                    }
                    let ctx = Ctx {
                        params,
                        cells,
                        cell,
                        stage_index: &stage_index,
                        axes: &axes,
                    };
                    if let Some(ev) = self.eval_stage(defs, si, &ctx, &mut edges[si]) {
                        map.insert(key, Rc::new(ev));
                    }
                    if axes.is_empty() {
                        break;
                    }
                }
            }
            evals.push(map);
        }
        Evaluated { evals, edges }
    }

    /// Stages in dependency order (file order among the ready ones), or a cycle error.
    pub(super) fn topo_order(
        &mut self,
        defs: &[StageDef],
        edges: &[BTreeMap<usize, Loc>],
    ) -> Option<Vec<usize>> {
        let adj: Vec<Vec<usize>> = edges.iter().map(|e| e.keys().copied().collect()).collect();
        if let Some(cycle) = crate::dag::find_cycle(&adj) {
            let names: Vec<&str> = cycle.iter().map(|i| defs[*i].name.as_str()).collect();
            let loc = edges[cycle[0]].get(&cycle[1 % cycle.len()]).copied();
            let path = format!("{} -> {}", names.join(" -> "), names[0]);
            self.err(
                loc,
                format!("dependency cycle: {path}"),
                &format!("stages.{}.inputs", names[0]),
                Some("a stage cannot use its own outputs, directly or through other stages".into()),
            );
            return None;
        }
        let n = defs.len();
        let mut indeg: Vec<usize> = adj.iter().map(Vec::len).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ups) in adj.iter().enumerate() {
            for u in ups {
                users[*u].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|i| indeg[*i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for u in &users[i] {
                indeg[*u] -= 1;
                if indeg[*u] == 0 {
                    ready.insert(*u);
                }
            }
        }
        Some(order)
    }

    /// Axes each stage depends on: its own plus its upstream stages' (stages in `order`).
    pub(super) fn full_axes(defs: &[StageDef], ev: &Evaluated, order: &[usize]) -> Vec<Vec<usize>> {
        let mut full: Vec<BTreeSet<usize>> = defs.iter().map(|d| d.direct_axes.clone()).collect();
        for &si in order {
            let mut acc = full[si].clone();
            // A pinned reference (`stage[axis=value].output`) names one instance: its axes
            // stay with it.
            for e in ev.evals[si].values() {
                for (_, r) in &e.inputs {
                    if let InRef::Upstream { stage, .. } = r {
                        acc.extend(full[*stage].iter().copied());
                    }
                }
            }
            full[si] = acc;
        }
        full.into_iter().map(|s| s.into_iter().collect()).collect()
    }

    /// Every pinned reference names exactly one instance: it gives a value for each axis that
    /// stage depends on, and some cell has those values.
    pub(super) fn check_pinned(
        &mut self,
        defs: &[StageDef],
        ev: &Evaluated,
        full_axes: &[Vec<usize>],
        cells: &Cells,
    ) -> Option<()> {
        let before = self.errors.len();
        for (si, evals) in ev.evals.iter().enumerate() {
            // One report of a bad `aggregate` per stage, not one per evaluation.
            let _ = (evals.values())
                .try_for_each(|e| self.check_aggregate(&defs[si], e, full_axes, cells));
            for e in evals.values() {
                for (name, r) in &e.inputs {
                    if let InRef::Gather {
                        stage,
                        values,
                        loc,
                        key,
                        ..
                    } = r
                    {
                        self.check_gather(defs, name, *stage, values, (loc, key), full_axes, cells);
                        continue;
                    }
                    let InRef::Pinned {
                        stage,
                        values,
                        loc,
                        key,
                        ..
                    } = r
                    else {
                        continue;
                    };
                    let missing: Vec<String> = full_axes[*stage]
                        .iter()
                        .filter(|a| !values.iter().any(|(x, _)| x == *a))
                        .map(|a| format!("`{}`", cells.axes[*a]))
                        .collect();
                    if !missing.is_empty() {
                        self.err(
                            Some(*loc),
                            format!(
                                "input `{name}` names stage `{}` without a value for {}: that is more than one instance",
                                defs[*stage].name,
                                missing.join(", ")
                            ),
                            key,
                            Some("give every axis the stage depends on, e.g. `\"prune[method=rand,ratio=0.5].kept\"`".into()),
                        );
                    } else if pinned_cell(cells, values).is_none() {
                        self.err(
                            Some(*loc),
                            format!("input `{name}`: no matrix cell has those values (`exclude` removes it?)"),
                            key,
                            None,
                        );
                    }
                }
            }
        }
        (self.errors.len() == before).then_some(())
    }

    /// The `aggregate` of a kind that reads gathers (`report`) names an axis of a stage it
    /// gathers; `Err` once it has said that one does not.
    fn check_aggregate(
        &mut self,
        d: &StageDef,
        e: &StageEval,
        full_axes: &[Vec<usize>],
        cells: &Cells,
    ) -> Result<(), ()> {
        let Action::Builtin { kind, params } = &e.action else {
            return Ok(());
        };
        let Some(named) = params["aggregate"]
            .as_array()
            .filter(|_| !kind.gathers.is_empty())
        else {
            return Ok(());
        };
        let mut axes: Vec<&str> = Vec::new();
        for (_, r) in &e.inputs {
            if let InRef::Gather { stage, .. } = r {
                axes.extend(full_axes[*stage].iter().map(|a| cells.axes[*a].as_str()));
            }
        }
        let Some(bad) = named
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| !axes.contains(a))
        else {
            return Ok(());
        };
        let with = d.raw.and_then(|r| r.with.as_ref());
        let entry = with
            .and_then(|w| w.value.valid())
            .and_then(|m| m.iter().find(|kv| kv.key == "aggregate"));
        let loc = entry.map(|kv| kv.value.loc).or(with.map(|w| w.loc));
        let mut known: Vec<String> = axes.iter().map(|a| a.to_string()).collect();
        known.sort();
        known.dedup();
        let hint = if known.is_empty() {
            Some("the stages it gathers have no matrix axes: remove `aggregate`".to_string())
        } else {
            suggest(bad, &known, "their axes are")
        };
        let message = format!(
            "`aggregate` names `{bad}`, which is not an axis of a stage that `{}` gathers",
            d.name
        );
        self.err(loc, message, &format!("{}.with.aggregate", d.key()), hint);
        Err(())
    }

    /// A gather's filter names axes of the gathered stage, and some cell matches it.
    #[allow(clippy::too_many_arguments)]
    fn check_gather(
        &mut self,
        defs: &[StageDef],
        name: &str,
        stage: usize,
        values: &[(usize, u32)],
        (loc, key): (&Loc, &String),
        full_axes: &[Vec<usize>],
        cells: &Cells,
    ) {
        let stage_name = &defs[stage].name;
        if let Some((a, _)) = values.iter().find(|(a, _)| !full_axes[stage].contains(a)) {
            let axes: Vec<String> = full_axes[stage]
                .iter()
                .map(|a| format!("`{}`", cells.axes[*a]))
                .collect();
            let hint = if axes.is_empty() {
                format!("stage `{stage_name}` has one instance: read it as `{stage_name}.OUTPUT`")
            } else {
                format!("its axes are {}", axes.join(", "))
            };
            self.err(
                Some(*loc),
                format!(
                    "input `{name}` filters stage `{stage_name}` on axis `{}`, which that stage does not depend on",
                    cells.axes[*a]
                ),
                key,
                Some(hint),
            );
        } else if pinned_cell(cells, values).is_none() {
            self.err(
                Some(*loc),
                format!(
                    "input `{name}`: no matrix cell has those values (`exclude` removes them?)"
                ),
                key,
                None,
            );
        }
    }

    pub(super) fn check_instance_count(
        &mut self,
        defs: &[StageDef],
        full_axes: &[Vec<usize>],
        cells: &Cells,
        limit: usize,
    ) -> Option<usize> {
        let mut total: usize = 0;
        for axes in full_axes {
            let n = if axes.is_empty() {
                1
            } else if axes.len() == cells.axes.len() {
                cells.index.len()
            } else {
                let proj = cells.projection(axes);
                let seen: HashSet<u128> = cells.index.iter().map(|c| proj.key(c)).collect();
                seen.len()
            };
            total = total.saturating_add(n);
        }
        if total <= limit {
            return Some(total);
        }
        self.err(
            None,
            format!(
                "the pipeline expands to {} stage instances ({} stages over {} matrix cells), more than the limit of {}",
                group_digits(total as u128),
                defs.len(),
                group_digits(cells.index.len() as u128),
                group_digits(limit as u128)
            ),
            "matrix",
            Some("remove axis values or add `exclude` entries; if the sweep is meant to be this large, raise the limit with `--max-instances N` (or ORCHESTRATOR_MAX_INSTANCES)".into()),
        );
        None
    }

    /// One instance per stage and distinct projection of the cells on its axes, in `order`
    /// (`count` of them). A stage's evaluations are dropped once its instances are built.
    pub(super) fn instances(
        &self,
        defs: &[StageDef],
        mut ev: Evaluated,
        order: &[usize],
        full_axes: &[Vec<usize>],
        cells: &Cells,
        count: usize,
    ) -> Option<Vec<Instance>> {
        let mut instances: Vec<Instance> = Vec::with_capacity(count);
        let projections: Vec<_> = full_axes.iter().map(|a| cells.projection(a)).collect();
        let mut index: Vec<HashMap<u128, usize>> = vec![HashMap::new(); defs.len()];
        for &si in order {
            let d = &defs[si];
            let axes = &full_axes[si];
            let direct: Vec<usize> = d.direct_axes.iter().copied().collect();
            let direct = cells.projection(&direct);
            let location: std::sync::Arc<str> = self.sources.position(d.key_loc).into();
            let outputs: std::sync::Arc<[Output]> = d.outputs.clone().into();
            for cell in cells.index.iter() {
                let key = projections[si].key(cell);
                if index[si].contains_key(&key) {
                    continue;
                }
                let e = ev.evals[si].get(&direct.key(cell))?;
                let mut inputs = BTreeMap::new();
                for (name, r) in &e.inputs {
                    let input = match r {
                        InRef::External(p) => Input::External { path: p.clone() },
                        InRef::Upstream { stage, output } => Input::Upstream {
                            instance: *index[*stage].get(&projections[*stage].key(cell))?,
                            output: output.clone(),
                        },
                        InRef::Pinned {
                            stage,
                            output,
                            values,
                            ..
                        } => Input::Upstream {
                            instance: *index[*stage]
                                .get(&projections[*stage].key(pinned_cell(cells, values)?))?,
                            output: output.clone(),
                        },
                        InRef::Gather {
                            stage,
                            output,
                            values,
                            ..
                        } => Input::Gather {
                            output: output.clone(),
                            from: gathered(
                                &instances,
                                &index[*stage],
                                &projections[*stage],
                                cells,
                                values,
                            )?,
                        },
                    };
                    inputs.insert(name.clone(), input);
                }
                let id = if axes.is_empty() {
                    d.name.clone()
                } else {
                    let parts: Vec<String> = axes
                        .iter()
                        .map(|a| format!("{}={}", cells.axes[*a], cells.name(*a, cell)))
                        .collect();
                    format!("{}[{}]", d.name, parts.join(","))
                };
                let cell_map = axes
                    .iter()
                    .map(|a| (cells.axes[*a].clone(), cells.name(*a, cell).to_string()))
                    .collect();
                index[si].insert(key, instances.len());
                instances.push(Instance {
                    id,
                    stage: d.name.clone(),
                    cell: cell_map,
                    action: e.action.clone(),
                    inputs: inputs.into_iter().collect(),
                    outputs: outputs.clone(),
                    resources: e.resources.clone(),
                    retry: e.retry,
                    location: location.clone(),
                });
                if axes.is_empty() {
                    break;
                }
            }
            ev.evals[si] = HashMap::new();
        }
        Some(instances)
    }
}

/// The first cell with the pinned values.
/// The instances of a stage (`index`: projection key -> instance) in the cells matching
/// `values`, in matrix order, each once, with their entry names.
fn gathered(
    instances: &[Instance],
    index: &HashMap<u128, usize>,
    proj: &super::sections::Projection,
    cells: &Cells,
    values: &[(usize, u32)],
) -> Option<Vec<Gathered>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for cell in cells.index.iter() {
        if !values.iter().all(|(a, v)| cell[*a] == *v) {
            continue;
        }
        let i = *index.get(&proj.key(cell))?;
        if !seen.insert(i) {
            continue;
        }
        let inst = &instances[i];
        // The id's axis values, in axis order (`prune[method=rand,ratio=0.5]`).
        let entry = inst
            .id
            .strip_prefix(inst.stage.as_str())
            .and_then(|r| r.strip_prefix('['))
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(&inst.stage);
        out.push(Gathered {
            instance: i,
            entry: crate::cache::sanitize(entry),
            cell: inst.cell.clone(),
            kind: inst.action.kind_name(),
        });
    }
    Some(out)
}

fn pinned_cell<'c>(cells: &'c Cells, values: &[(usize, u32)]) -> Option<&'c [u32]> {
    cells
        .index
        .iter()
        .find(|c| values.iter().all(|(a, v)| c[*a] == *v))
}
