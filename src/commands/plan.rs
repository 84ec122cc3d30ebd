//! `orchestrator plan`: per stage instance cached / will run / waits on upstream / needs an
//! input that is missing, and why. It plans without the data: exit 0 when it could plan.

use std::path::PathBuf;

use super::{Global, TextOrJson};
use crate::exec::plan::{plan_forced, PlanState};
use crate::exit::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub select: super::Selection,
    /// Also list the fingerprint fields that changed since the instance's last run.
    #[arg(long)]
    pub explain: bool,
    /// `text`, or `json` (every instance with its state, reasons and key, for scripts).
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let (p, force) = super::select(super::load(&args.pipeline, g)?, &args.select)?;
    let root = super::cache_root(g, &args.pipeline);
    super::check_name(&root, &p, &args.pipeline)?;
    // With the lock when free; during a run, from the committed manifests.
    let (cache, _lock) = super::open_shared(&root)?;
    let entries = plan_forced(&p, &cache, &force)?;
    cache.index.flush()?;
    if args.format == TextOrJson::Json {
        let v = serde_json::json!({ "pipeline": p.name, "instances": entries });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let width = entries.iter().map(|e| e.instance.len()).max().unwrap_or(0);
    let sw = if entries.iter().any(|e| e.state == PlanState::NeedsInput) {
        11
    } else {
        9
    };
    let (mut cached, mut run, mut waits, mut needs) = (0, 0, 0, 0);
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
            PlanState::NeedsInput => {
                needs += 1;
                "needs input"
            }
        };
        let why = if e.reasons.is_empty() {
            String::new()
        } else {
            format!("  {}", e.reasons.join("; "))
        };
        println!("{state:<sw$} {:<width$}{why}", e.instance);
        if args.explain && !e.changed.is_empty() {
            println!(
                "{:<sw$} {:<width$}  changed fields: {}",
                "",
                "",
                e.changed.join(", ")
            );
        }
    }
    let need = if needs > 0 {
        format!(", {needs} need an input that is missing (`run` will not start until it exists)")
    } else {
        String::new()
    };
    println!(
        "{} instances: {cached} cached, {run} will run, {waits} wait on upstream{need}",
        entries.len()
    );
    Ok(0)
}
