//! One module per CLI command: its `Args` (clap) and its `run`.

pub mod cache;
pub mod dag;
pub mod gc;
pub mod logs;
pub mod plan;
pub mod report;
pub mod run;
pub mod schema;
pub mod serve;
pub mod show;
pub mod status;
pub mod validate;
