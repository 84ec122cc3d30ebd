//! `orchestrator status`: per stage instance, the latest run record: cached / failed / never run
//! (also running / interrupted), duration, device, when. Reads only history files, so it works
//! while a run holds the cache.

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
    let history = History::new(&root, &p.name);
    let latest = history.latest()?;
    let committed = history.latest_committed()?;
    let locked = crate::cache::CacheLock::acquire(&root).is_err();
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
                    "device": shown.map(|r| r.device.clone()), "at": shown.map(|r| r.at), "key": shown.map(|r| r.key.clone())})
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
                println!(
                    "{state:<11} {:<width$}  {dur:>8}  {dev:<10} {}",
                    inst.id,
                    fmt_time(r.at)
                );
            }
        }
    }
    Ok(0)
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
