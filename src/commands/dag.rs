//! `orchestrator dag PIPELINE --format text|dot|mermaid|json`: the graph of stage instances.

use std::path::PathBuf;

use super::Global;
use crate::dag::{render, Format};
use crate::exit::{CliResult, OK};
use crate::pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// `text` (one instance per line with what it reads), `dot` (Graphviz), `mermaid`, or
    /// `json` (instances with their dependencies, for scripts).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    // The loader's own message for a missing file (a pipeline error like any other).
    let opts = pipeline::LoadOptions {
        walk_inputs: false,
        ..g.load_options()
    };
    let p = pipeline::load_opts(&args.pipeline, &opts)?;
    print!("{}", render(&p, args.format));
    Ok(OK)
}
