//! What the dashboard reads out of run dirs and the store: logs (a bounded piece as JSON, the
//! whole file streamed, or `tail -f` as server-sent events; a 100 MB log is never in memory),
//! outputs (downloads streamed and checked against their digest; a folder output lists its
//! files), and training curves (per finished epoch, from `metrics.json` once committed, from
//! the epoch events of `progress.jsonl` while the stage runs).

use std::convert::Infallible;
use std::io::BufRead;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{blocking, find, read_json, snapshot, ApiError, ApiResult};
use super::files::{is_digest, open_inside, read_from, read_object, read_tail, ObjectError};
use super::state::{Snapshot, State as St};
use super::Shared;
use crate::cache::{ObjKind, Store};

/// Largest piece of a log one request returns.
const MAX_PIECE: u64 = 1 << 20;
/// Objects up to this size are checked before the first byte is sent; bigger ones while they
/// stream (a corrupt one then ends in a broken transfer, never a silently wrong file).
const CHECK_FIRST: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// The last N bytes (default 64 KiB), from a line start.
    pub tail: Option<u64>,
    /// Bytes from this offset on (instead of `tail`).
    pub from: Option<u64>,
    pub max: Option<u64>,
    /// Another attempt's log: the run dir name as the history records it.
    pub run: Option<String>,
}

/// The log file of instance `i` (its latest attempt, or the attempt `run`), opened inside the
/// cache's `runs/` only.
fn open_log(s: &Snapshot, i: usize, run: Option<&str>) -> ApiResult<std::fs::File> {
    let id = &s.pipeline.instances[i].id;
    let dir = match run {
        None => s.run_dir(i),
        Some(name) => s
            .records
            .iter()
            .filter(|r| &r.instance == id)
            .filter_map(|r| crate::cache::run_dir_in(&s.root, r))
            .find(|d| d.file_name().is_some_and(|n| n == name)),
    };
    let Some(dir) = dir else {
        return Err(
            ApiError::not_found(format!("`{id}` has no log in this cache"))
                .hint("it never started here (its result may come from another pipeline's run)"),
        );
    };
    let runs = s.root.join("runs");
    let path = dir.join("log");
    if !dir.starts_with(&runs) {
        return Err(ApiError::not_found(format!(
            "the log of `{id}` is not in this cache's runs/"
        )));
    }
    open_inside(&runs, &path).map_err(|_| {
        ApiError::not_found(format!("the log of `{id}` ({}) is missing", path.display()))
            .hint("`orchestrator gc` removes the logs of runs no result refers to")
    })
}

pub async fn log(
    State(shared): State<Arc<Shared>>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let s = snapshot(&shared, &name).await?;
    let i = find(&s, &id)?;
    blocking(move || {
        let mut f = open_log(&s, i, q.run.as_deref())?;
        let piece = match q.from {
            Some(from) => read_from(&mut f, from, q.max.unwrap_or(256 << 10).min(MAX_PIECE)),
            None => read_tail(&mut f, q.tail.unwrap_or(64 << 10).min(MAX_PIECE)),
        };
        piece
            .map(|p| Json(json!(p)))
            .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))
    })
    .await?
}

/// The whole log, streamed in chunks (constant memory whatever its size).
pub async fn log_raw(
    State(shared): State<Arc<Shared>>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let s = snapshot(&shared, &name).await?;
    let i = find(&s, &id)?;
    let f = blocking(move || open_log(&s, i, q.run.as_deref())).await??;
    let len = f.metadata().map(|m| m.len()).ok();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 << 10);
    let mut res = Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(len) = len {
        // A log that grows while it streams: the body stops at the length it had.
        res = res.header(header::CONTENT_LENGTH, len);
        let limited = stream
            .scan(len, |left, chunk| {
                let out = chunk.map(|mut b: Bytes| {
                    b.truncate(b.len().min(*left as usize));
                    *left -= b.len() as u64;
                    b
                });
                std::future::ready(Some(out))
            })
            .take_while(|c| std::future::ready(c.as_ref().map_or(true, |b| !b.is_empty())));
        return Ok(res
            .body(Body::from_stream(limited))
            .expect("valid response"));
    }
    Ok(res.body(Body::from_stream(stream)).expect("valid response"))
}

