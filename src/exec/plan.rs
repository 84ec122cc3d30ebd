//! Deciding what runs: content digests of external inputs ([`hash_externals`]), input digests
//! from upstream manifests ([`input_digests`]), the cache verdict with its reasons
//! ([`lookup`]), and the whole-pipeline dry run behind `orchestrator plan` ([`plan`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::ExecError;
use crate::cache::{Cache, Manifest};
use crate::dag::Dag;
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Input, Instance, Pipeline};

/// Digest used in a fingerprint for an optional upstream output that was not produced.
pub const ABSENT: &str = "absent";
/// Placeholder digest for an upstream output that is not known yet (plan only).
pub const PENDING: &str = "(pending)";

/// Per instance: input name -> digest of each external input. Every distinct path is hashed
/// once (through the stat cache), in parallel. A missing path is an error naming it and the stage.
pub fn hash_externals(
    p: &Pipeline,
    cache: &Cache,
) -> Result<Vec<BTreeMap<String, String>>, ExecError> {
    let mut paths: HashMap<&PathBuf, (String, String, String)> = HashMap::new();
    for inst in &p.instances {
        for (name, input) in &inst.inputs {
            if let Input::External { path } = input {
                paths
                    .entry(path)
                    .or_insert_with(|| (inst.id.clone(), name.clone(), inst.location.clone()));
            }
        }
    }
    let list: Vec<_> = paths.into_iter().collect();
    let digests: Vec<(PathBuf, String)> = list
        .par_iter()
        .map(|(path, (stage, input, location))| {
            if std::fs::symlink_metadata(path).is_err() {
                return Err(ExecError::MissingInput {
                    path: (*path).clone(),
                    stage: stage.clone(),
                    input: input.clone(),
                    location: location.clone(),
                });
            }
            cache
                .digest_external(path)
                .map(|d| ((*path).clone(), d))
                .map_err(ExecError::Cache)
        })
        .collect::<Result<_, _>>()?;
    let by_path: HashMap<PathBuf, String> = digests.into_iter().collect();
    Ok(p.instances
        .iter()
        .map(|inst| {
            inst.inputs
                .iter()
                .filter_map(|(name, input)| match input {
                    Input::External { path } => Some((name.clone(), by_path[path].clone())),
                    Input::Upstream { .. } => None,
                })
                .collect()
        })
        .collect())
}

/// Digests of all inputs of `inst`, or `None` while an upstream has no manifest yet.
pub fn input_digests(
    inst: &Instance,
    external: &BTreeMap<String, String>,
    done: &[Option<Manifest>],
) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, input) in &inst.inputs {
        let d = match input {
            Input::External { .. } => external.get(name)?.clone(),
            Input::Upstream { instance, output } => {
                let m = done.get(*instance)?.as_ref()?;
                m.outputs
                    .get(output)
                    .map(|o| o.digest.clone())
                    .unwrap_or_else(|| ABSENT.to_string())
            }
        };
        out.insert(name.clone(), d);
    }
    Some(out)
}

/// The cache's answer for one fingerprint.
#[derive(Debug, Clone)]
pub enum Verdict {
    Cached(Box<Manifest>),
    Run {
        reasons: Vec<String>,
        changed: Vec<String>,
    },
}

/// Readable form of a changed fingerprint field.
pub fn describe_field(f: &str) -> String {
    match f.strip_prefix("inputs.") {
        Some(name) => format!("input `{name}` changed"),
        None => match f {
            "kind_version" => "the stage kind's version changed".into(),
            "version" => "the fingerprint format changed".into(),
            _ => format!("`{f}` changed"),
        },
    }
}

