//! `orchestrator status`: per stage instance, the latest run record: cached / failed / never run
//! (also running / interrupted), duration, device, when, and for a SLURM job its id, final state,
//! exit code and MaxRSS. Reads only history files, so it works while a run holds the cache.

use std::path::PathBuf;

use super::{Global, TextOrJson};
use crate::cache::{History, RunStatus};
use crate::exit::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// `text`, or `json` (one JSON object per instance and line).
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
    /// The same as `--format json` (the spelling of earlier versions).
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let p = super::load_to_read(&args.pipeline, g)?;
    let root = super::cache_root(g, &args.pipeline);
    super::check_name(&root, &p, &args.pipeline)?;
    let history = History::new(&root, &p.name);
    let latest = history.latest()?;
    let committed = history.latest_committed()?;
    let locked = crate::cache::CacheLock::is_held(&root);
    let width = p.instances.iter().map(|i| i.id.len()).max().unwrap_or(0);
    for inst in &p.instances {
        let r = latest.get(&inst.id);
        let state = match r.map(|r| r.status) {
            None => "never run",
            Some(RunStatus::Ok) | Some(RunStatus::Cached) => "cached",
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::Started) if locked => "running",
            Some(RunStatus::Started) => "interrupted",
        };
        // Duration and device of the run that produced the current outputs, when there is one.
        let shown = match r.map(|r| r.status) {
            Some(RunStatus::Failed) | Some(RunStatus::Started) => r,
            _ => committed.get(&inst.id).or(r),
        };
        if args.json || args.format == TextOrJson::Json {
            println!(
                "{}",
                serde_json::json!({"instance": inst.id, "state": state, "duration_s": shown.map(|r| r.duration_ms as f64 / 1000.0),
                    "device": shown.map(|r| r.device.clone()), "at": shown.map(|r| r.at), "key": shown.map(|r| r.key.clone()),
                    "job": shown.and_then(|r| r.job.clone())})
            );
            continue;
        }
        match shown {
            None => println!("{state:<11} {:<width$}", inst.id),
            Some(r) => {
                let dur = if r.duration_ms > 0 {
                    crate::exec::view::fmt_duration(std::time::Duration::from_millis(r.duration_ms))
                } else {
                    "-".into()
                };
                let dev = if r.device.is_empty() { "-" } else { &r.device };
                let job = r.job.as_ref().map(job_text).unwrap_or_default();
                println!(
                    "{state:<11} {:<width$}  {dur:>8}  {dev:<10} {}{job}",
                    inst.id,
                    fmt_time(r.at)
                );
            }
        }
    }
    Ok(0)
}

/// `  job 1234_5 COMPLETED exit 0, MaxRSS 512 MB (sacct)`: the backend's account of the run.
fn job_text(j: &crate::cache::JobAccounting) -> String {
    let mut s = format!("  job {}", j.id);
    if let Some(st) = &j.state {
        s.push_str(&format!(" {st}"));
    }
    match (j.exit_code, j.signal) {
        (_, Some(sig)) => s.push_str(&format!(" signal {sig}")),
        (Some(c), None) => s.push_str(&format!(" exit {c}")),
        (None, None) => {}
    }
    if let Some(mb) = j.max_rss_mb {
        s.push_str(&format!(", MaxRSS {mb:.0} MB"));
    }
    if !j.source.is_empty() {
        s.push_str(&format!(" ({})", j.source));
    }
    s
}

/// Unix seconds -> `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, no time-zone database needed).
pub fn fmt_time(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_unix_time() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::fmt_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
