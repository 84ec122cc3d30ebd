//! The routes ([`router`]) and the JSON API the page uses, documented in the README
//! ("Dashboard"): pipelines, instances with their state, one instance's detail (what
//! `plan --explain` says, params, inputs and outputs, metrics, the training curve), the report
//! and the runs. Every name in a URL is looked up in the served pipelines, never joined onto a
//! path.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::files::{read_object, ObjectError};
use super::state::{Snapshot, State as St};
use super::{assets, auth, content, live, Shared};
use crate::cache::{Manifest, ObjKind, RunEvent, RunRecord, RunStatus, Store};
use crate::pipeline::{Action, Input};

pub fn router(shared: Arc<Shared>) -> Router {
    let inst = "/api/pipelines/{name}/instances/{id}";
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}/instances", get(instances))
        .route(inst, get(instance))
        .route(&format!("{inst}/log"), get(content::log))
        .route(&format!("{inst}/log/raw"), get(content::log_raw))
        .route(&format!("{inst}/log/stream"), get(content::log_stream))
        .route(&format!("{inst}/outputs/{{output}}"), get(content::output))
        .route(
            &format!("{inst}/outputs/{{output}}/{{*path}}"),
            get(content::output_file),
        )
        .route("/api/pipelines/{name}/report", get(report))
        .route("/api/pipelines/{name}/runs", get(runs))
        .route("/api/pipelines/{name}/events", get(live::events))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::middleware,
        ))
        .with_state(shared)
}

/// An API error: a status and `{"error": ..., "hint": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }
    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: error.into(),
            hint: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "hint": self.hint})),
        )
            .into_response()
    }
}

pub type ApiResult<T = Json<Value>> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::not_found("no such page").hint("the API is under /api/pipelines")
}

/// The page, with the served pipelines' names in an attribute so that its first data request
/// need not wait for `/api/pipelines`.
async fn index(State(shared): State<Arc<Shared>>) -> Response {
    let names: Vec<&str> = shared.pipelines.iter().map(|p| p.name.as_str()).collect();
    let json = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    let attr = json
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;");
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        assets::INDEX.replace("{{PIPELINES}}", &attr),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match assets::get(&file) {
        Some(a) => ([(header::CONTENT_TYPE, a.mime)], a.body).into_response(),
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}

/// Run blocking file work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))
}

/// The current snapshot of pipeline `name` (refreshed first: a few `stat`s when nothing changed).
pub async fn snapshot(shared: &Shared, name: &str) -> ApiResult<Arc<Snapshot>> {
    let Some(served) = shared.find(name) else {
        let names: Vec<&str> = shared.pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(
            ApiError::not_found(format!("no pipeline `{name}` is served"))
                .hint(format!("served: {}", names.join(", "))),
        );
    };
    let tracker = served.tracker.clone();
    blocking(move || {
        let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        t.refresh();
        t.snapshot()
    })
    .await
}