/// Look `fp` up; on a miss, say why (compared with the instance's last recorded fingerprint).
/// With `repair`, a manifest whose objects are corrupt or missing is dropped (the stage reruns).
pub fn lookup(
    cache: &Cache,
    pipeline: &str,
    inst: &Instance,
    fp: &Fingerprint,
    key: &str,
    repair: bool,
) -> Result<Verdict, ExecError> {
    let mut reasons = Vec::new();
    if let Some(m) = cache.manifest(key)? {
        match cache.check_manifest(&m, repair)? {
            None => return Ok(Verdict::Cached(Box::new(m))),
            Some(problem) => {
                if repair {
                    tracing::warn!("stage `{}`: {problem}; running it again", inst.id);
                    cache.drop_manifest(key)?;
                } else {
                    tracing::warn!(
                        "stage `{}`: {problem}; `orchestrator run` computes it again",
                        inst.id
                    );
                }
                reasons.push(format!("output object corrupt or missing: {problem}"));
            }
        }
    }
    let last = cache.index.get_last(pipeline, &inst.id)?;
    let changed = match &last {
        None => {
            reasons.push("no previous run".into());
            Vec::new()
        }
        Some(old) if old.key() != key => {
            let c: Vec<String> = fp
                .changed_fields(old)
                .into_iter()
                .filter(|f| !is_pending(fp, f))
                .collect();
            reasons.extend(c.iter().map(|f| describe_field(f)));
            c
        }
        Some(_) => {
            if reasons.is_empty() {
                reasons.push(
                    "its previous run did not complete (failed, interrupted, or removed by gc)"
                        .into(),
                );
            }
            Vec::new()
        }
    };
    Ok(Verdict::Run { reasons, changed })
}

fn is_pending(fp: &Fingerprint, field: &str) -> bool {
    field
        .strip_prefix("inputs.")
        .and_then(|n| fp.inputs.get(n))
        .is_some_and(|d| d == PENDING)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    Cached,
    WillRun,
    Waits,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub instance: String,
    pub state: PlanState,
    /// Why it runs (or, for `waits`, which upstream it waits on).
    pub reasons: Vec<String>,
    /// Changed fingerprint fields vs the last recorded fingerprint of this instance id.
    pub changed: Vec<String>,
    pub waits_on: Vec<String>,
    /// Known only when every input digest is known.
    pub key: Option<String>,
}

/// What `run` would do now, without running anything or changing the cache. Instances are
/// visited in their (topological) order; what one waits on comes from the [`Dag`].
pub fn plan(p: &Pipeline, cache: &Cache) -> Result<Vec<PlanEntry>, ExecError> {
    let ext = hash_externals(p, cache)?;
    let dag = Dag::new(p);
    let mut done: Vec<Option<Manifest>> = vec![None; p.instances.len()];
    let mut out: Vec<PlanEntry> = Vec::with_capacity(p.instances.len());
    for (i, inst) in p.instances.iter().enumerate() {
        match input_digests(inst, &ext[i], &done) {
            Some(d) => {
                let fp = Fingerprint::of(inst, d);
                let key = fp.key();
                match lookup(cache, &p.name, inst, &fp, &key, false)? {
                    Verdict::Cached(m) => {
                        done[i] = Some(*m);
                        out.push(PlanEntry {
                            instance: inst.id.clone(),
                            state: PlanState::Cached,
                            reasons: vec![],
                            changed: vec![],
                            waits_on: vec![],
                            key: Some(key),
                        });
                    }
                    Verdict::Run { reasons, changed } => out.push(PlanEntry {
                        instance: inst.id.clone(),
                        state: PlanState::WillRun,
                        reasons,
                        changed,
                        waits_on: vec![],
                        key: Some(key),
                    }),
                }
            }
            None => {
                let mut digests = ext[i].clone();
                for (name, input) in &inst.inputs {
                    if let Input::Upstream { instance, output } = input {
                        let d = match &done[*instance] {
                            Some(m) => m
                                .outputs
                                .get(output)
                                .map(|o| o.digest.clone())
                                .unwrap_or_else(|| ABSENT.into()),
                            None => PENDING.into(),
                        };
                        digests.insert(name.clone(), d);
                    }
                }
                let waits_on: Vec<String> = dag
                    .upstream(i)
                    .iter()
                    .filter(|&&u| done[u].is_none())
                    .map(|&u| p.instances[u].id.clone())
                    .collect();
                let fp = Fingerprint::of(inst, digests);
                let (mut reasons, changed) =
                    match lookup(cache, &p.name, inst, &fp, "(pending)", false)? {
                        Verdict::Run { reasons, changed } => (reasons, changed),
                        Verdict::Cached(_) => (vec![], vec![]),
                    };
                reasons.retain(|r| !r.starts_with("its previous run"));
                reasons.insert(
                    0,
                    format!(
                        "waits on {}",
                        waits_on
                            .iter()
                            .map(|w| format!("`{w}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                out.push(PlanEntry {
                    instance: inst.id.clone(),
                    state: PlanState::Waits,
                    reasons,
                    changed,
                    waits_on,
                    key: None,
                });
            }
        }
    }
    Ok(out)
}
