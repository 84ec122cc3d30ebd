//! The orchestrator's side of the [`super::server`]: starts it, sends it requests, and hands
//! each job's end to whoever waits for it.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::server::{decode_reply, Request, StartJob, EXITED, REPLY_LEN};

/// How a job's reaper ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its raw wait status (the stage's own, which the reaper passes on).
    Ended(i32),
    /// It could not be started (why).
    NotStarted(String),
    /// The server died while the job ran, and the job with it (why).
    Lost(String),
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Outcome>>>>>;

/// A running reaper server. Dropping it closes the socket: the server stops the reapers still
/// running and exits, and is waited for.
pub struct ServerClient {
    child: std::process::Child,
    out: Mutex<UnixStream>,
    /// Jobs sent and not yet ended; `None` once the server is gone.
    pending: Pending,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerClient(pid {})", self.child.id())
    }
}

impl ServerClient {
    /// Start `exe` as the server of this process's stages. Called within the run's runtime,
    /// on which its replies are read (no thread between a stage's end and the scheduler).
    pub fn start(exe: &std::path::Path) -> Result<ServerClient, String> {
        let sock = |what: &str| {
            UnixStream::pair().map_err(|e| format!("cannot make the reaper's {what} socket: {e}"))
        };
        let (requests, their_requests) = sock("request")?;
        let (replies, their_replies) = sock("reply")?;
        let mut cmd = std::process::Command::new(exe);
        {
            use std::os::unix::process::CommandExt;
            cmd.arg(super::REAPER_ARG)
                .arg(std::process::id().to_string())
                .stdin(std::os::fd::OwnedFd::from(their_requests))
                .stdout(std::os::fd::OwnedFd::from(their_replies))
                .process_group(0);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the reaper {}: {e}", exe.display()))?;
        drop(cmd);
        let replies = replies
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(replies))
            .map_err(|e| format!("cannot read the reaper's socket: {e}"))?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(read_replies(replies, pending.clone(), child.id()));
        Ok(ServerClient {
            child,
            out: Mutex::new(requests),
            pending,
        })
    }

    /// Whether the server still serves (it ends only with this process, or when killed).
    pub fn alive(&self) -> bool {
        self.pending.lock().is_ok_and(|p| p.is_some())
    }

    /// Start a job; its outcome arrives on the returned receiver.
    pub fn start_job(&self, s: StartJob) -> Result<oneshot::Receiver<Outcome>, String> {
        let job = s.job;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().map_err(|_| "poisoned")?;
            let map = p.as_mut().ok_or("the reaper server has ended")?;
            map.insert(job, tx);
        }
        if let Err(e) = self.send(&Request::Start(Box::new(s))) {
            if let Ok(mut p) = self.pending.lock() {
                p.as_mut().map(|m| m.remove(&job));
            }
            return Err(e);
        }
        Ok(rx)
    }

    /// Ask a job's reaper to stop it: `hard` = at once, else SIGTERM and a grace period.
    pub fn cancel(&self, job: u64, hard: bool) {
        let _ = self.send(&Request::Cancel { job, hard });
    }

    fn send(&self, r: &Request) -> Result<(), String> {
        let mut out = self.out.lock().map_err(|_| "poisoned")?;
        out.write_all(&r.encode())
            .map_err(|e| format!("cannot reach the reaper server: {e}"))
    }
}

impl Drop for ServerClient {
    fn drop(&mut self) {
        if let Ok(out) = self.out.lock() {
            let _ = out.shutdown(std::net::Shutdown::Both);
        }
        let _ = self.child.wait();
    }
}

async fn read_replies(mut sock: tokio::net::UnixStream, pending: Pending, pid: u32) {
    let mut r = [0u8; REPLY_LEN];
    while sock.read_exact(&mut r).await.is_ok() {
        let (job, value, what) = decode_reply(&r);
        let outcome = if what == EXITED {
            Outcome::Ended(value)
        } else {
            Outcome::NotStarted(format!(
                "the reaper could not fork: {}",
                std::io::Error::from_raw_os_error(value)
            ))
        };
        let tx = pending
            .lock()
            .ok()
            .and_then(|mut p| p.as_mut().and_then(|m| m.remove(&job)));
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }
    // The server and every reaper are gone (the server ends only when this process closes
    // its socket, or was killed): every job still waiting has ended with them.
    let left = pending.lock().ok().and_then(|mut p| p.take());
    for (_, tx) in left.into_iter().flatten() {
        let _ = tx.send(Outcome::Lost(format!(
            "the stages' reaper process (pid {pid}) ended while the stage ran, and the stage's processes were stopped with it; run again to retry"
        )));
    }
}
