//! The stage worker: `orchestrator-stage run INVOCATION.json` runs one built-in stage.
//!
//! Exit codes: 0 success, 1 the stage failed (the reason is on stderr), 2 unusable invocation.

use std::path::PathBuf;
use std::process::ExitCode;

use orchestrator_stages::Invocation;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, cmd, path] if cmd == "run" => PathBuf::from(path),
        [_, flag] if flag == "--version" => {
            println!(
                "orchestrator-stage {} (libtorch {})",
                env!("CARGO_PKG_VERSION"),
                tch_version()
            );
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: orchestrator-stage run INVOCATION.json");
            return ExitCode::from(2);
        }
    };
    let inv = match Invocation::read(&path) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = orchestrator_stages::data::run(&inv)
        .or_else(|| orchestrator_stages::prune::run(&inv))
        .or_else(|| orchestrator_stages::torch::run(&inv));
    let outcome = match result {
        None => {
            eprintln!(
                "error: stage `{}`: this worker has no kind `{}`",
                inv.stage_id, inv.kind
            );
            return ExitCode::from(2);
        }
        Some(r) => r.and_then(|metrics| inv.write_metrics(&metrics)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: stage `{}` ({}): {e:#}", inv.stage_id, inv.kind);
            ExitCode::FAILURE
        }
    }
}

fn tch_version() -> &'static str {
    "2.11.0"
}
