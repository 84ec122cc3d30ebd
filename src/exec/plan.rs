//! Deciding what runs: content digests of external inputs ([`hash_externals`]), input digests
//! from upstream manifests ([`input_digests`]), the cache verdict with its reasons
//! ([`lookup`]), and the whole-pipeline dry run behind `orchestrator plan` ([`plan`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::{ExecError, MissingHelp};
use crate::cache::{Cache, Manifest};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Input, Instance, Pipeline};

/// Digest used in a fingerprint for an optional upstream output that was not produced.
pub const ABSENT: &str = "absent";
/// Placeholder digest for an upstream output that is not known yet (plan only).
pub const PENDING: &str = "(pending)";
/// Why an instance named by `--force` runs.
pub const FORCED: &str = "forced (--force)";
/// Why an instance that never ran runs.
const NO_PREVIOUS_RUN: &str = "no previous run";

/// External inputs as found now: per instance, input name -> content digest of each one that
/// exists; and those that do not exist.
pub struct Externals {
    pub digests: Vec<BTreeMap<String, String>>,
    pub missing: Vec<Missing>,
}

/// An external input whose path does not exist.
#[derive(Debug, Clone)]
pub struct Missing {
    /// Index into `Pipeline::instances`.
    pub instance: usize,
    pub input: String,
    pub path: PathBuf,
}

/// Per instance: input name -> digest of each external input. Every distinct path is hashed
/// once (through the stat cache), in parallel. A missing path is an error naming it, the
/// stage, what the input is and how to set it (nothing may start without its inputs).
pub fn hash_externals(
    p: &Pipeline,
    cache: &Cache,
) -> Result<Vec<BTreeMap<String, String>>, ExecError> {
    let e = external_digests(p, cache)?;
    match e.missing.first() {
        Some(m) => Err(missing_input(p, m)),
        None => Ok(e.digests),
    }
}

