//! The reaper server: one process per run that starts every stage's reaper by `fork`.
//!
//! `orchestrator-reaper __orchestrator-reaper/2 <orchestrator pid>` is started once, when the
//! run's first local stage starts, with Unix stream sockets as its stdin (requests) and stdout
//! (replies). For each [`Request::Start`] it forks; the child opens the stage's log, enters its
//! working directory, and becomes the stage's reaper ([`super::split`]). A fork of this small
//! single-threaded process costs a fraction of an `exec` (no loader, no start-up of a program),
//! which is paid once per stage. Each reaper writes the stage's end on the reply socket itself,
//! as its last act (no hop through the server); the server also replies when it reaps a
//! reaper, which covers a reaper killed before it could say anything (the orchestrator keeps
//! the first reply of a job). It forwards [`Request::Cancel`] as a signal to the job's reaper.
//!
//! Its life is tied to the orchestrator's: `PR_SET_PDEATHSIG` = [`super::SIG_HARD`], whose
//! default action ends it, and every reaper it forked has the same tie to it, so the chain
//! orchestrator → server → reaper → stage ends from the top. When the orchestrator closes the
//! socket, the server sends [`super::SIG_HARD`] to the reapers still running and exits.
//!
//! Wire format (little-endian), orchestrator → server: `u32 length` (of what follows), `u8 kind`,
//! `u64 job` (the orchestrator's id of this start, never reused within a run, retries included),
//! then for a start a list of NUL-terminated fields (see [`Request::decode`]), for a
//! cancel `u8 hard`. Server → orchestrator: [`REPLY_LEN`]-byte records `u64 job`, `i32 value`,
//! `u32 what` ([`EXITED`]: `value` is the wait status; [`NOT_STARTED`]: `value` is the `fork`
//! errno).

use std::collections::HashMap;
use std::ffi::CString;

use libc::{c_int, pid_t};

use super::{environ_with, split, ReaperFiles, StageExec, SIG_HARD};

/// One reply's size in bytes.
pub const REPLY_LEN: usize = 16;
/// Reply: the job's reaper ended; `value` is its wait status.
pub const EXITED: u32 = 0;
/// Reply: the job's reaper could not be forked; `value` is the errno.
pub const NOT_STARTED: u32 = 1;

const START: u8 = 1;
const CANCEL: u8 = 2;

/// What the orchestrator asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start(Box<StartJob>),
    Cancel { job: u64, hard: bool },
}

/// One stage to start: where, with which files, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartJob {
    pub job: u64,
    pub cwd: CString,
    /// stdout and stderr (opened for appending, created when missing).
    pub log: CString,
    /// Its attempt files (`report` is set by the server, not sent).
    pub files: ReaperFiles,
    /// The resolved program and the stage's argv.
    pub program: CString,
    pub argv: Vec<CString>,
    /// `KEY=VALUE` added to (and overriding) the server's environment.
    pub env: Vec<CString>,
}

impl Request {
    /// The framed bytes of this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Request::Start(s) => {
                body.push(START);
                body.extend_from_slice(&s.job.to_le_bytes());
                let mut field = |b: &[u8]| {
                    body.extend_from_slice(b);
                    body.push(0);
                };
                let f = &s.files;
                for c in [&s.cwd, &s.log, &f.pgid, &f.attempt, &f.leftovers] {
                    field(c.as_bytes());
                }
                field(f.read_only.len().to_string().as_bytes());
                f.read_only.iter().for_each(|c| field(c.as_bytes()));
                field(s.program.as_bytes());
                field(s.argv.len().to_string().as_bytes());
                s.argv.iter().for_each(|c| field(c.as_bytes()));
                field(s.env.len().to_string().as_bytes());
                s.env.iter().for_each(|c| field(c.as_bytes()));
            }
            Request::Cancel { job, hard } => {
                body.push(CANCEL);
                body.extend_from_slice(&job.to_le_bytes());
                body.push(u8::from(*hard));
            }
        }
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    /// A request from one frame's body (without its length); `None` when it is malformed.
    pub fn decode(body: &[u8]) -> Option<Request> {
        let (&kind, rest) = body.split_first()?;
        let job = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let rest = &rest[8..];
        if kind == CANCEL {
            return Some(Request::Cancel {
                job,
                hard: *rest.first()? != 0,
            });
        }
        if kind != START {
            return None;
        }
        let mut fields = rest.split(|&b| b == 0);
        let mut next = || fields.next().and_then(|f| CString::new(f).ok());
        let (cwd, log) = (next()?, next()?);
        let (pgid, attempt, leftovers) = (next()?, next()?, next()?);
        let list = |next: &mut dyn FnMut() -> Option<CString>| -> Option<Vec<CString>> {
            let n: usize = next()?.to_str().ok()?.parse().ok()?;
            (0..n).map(|_| next()).collect()
        };
        let read_only = list(&mut next)?;
        let program = next()?;
        let argv = list(&mut next)?;
        let env = list(&mut next)?;
        Some(Request::Start(Box::new(StartJob {
            job,
            cwd,
            log,
            files: ReaperFiles {
                pgid,
                attempt,
                leftovers,
                read_only,
                report: None,
            },
            program,
            argv,
            env,
        })))
    }
}