/// The index of instance `id` in `s`, or a 404 with a did-you-mean.
pub fn find(s: &Snapshot, id: &str) -> ApiResult<usize> {
    s.index_of(id).ok_or_else(|| {
        let ids: Vec<&str> = s.pipeline.instances.iter().map(|i| i.id.as_str()).collect();
        let e = ApiError::not_found(format!("pipeline `{}` has no instance `{id}`", s.name));
        match crate::pipeline::diagnostics::did_you_mean(id, ids.iter().copied()) {
            Some(m) => e.hint(format!("did you mean `{m}`?")),
            None => e,
        }
    })
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

pub fn live_json(s: &Snapshot) -> Value {
    match &s.live {
        None => Value::Null,
        Some(l) => json!({
            "since": l.since,
            "this_pipeline": l.start.is_some(),
            "user": l.start.as_ref().map(|s| &s.user),
            "host": l.start.as_ref().map(|s| &s.host),
            "executor": l.start.as_ref().map(|s| &s.executor),
        }),
    }
}

async fn pipelines(State(shared): State<Arc<Shared>>) -> ApiResult {
    let mut out = Vec::new();
    for p in &shared.pipelines {
        let s = snapshot(&shared, &p.name).await?;
        out.push(json!({
            "name": s.name,
            "file": s.pipeline.file,
            "cache": s.root,
            "instances": s.insts.len(),
            "axes": s.pipeline.matrix_axes,
            "counts": s.counts(),
            "live": live_json(&s),
            "load_error": s.load_error,
        }));
    }
    Ok(Json(json!({ "pipelines": out })))
}

/// One instance as the list shows it.
pub fn summary(s: &Snapshot, i: usize) -> Value {
    let inst = &s.pipeline.instances[i];
    let st = &s.insts[i];
    let rec = s.last_record(i);
    let (duration_s, device, finished_at) = match (&st.result, rec) {
        (_, Some(r)) if st.state == St::Running => (None, Some(r.device.clone()), None),
        (Some(m), _) => (
            Some(secs(m.duration_ms)),
            Some(m.device.clone()),
            Some(m.finished_at),
        ),
        // A failure's own figures; a stale or waiting instance shows none (its last result's
        // duration is not this fingerprint's).
        (None, Some(r)) if st.state == St::Failed => (
            Some(secs(r.duration_ms)),
            Some(r.device.clone()),
            Some(r.at),
        ),
        _ => (None, None, None),
    };
    let deps: Vec<&str> = upstream_ids(s, i);
    json!({
        "id": inst.id,
        "stage": inst.stage,
        "kind": inst.action.kind_name(),
        "cell": crate::pipeline::cell_map(&inst.cell),
        "state": st.state,
        "duration_s": duration_s,
        "device": device.filter(|d| !d.is_empty()),
        "started_at": rec.filter(|_| st.state == St::Running).map(|r| r.at),
        "finished_at": finished_at,
        "deps": deps,
    })
}

fn upstream_ids(s: &Snapshot, i: usize) -> Vec<&str> {
    let mut deps: Vec<&str> = Vec::new();
    for input in s.pipeline.instances[i].inputs.values() {
        for instance in input.upstreams() {
            let id = s.pipeline.instances[instance].id.as_str();
            if !deps.contains(&id) {
                deps.push(id);
            }
        }
    }
    deps
}

async fn instances(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let s = snapshot(&shared, &name).await?;
    let list: Vec<Value> = (0..s.insts.len()).map(|i| summary(&s, i)).collect();
    Ok(Json(json!({
        "pipeline": s.name,
        "version": s.version,
        "axes": s.pipeline.matrix_axes,
        "counts": s.counts(),
        "live": live_json(&s),
        "load_error": s.load_error,
        "problems": s.problems,
        "instances": list,
    })))
}

async fn instance(
    State(shared): State<Arc<Shared>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let s = snapshot(&shared, &name).await?;
    let i = find(&s, &id)?;
    blocking(move || detail(&s, i)).await.map(Json)
}

/// Everything about one instance (blocking: reads metrics, trees, progress).
fn detail(s: &Snapshot, i: usize) -> Value {
    let inst = &s.pipeline.instances[i];
    let st = &s.insts[i];
    let mut v = summary(s, i);
    let (params, command, env) = match &inst.action {
        Action::Builtin { params, .. } => (params.clone(), None, None),
        Action::Shell { command, env } => (Value::Null, Some(command), Some(env)),
    };
    let (metrics, metrics_error) = match st.result.as_ref().and_then(|m| m.metrics.clone()) {
        None => (Value::Null, None),
        Some(d) => match read_json(s, &d) {
            Ok(m) => (m, None),
            Err(e) => (Value::Null, Some(format!("metrics.json: {e}"))),
        },
    };
    let curve = content::curve(s, i, &metrics);
    let run_dir = s.run_dir(i);
    let log = run_dir.map(|d| {
        let size = std::fs::metadata(d.join("log")).map(|m| m.len()).ok();
        json!({"run": d.file_name().map(|n| n.to_string_lossy()), "size": size})
    });
    let failed = s
        .last_record(i)
        .filter(|r| r.status == RunStatus::Failed)
        .and_then(|r| r.message.clone());
    let o = v.as_object_mut().expect("summary is an object");
    o.insert("location".into(), json!(&*inst.location));
    o.insert("key".into(), json!(st.key));
    o.insert("reasons".into(), json!(st.reasons));
    o.insert("changed".into(), json!(st.changed));
    o.insert("why_ran".into(), json!(why_ran(s, i)));
    o.insert("params".into(), params);
    o.insert("command".into(), json!(command));
    o.insert("env".into(), json!(env));
    o.insert("resources".into(), resources(inst));
    o.insert("inputs".into(), Value::Array(inputs(s, i)));
    o.insert("outputs".into(), Value::Array(outputs(s, i)));
    o.insert("metrics".into(), metrics);
    o.insert("metrics_error".into(), json!(metrics_error));
    o.insert("curve".into(), curve);
    o.insert("log".into(), json!(log));
    o.insert("error".into(), json!(failed));
    o.insert("history".into(), Value::Array(instance_history(s, i)));
    o.insert(
        "dependents".into(),
        json!(s.dependents[i]
            .iter()
            .map(|&d| &s.pipeline.instances[d].id)
            .collect::<Vec<_>>()),
    );
    v
}

/// A small store object parsed as JSON, checked against its digest.
pub fn read_json(s: &Snapshot, digest: &str) -> Result<Value, ObjectError> {
    let bytes = read_object(&s.root, digest, 16 << 20)?;
    serde_json::from_slice(&bytes).map_err(|e| ObjectError::Io(format!("not JSON: {e}")))
}

fn resources(inst: &crate::pipeline::Instance) -> Value {
    let r = &inst.resources;
    json!({"gpus": r.gpus, "cpus": r.cpus, "mem_gb": r.mem_gb, "time_min": r.time_min, "retry": inst.retry})
}

/// Why the current result was computed: the fingerprint fields that differ from the instance's
/// previous result (what `plan --explain` said before that run).
fn why_ran(s: &Snapshot, i: usize) -> Vec<String> {
    let Some(m) = &s.insts[i].result else {
        return Vec::new();
    };
    let id = &s.pipeline.instances[i].id;
    let mut keys: Vec<&str> = Vec::new();
    for r in s.records.iter().filter(|r| &r.instance == id) {
        if matches!(r.status, RunStatus::Ok | RunStatus::Cached) && keys.last() != Some(&&*r.key) {
            keys.retain(|k| *k != r.key);
            keys.push(&r.key);
        }
    }
    let before = keys
        .iter()
        .position(|k| *k == m.key)
        .and_then(|p| p.checked_sub(1))
        .map(|p| keys[p]);
    let Some(old) = before.and_then(|k| read_manifest(s, k)) else {
        return vec![if keys.is_empty() {
            "its result came from another pipeline's run of the same fingerprint".into()
        } else {
            "first run".into()
        }];
    };
    m.fingerprint
        .changed_fields(&old.fingerprint)
        .iter()
        .map(|f| crate::exec::plan::describe_field(f))
        .collect()
}

fn read_manifest(s: &Snapshot, key: &str) -> Option<Manifest> {
    if !super::files::is_digest(key) {
        return None;
    }
    let path = Store::new(&s.root).manifest_path(key);
    let f = super::files::open_inside(&s.root, &path).ok()?;
    Manifest::from_bytes(
        &std::io::Read::bytes(f)
            .collect::<Result<Vec<u8>, _>>()
            .ok()?,
    )
    .ok()
}

fn inputs(s: &Snapshot, i: usize) -> Vec<Value> {
    let inst = &s.pipeline.instances[i];
    let fp = s.insts[i].fingerprint.as_ref();
    inst.inputs
        .iter()
        .map(|(name, input)| {
            let digest = fp.and_then(|f| f.inputs.get(name));
            match input {
                Input::Upstream { instance, output } => {
                    let up = &s.pipeline.instances[*instance].id;
                    json!({"name": name, "instance": up, "output": output, "digest": digest})
                }
                Input::External { path } => {
                    let size = std::fs::metadata(path)
                        .ok()
                        .filter(|m| m.is_file())
                        .map(|m| m.len());
                    json!({"name": name, "path": path, "digest": digest, "size": size})
                }
                Input::Gather { output, from } => {
                    let ids: Vec<&str> = from
                        .iter()
                        .map(|g| s.pipeline.instances[g.instance].id.as_str())
                        .collect();
                    json!({"name": name, "gather": ids, "output": output, "digest": digest})
                }
            }
        })
        .collect()
}

/// Declared outputs, with digest, size and download link when there is a current result.
fn outputs(s: &Snapshot, i: usize) -> Vec<Value> {
    let inst = &s.pipeline.instances[i];
    let result = s.insts[i].result.as_ref();
    let store = Store::new(&s.root);
    inst.outputs
        .iter()
        .map(|o| {
            let entry = result.and_then(|m| m.outputs.get(&o.name));
            let mut v = json!({"name": o.name, "path": o.rel_path, "dir": o.is_dir});
            if let Some(e) = entry {
                v["digest"] = json!(e.digest);
                match e.kind {
                    ObjKind::File => {
                        v["size"] = json!(std::fs::metadata(store.object_path(&e.digest))
                            .map(|m| m.len())
                            .ok());
                    }
                    ObjKind::Dir => match read_json(s, &e.digest) {
                        Ok(t) => {
                            let files = t["entries"].as_array().map_or(0, |a| a.len());
                            v["files"] = json!(files);
                        }
                        Err(err) => v["error"] = json!(err.to_string()),
                    },
                }
            }
            v
        })
        .collect()
}

fn record_json(r: &RunRecord) -> Value {
    json!({
        "instance": r.instance,
        "status": r.status,
        "at": r.at,
        "duration_s": secs(r.duration_ms),
        "device": r.device,
        "message": r.message,
        "run": r.run_dir.as_ref().and_then(|d| d.file_name()).map(|n| n.to_string_lossy()),
    })
}

fn instance_history(s: &Snapshot, i: usize) -> Vec<Value> {
    let id = &s.pipeline.instances[i].id;
    s.records
        .iter()
        .rev()
        .filter(|r| &r.instance == id)
        .take(50)
        .map(record_json)
        .collect()
}

async fn report(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let s = snapshot(&shared, &name).await?;
    blocking(move || report_json(&s)).await?.map(Json)
}

/// `report`'s table from the snapshot's current results, with each cell's text as the report
/// prints it and the ROC curves of its plot.
fn report_json(s: &Snapshot) -> ApiResult<Value> {
    let current = |i: usize| -> anyhow::Result<Option<crate::report::Current>> {
        let Some(m) = &s.insts[i].result else {
            return Ok(None);
        };
        let metrics = match &m.metrics {
            Some(d) => read_json(s, d).map_err(|e| {
                anyhow::anyhow!("metrics.json of `{}`: {e}", s.pipeline.instances[i].id)
            })?,
            None => Value::Null,
        };
        Ok(Some(crate::report::Current {
            metrics,
            duration_s: Some(secs(m.duration_ms)),
            device: m.device.clone(),
            roc_csv: roc_path(s, m),
        }))
    };
    let report = crate::report::build_from(&s.pipeline, &current).map_err(|e| {
        ApiError::internal(format!("cannot build the report: {e:#}"))
            .hint("`orchestrator cache verify` checks the store")
    })?;
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            let roc = r
                .roc_csv
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| crate::report::roc_points(&t));
            json!({
                "label": report.row_label(r),
                "axis_values": report.axis_values(r),
                "text": report.columns.iter().map(|c| report.cell_text(r, c)).collect::<Vec<_>>(),
                "roc": roc,
            })
        })
        .collect();
    let mut v = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.to_string()))?;
    v["head"] = json!(report.head());
    v["table"] = Value::Array(rows);
    v["markdown"] = json!(report.markdown());
    Ok(v)
}

