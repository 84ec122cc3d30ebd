//! `orchestrator show`: the paths of a stage instance's current outputs (read-only store views):
//! those of its fingerprint as the pipeline (with `--set`) gives it now, as `report` reads them.
//! Works while a run holds the cache (the index is then bypassed: inputs are hashed without the
//! stat cache, manifests read from their files). An output changed in the store since it was
//! committed is said, never passed off.

use std::path::PathBuf;

use super::Global;
use crate::cache::{Cache, History, Manifest};
use crate::exec::plan::current_keys;
use crate::exec::ExecError;
use crate::exit::{CliError, CliResult};
use crate::pipeline::{Instance, Pipeline};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Stage name (when it has one instance) or instance id.
    pub stage: String,
    /// Print only this output's path.
    pub output: Option<String>,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let p = super::load_to_read(&args.pipeline, g)?;
    let inst = super::find_instance(&p, &args.stage)?;
    let root = super::cache_root(g, &args.pipeline);
    let root = root.canonicalize().unwrap_or(root);
    super::check_name(&root, &p, &args.pipeline)?;
    // No cache yet: nothing has run (and a read-only command creates none).
    let cache = if root.join("manifests").is_dir() {
        Some(super::open_shared(&root)?)
    } else {
        None
    };
    let found = match &cache {
        Some((cache, _lock)) => current_manifest(&p, inst, cache)?,
        None => None,
    };
    let (Some((cache, _lock)), Some(m)) = (&cache, found) else {
        // Say whether it has results for other inputs or params (`--set` values).
        let ran = History::new(&root, &p.name)
            .latest_committed()?
            .contains_key(&inst.id);
        let what = if ran {
            "no results for its current inputs and params (it has run with others)"
        } else {
            "no results yet"
        };
        let set: String = g.set.iter().map(|s| format!(" --set {s}")).collect();
        return Err(CliError::bad_input(format!(
            "error: stage `{}` has {what}\nhint: `orchestrator run {}{set}`",
            inst.id,
            args.pipeline.display()
        )));
    };
    warn_if_modified(cache, &m, &inst.id);
    let store = &cache.store;
    let mut rows = Vec::new();
    for (name, o) in &m.outputs {
        let base = o.rel_path.rsplit('/').next().unwrap_or(name).to_string();
        let v = store.view(&o.digest, o.kind, &base)?;
        rows.push((name.clone(), v));
    }
    if let Some(d) = &m.metrics {
        let v = store.view(d, crate::cache::ObjKind::File, "metrics.json")?;
        rows.push(("metrics.json".into(), v));
    }
    if let Some(want) = &args.output {
        return match rows.iter().find(|(n, _)| n == want) {
            Some((_, v)) => {
                println!("{}", v.display());
                Ok(0)
            }
            None => {
                let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
                let hint = crate::pipeline::diagnostics::suggest(want, &names, "its outputs are")
                    .unwrap_or_default();
                Err(CliError::bad_input(format!(
                    "error: stage `{}` has no output `{want}`\nhint: {hint}",
                    inst.id
                )))
            }
        };
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (n, v) in rows {
        println!("{n:<width$}  {}", v.display());
    }
    Ok(0)
}

/// The committed manifest of `inst`'s current fingerprint, if there is one.
fn current_manifest(p: &Pipeline, inst: &Instance, cache: &Cache) -> CliResult<Option<Manifest>> {
    let i = p
        .instances
        .iter()
        .position(|x| x.id == inst.id)
        .unwrap_or_default();
    let read = |key: &str| cache.manifest(key).map_err(ExecError::from);
    // With the cache's stat cache when this process holds the index; plain hashing while a run
    // holds it (the detached index remembers nothing).
    let keys = current_keys(
        p,
        &[i],
        &|path| cache.digest_external(path).map_err(ExecError::from),
        &read,
    )?;
    match keys.into_iter().next().flatten() {
        Some(key) => Ok(cache.manifest(&key)?),
        None => Ok(None),
    }
}

/// Warn about each output (and metrics.json) whose stored object changed since it was committed
/// (e.g. edited through `results/`): `run` does not use it and computes it again.
fn warn_if_modified(cache: &Cache, m: &Manifest, instance: &str) {
    let one = |outputs, metrics| Manifest {
        outputs,
        metrics,
        ..m.clone()
    };
    let mut parts: Vec<(String, Manifest)> = m
        .outputs
        .iter()
        .map(|(name, o)| {
            let only = [(name.clone(), o.clone())].into_iter().collect();
            (format!("output `{name}`"), one(only, None))
        })
        .collect();
    if let Some(d) = &m.metrics {
        parts.push((
            "metrics.json".into(),
            one(Default::default(), Some(d.clone())),
        ));
    }
    for (what, part) in parts {
        if let Ok(Some(problem)) = cache.check_manifest(&part, false) {
            tracing::warn!(
                "{what} of `{instance}` was modified in the store (edited through results/?): {problem}; it is not used, and `orchestrator run` computes it again"
            );
        }
    }
}
