//! Pipeline files: YAML -> validated, expanded [`Pipeline`] (pure: reads files, spawns nothing).

mod model;

pub use model::*;
