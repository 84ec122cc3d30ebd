//! The pure-Rust stage worker: `orchestrator-stage-lite run INVOCATION.json` runs the kinds that
//! need no libtorch (data, score, prune, clean, relabel) with `orchestrator_stages::run::run_pure`.
//! It lives in the engine's package, which is never built with the `torch` feature, so it cannot
//! link libtorch: it starts in milliseconds (a test checks its dynamic dependencies).
//!
//! Exit codes: 0 success, 1 the stage failed (the reason is on stderr), 2 unusable invocation or
//! a kind that needs `orchestrator-stage`.

use std::process::ExitCode;

use orchestrator_stages::kinds::Worker;
use orchestrator_stages::run::{run_pure, worker_main};

fn main() -> ExitCode {
    worker_main(Worker::Lite, "pure-Rust kinds", run_pure)
}