/// [`hash_externals`] that reports missing paths instead of failing on them (`plan` shows
/// what needs them).
pub fn external_digests(p: &Pipeline, cache: &Cache) -> Result<Externals, ExecError> {
    let mut paths: Vec<&PathBuf> = p
        .instances
        .iter()
        .flat_map(|inst| inst.inputs.values())
        .filter_map(|input| match input {
            Input::External { path } => Some(path),
            Input::Upstream { .. } | Input::Gather { .. } => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    let digests: Vec<(PathBuf, Option<String>)> = paths
        .par_iter()
        .map(|path| {
            if std::fs::symlink_metadata(path).is_err() {
                return Ok(((*path).clone(), None));
            }
            let d = cache.digest_external(path).map_err(ExecError::Cache)?;
            Ok(((*path).clone(), Some(d)))
        })
        .collect::<Result<_, ExecError>>()?;
    let by_path: HashMap<PathBuf, Option<String>> = digests.into_iter().collect();
    let mut missing = Vec::new();
    let mut out = Vec::with_capacity(p.instances.len());
    for (i, inst) in p.instances.iter().enumerate() {
        let mut m = BTreeMap::new();
        for (name, input) in &inst.inputs {
            if let Input::External { path } = input {
                match &by_path[path] {
                    Some(d) => {
                        m.insert(name.clone(), d.clone());
                    }
                    None => missing.push(Missing {
                        instance: i,
                        input: name.clone(),
                        path: path.clone(),
                    }),
                }
            }
        }
        out.push(m);
    }
    Ok(Externals {
        digests: out,
        missing,
    })
}

/// The error for a missing external input: what it is, and how to point the pipeline at it.
pub fn missing_input(p: &Pipeline, m: &Missing) -> ExecError {
    let inst = &p.instances[m.instance];
    let help = p.input_help(inst, &m.input);
    let hint = match &help.param {
        Some(param) => format!(
            "set it with `--set {param}=PATH` (or change `params.{param}` in {})",
            p.file.display()
        ),
        None => "restore the file, or point the pipeline at where it is now".into(),
    };
    ExecError::MissingInput {
        path: m.path.clone(),
        stage: inst.id.clone(),
        input: m.input.clone(),
        location: inst.location.to_string(),
        help: Box::new(MissingHelp {
            what: help.what,
            hint,
        }),
    }
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
            Input::Gather { output, from } => {
                super::gather::digest(&super::gather::listing(output, from, done)?)
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
    // A pending key (an upstream has not run yet) names no manifest: no lookup, no file open.
    let found = if key == PENDING {
        None
    } else {
        cache.manifest(key)?
    };
    if let Some(m) = found {
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
            reasons.push(NO_PREVIOUS_RUN.into());
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
    /// An external input does not exist: `run` refuses to start until it does.
    NeedsInput,
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

/// What `run` would do now, without running anything or changing the cache. An instance whose
/// external input is missing is planned as [`PlanState::NeedsInput`] (its dependents wait on it).
pub fn plan(p: &Pipeline, cache: &Cache) -> Result<Vec<PlanEntry>, ExecError> {
    plan_forced(p, cache, &BTreeSet::new())
}

/// [`plan`] with the instances of `force` (indices) run even when cached, as `run --force`
/// does: their dependents wait on them.
pub fn plan_forced(
    p: &Pipeline,
    cache: &Cache,
    force: &BTreeSet<usize>,
) -> Result<Vec<PlanEntry>, ExecError> {
    let ext = external_digests(p, cache)?;
    let mut needs: Vec<Vec<String>> = vec![Vec::new(); p.instances.len()];
    for m in &ext.missing {
        let ExecError::MissingInput { path, help, .. } = missing_input(p, m) else {
            continue;
        };
        let what = help.what.map(|w| format!(" — {w}")).unwrap_or_default();
        needs[m.instance].push(format!(
            "needs input `{}` (missing): {}{what}; {}",
            m.input,
            path.display(),
            help.hint
        ));
    }
    let mut done: Vec<Option<Manifest>> = vec![None; p.instances.len()];
    let mut out: Vec<PlanEntry> = Vec::with_capacity(p.instances.len());
    for (i, inst) in p.instances.iter().enumerate() {
        if !needs[i].is_empty() {
            out.push(PlanEntry {
                instance: inst.id.clone(),
                state: PlanState::NeedsInput,
                reasons: std::mem::take(&mut needs[i]),
                changed: vec![],
                waits_on: vec![],
                key: None,
            });
            continue;
        }
        let entry = match input_digests(inst, &ext.digests[i], &done) {
            Some(d) => planned(p, cache, inst, d, force.contains(&i), &mut done[i])?,
            None => waiting(p, cache, inst, &ext.digests[i], &done)?,
        };
        out.push(entry);
    }
    Ok(out)
}

/// An instance whose inputs are all known: cached (its manifest recorded in `done`) or runs.
fn planned(
    p: &Pipeline,
    cache: &Cache,
    inst: &Instance,
    digests: BTreeMap<String, String>,
    forced: bool,
    done: &mut Option<Manifest>,
) -> Result<PlanEntry, ExecError> {
    let fp = Fingerprint::of(inst, digests);
    let key = fp.key();
    let verdict = if forced {
        Verdict::Run {
            reasons: vec![FORCED.into()],
            changed: vec![],
        }
    } else {
        lookup(cache, &p.name, inst, &fp, &key, false)?
    };
    let (state, reasons, changed) = match verdict {
        Verdict::Cached(m) => {
            *done = Some(*m);
            (PlanState::Cached, vec![], vec![])
        }
        Verdict::Run { reasons, changed } => (PlanState::WillRun, reasons, changed),
    };
    Ok(PlanEntry {
        instance: inst.id.clone(),
        state,
        reasons,
        changed,
        waits_on: vec![],
        key: Some(key),
    })
}

/// An instance with an upstream that has not run: what it waits on, and which of its own
/// fingerprint fields changed already.
fn waiting(
    p: &Pipeline,
    cache: &Cache,
    inst: &Instance,
    external: &BTreeMap<String, String>,
    done: &[Option<Manifest>],
) -> Result<PlanEntry, ExecError> {
    let mut digests = external.clone();
    // Upstream instances in first-seen order, each once (a gather may wait on thousands).
    let mut waits_on: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut wait_on = |i: usize| {
        if seen.insert(i) {
            waits_on.push(i);
        }
    };
    for (name, input) in &inst.inputs {
        if let Input::Gather { output, from } = input {
            let d = match super::gather::listing(output, from, done) {
                Some(items) => super::gather::digest(&items),
                None => {
                    for g in from.iter().filter(|g| done[g.instance].is_none()) {
                        wait_on(g.instance);
                    }
                    PENDING.into()
                }
            };
            digests.insert(name.clone(), d);
            continue;
        }
        let Input::Upstream { instance, output } = input else {
            continue;
        };
        let d = match &done[*instance] {
            Some(m) => m
                .outputs
                .get(output)
                .map(|o| o.digest.clone())
                .unwrap_or_else(|| ABSENT.into()),
            None => {
                wait_on(*instance);
                PENDING.into()
            }
        };
        digests.insert(name.clone(), d);
    }
    // The fingerprint is only compared with the last one; without one there is nothing to
    // build it for (most of a large plan on a new cache).
    let (mut reasons, changed) = if cache.index.get_last(&p.name, &inst.id)?.is_none() {
        (vec![NO_PREVIOUS_RUN.to_string()], vec![])
    } else {
        let fp = Fingerprint::of(inst, digests);
        match lookup(cache, &p.name, inst, &fp, PENDING, false)? {
            Verdict::Run { reasons, changed } => (reasons, changed),
            Verdict::Cached(_) => (vec![], vec![]),
        }
    };
    reasons.retain(|r| !r.starts_with("its previous run"));
    let waits_on: Vec<String> = waits_on
        .iter()
        .map(|&w| p.instances[w].id.clone())
        .collect();
    let list: Vec<String> = waits_on.iter().map(|w| format!("`{w}`")).collect();
    reasons.insert(0, format!("waits on {}", list.join(", ")));
    Ok(PlanEntry {
        instance: inst.id.clone(),
        state: PlanState::Waits,
        reasons,
        changed,
        waits_on,
        key: None,
    })
}

/// The current fingerprint key of each instance in `wanted` (indices into `p.instances`),
/// computed as `plan` computes it but from what the caller can read: external inputs through
/// `digest` (the cache's stat-cached hashing, or plain hashing while a run holds the index),
/// upstream outputs from the committed manifests `manifest(key)` gives. `None` for an instance
/// with an upstream that has no current result. Only the upstream closure of `wanted` is
/// computed.
pub fn current_keys(
    p: &Pipeline,
    wanted: &[usize],
    digest: &dyn Fn(&std::path::Path) -> Result<String, ExecError>,
    manifest: &dyn Fn(&str) -> Result<Option<Manifest>, ExecError>,
) -> Result<Vec<Option<String>>, ExecError> {
    let n = p.instances.len();
    let mut needed = vec![false; n];
    for &w in wanted {
        needed[w] = true;
    }
    // Instances are topologically ordered: walking down marks every upstream.
    for i in (0..n).rev() {
        if needed[i] {
            for input in p.instances[i].inputs.values() {
                for u in input.upstreams() {
                    needed[u] = true;
                }
            }
        }
    }
    let mut digests: HashMap<PathBuf, String> = HashMap::new();
    let mut keys: Vec<Option<String>> = vec![None; n];
    let mut done: Vec<Option<Manifest>> = vec![None; n];
    for i in (0..n).filter(|i| needed[*i]) {
        let inst = &p.instances[i];
        let mut ext = BTreeMap::new();
        for (name, input) in &inst.inputs {
            let Input::External { path } = input else {
                continue;
            };
            if !digests.contains_key(path) {
                if std::fs::symlink_metadata(path).is_err() {
                    let m = Missing {
                        instance: i,
                        input: name.clone(),
                        path: path.clone(),
                    };
                    return Err(missing_input(p, &m));
                }
                digests.insert(path.clone(), digest(path)?);
            }
            ext.insert(name.clone(), digests[path].clone());
        }
        if let Some(d) = input_digests(inst, &ext, &done) {
            let key = Fingerprint::of(inst, d).key();
            done[i] = manifest(&key)?;
            keys[i] = Some(key);
        }
    }
    Ok(wanted.iter().map(|w| keys[*w].clone()).collect())
}