/// `tail -f` as server-sent events: `log` events (`{start, end, size, text}`, whole lines) from
/// `?from=` on, then an `end` event once the instance no longer runs and everything was sent.
pub async fn log_stream(
    State(shared): State<Arc<Shared>>,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let s = snapshot(&shared, &name).await?;
    let i = find(&s, &id)?;
    let run = q.run.clone();
    let s2 = s.clone();
    // Fail now (404) rather than inside the stream when there is no log at all.
    blocking(move || open_log(&s2, i, run.as_deref()).map(drop)).await??;
    struct Tail {
        shared: Arc<Shared>,
        name: String,
        id: String,
        run: Option<String>,
        offset: u64,
        done: bool,
    }
    let start = Tail {
        shared: shared.clone(),
        name,
        id,
        run: q.run,
        offset: q.from.unwrap_or(0),
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            let s = snapshot(&t.shared, &t.name).await.ok()?;
            let i = s.index_of(&t.id)?;
            let running = s.insts[i].state == St::Running;
            let (run, offset) = (t.run.clone(), t.offset);
            let piece = blocking(move || {
                let mut f = open_log(&s, i, run.as_deref()).ok()?;
                read_from(&mut f, offset, 256 << 10).ok()
            })
            .await
            .ok()
            .flatten();
            if let Some(p) = piece.filter(|p| p.end > offset) {
                t.offset = p.end;
                let ev = Event::default().event("log").json_data(&p).ok()?;
                return Some((Ok(ev), t));
            }
            if !running {
                t.done = true;
                return Some((Ok(Event::default().event("end").data("{}")), t));
            }
            tokio::time::sleep(t.shared.poll).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// An output of the current result: a file is downloaded, a folder lists its files.
pub async fn output(
    State(shared): State<Arc<Shared>>,
    Path((name, id, output)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    serve_output(shared, name, id, output, None).await
}

/// One file of a folder output, by its path inside the folder (looked up in the folder's
/// tree object, never joined onto a filesystem path).
pub async fn output_file(
    State(shared): State<Arc<Shared>>,
    Path((name, id, output, path)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    serve_output(shared, name, id, output, Some(path)).await
}

async fn serve_output(
    shared: Arc<Shared>,
    name: String,
    id: String,
    output: String,
    file: Option<String>,
) -> ApiResult<Response> {
    let s = snapshot(&shared, &name).await?;
    let i = find(&s, &id)?;
    let Some(m) = s.insts[i].result.clone() else {
        return Err(ApiError::not_found(format!(
            "`{id}` has no current result (it is {})",
            serde_json::to_value(s.insts[i].state).unwrap_or_default()
        )));
    };
    let Some(entry) = m.outputs.get(&output).cloned() else {
        let names: Vec<&str> = m.outputs.keys().map(|k| k.as_str()).collect();
        return Err(
            ApiError::not_found(format!("`{id}` has no output `{output}`"))
                .hint(format!("its outputs: {}", names.join(", "))),
        );
    };
    let base = entry
        .rel_path
        .rsplit('/')
        .next()
        .unwrap_or(&output)
        .to_string();
    match (entry.kind, file) {
        (ObjKind::File, None) => download(&s, &entry.digest, &base).await,
        (ObjKind::File, Some(_)) => Err(ApiError::not_found(format!(
            "output `{output}` is a file, not a folder"
        ))),
        (ObjKind::Dir, want) => {
            let s2 = s.clone();
            let digest = entry.digest.clone();
            let tree = blocking(move || read_json(&s2, &digest))
                .await?
                .map_err(|e| object_error(e, &output))?;
            let entries = tree["entries"].as_array().cloned().unwrap_or_default();
            match want {
                None => Ok(Json(listing(&s, &name, &id, &output, &entries)).into_response()),
                Some(path) => {
                    let found = entries.iter().find(|e| e["path"] == path.as_str());
                    let Some(d) = found.and_then(|e| e["digest"].as_str()) else {
                        return Err(ApiError::not_found(format!(
                            "output `{output}` has no file `{path}`"
                        )));
                    };
                    let base = path.rsplit('/').next().unwrap_or(&path).to_string();
                    download(&s, d, &base).await
                }
            }
        }
    }
}

fn listing(s: &Snapshot, name: &str, id: &str, output: &str, entries: &[Value]) -> Value {
    let store = Store::new(&s.root);
    let sized = entries.len() <= 5000;
    let files: Vec<Value> = entries
        .iter()
        .map(|e| {
            let size = e["digest"]
                .as_str()
                .filter(|d| sized && is_digest(d))
                .and_then(|d| std::fs::metadata(store.object_path(d)).ok())
                .map(|m| m.len());
            json!({
                "path": e["path"], "size": size,
                "url": format!("/api/pipelines/{}/instances/{}/outputs/{}/{}",
                    enc(name), enc(id), enc(output),
                    e["path"].as_str().unwrap_or("").split('/').map(enc).collect::<Vec<_>>().join("/")),
            })
        })
        .collect();
    json!({"instance": id, "output": output, "files": files})
}

/// Percent-encode a URL path segment (RFC 3986 unreserved characters stay).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn object_error(e: ObjectError, what: &str) -> ApiError {
    match e {
        ObjectError::Missing => ApiError::not_found(format!("{what}: {e}")),
        _ => ApiError::internal(format!("{what}: {e}")),
    }
}

fn mime(name: &str) -> (&'static str, bool) {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "json" => ("application/json", true),
        "txt" | "log" | "csv" | "md" | "tsv" | "lst" => ("text/plain; charset=utf-8", true),
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        _ => ("application/octet-stream", false),
    }
}

/// Send a store object: checked first when small, checked while streaming when big.
async fn download(s: &Snapshot, digest: &str, filename: &str) -> ApiResult<Response> {
    if !is_digest(digest) {
        return Err(ApiError::not_found("no such object"));
    }
    let root = s.root.clone();
    let path = Store::new(&root).object_path(digest);
    let p2 = path.clone();
    let f = blocking(move || open_inside(&root, &p2))
        .await?
        .map_err(|_| object_error(ObjectError::Missing, filename))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (mime, inline) = mime(filename);
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "{}; filename=\"{safe}\"",
        if inline { "inline" } else { "attachment" }
    );
    let res = Response::builder()
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        );
    if len <= CHECK_FIRST {
        let root = s.root.clone();
        let d = digest.to_string();
        let bytes = blocking(move || read_object(&root, &d, CHECK_FIRST))
            .await?
            .map_err(|e| object_error(e, filename))?;
        return Ok(res.body(Body::from(bytes)).expect("valid response"));
    }
    Ok(res
        .body(Body::from_stream(checked_stream(f, digest.to_string())))
        .expect("valid response"))
}

