//! The stage worker: `orchestrator-stage run INVOCATION.json` runs any built-in stage (the torch
//! kinds, and the pure-Rust ones when `orchestrator-stage-lite` is absent).
//!
//! Exit codes: 0 success, 1 the stage failed (the reason is on stderr), 2 unusable invocation.

use std::process::ExitCode;

use orchestrator_stages::kinds::Worker;
use orchestrator_stages::run::{run, worker_main};

fn main() -> ExitCode {
    worker_main(Worker::Torch, "libtorch 2.11.0", run)
}
