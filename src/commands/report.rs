//! `orchestrator report PIPELINE`: the comparison table over the matrix cells (Markdown on the
//! terminal; Markdown, CSV, JSON and plots under `results/<pipeline>/report/`).

use std::path::PathBuf;

use super::Global;
use crate::exit::{CliError, CliResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// What to print on stdout (all three are written to the report folder either way).
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: Format,
    /// Report folder (default: `results/<pipeline>/report/` beside the cache).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let p = super::load(&args.pipeline, g)?;
    let root = super::cache_root(g, &args.pipeline);
    super::check_name(&root, &p, &args.pipeline)?;
    // With the lock when free; during a run, from the committed manifests.
    let (cache, _lock) = super::open_shared(&root)?;
    // Mapped by the typed error at its root (a missing input is bad input, exit 2).
    let report = crate::report::build(&p, &cache).map_err(|e| {
        CliError::from(e.context(format!("cannot build the report of `{}`", p.name)))
    })?;
    let dir = args
        .out
        .unwrap_or_else(|| cache.results_dir(&p.name).join("report"));
    let written = report
        .write(&dir)
        .map_err(|e| CliError::environment(format!("error: cannot write the report: {e:#}")))?;
    match args.format {
        Format::Markdown => print!("{}", report.markdown()),
        Format::Csv => print!("{}", report.csv()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    if args.format == Format::Markdown {
        println!("\nreport: {} ({} files)", dir.display(), written.len());
    }
    Ok(0)
}