/// The object's bytes, hashed as they go; the last chunk is held back until the digest is
/// checked, so a corrupt object ends in a transfer short of its Content-Length (an error in
/// every client), never in a complete-looking wrong file.
fn checked_stream(
    f: std::fs::File,
    digest: String,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let reader =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 << 10);
    let held: Option<Bytes> = None;
    futures_util::stream::unfold(
        Some((reader, blake3::Hasher::new(), digest, held)),
        |st| async move {
            let (mut reader, mut hasher, digest, mut held) = st?;
            loop {
                match reader.next().await {
                    Some(Ok(b)) => {
                        hasher.update(&b);
                        match held.replace(b) {
                            Some(prev) => {
                                return Some((Ok(prev), Some((reader, hasher, digest, held))))
                            }
                            None => continue,
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None if hasher.finalize().to_hex().as_str() == digest => {
                        return held.map(|b| (Ok(b), None));
                    }
                    None => {
                        return Some((
                            Err(std::io::Error::other(format!(
                                "object {digest} is corrupt; transfer aborted"
                            ))),
                            None,
                        ))
                    }
                }
            }
        },
    )
}

/// The per-epoch curve of an instance: from its result's `metrics.json` when that holds
/// `loss_per_epoch` (the `train` kind), else from the epoch events (`{"event": "epoch", "epoch",
/// "epochs", "loss", "lr", "verification"}` lines) its latest attempt wrote to `progress.jsonl`:
/// built-in training writes them, and so can a user's own script in a `run:` stage
/// (`$ORCHESTRATOR_PROGRESS`). `Null` when it has neither and is not a training.
pub fn curve(s: &Snapshot, i: usize, metrics: &Value) -> Value {
    if let Some(loss) = metrics["loss_per_epoch"].as_array() {
        let points: Vec<Value> = (0..loss.len())
            .map(|e| {
                json!({
                    "epoch": e + 1,
                    "loss": loss[e],
                    "lr": metrics["lr_per_epoch"][e],
                    "images_per_s": metrics["images_per_s_per_epoch"][e],
                    "verification": metrics["verification_per_epoch"][e],
                })
            })
            .collect();
        return json!({"source": "metrics", "epochs": metrics["epochs"], "points": points});
    }
    let is_train = s.pipeline.instances[i].action.kind_name() == "train";
    let (points, last) = match progress_path(s, i) {
        Some(p) => epoch_events(&s.root, &p),
        None => (Vec::new(), None),
    };
    if points.is_empty() && !is_train {
        return Value::Null;
    }
    let epochs = points
        .last()
        .map(|p| p["epochs"].clone())
        .unwrap_or(Value::Null);
    let progress = (s.insts[i].state == St::Running)
        .then(|| last.as_deref().and_then(crate::exec::view::render_progress))
        .flatten();
    json!({"source": "progress", "epochs": epochs, "points": points, "progress": progress})
}

/// The epoch events of a `progress.jsonl` (read line by line: bounded memory) and its last line.
pub fn epoch_events(root: &FsPath, path: &FsPath) -> (Vec<Value>, Option<String>) {
    let Ok(f) = open_inside(root, path) else {
        return (Vec::new(), None);
    };
    let mut points = Vec::new();
    let mut last = None;
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["event"] == "epoch" {
                points.push(v);
            }
            last = Some(line);
        }
    }
    (points, last)
}

/// Where a running instance's progress file is, if it lies in this cache's `runs/`.
pub fn progress_path(s: &Snapshot, i: usize) -> Option<PathBuf> {
    let dir = s.run_dir(i)?;
    dir.starts_with(s.root.join("runs"))
        .then(|| dir.join("progress.jsonl"))
}
