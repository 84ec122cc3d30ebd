//! `orchestrator schema`: print the JSON schema of the pipeline format (draft-07), including
//! every built-in kind's params. `docs/pipeline.schema.json` is a checked-in copy that a test
//! keeps current (`UPDATE_SCHEMA=1 cargo test ... checked_in_schema_is_current` regenerates it).

use super::Global;
use crate::exit::{CliResult, OK};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _g: &Global) -> CliResult<u8> {
    let s = serde_json::to_string_pretty(&crate::pipeline::schema::schema())
        .map_err(anyhow::Error::from)?;
    println!("{s}");
    Ok(OK)
}
