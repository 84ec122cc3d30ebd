//! `orchestrator cache ...`.

use crate::cli::Global;
use crate::exit::{CliError, CliResult};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-hash every object and report corrupt ones.
    Verify,
}

pub fn run(_c: Command, _g: &Global) -> CliResult<u8> {
    Err(CliError::environment("`cache` is being built"))
}
