//! Command-line surface: raw args -> one [`Cli`] value -> the command's `run`. Thin by design;
//! each command's own arguments live next to its code in [`crate::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::exit::CliResult;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Declarative, cached, GPU-aware pipelines for face-recognition data pruning (DiffProb)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Cache root (object store + index + work dirs). Default: `cache/` beside the pipeline's
    /// project (the nearest folder above the pipeline file that holds a `cache/` folder or
    /// `Cargo.toml`; else the pipeline's folder).
    #[arg(long, global = true, env = "ORCHESTRATOR_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Override a pipeline param: `--set ratio=0.25` (repeatable; YAML values).
    #[arg(long = "set", global = true, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: cached stages are skipped, interrupted ones resume.
    Run(commands::run::Args),
    /// Show what `run` would do: each stage instance cached / will run / waits, and why.
    Plan(commands::plan::Args),
    /// Check a pipeline file and print every error.
    Validate(commands::validate::Args),
    /// Print the stage graph (text, dot or mermaid).
    Dag(commands::dag::Args),
    /// Print the JSON schema of the pipeline format.
    Schema(commands::schema::Args),
    /// Per stage instance: cached / failed / never run, duration, device.
    Status(commands::status::Args),
    /// Print the latest log of a stage instance.
    Logs(commands::logs::Args),
    /// Print the paths of a stage instance's outputs.
    Show(commands::show::Args),
    /// The comparison table over the matrix cells, with plots.
    Report(commands::report::Args),
    /// A live web dashboard of the pipelines' runs (read-only; works while `run` runs).
    Serve(commands::serve::Args),
    /// Remove what no pipeline's latest runs reach.
    Gc(commands::gc::Args),
    /// Cache maintenance: verify, repair, rebuild the index.
    #[command(subcommand)]
    Cache(commands::cache::Command),
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.global);
    crate::exit::to_exit_code(dispatch(cli))
}

fn dispatch(cli: Cli) -> CliResult<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Run(a) => commands::run::run(a, g),
        Command::Plan(a) => commands::plan::run(a, g),
        Command::Validate(a) => commands::validate::run(a, g),
        Command::Dag(a) => commands::dag::run(a, g),
        Command::Schema(a) => commands::schema::run(a, g),
        Command::Status(a) => commands::status::run(a, g),
        Command::Logs(a) => commands::logs::run(a, g),
        Command::Show(a) => commands::show::run(a, g),
        Command::Report(a) => commands::report::run(a, g),
        Command::Serve(a) => commands::serve::run(a, g),
        Command::Gc(a) => commands::gc::run(a, g),
        Command::Cache(c) => commands::cache::run(c, g),
    }
}

fn init_tracing(g: &Global) {
    let default = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
