//! `orchestrator show`: the paths of a stage instance's current outputs (read-only store views).

use std::path::PathBuf;

use crate::cache::History;
use crate::cli::Global;
use crate::exit::{CliError, CliResult};

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
    let p = super::run::load(&args.pipeline, g)?;
    let inst = super::run::find_instance(&p, &args.stage)?;
    let root = super::run::cache_root(g, &args.pipeline);
    let root = root.canonicalize().unwrap_or(root);
    super::run::check_name(&root, &p, &args.pipeline)?;
    let committed = History::new(&root, &p.name)
        .latest_committed()
        .map_err(super::run::cache_error)?;
    let no_results = || {
        CliError::bad_input(format!(
            "error: stage `{}` has no results yet\nhint: `orchestrator run {}`",
            inst.id,
            args.pipeline.display()
        ))
    };
    let rec = committed.get(&inst.id).ok_or_else(no_results)?;
    let (cache, _lock) = super::run::open_shared(&root)?;
    let store = &cache.store;
    let m = cache
        .manifest(&rec.key)
        .map_err(super::run::cache_error)?
        .ok_or_else(no_results)?;
    // An object changed in place (e.g. edited through `results/`) is said, never passed off.
    for (name, o) in &m.outputs {
        let one = crate::cache::Manifest {
            outputs: [(name.clone(), o.clone())].into_iter().collect(),
            metrics: None,
            ..m.clone()
        };
        if let Ok(Some(problem)) = cache.check_manifest(&one, false) {
            tracing::warn!(
                "output `{name}` of `{}` was modified in the store (edited through results/?): {problem}; it is not used, and `orchestrator run` computes it again",
                inst.id
            );
        }
    }
    if let Some(d) = &m.metrics {
        let one = crate::cache::Manifest {
            outputs: Default::default(),
            metrics: Some(d.clone()),
            ..m.clone()
        };
        if let Ok(Some(problem)) = cache.check_manifest(&one, false) {
            tracing::warn!(
                "metrics.json of `{}` was modified in the store (edited through results/?): {problem}; it is not used, and `orchestrator run` computes it again",
                inst.id
            );
        }
    }
    let mut rows = Vec::new();
    for (name, o) in &m.outputs {
        let base = o.rel_path.rsplit('/').next().unwrap_or(name).to_string();
        let v = store
            .view(&o.digest, o.kind, &base)
            .map_err(super::run::cache_error)?;
        rows.push((name.clone(), v));
    }
    if let Some(d) = &m.metrics {
        let v = store
            .view(d, crate::cache::ObjKind::File, "metrics.json")
            .map_err(super::run::cache_error)?;
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
