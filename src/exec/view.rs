//! [`View`]: what a run shows. On a terminal, one indicatif line per running stage (device,
//! elapsed time, latest progress event); otherwise plain lines on stderr; with
//! `--message-format json`, one JSON event per line on stdout for machines.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
}

pub struct View {
    format: MessageFormat,
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
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
        }
    }

    /// A view that prints nothing (tests, benchmarks).
    pub fn silent() -> View {
        View {
            format: MessageFormat::Human,
            quiet: true,
            multi: None,
            bars: HashMap::new(),
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

    pub fn event(&mut self, ev: ViewEvent) {
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
    }
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
    for (k, x) in obj {
        // `event` names the kind of line (e.g. an epoch's summary); nulls say nothing.
        if !used.contains(k.as_str()) && k != "event" && !x.is_null() {
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
