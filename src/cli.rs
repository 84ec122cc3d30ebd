//! Command-line surface: raw args -> one [`Cli`] value -> the command's `run`. Thin by design;
//! each command's own arguments live next to its code in [`crate::commands`] (and the options
//! every command takes in [`Global`]); the arrows go one way: cli -> commands -> engine.

use clap::{Parser, Subcommand};

use crate::commands::{self, Global};
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
    // Like every Unix tool, end quietly when the reader of our output goes away (`| head`)...
    crate::exit::default_sigpipe(true);
    let cli = Cli::parse();
    // ...except in `run`, whose stages must not die with a closed terminal pipe: its view
    // ignores write errors instead.
    if matches!(cli.command, Command::Run(_)) {
        crate::exit::default_sigpipe(false);
    }
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
    let ansi = g.color.stderr();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(PlainMessages { ansi })
        .try_init();
}

/// Log events as the tool's other messages read: `warning: ...`, `error: ...` (the level in
/// colour only when [`commands::ColorChoice::stderr`] allows it), no timestamps. Libraries' records
/// (sled's, through `log`) come out the same way.
struct PlainMessages {
    ansi: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainMessages
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        let (name, colour) = match *event.metadata().level() {
            Level::ERROR => ("error", "31"),
            Level::WARN => ("warning", "33"),
            Level::INFO => ("info", "32"),
            Level::DEBUG => ("debug", "34"),
            Level::TRACE => ("trace", "35"),
        };
        if self.ansi {
            write!(w, "\x1b[1;{colour}m{name}\x1b[0m: ")?;
        } else {
            write!(w, "{name}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
