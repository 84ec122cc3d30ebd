//! Prerequisites of the tests that compare against the reference libraries (for this crate's unit
//! tests and its integration tests; not part of the stage API).
//!
//! Such a test is `#[ignore = "requires ..."]`, so a plain `cargo test` reports it as ignored with
//! the reason; `make test` runs `--include-ignored`, and there a missing prerequisite panics here
//! with what is missing and how to get it. A test never returns early to pass.

use std::path::PathBuf;

/// The Python interpreter of the project's venv (`ORCHESTRATOR_PYTHON`, exported by
/// `scripts/deps.sh`). Panics with the fix when it is unset or not a file.
pub fn require_python() -> PathBuf {
    let fix = "run the tests with `make test`, or `source scripts/deps.sh` first (it installs torch==2.11.0, numpy and scikit-learn into .deps/venv and exports ORCHESTRATOR_PYTHON)";
    let Some(p) = std::env::var_os("ORCHESTRATOR_PYTHON").filter(|p| !p.is_empty()) else {
        panic!("this test needs the project's Python, but ORCHESTRATOR_PYTHON is unset: {fix}");
    };
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "this test needs the project's Python, but ORCHESTRATOR_PYTHON={} is not a file: {fix}",
        p.display()
    );
    p
}
