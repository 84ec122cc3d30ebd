//! The pruning family: `score`, `prune`, `clean`, `relabel` (pure math, no tensors).

use crate::Invocation;

/// Run a pruning kind; `None` when `inv.kind` is not one of them.
pub fn run(inv: &Invocation) -> Option<anyhow::Result<serde_json::Value>> {
    let _ = inv;
    None
}
