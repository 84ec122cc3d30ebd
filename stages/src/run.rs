//! The workers' dispatch: [`run_pure`] runs a kind that needs no libtorch (the whole of
//! `orchestrator-stage-lite`, whose `main` is in the engine's package so that it is never built
//! with the `torch` feature); `orchestrator-stage` tries it, then `torch::run`. Both are exhaustive
//! matches on [`Kind`], so a new kind does not compile until it is dispatched. [`worker_main`] is
//! the shared `main` of both binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::kinds::{Kind, Worker};
use crate::Invocation;

/// Run a pure-Rust kind; `None` for the kinds that need libtorch (`Worker::Torch`) and for
/// [`ENGINE_KINDS`].
pub fn run_pure(kind: Kind, inv: &Invocation) -> Option<Result<Value>> {
    match kind {
        Kind::SyntheticFaces => Some(crate::data::run_synthetic(inv)),
        Kind::Recordio => Some(crate::data::run_recordio(inv)),
        Kind::ImageFolder => Some(crate::data::run_image_folder(inv)),
        Kind::Score => Some(crate::prune::score::run(inv)),
        Kind::Prune => Some(crate::prune::pruning::run(inv)),
        Kind::Clean => Some(crate::prune::clean::run(inv)),
        Kind::Relabel => Some(crate::prune::relabel::run(inv)),
        Kind::Train | Kind::EvalTrainset | Kind::Verify | Kind::Ijbc => None,
        // Built by the engine's `report` module: `orchestrator-stage-lite` dispatches it itself.
        Kind::Report => None,
    }
}

/// Lite kinds whose code is the engine's (`orchestrator-stage-lite`, in the engine's package,
/// runs them before it falls back to [`run_pure`]); `orchestrator-stage` cannot run them.
pub const ENGINE_KINDS: &[Kind] = &[Kind::Report];

/// Run any kind this build can run: the pure kinds, and with the `torch` feature the others.
pub fn run(kind: Kind, inv: &Invocation) -> Option<Result<Value>> {
    let out = run_pure(kind, inv);
    #[cfg(feature = "torch")]
    let out = out.or_else(|| crate::torch::run(kind, inv));
    out
}

/// Run `inv` by its kind's name with [`run`]; `None` when no kind has that name, or this build
/// cannot run it (a torch kind without the `torch` feature).
pub fn run_invocation(inv: &Invocation) -> Option<Result<Value>> {
    Kind::from_name(&inv.kind).and_then(|k| run(k, inv))
}

/// `main` of a worker binary: `NAME run INVOCATION.json` runs one stage with `dispatch` and
/// writes its `metrics.json`. Exit codes: 0 success, 1 the stage failed (the reason is on
/// stderr), 2 unusable invocation or a kind this worker cannot run.
pub fn worker_main(
    worker: Worker,
    version: &str,
    dispatch: fn(Kind, &Invocation) -> Option<Result<Value>>,
) -> ExitCode {
    let name = worker.binary();
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, cmd, path] if cmd == "run" => PathBuf::from(path),
        [_, flag] if flag == "--version" => {
            println!("{name} {} ({version})", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: {name} run INVOCATION.json");
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
    let Some(kind) = Kind::from_name(&inv.kind) else {
        eprintln!(
            "error: stage `{}`: there is no built-in kind `{}`\nhint: the engine and {name} come from different builds; rebuild both with `make build`",
            inv.stage_id, inv.kind
        );
        return ExitCode::from(2);
    };
    crate::threads::apply_budget();
    let threads = crate::threads::budget();
    // First line of every stage log: which worker ran it, with how many threads.
    eprintln!(
        "{name} {}: stage `{}` ({}), {threads} CPU thread(s)",
        env!("CARGO_PKG_VERSION"),
        inv.stage_id,
        inv.kind
    );
    let outcome = match dispatch(kind, &inv) {
        None => {
            eprintln!(
                "error: stage `{}`: {name} cannot run kind `{}`; it runs in {}\nhint: build the workers with `make build`",
                inv.stage_id,
                inv.kind,
                kind.spec().worker.binary()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's spec names the worker whose dispatch runs it. Params that do not parse make
    /// every dispatched kind fail at once, so nothing is computed.
    #[test]
    fn dispatch_agrees_with_each_kinds_worker() {
        let d = tempfile::tempdir().unwrap();
        let mut inv = Invocation::standalone(
            "clean",
            "dispatch-test",
            &serde_json::json!({}),
            &[],
            d.path(),
        )
        .unwrap();
        inv.params = serde_json::json!("not a map");
        for &k in Kind::ALL {
            inv.kind = k.name().into();
            let pure = run_pure(k, &inv);
            let lite = k.spec().worker == Worker::Lite && !ENGINE_KINDS.contains(&k);
            assert_eq!(pure.is_some(), lite, "{k:?}");
            if let Some(r) = pure {
                assert!(r.is_err(), "{k:?}");
            }
            #[cfg(feature = "torch")]
            if !ENGINE_KINDS.contains(&k) {
                let r = run(k, &inv).unwrap_or_else(|| panic!("{k:?} is not dispatched"));
                assert!(r.is_err(), "{k:?}");
            }
        }
    }
}