/// A reply record.
pub fn encode_reply(job: u64, value: i32, what: u32) -> [u8; REPLY_LEN] {
    let mut out = [0u8; REPLY_LEN];
    out[..8].copy_from_slice(&job.to_le_bytes());
    out[8..12].copy_from_slice(&value.to_le_bytes());
    out[12..].copy_from_slice(&what.to_le_bytes());
    out
}

/// `(job, value, what)` of a reply record.
pub fn decode_reply(r: &[u8; REPLY_LEN]) -> (u64, i32, u32) {
    let job = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
    let value = i32::from_le_bytes(r[8..12].try_into().expect("4 bytes"));
    let what = u32::from_le_bytes(r[12..].try_into().expect("4 bytes"));
    (job, value, what)
}

/// The descriptor on which a reaper forked by the server writes its reply.
pub const REPORT_FD: c_int = 3;

/// The server's `main`: never returns. `orchestrator`: the pid that must be its parent.
pub fn serve(orchestrator: pid_t) -> ! {
    // SAFETY: plain system calls of a fresh single-threaded process on its own descriptors.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, SIG_HARD as libc::c_ulong) != 0
            || libc::getppid() != orchestrator
        {
            libc::_exit(1);
        }
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        let sigfd = libc::signalfd(-1, &chld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        // The sockets move off 0 and 1 (close-on-exec), which the reapers' children never see.
        let rx = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 10);
        let tx = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 10);
        if sigfd < 0 || rx < 0 || tx < 0 {
            eprintln!(
                "[orchestrator] the reaper server cannot start: {}",
                std::io::Error::last_os_error()
            );
            libc::_exit(1);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        libc::close(null);
        Server {
            me: libc::getpid(),
            rx,
            tx,
            sigfd,
            running: HashMap::new(),
            by_pid: HashMap::new(),
        }
        .run()
    }
}

struct Server {
    me: pid_t,
    /// Requests come in here; replies go out there.
    rx: c_int,
    tx: c_int,
    sigfd: c_int,
    /// job -> its reaper's pid, and back.
    running: HashMap<u64, pid_t>,
    by_pid: HashMap<pid_t, u64>,
}

