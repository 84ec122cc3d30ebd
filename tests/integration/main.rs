//! The one integration-test binary: runs the real `orchestrator` binary on real pipelines in
//! temp dirs. Modules by area; `support` holds the fluent helper.

mod browser;
mod cli;
mod exec;
mod live;
mod main_job;
mod pipelines;
mod repeats;
mod report;
mod report_stage;
mod serve;
mod slurm;
mod stages;
mod support;
mod sweeps;
mod trust;
