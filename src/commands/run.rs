//! `orchestrator run`: load the pipeline, take the cache lock, schedule, summarise. Also the
//! helpers the other execution commands share (loading, cache opening, error mapping).

use std::path::{Path, PathBuf};

use super::{cache_root, load, open_locked, Global};
use crate::cache::{Cache, RunEnd, RunEvent, RunLog, RunStart};
use crate::exec::{self, GpuChoice, LocalBackend, MessageFormat, RunOptions, RunSummary, View};
use crate::exit::{CliError, CliResult};
use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub select: super::Selection,
    /// CPU job slots (default: number of cores).
    #[arg(short, long)]
    pub jobs: Option<u32>,
    /// GPUs to use: `auto` (ask nvidia-smi), `none`, or indices like `0,1,3`.
    #[arg(long, default_value = "auto", value_parser = parse_gpus)]
    pub gpus: GpuChoice,
    /// Stop at the first failure (kills running stages).
    #[arg(long)]
    pub fail_fast: bool,
    /// `human` (a live view on a terminal, plain lines otherwise) or `json` (one event per line
    /// on stdout). `--message-format` is the same option (cargo's spelling).
    #[arg(long, alias = "message-format", value_enum, default_value_t = MessageFormat::Human)]
    pub format: MessageFormat,
    /// Where stages run: `local` processes, or `slurm` jobs (`sbatch`). Default: the pipeline's
    /// `executor.kind`, else local.
    #[arg(long, value_parser = ["local", "slurm"])]
    pub executor: Option<String>,
    /// SLURM: most tasks of one job array running at once (`--array=...%N`).
    #[arg(long, default_value_t = 64)]
    pub max_jobs: u32,
    /// SLURM: most stage attempts this run keeps queued or running at once (mind the cluster's
    /// `MaxSubmitJobs`).
    #[arg(long, default_value_t = 1000)]
    pub slurm_max_queued: u32,
    /// SLURM: seconds between two `squeue` polls.
    #[arg(long, default_value_t = 2.0)]
    pub slurm_poll: f64,
    /// SLURM: most `sbatch` calls per second (0: no limit).
    #[arg(long, default_value_t = 5.0)]
    pub slurm_submit_rate: f64,
}

fn parse_gpus(s: &str) -> Result<GpuChoice, String> {
    s.parse()
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let (p, force) = super::select(load(&args.pipeline, g)?, &args.select)?;
    let root = cache_root(g, &args.pipeline);
    let (cache, _lock) = open_locked(&root)?;
    super::claim_name(&cache.root, &p, &args.pipeline)?;
    let opts = RunOptions {
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        }),
        gpus: args.gpus.clone(),
        fail_fast: args.fail_fast,
        workers: exec::Workers::find(),
        force,
    };
    let mut view = View::new(args.format, g.quiet);
    let slurm = args.executor.as_deref().or(p.executor.kind.as_deref()) == Some("slurm");
    // Who ran what, where, for the dashboard's list of runs; best effort like the view.
    let runs = RunLog::new(&cache.root, &p.name);
    let start = RunStart::now(if slurm { "slurm" } else { "local" });
    if let Err(e) = runs.append(&RunEvent::Start(start.clone())) {
        tracing::warn!("{e}");
    }
    let summary = execute(&args, &p, &cache, opts, slurm, &mut view);
    let error = match &summary {
        Err(e) => Some(e.message.clone()),
        Ok(s) => s.fatal.as_ref().map(|e| format!("error: {e}")),
    };
    let end = RunEnd {
        run: start.run,
        at: crate::cache::now_unix(),
        ran: summary.as_ref().map_or(0, |s| s.ran),
        cached: summary.as_ref().map_or(0, |s| s.cached),
        failed: summary.as_ref().map_or(0, |s| s.failed.len()),
        skipped: summary.as_ref().map_or(0, |s| s.skipped),
        interrupted: summary.as_ref().is_ok_and(|s| s.interrupted),
        error,
    };
    if let Err(e) = runs.append(&RunEvent::End(end)) {
        tracing::warn!("{e}");
    }
    let summary = summary?;
    // Best effort, like the run log: the summary is shown whatever this finds.
    let warnings = crate::report::warnings(&cache, &summary.metrics).unwrap_or_else(|e| {
        tracing::warn!("cannot list the stages' warnings: {e:#}");
        Vec::new()
    });
    let (text, json) = render_summary(&summary, &warnings);
    view.summary(&text, json);
    if let Some(e) = summary.fatal {
        return Err(CliError::from(e));
    }
    Ok(if summary.interrupted {
        crate::exit::signal_exit_code(summary.signal)
    } else if !summary.failed.is_empty() {
        crate::exit::STAGE_FAILED
    } else {
        crate::exit::OK
    })
}

