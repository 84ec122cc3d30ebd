//! `orchestrator plan`: per stage instance cached / will run / waits on upstream, and why.

use std::path::PathBuf;

use crate::cli::Global;
use crate::exec::plan::{plan, PlanState};
use crate::exit::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Also list the fingerprint fields that changed since the instance's last run.
    #[arg(long)]
    pub explain: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let p = super::run::load(&args.pipeline, g)?;
    let root = super::run::cache_root(g, &args.pipeline);
    super::run::check_name(&root, &p, &args.pipeline)?;
    // With the lock when free; during a run, from the committed manifests.
    let (cache, _lock) = super::run::open_shared(&root)?;
    let entries = plan(&p, &cache).map_err(super::run::exec_error)?;
    cache.index.flush().map_err(super::run::cache_error)?;
    if args.format == Format::Json {
        let v = serde_json::json!({ "pipeline": p.name, "instances": entries });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let width = entries.iter().map(|e| e.instance.len()).max().unwrap_or(0);
    let (mut cached, mut run, mut waits) = (0, 0, 0);
    for e in &entries {
        let state = match e.state {
            PlanState::Cached => {
                cached += 1;
                "cached"
            }
            PlanState::WillRun => {
                run += 1;
                "will run"
            }
            PlanState::Waits => {
                waits += 1;
                "waits"
            }
        };
        let why = if e.reasons.is_empty() {
            String::new()
        } else {
            format!("  {}", e.reasons.join("; "))
        };
        println!("{state:<9} {:<width$}{why}", e.instance);
        if args.explain && !e.changed.is_empty() {
            println!(
                "{:<9} {:<width$}  changed fields: {}",
                "",
                "",
                e.changed.join(", ")
            );
        }
    }
    println!(
        "{} instances: {cached} cached, {run} will run, {waits} wait on upstream",
        entries.len()
    );
    Ok(0)
}
