//! `orchestrator show`: the paths of a stage instance's current outputs (read-only store views):
//! those of its fingerprint as the pipeline (with `--set`) gives it now, as `report` reads them.
//! Works while a run holds the cache (the index is then bypassed: inputs are hashed without the
//! stat cache, manifests read from their files).

use std::path::PathBuf;

use std::path::Path;

use super::Global;
use crate::cache::{Cache, CacheError, History, Manifest, Store};
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
    let store = Store::new(&root);
    let m = match current_manifest(&p, inst, &root, &store)? {
        Some(m) => m,
        None => {
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
        }
    };
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
fn current_manifest(
    p: &Pipeline,
    inst: &Instance,
    root: &Path,
    store: &Store,
) -> CliResult<Option<Manifest>> {
    let i = p
        .instances
        .iter()
        .position(|x| x.id == inst.id)
        .unwrap_or_default();
    if !root.join("manifests").is_dir() {
        return Ok(None); // no cache yet: nothing has run (and a read-only command creates none)
    }
    let read = |key: &str| store.read_manifest(key).map_err(ExecError::from);
    // The cache's stat-cached hashing when no run holds the index; plain hashing otherwise.
    let keys = match Cache::open(root) {
        Ok(cache) => current_keys(
            p,
            &[i],
            &|path| cache.digest_external(path).map_err(ExecError::from),
            &read,
        )?,
        Err(_) => current_keys(p, &[i], &|path| digest_plain(store, path), &read)?,
    };
    match keys.into_iter().next().flatten() {
        Some(key) => Ok(store.read_manifest(&key)?),
        None => Ok(None),
    }
}

/// An external input's content digest as the cache computes it, without its stat cache.
fn digest_plain(store: &Store, path: &Path) -> Result<String, ExecError> {
    let io = |e| ExecError::Cache(CacheError::io("cannot read input", path)(e));
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return crate::cache::hash_file(path).map_err(io);
    }
    let tree = store.tree_of_dir(path, &|f, _| {
        crate::cache::hash_file(f).map_err(CacheError::io("cannot read input", f))
    })?;
    Ok(tree.digest())
}