fn execute(
    args: &Args,
    p: &Pipeline,
    cache: &Cache,
    opts: RunOptions,
    slurm: bool,
    view: &mut View,
) -> CliResult<RunSummary> {
    Ok(if slurm {
        let so = exec::slurm::SlurmOptions {
            poll: std::time::Duration::from_secs_f64(args.slurm_poll.max(0.05)),
            submit_rate: args.slurm_submit_rate,
            max_jobs: args.max_jobs,
            max_queued: args.slurm_max_queued,
        };
        let backend = exec::slurm::SlurmBackend::new(p, cache, &so)?;
        let (q, gpus, jobs) = exec::slurm::scheduling_view(p, args.slurm_max_queued);
        exec::run(
            &q,
            cache,
            RunOptions {
                gpus: GpuChoice::Ids(gpus),
                jobs,
                ..opts
            },
            Box::new(backend),
            view,
        )?
    } else {
        exec::run(p, cache, opts, Box::new(LocalBackend::default()), view)?
    })
}

/// The final summary: failures with their logs' last lines, then every current result's
/// warnings (`warnings`: instance, warning), the counts, and where the results are.
fn render_summary(s: &RunSummary, warnings: &[(String, String)]) -> (String, serde_json::Value) {
    let mut t = String::new();
    for f in &s.failed {
        t.push_str(&format!(
            "error: {} ({})\n",
            f.message.trim_end(),
            f.location
        ));
        if let Some(log) = &f.log {
            t.push_str(&format!("  log: {}\n", log.display()));
            let tail = log_tail(log, 10);
            if !tail.is_empty() {
                t.push_str("  last lines of the log:\n");
                for l in tail {
                    t.push_str(&format!("    | {l}\n"));
                }
            }
        }
    }
    for (instance, w) in warnings {
        t.push_str(&format!("warning: stage `{instance}`: {w}\n"));
    }
    let mut counts = format!(
        "ran {}, cached {}, failed {}",
        s.ran,
        s.cached,
        s.failed.len()
    );
    if s.skipped > 0 {
        counts.push_str(&format!(", skipped {}", s.skipped));
    }
    if s.cancelled > 0 {
        counts.push_str(&format!(", cancelled {}", s.cancelled));
    }
    if s.not_started > 0 {
        counts.push_str(&format!(", not started {}", s.not_started));
    }
    t.push_str(&format!(
        "{counts} in {}\n",
        exec::view::fmt_duration(s.wall)
    ));
    if s.interrupted || s.fatal.is_some() {
        let why = if s.interrupted {
            "interrupted"
        } else {
            "stopped"
        };
        t.push_str(&format!(
            "{why}: what finished is saved; run the same command again to resume\n"
        ));
    }
    t.push_str(&format!("results: {}\n", s.results_dir.display()));
    let json = serde_json::json!({
        "event": "summary",
        "ran": s.ran,
        "cached": s.cached,
        "failed": s.failed.iter().map(|f| serde_json::json!({"instance": f.instance, "message": f.message, "log": f.log})).collect::<Vec<_>>(),
        "skipped": s.skipped,
        "cancelled": s.cancelled,
        "not_started": s.not_started,
        "interrupted": s.interrupted,
        "wall_s": s.wall.as_secs_f64(),
        "results": s.results_dir,
        "warnings": warnings.iter().map(|(i, w)| serde_json::json!({"instance": i, "message": w})).collect::<Vec<_>>(),
    });
    (t, json)
}

/// The last `n` lines of a log file (lossy UTF-8; reads at most the last 64 KiB).
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
