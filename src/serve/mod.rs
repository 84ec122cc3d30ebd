//! `orchestrator serve`: a live, read-only web dashboard over the cache ([`serve`]).
//!
//! The pieces: [`state`] (the [`state::Tracker`] that turns the cache's plain files into a
//! [`state::Snapshot`] of one pipeline, following `plan`'s rules without the index or the
//! lock), [`api`] (the JSON API under `/api/` and the embedded page), [`content`] (logs and
//! outputs: bounded reads, streamed downloads, `tail -f` over server-sent events), [`live`] (a
//! stat poll that runs only while a page listens, pushing changes as server-sent events),
//! [`auth`] (token, host check, security headers), [`files`] (opening nothing outside the cache).
//!
//! The engine does not depend on this module; it uses the engine's public APIs (pipeline
//! loading, fingerprints, the report) and never writes: no endpoint runs, deletes or changes
//! anything.

pub mod api;
mod assets;
pub mod auth;
pub mod content;
pub mod files;
pub mod live;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pipeline::Pipeline;

/// One pipeline to serve, loaded, with the cache root it lives in.
pub struct Source {
    pub pipeline: Pipeline,
    /// `--set` overrides it was loaded with (reloads use them too).
    pub overrides: Vec<String>,
    /// Canonical cache root.
    pub root: PathBuf,
}

pub struct Config {
    pub sources: Vec<Source>,
    pub bind: std::net::IpAddr,
    pub port: u16,
    /// `None`: no token (only sensible on a single-user machine).
    pub token: Option<String>,
    /// How often the stat poll looks at the watched files while a page listens.
    pub poll: Duration,
}

/// One served pipeline: its tracker and the channel its changes are pushed on.
pub struct Served {
    pub name: String,
    pub tracker: Arc<Mutex<state::Tracker>>,
    pub live: live::Channel,
}

/// What every handler sees.
pub struct Shared {
    pub pipelines: Vec<Served>,
    pub auth: auth::Auth,
    pub poll: Duration,
}

impl Shared {
    pub fn find(&self, name: &str) -> Option<&Served> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

/// A random token: 128 bits from the kernel, hex.
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Bind, print the URL (with the token) on stdout, and serve until Ctrl-C / SIGTERM.
/// `on_ready` gets the bound address (after the listener exists, before serving).
pub fn serve(config: Config, on_ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("serve")
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(config.bind, config.port)).await?;
        let addr = listener.local_addr()?;
        let pipelines = config
            .sources
            .into_iter()
            .map(|s| {
                let name = s.pipeline.name.clone();
                let tracker = state::Tracker::new(s.pipeline, s.overrides, s.root);
                Served {
                    name,
                    tracker: Arc::new(Mutex::new(tracker)),
                    live: live::Channel::new(),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            pipelines,
            auth: auth::Auth::new(config.token, config.bind.is_loopback(), addr.port()),
            poll: config.poll,
        });
        for p in &shared.pipelines {
            tokio::spawn(live::watch(shared.clone(), p.name.clone()));
        }
        on_ready(addr);
        // Open event streams never end by themselves, so a graceful shutdown would wait forever:
        // on a signal the server simply stops (it holds nothing that needs flushing).
        tokio::select! {
            r = axum::serve(listener, api::router(shared)) => r,
            _ = shutdown() => Ok(()),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