/// The `roc.csv` object of an ijbc result (looked up in its tree, opened only inside the store).
fn roc_path(s: &Snapshot, m: &Manifest) -> Option<std::path::PathBuf> {
    let o = m.outputs.get("roc").filter(|o| o.kind == ObjKind::Dir)?;
    let tree = read_json(s, &o.digest).ok()?;
    let entry = tree["entries"]
        .as_array()?
        .iter()
        .find(|e| e["path"] == "roc.csv")?;
    let d = entry["digest"]
        .as_str()
        .filter(|d| super::files::is_digest(d))?;
    let p = Store::new(&s.root).object_path(d);
    super::files::open_inside(&s.root, &p).ok()?;
    Some(p)
}

async fn runs(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let s = snapshot(&shared, &name).await?;
    Ok(Json(json!({"pipeline": s.name, "runs": runs_json(&s)})))
}

/// The runs of the pipeline, newest first: each start line with its end line (if any) and the
/// instance records written between them. Records outside every logged run (runs by a build
/// without run logs) form one group of their own.
fn runs_json(s: &Snapshot) -> Vec<Value> {
    let mut ends: BTreeMap<&str, &crate::cache::RunEnd> = BTreeMap::new();
    let mut starts = Vec::new();
    for e in s.runs.iter() {
        match e {
            RunEvent::Start(x) => starts.push(x),
            RunEvent::End(x) => {
                ends.insert(&x.run, x);
            }
        }
    }
    let live_run = s
        .live
        .as_ref()
        .and_then(|l| l.start.as_ref())
        .map(|x| &x.run);
    let mut claimed = vec![false; s.records.len()];
    let mut out = Vec::new();
    for (k, st) in starts.iter().enumerate() {
        let end = ends.get(st.run.as_str()).copied();
        let until = end
            .map(|e| e.at)
            .or_else(|| starts.get(k + 1).map(|n| n.at));
        let mut recs = Vec::new();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, r) in s.records.iter().enumerate() {
            if r.at >= st.at && until.is_none_or(|u| r.at <= u) && !claimed[j] {
                claimed[j] = true;
                *counts.entry(status_name(r.status)).or_default() += 1;
                recs.push(record_json(r));
            }
        }
        let outcome = match end {
            Some(e) if e.error.is_some() => "error",
            Some(e) if e.interrupted => "interrupted",
            Some(e) if e.failed > 0 => "failed",
            Some(_) => "ok",
            None if live_run == Some(&st.run) => "running",
            None => "killed",
        };
        out.push(json!({
            "run": st.run, "start": st.at, "end": end.map(|e| e.at),
            "user": st.user, "host": st.host, "pid": st.pid, "executor": st.executor,
            "command": st.command, "outcome": outcome, "summary": end, "counts": counts,
            "records": recs,
        }));
    }
    let orphans: Vec<Value> = s
        .records
        .iter()
        .zip(&claimed)
        .filter(|(_, c)| !**c)
        .map(|(r, _)| record_json(r))
        .collect();
    if !orphans.is_empty() {
        out.push(json!({"run": null, "start": orphans[0]["at"], "outcome": "unlogged", "records": orphans}));
    }
    out.reverse();
    out
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Started => "started",
        RunStatus::Ok => "ok",
        RunStatus::Failed => "failed",
        RunStatus::Cached => "cached",
    }
}
