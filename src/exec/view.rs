//! [`View`]: what a run shows. On a terminal, an overall line (done / total, running, failed,
//! ETA) above one indicatif line per running stage (device, elapsed time, latest progress event:
//! epoch and loss for the built-in trainings); otherwise plain lines on stderr, the overall line
//! printed when an instance settles (and at least once a minute while stages run); with
//! `--message-format json`, one JSON event per line on stdout for machines (an `overall` event
//! when an instance settles).

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::eta::Overall;

/// A plain (non-terminal) view repeats an unchanged overall line after this long.
const OVERALL_HEARTBEAT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum MessageFormat {
    #[default]
    Human,
    Json,
}

/// One thing that happened, for the view.
#[derive(Debug, Clone)]
pub enum ViewEvent {
    Cached {
        instance: String,
    },
    Started {
        instance: String,
        device: String,
        attempt: u32,
        log: PathBuf,
    },
    Progress {
        instance: String,
        text: String,
    },
    Finished {
        instance: String,
        duration: Duration,
        device: String,
    },
    Failed {
        instance: String,
        message: String,
        log: Option<PathBuf>,
        will_retry: bool,
    },
    Skipped {
        instance: String,
        because: String,
    },
    /// Stopped by the run itself (Ctrl-C, `--fail-fast`, an error); it runs again next time.
    Cancelled {
        instance: String,
    },
    Note {
        message: String,
    },
    /// The whole run's progress (sent by the scheduler while jobs run).
    Overall(Overall),
}

pub struct View {
    format: MessageFormat,
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// The overall line on a terminal.
    overall_bar: Option<ProgressBar>,
    /// Settled counts (done, failed, skipped) last printed, and when (plain and JSON output).
    overall_printed: Option<((usize, usize, usize), std::time::Instant)>,
}

impl View {
    pub fn new(format: MessageFormat, quiet: bool) -> View {
        let tty = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && format == MessageFormat::Human
            && !quiet;
        let multi =
            tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        View {
            format,
            quiet,
            multi,
            bars: HashMap::new(),
            overall_bar: None,
            overall_printed: None,
        }
    }

    /// A view that prints nothing (tests, benchmarks).
    pub fn silent() -> View {
        View {
            format: MessageFormat::Human,
            quiet: true,
            multi: None,
            bars: HashMap::new(),
            overall_bar: None,
            overall_printed: None,
        }
    }

