//! Pipeline files: YAML -> validated, expanded [`Pipeline`] (pure: reads files, spawns nothing).
//!
//! [`load`] is the entry point; it returns every error at once as [`Diagnostics`]. The pieces:
//! [`yaml`] (a located YAML tree), [`interp`] (`${...}` templates), [`matrix`] (cells),
//! [`diagnostics`] (rendering, did-you-mean), [`schema`] (the JSON schema of the format).

pub mod diagnostics;
pub mod interp;
mod load;
pub mod matrix;
mod model;
pub mod schema;
pub mod yaml;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use load::{load, normalize, MAX_CPUS, MAX_GPUS, MAX_MEM_GB, MAX_RETRY, MAX_TIME_MIN};
pub use model::*;
