//! `orchestrator validate PIPELINE`: load, check and expand a pipeline; print the instance count
//! (or, with `--format json`, every instance with the static part of its fingerprint), or every
//! error (exit code 2).

use std::path::PathBuf;

use serde_json::json;

use super::{Global, TextOrJson};
use crate::exit::{CliResult, OK};
use crate::fingerprint::static_fingerprints;
use crate::pipeline::{self, Action, Input, Pipeline};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// `text`: a one-line summary; `json`: every instance (id, cell, kind, resolved params,
    /// command, inputs, resources, static fingerprint) for scripts.
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    // The loader's own message for a missing file (a pipeline error like any other).
    let p = pipeline::load_opts(&args.pipeline, &g.load_options())?;
    match args.format {
        TextOrJson::Text => {
            let stages: std::collections::BTreeSet<&str> =
                p.instances.iter().map(|i| i.stage.as_str()).collect();
            let cells = if p.matrix_axes.is_empty() {
                String::new()
            } else {
                format!(", {} matrix cells", p.cells.len())
            };
            println!(
                "ok: `{}`: {} stage instances of {} stages{cells}",
                args.pipeline.display(),
                p.instances.len(),
                stages.len()
            );
        }
        TextOrJson::Json => {
            let s = serde_json::to_string_pretty(&to_json(&p)).map_err(anyhow::Error::from)?;
            println!("{s}");
        }
    }
    Ok(OK)
}

/// The expanded pipeline as JSON (see [`Args::format`]).
pub fn to_json(p: &Pipeline) -> serde_json::Value {
    let fps = static_fingerprints(p);
    let instances: Vec<serde_json::Value> = p
        .instances
        .iter()
        .zip(&fps)
        .map(|(inst, fp)| {
            let inputs: serde_json::Map<String, serde_json::Value> = inst
                .inputs
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Input::Upstream { instance, output } => {
                            json!({"upstream": p.instances[*instance].id, "output": output})
                        }
                        Input::External { path } => json!({"path": path}),
                        Input::Gather { output, from } => json!({
                            "gather": from.iter().map(|g| &p.instances[g.instance].id).collect::<Vec<_>>(),
                            "output": output,
                        }),
                    };
                    (k.clone(), v)
                })
                .collect();
            let (command, env) = match &inst.action {
                Action::Shell { command, env } => (json!(command), json!(env)),
                Action::Builtin { .. } => (serde_json::Value::Null, serde_json::Value::Null),
            };
            json!({
                "id": inst.id,
                "stage": inst.stage,
                "cell": crate::pipeline::cell_map(&inst.cell),
                "kind": fp.kind,
                "kind_version": fp.kind_version,
                "params": fp.params,
                "command": command,
                "env": env,
                "inputs": inputs,
                "outputs": fp.outputs,
                "resources": {
                    "gpus": inst.resources.gpus,
                    "cpus": inst.resources.cpus,
                    "mem_gb": inst.resources.mem_gb,
                    "time_min": inst.resources.time_min,
                    "slurm": inst.resources.slurm,
                },
                "retry": inst.retry,
                "location": &*inst.location,
                "static_key": fp.key(),
            })
        })
        .collect();
    json!({
        "name": p.name,
        "file": p.file,
        "axes": p.matrix_axes,
        "cells": p.cells,
        "executor": {"kind": p.executor.kind, "slurm": p.executor.slurm},
        "report": {"stages": p.report.stages, "baseline": p.report.baseline},
        "instances": instances,
    })
}