impl Server {
    fn run(mut self) -> ! {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.rx,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.sigfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds we own.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                continue; // EINTR
            }
            if fds[1].revents != 0 {
                self.reap();
            }
            if fds[0].revents != 0 {
                // SAFETY: reading into a buffer we own.
                let n = unsafe { libc::read(self.rx, chunk.as_mut_ptr().cast(), chunk.len()) };
                if n == 0 || (n < 0 && errno() != libc::EINTR && errno() != libc::EAGAIN) {
                    self.shut_down();
                }
                if n > 0 {
                    buf.extend_from_slice(&chunk[..n as usize]);
                    self.handle_frames(&mut buf);
                }
            }
        }
    }

    fn handle_frames(&mut self, buf: &mut Vec<u8>) {
        let mut used = 0;
        while let Some(len) = buf
            .get(used..used + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        {
            let Some(body) = buf.get(used + 4..used + 4 + len) else {
                break;
            };
            match Request::decode(body) {
                Some(Request::Start(s)) => self.start(&s),
                Some(Request::Cancel { job, hard }) => {
                    if let Some(&pid) = self.running.get(&job) {
                        let sig = if hard { SIG_HARD } else { libc::SIGTERM };
                        // SAFETY: a child of ours not yet waited for.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
                None => {
                    eprintln!("[orchestrator] the reaper server got a malformed request; install orchestrator and orchestrator-reaper from the same build");
                    self.shut_down();
                }
            }
            used += 4 + len;
        }
        buf.drain(..used);
    }

    fn start(&mut self, s: &StartJob) {
        // SAFETY: this process is single-threaded, so the child may allocate after the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the fresh child, which never returns.
            unsafe { become_reaper(self.me, self.tx, s) }
        }
        if pid < 0 {
            self.reply(s.job, errno(), NOT_STARTED);
            return;
        }
        self.running.insert(s.job, pid);
        self.by_pid.insert(pid, s.job);
    }

    /// Every reaper that ended, reported.
    fn reap(&mut self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: draining the signalfd into a buffer of its record size.
        while unsafe { libc::read(self.sigfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
        loop {
            let mut st: c_int = 0;
            // SAFETY: waiting for our own children.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some(job) = self.by_pid.remove(&pid) {
                self.running.remove(&job);
                self.reply(job, st, EXITED);
            }
        }
    }

    fn reply(&mut self, job: u64, value: i32, what: u32) {
        let r = encode_reply(job, value, what);
        let mut off = 0;
        while off < r.len() {
            // SAFETY: writing from a buffer we own.
            let n = unsafe { libc::write(self.tx, r[off..].as_ptr().cast(), r.len() - off) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                self.shut_down();
            }
            off += n as usize;
        }
    }

    /// The orchestrator is gone: so are the stages.
    fn shut_down(&mut self) -> ! {
        for &pid in self.running.values() {
            // SAFETY: children of ours not yet waited for.
            unsafe { libc::kill(pid, SIG_HARD) };
        }
        // SAFETY: ending this process.
        unsafe { libc::_exit(0) }
    }
}

/// In the forked child: stdout and stderr to the log, the reply socket on [`REPORT_FD`], the
/// stage's working directory and environment, then [`split`] (which never returns on success).
unsafe fn become_reaper(server: pid_t, tx: c_int, s: &StartJob) -> ! {
    let fail = |msg: String| -> ! {
        eprintln!("[orchestrator] cannot start the stage: {msg}");
        libc::_exit(127)
    };
    let log = libc::open(
        s.log.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o666,
    );
    if log < 0 {
        // Nowhere to say it: the orchestrator opened this log before asking, so this is rare.
        libc::_exit(127);
    }
    libc::dup2(log, 1);
    libc::dup2(log, 2);
    if log > 2 {
        libc::close(log);
    }
    // Close-on-exec again after dup2: the stage must not hold it.
    if libc::dup2(tx, REPORT_FD) < 0 || libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0
    {
        libc::_exit(127);
    }
    if libc::chdir(s.cwd.as_ptr()) != 0 {
        fail(format!(
            "cannot enter {}: {}",
            s.cwd.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    let extra = s.env.iter().map(|kv| {
        let b = kv.as_bytes();
        let eq = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
        (&b[..eq], b.get(eq + 1..).unwrap_or(&[]))
    });
    let stage = StageExec::from_parts(s.program.clone(), s.argv.clone(), environ_with(extra));
    let files = ReaperFiles {
        report: Some((REPORT_FD, s.job)),
        ..s.files.clone()
    };
    match split(server, &files, &stage) {
        Ok(()) => libc::_exit(0),
        Err(e) => fail(e.to_string()),
    }
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn a_start_request_survives_its_encoding_with_empty_fields_and_lists() {
        let start = Request::Start(Box::new(StartJob {
            job: 7,
            cwd: c("/tmp/x y"),
            log: c("/tmp/log"),
            files: ReaperFiles {
                pgid: c("/dev/null"),
                attempt: c(""),
                leftovers: c("/r/leftovers"),
                read_only: vec![c("/c/views"), c("/c/objects")],
                report: None,
            },
            program: c("/bin/sh"),
            argv: vec![c("sh"), c("-c"), c(""), c("echo 'a b'")],
            env: vec![],
        }));
        let framed = start.encode();
        let len = u32::from_le_bytes(framed[..4].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 4);
        assert_eq!(Request::decode(&framed[4..]), Some(start));
        let cancel = Request::Cancel { job: 9, hard: true };
        assert_eq!(Request::decode(&cancel.encode()[4..]), Some(cancel));
    }

    #[test]
    fn malformed_requests_decode_to_nothing() {
        assert_eq!(Request::decode(&[]), None);
        assert_eq!(Request::decode(&[START, 1, 2]), None);
        assert_eq!(Request::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        // A start whose list count is not a number.
        let mut body = vec![START];
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(b"/\0/l\0p\0a\0l\0x\0");
        assert_eq!(Request::decode(&body), None);
    }

    #[test]
    fn replies_round_trip_and_the_environment_merges_with_later_keys_winning() {
        assert_eq!(
            decode_reply(&encode_reply(u64::MAX, -3, NOT_STARTED)),
            (u64::MAX, -3, NOT_STARTED)
        );
        let extra: [(&[u8], &[u8]); 3] = [
            (b"ORCH_T_A", b"1"),
            (b"ORCH_T_A", b"2"),
            (b"ORCH_T_B", b"x=y"),
        ];
        let env = environ_with(extra);
        assert!(env.contains(&c("ORCH_T_A=2")) && !env.contains(&c("ORCH_T_A=1")));
        assert!(env.contains(&c("ORCH_T_B=x=y")));
    }
}
