//! Dataset kinds and readers: the `synthetic-faces` generator, `recordio`, `image-folder`, the
//! dataset `train` folder contract ([`dataset::Dataset`]), and the multi-threaded
//! [`loader::Loader`] (its tensor end is in `torch`).

pub mod dataset;
pub mod loader;

use crate::Invocation;

/// Run a dataset kind; `None` when `inv.kind` is not one of them.
pub fn run(inv: &Invocation) -> Option<anyhow::Result<serde_json::Value>> {
    let _ = inv;
    None
}
