//! Parts of a pipeline the command line names (`orchestrator run PIPELINE [TARGET...]`,
//! `--force TARGET...`, `plan`'s targets): a target is a stage name (all its instances), an
//! instance id (`prune[method=rand,ratio=0.5]`), or a filter on a stage's axes
//! (`retrain[ratio=0.5]`: the instances whose cell has those values; an instance that does not
//! depend on a named axis serves every value of it and matches). [`Pipeline::restrict`] then
//! keeps the selected instances and their upstream closure, renumbered.

use std::collections::BTreeSet;

use super::diagnostics::suggest;
use super::model::{Input, Pipeline};

/// A target that names nothing in the pipeline: the message and a `hint:` (did-you-mean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl Pipeline {
    /// The instances (indices, ascending) that `targets` name; every target must name at least
    /// one.
    pub fn select(&self, targets: &[String]) -> Result<BTreeSet<usize>, TargetError> {
        let mut out = BTreeSet::new();
        for t in targets {
            out.extend(self.select_one(t.trim())?);
        }
        Ok(out)
    }

    fn select_one(&self, t: &str) -> Result<Vec<usize>, TargetError> {
        if let Some((i, _)) = self.instance(t) {
            return Ok(vec![i]);
        }
        let (stage, filter) = match t.split_once('[') {
            Some((s, rest)) => match rest.strip_suffix(']') {
                Some(f) => (s, Some(f)),
                None => return Err(TargetError {
                    message: format!("bad target `{t}`: `[` without a closing `]`"),
                    hint: Some(
                        "write a stage name, an instance id, or a filter like `retrain[ratio=0.5]`"
                            .into(),
                    ),
                }),
            },
            None => (t, None),
        };
        let of_stage: Vec<usize> = self.instances_of(stage).map(|(i, _)| i).collect();
        if of_stage.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for i in &self.instances {
                if !names.contains(&i.stage.as_str()) {
                    names.push(&i.stage);
                }
            }
            let hint = if filter.is_none() {
                // A misspelt instance id is closer to an id than to a stage name.
                let ids: Vec<&str> = self.instances.iter().map(|i| i.id.as_str()).collect();
                crate::pipeline::diagnostics::did_you_mean(t, &ids)
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| suggest(stage, &names, "its stages are"))
            } else {
                suggest(stage, &names, "its stages are")
            };
            return Err(TargetError {
                message: format!("pipeline `{}` has no stage `{stage}`", self.name),
                hint,
            });
        }
        let Some(filter) = filter else {
            return Ok(of_stage);
        };
        let mut want: Vec<(&str, &str)> = Vec::new();
        for part in filter.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((axis, value)) = part.split_once('=') else {
                return Err(TargetError {
                    message: format!("bad filter `{part}` in target `{t}`"),
                    hint: Some("a filter is `AXIS=VALUE`, e.g. `retrain[ratio=0.5]`".into()),
                });
            };
            let (axis, value) = (axis.trim(), value.trim());
            if !self.matrix_axes.iter().any(|a| a == axis) {
                return Err(TargetError {
                    message: format!(
                        "target `{t}`: pipeline `{}` has no matrix axis `{axis}`",
                        self.name
                    ),
                    hint: suggest(axis, &self.matrix_axes, "its axes are")
                        .or_else(|| Some("it has no matrix: name a stage".into())),
                });
            }
            let mut values: Vec<String> = Vec::new();
            for c in self.cells.iter() {
                if let Some(v) = c.get(axis) {
                    if !values.contains(v) {
                        values.push(v.clone());
                    }
                }
            }
            if !values.iter().any(|v| v == value) {
                return Err(TargetError {
                    message: format!("target `{t}`: matrix axis `{axis}` has no value `{value}`"),
                    hint: suggest(value, &values, "its values are"),
                });
            }
            want.push((axis, value));
        }
        let hits: Vec<usize> = of_stage
            .into_iter()
            .filter(|&i| {
                let cell = &self.instances[i].cell;
                want.iter()
                    .all(|(a, v)| cell.get(*a).is_none_or(|x| x == v))
            })
            .collect();
        if hits.is_empty() {
            return Err(TargetError {
                message: format!("target `{t}` matches no instance of stage `{stage}`"),
                hint: Some(format!(
                    "its instances are: {}",
                    self.instances_of(stage)
                        .map(|(_, i)| format!("`{}`", i.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        Ok(hits)
    }

    /// The pipeline cut down to `keep` and everything upstream of it, in the same order
    /// (upstream indices renumbered), and the old index of each kept instance.
    pub fn restrict(&self, keep: &BTreeSet<usize>) -> (Pipeline, Vec<usize>) {
        let n = self.instances.len();
        let mut wanted = vec![false; n];
        // Topological order: walking down from the last index visits every upstream after its
        // dependents have marked it.
        for &k in keep {
            if k < n {
                wanted[k] = true;
            }
        }
        for i in (0..n).rev() {
            if !wanted[i] {
                continue;
            }
            for input in self.instances[i].inputs.values() {
                for u in input.upstreams() {
                    wanted[u] = true;
                }
            }
        }
        let old: Vec<usize> = (0..n).filter(|&i| wanted[i]).collect();
        let mut new_of = vec![usize::MAX; n];
        for (new, &o) in old.iter().enumerate() {
            new_of[o] = new;
        }
        let mut q = Pipeline {
            instances: Vec::with_capacity(old.len()),
            ..self.clone_without_instances()
        };
        for &o in &old {
            let mut inst = self.instances[o].clone();
            for (_, input) in inst.inputs.iter_mut() {
                match input {
                    Input::Upstream { instance, .. } => *instance = new_of[*instance],
                    Input::Gather { from, .. } => {
                        for g in from {
                            g.instance = new_of[g.instance];
                        }
                    }
                    Input::External { .. } => {}
                }
            }
            q.instances.push(inst);
        }
        (q, old)
    }

    fn clone_without_instances(&self) -> Pipeline {
        Pipeline {
            name: self.name.clone(),
            file: self.file.clone(),
            dir: self.dir.clone(),
            matrix_axes: self.matrix_axes.clone(),
            cells: self.cells.clone(),
            instances: Vec::new(),
            executor: self.executor.clone(),
            report: self.report.clone(),
            param_docs: self.param_docs.clone(),
            input_params: self.input_params.clone(),
        }
    }
}