    fn line(&self, s: String) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => err_line(&s),
        }
    }

    /// Whether [`ViewEvent::Overall`] is shown (the scheduler computes it only then).
    pub fn shows_overall(&self) -> bool {
        self.format == MessageFormat::Json || !self.quiet
    }

    pub fn event(&mut self, ev: ViewEvent) {
        if let ViewEvent::Overall(o) = ev {
            return self.overall(o);
        }
        if self.format == MessageFormat::Json {
            out_line(&json_event(&ev).to_string());
            return;
        }
        match ev {
            ViewEvent::Cached { .. } => {}
            ViewEvent::Started {
                instance,
                device,
                attempt,
                log,
            } => {
                let again = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                if let Some(m) = &self.multi {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {prefix:.bold} [{elapsed}] {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(format!("{instance} ({device}){again}"));
                    bar.enable_steady_tick(Duration::from_millis(200));
                    self.bars.insert(instance, bar);
                } else {
                    self.line(format!(
                        "   start  {instance} on {device}{again}  (log: {})",
                        log.display()
                    ));
                }
            }
            ViewEvent::Progress { instance, text } => {
                if let Some(b) = self.bars.get(&instance) {
                    b.set_message(text);
                } else if self.multi.is_none() {
                    self.line(format!("          {instance}: {text}"));
                }
            }
            ViewEvent::Finished {
                instance,
                duration,
                device,
            } => {
                self.finish_bar(&instance);
                self.line(format!(
                    "     ran  {instance} on {device} in {}",
                    fmt_duration(duration)
                ));
            }
            ViewEvent::Failed {
                instance,
                message,
                log,
                will_retry,
            } => {
                self.finish_bar(&instance);
                let first = message.lines().next().unwrap_or("");
                let retry = if will_retry { ", retrying" } else { "" };
                let log = log
                    .map(|l| format!(" (log: {})", l.display()))
                    .unwrap_or_default();
                self.line(format!("  FAILED  {instance}: {first}{retry}{log}"));
            }
            ViewEvent::Skipped { instance, because } => {
                self.line(format!(" skipped  {instance}: {because}"))
            }
            ViewEvent::Cancelled { instance } => {
                self.finish_bar(&instance);
                self.line(format!("cancelled {instance}"));
            }
            ViewEvent::Note { message } => self.line(message),
            ViewEvent::Overall(o) => self.overall(o),
        }
    }

    /// On a terminal: update the overall line. Otherwise print it when an instance has settled
    /// since the last one printed, or after [`OVERALL_HEARTBEAT`].
    fn overall(&mut self, o: Overall) {
        if let Some(m) = &self.multi {
            let bar = self.overall_bar.get_or_insert_with(|| {
                let b = m.insert(0, ProgressBar::new(o.total as u64));
                b.set_style(
                    ProgressStyle::with_template("[{elapsed}] {bar:24} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            bar.set_length(o.total as u64);
            bar.set_position(o.done as u64);
            bar.set_message(o.render());
            return;
        }
        let settled = (o.done, o.failed, o.skipped);
        let due = match self.overall_printed {
            None => true,
            Some((last, at)) => last != settled || at.elapsed() >= OVERALL_HEARTBEAT,
        };
        if !due {
            return;
        }
        self.overall_printed = Some((settled, std::time::Instant::now()));
        match self.format {
            MessageFormat::Json => out_line(&overall_json(&o).to_string()),
            MessageFormat::Human => self.line(format!("progress  {}", o.render())),
        }
    }

    fn finish_bar(&mut self, instance: &str) {
        if let Some(b) = self.bars.remove(instance) {
            b.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&b);
            }
        }
    }

    /// Print the final summary (human) or a `summary` event (json).
    pub fn summary(&mut self, text: &str, json: serde_json::Value) {
        for (_, b) in self.bars.drain() {
            b.finish_and_clear();
        }
        if let Some(b) = self.overall_bar.take() {
            b.finish_and_clear();
        }
        match self.format {
            MessageFormat::Json => out_line(&json.to_string()),
            MessageFormat::Human if !self.quiet => err_line(text.trim_end()),
            MessageFormat::Human => {}
        }
    }
}

/// A line on stdout; a closed pipe (`run ... | head`) must not stop the run, so errors are
/// dropped.
fn out_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

fn err_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

fn json_event(ev: &ViewEvent) -> serde_json::Value {
    use serde_json::json;
    let t = crate::cache::now_unix();
    match ev {
        ViewEvent::Cached { instance } => {
            json!({"event": "cached", "instance": instance, "time": t})
        }
        ViewEvent::Started {
            instance,
            device,
            attempt,
            log,
        } => {
            json!({"event": "started", "instance": instance, "device": device, "attempt": attempt, "log": log, "time": t})
        }
        ViewEvent::Progress { instance, text } => {
            json!({"event": "progress", "instance": instance, "progress": text, "time": t})
        }
        ViewEvent::Finished {
            instance,
            duration,
            device,
        } => {
            json!({"event": "finished", "instance": instance, "device": device, "duration_s": duration.as_secs_f64(), "time": t})
        }
        ViewEvent::Failed {
            instance,
            message,
            log,
            will_retry,
        } => {
            json!({"event": "failed", "instance": instance, "message": message, "log": log, "will_retry": will_retry, "time": t})
        }
        ViewEvent::Skipped { instance, because } => {
            json!({"event": "skipped", "instance": instance, "because": because, "time": t})
        }
        ViewEvent::Cancelled { instance } => {
            json!({"event": "cancelled", "instance": instance, "time": t})
        }
        ViewEvent::Note { message } => json!({"event": "note", "message": message, "time": t}),
        ViewEvent::Overall(o) => overall_json(o),
    }
}

fn overall_json(o: &Overall) -> serde_json::Value {
    serde_json::json!({
        "event": "overall", "done": o.done, "total": o.total, "running": o.running,
        "failed": o.failed, "skipped": o.skipped,
        "eta_s": o.eta.map(|e| e.as_secs_f64()), "time": crate::cache::now_unix(),
    })
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// Follows a stage's `progress.jsonl`, returning the newest complete event, rendered.
#[derive(Debug)]
pub struct ProgressTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl ProgressTail {
    pub fn new(path: PathBuf) -> Self {
        ProgressTail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    pub fn poll(&mut self) -> Option<String> {
        let mut f = std::fs::File::open(&self.path).ok()?;
        let len = f.metadata().ok()?.len();
        if len <= self.offset {
            return None;
        }
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut buf = String::new();
        (&mut f)
            .take(len - self.offset)
            .read_to_string(&mut buf)
            .ok()?;
        self.offset = len;
        self.partial.push_str(&buf);
        let last_nl = self.partial.rfind('\n')?;
        let complete = self.partial[..last_nl].to_string();
        self.partial = self.partial[last_nl + 1..].to_string();
        complete.lines().rev().find_map(render_progress)
    }
}

/// `{"epoch":3,"epochs":12,"loss":5.1}` -> `epoch 3/12  loss 5.1`; `{"message":"x"}` -> `x`.
pub fn render_progress(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let obj = v.as_object()?;
    if let Some(m) = obj.get("message").and_then(|m| m.as_str()) {
        return Some(m.to_string());
    }
    let mut parts = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (k, total) in [("epoch", "epochs"), ("step", "steps")] {
        if let Some(x) = obj.get(k) {
            used.insert(k);
            match obj.get(total) {
                Some(t) => {
                    used.insert(total);
                    parts.push(format!("{k} {x}/{t}"));
                }
                None => parts.push(format!("{k} {x}")),
            }
        }
    }
    // The loss next (what a researcher watches), then the rest in name order.
    let rest = obj.get_key_value("loss").into_iter().chain(obj);
    for (k, x) in rest {
        // `event` names the kind of line (e.g. an epoch's summary); nulls say nothing.
        if !used.contains(k.as_str()) && k != "event" && !x.is_null() {
            used.insert(k.as_str());
            let x = match x.as_f64() {
                Some(f) if x.is_f64() => format!("{f:.4}"),
                _ => x.to_string(),
            };
            parts.push(format!("{k} {x}"));
        }
    }
    Some(parts.join("  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_render_readably() {
        assert_eq!(
            render_progress(r#"{"epoch":3,"epochs":12,"loss":5.1}"#).unwrap(),
            "epoch 3/12  loss 5.1000"
        );
        assert_eq!(
            render_progress(r#"{"message":"loading"}"#).unwrap(),
            "loading"
        );
        assert!(render_progress("not json").is_none());
        assert_eq!(
            render_progress(
                r#"{"event":"epoch","epoch":2,"epochs":6,"loss":4.5,"verification":null}"#
            )
            .unwrap(),
            "epoch 2/6  loss 4.5000"
        );
        // The built-in training's epoch event: epoch, then loss, then the rest.
        assert_eq!(
            render_progress(
                r#"{"event":"epoch","epoch":3,"epochs":6,"images_per_s":812.5,"loss":4.25,"lr":0.1}"#
            )
            .unwrap(),
            "epoch 3/6  loss 4.2500  images_per_s 812.5000  lr 0.1000"
        );
    }

    #[test]
    fn tail_returns_newest_complete_line_only() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("progress.jsonl");
        let mut tail = ProgressTail::new(p.clone());
        assert!(tail.poll().is_none());
        std::fs::write(&p, "{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"mess").unwrap();
        assert_eq!(tail.poll().unwrap(), "b");
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"age\":\"c\"}\n")
            .unwrap();
        assert_eq!(tail.poll().unwrap(), "c");
    }
}
