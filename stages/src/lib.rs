//! The built-in stage kinds of `orchestrator`.
//!
//! Two halves live here:
//! - always compiled, no libtorch: [`kinds`] (each kind's params, version, inputs and outputs; the
//!   engine reads these to validate pipelines and compute fingerprints), [`invocation`] (the versioned
//!   JSON contract between the engine and a stage process), the file [`formats`], the dataset
//!   generator and readers ([`data`]), the pruning family ([`prune`]) and the evaluation metrics
//!   ([`eval`]);
//! - behind the `torch` feature: [`torch`] (networks, heads, training, embedding extraction) and the
//!   `orchestrator-stage` worker binary that runs any built-in kind from an invocation file.

pub mod data;
pub mod eval;
pub mod formats;
pub mod invocation;
pub mod kinds;
pub mod prune;
#[doc(hidden)]
pub mod testing;
#[cfg(feature = "torch")]
pub mod torch;

/// Whether this build of the crate links libtorch (the `torch` feature). The engine refuses to
/// compile against such a build, so that it never loads libtorch.
pub const WITH_TORCH: bool = cfg!(feature = "torch");

pub use invocation::Invocation;
pub use kinds::{lookup, KindSpec};
