//! `orchestrator gc`.

use crate::cli::Global;
use crate::exit::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _g: &Global) -> CliResult<u8> {
    Err(CliError::environment("`gc` is being built"))
}
