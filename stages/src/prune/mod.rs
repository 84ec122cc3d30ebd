//! The pruning family: `score`, `prune`, `clean`, `relabel` (diffprob.md §2.4 - §2.7), pure Rust,
//! no tensors; each stage's `run` takes its [`crate::Invocation`].
//!
//! - [`inputs`]: labels, identities, probabilities, histories, flags and kept lists, validated.
//! - [`select`]: the selection rules (DiffProb walk with its retry rule, the DynUnc/Rand k rule,
//!   the reference's Rand lists, R4 target-ratio search), pre-sorted once, O(N) per K(t).
//! - [`score`], [`pruning`], [`clean`], [`relabel`]: the four stages.
//!
//! `method: rand` (R5): `score` draws one uniform key per sample from a generator seeded by
//! (`seed`, identity id); `prune` with `order: random` keeps each identity's k highest keys (a
//! uniform k-subset; a non-zero prune `seed` redraws the keys from (that seed, identity)), and
//! `order: reference` keeps the reference's last k positions.

pub mod clean;
pub mod inputs;
pub mod pruning;
pub mod relabel;
pub mod score;
pub mod select;
