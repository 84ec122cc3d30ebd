//! The pure-Rust stage worker: `orchestrator-stage-lite run INVOCATION.json` runs the kinds that
//! need no libtorch (data, score, prune, clean, relabel) with `orchestrator_stages::run::run_pure`,
//! and `report`, whose table is the engine's (`orchestrator::report::gathered`). It lives in the
//! engine's package, which is never built with the `torch` feature, so it cannot link libtorch:
//! it starts in milliseconds (a test checks its dynamic dependencies).
//!
//! Exit codes: 0 success, 1 the stage failed (the reason is on stderr), 2 unusable invocation or
//! a kind that needs `orchestrator-stage`.

use std::process::ExitCode;

use orchestrator_stages::kinds::{Kind, Worker};
use orchestrator_stages::run::{run_pure, worker_main};
use orchestrator_stages::Invocation;

/// The engine's kinds (`orchestrator_stages::run::ENGINE_KINDS`), then the pure-Rust ones.
fn dispatch(kind: Kind, inv: &Invocation) -> Option<anyhow::Result<serde_json::Value>> {
    match kind {
        Kind::Report => Some(orchestrator::report::gathered::run_stage(inv)),
        _ => run_pure(kind, inv),
    }
}

fn main() -> ExitCode {
    worker_main(Worker::Lite, "pure-Rust kinds", dispatch)
}
