//! Live updates: one [`watch`] task per served pipeline polls the few files its tracker watches
//! (a handful of `stat`s per tick, which also works on a shared filesystem written by other
//! machines, where inotify sees nothing) and the progress files of running instances, and pushes
//! what changed to every open page as server-sent events ([`events`]). With no page open it
//! sleeps: an idle server does nothing at all.
//!
//! Events: `hello` (`{version}` on connect), `instances` (`{version, counts, live, changed:
//! [instance summaries]}`), `progress` (`{instance, text, last, epochs: [new epoch events]}`),
//! `reload` (the pipeline's instances changed: fetch everything again), `resync` (this page
//! fell behind: fetch everything again).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use super::api::{blocking, snapshot, summary, ApiError, ApiResult};
use super::files::JsonlTail;
use super::state::{Snapshot, State as St};
use super::Shared;

#[derive(Debug, Clone)]
pub struct Frame {
    pub event: &'static str,
    pub data: Arc<str>,
}

/// The broadcast of one pipeline's changes, and the bell that wakes its watcher.
pub struct Channel {
    tx: broadcast::Sender<Frame>,
    wake: Notify,
}

impl Channel {
    pub fn new() -> Channel {
        Channel {
            tx: broadcast::channel(256).0,
            wake: Notify::new(),
        }
    }

    fn send(&self, event: &'static str, data: Value) {
        let _ = self.tx.send(Frame {
            event,
            data: data.to_string().into(),
        });
    }
}

impl Default for Channel {
    fn default() -> Self {
        Channel::new()
    }
}

/// Follow pipeline `name` while at least one page listens.
pub async fn watch(shared: Arc<Shared>, name: String) {
    let Some(served) = shared.find(&name) else {
        return;
    };
    // The baseline changes are computed against: set before any page listens, so that no
    // change between a page's first fetch and its first event can be missed.
    let mut sent: Option<(Arc<Snapshot>, Vec<Value>)> = None;
    if let Ok(s) = snapshot(&shared, &name).await {
        let s2 = s.clone();
        let now = blocking(move || (0..s2.insts.len()).map(|i| summary(&s2, i)).collect())
            .await
            .unwrap_or_default();
        sent = Some((s, now));
    }
    let mut tails: HashMap<PathBuf, JsonlTail<Value>> = HashMap::new();
    loop {
        if served.live.tx.receiver_count() == 0 {
            tails.clear();
            served.live.wake.notified().await;
            continue;
        }
        let Ok(s) = snapshot(&shared, &name).await else {
            tokio::time::sleep(shared.poll).await;
            continue;
        };
        if sent
            .as_ref()
            .is_none_or(|(old, _)| old.version != s.version)
        {
            let s2 = s.clone();
            let now: Vec<Value> =
                blocking(move || (0..s2.insts.len()).map(|i| summary(&s2, i)).collect())
                    .await
                    .unwrap_or_default();
            push_changes(&served.live, sent.as_ref(), &s, &now);
            sent = Some((s.clone(), now));
        }
        let (updates, kept) = blocking({
            let s = s.clone();
            let mut tails = std::mem::take(&mut tails);
            move || {
                let u = progress_updates(&s, &mut tails);
                (u, tails)
            }
        })
        .await
        .unwrap_or_default();
        tails = kept;
        for u in updates {
            served.live.send("progress", u);
        }
        tokio::time::sleep(shared.poll).await;
    }
}

fn push_changes(
    ch: &Channel,
    sent: Option<&(Arc<Snapshot>, Vec<Value>)>,
    s: &Snapshot,
    now: &[Value],
) {
    let Some((old, before)) = sent else {
        ch.send("resync", json!({}));
        return;
    };
    let same_ids =
        before.len() == now.len() && before.iter().zip(now).all(|(a, b)| a["id"] == b["id"]);
    if !same_ids || old.load_error != s.load_error {
        ch.send(
            "reload",
            json!({"version": s.version, "load_error": s.load_error}),
        );
        return;
    }
    let changed: Vec<&Value> = before
        .iter()
        .zip(now)
        .filter(|(a, b)| a != b)
        .map(|(_, b)| b)
        .collect();
    let live = super::api::live_json(s);
    ch.send(
        "instances",
        json!({"version": s.version, "counts": s.counts(), "live": live,
               "problems": s.problems, "changed": changed}),
    );
}

/// New progress lines of every running instance: `{instance, text, epochs}` per instance that
/// wrote some. Tails of instances that stopped running are dropped.
fn progress_updates(s: &Snapshot, tails: &mut HashMap<PathBuf, JsonlTail<Value>>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut running = Vec::new();
    for (i, st) in s.insts.iter().enumerate() {
        if st.state != St::Running {
            continue;
        }
        let Some(path) = super::content::progress_path(s, i) else {
            continue;
        };
        running.push(path.clone());
        let tail = tails
            .entry(path.clone())
            .or_insert_with(|| JsonlTail::new(s.root.clone(), path));
        if tail.poll() == 0 {
            continue;
        }
        let items = std::mem::take(&mut tail.items);
        let epochs: Vec<&Value> = items.iter().filter(|v| v["event"] == "epoch").collect();
        let text = items
            .last()
            .and_then(|v| crate::exec::view::render_progress(&v.to_string()));
        out.push(json!({"instance": s.pipeline.instances[i].id, "text": text,
                        "last": items.last(), "epochs": epochs}));
    }
    tails.retain(|p, _| running.contains(p));
    out
}

/// `GET /api/pipelines/NAME/events`: the pipeline's changes as server-sent events.
pub async fn events(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let served = shared
        .find(&name)
        .ok_or_else(|| ApiError::not_found(format!("no pipeline `{name}` is served")))?;
    let rx = served.live.tx.subscribe();
    served.live.wake.notify_one();
    let s = snapshot(&shared, &name).await?;
    let hello = Event::default()
        .event("hello")
        .data(json!({"version": s.version}).to_string());
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(f) => Event::default().event(f.event).data(&*f.data),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::once(std::future::ready(Ok(hello))),
        rest,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
