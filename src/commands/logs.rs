//! `orchestrator logs`: print the latest log of a stage instance (also while it runs); a built-in
//! stage's progress events (its training log: epochs, loss, lr, throughput) rendered readably.

use std::path::PathBuf;

use super::Global;
use crate::cache::History;
use crate::exit::{CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Stage name (when it has one instance) or instance id, e.g. `prune[ratio=0.5]`.
    pub stage: String,
    /// Print the log's path instead of its contents.
    #[arg(long)]
    pub path: bool,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let p = super::load_to_read(&args.pipeline, g)?;
    let inst = super::find_instance(&p, &args.stage)?;
    let root = super::cache_root(g, &args.pipeline);
    let root = root.canonicalize().unwrap_or(root);
    super::check_name(&root, &p, &args.pipeline)?;
    let history = History::new(&root, &p.name);
    let records = history.read()?;
    let Some(run_dir) = records
        .iter()
        .rev()
        .filter(|r| r.instance == inst.id)
        .find_map(|r| history.run_dir(r))
    else {
        return Err(CliError::bad_input(format!(
            "error: stage `{}` has no log yet (it never ran in this cache, or its results came from another pipeline's run)\nhint: `orchestrator run {}`",
            inst.id,
            args.pipeline.display()
        )));
    };
    let log = run_dir.join("log");
    if args.path {
        println!("{}", log.display());
        return Ok(0);
    }
    let bytes = std::fs::read(&log).map_err(|e| {
        CliError::environment(format!(
            "error: cannot read {}: {e}\nhint: `orchestrator gc` may have removed it",
            log.display()
        ))
    })?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let _ = writeln!(out, "{}", readable(line));
    }
    Ok(0)
}

/// A built-in stage's worker logs each progress event as `[progress] {JSON}` (its training log:
/// epochs, loss, lr, throughput): shown as the live view shows it, `[progress] epoch 2/8  loss
/// 5.1000  lr 0.1000 ...`. Every other line as it is.
fn readable(line: &str) -> std::borrow::Cow<'_, str> {
    match line
        .strip_prefix("[progress] ")
        .filter(|j| j.starts_with('{'))
        .and_then(crate::exec::view::render_progress)
    {
        Some(text) => format!("[progress] {text}").into(),
        None => line.into(),
    }
}
