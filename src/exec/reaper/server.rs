//! The reaper server: one process per run that starts the stages' reapers by `fork`, and
//! gives each reaper one stage after another.
//!
//! `orchestrator-reaper __orchestrator-reaper/2 <orchestrator pid>` is started once, when the
//! run's first local stage starts, with Unix stream sockets as its stdin (requests) and stdout
//! (replies). A [`Request::Start`] goes to an idle reaper, or, when none is idle, to a new one:
//! the server forks, and the child becomes a reaper ([`reaper_main`]). For each stage, a reaper
//! opens the stage's log, enters its working directory and runs it ([`super::run_stage`]);
//! when every process of the stage is gone, it tells the server it is idle (8 bytes, the job,
//! on its control socket), writes the stage's end on the reply socket itself (no hop through
//! the server), and waits for its next job. A fork and exit per stage was ~12 % of a cold
//! 5,000-cell run's CPU samples; reusing reapers leaves the stage's own `posix_spawn`. The
//! server also replies when it reaps a reaper that was running a job (one killed before it
//! could say anything; the orchestrator keeps the first reply of a job). It forwards
//! [`Request::Cancel`] to the job's reaper on that reaper's control socket, where the job's id
//! tells a cancel of the running job from a stale one.
//!
//! Its life is tied to the orchestrator's: `PR_SET_PDEATHSIG` = [`super::SIG_HARD`], whose
//! default action ends it, and every reaper it forked has the same tie to it, so the chain
//! orchestrator → server → reaper → stage ends from the top. When the orchestrator closes the
//! socket, the server sends [`super::SIG_HARD`] to its reapers, waits for them, and exits.
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

use super::{environ_with, ReaperFiles, StageExec, SIG_HARD};

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
    /// Its attempt files.
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

/// The descriptor on which a reaper writes its replies to the orchestrator.
pub const REPORT_FD: c_int = 3;
/// The reaper's end of its control socket with the server (jobs and cancels in, "done" out).
const CTL_FD: c_int = 4;

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
            reapers: HashMap::new(),
            idle: Vec::new(),
        }
        .run()
    }
}

/// One reaper the server forked: its control socket, and the job it runs (`None`: idle).
struct Reaper {
    ctl: c_int,
    job: Option<u64>,
    /// Bytes of an incomplete "done" record.
    buf: Vec<u8>,
}

struct Server {
    me: pid_t,
    /// Requests come in here; replies go out there.
    rx: c_int,
    tx: c_int,
    sigfd: c_int,
    /// Every live reaper, by pid.
    reapers: HashMap<pid_t, Reaper>,
    /// Reapers waiting for a job.
    idle: Vec<pid_t>,
}

impl Server {
    fn run(mut self) -> ! {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut chunk = vec![0u8; 1 << 16];
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut pids: Vec<pid_t> = Vec::new();
        loop {
            let poll = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.clear();
            pids.clear();
            fds.extend([poll(self.rx), poll(self.sigfd)]);
            for (&pid, r) in &self.reapers {
                if r.ctl >= 0 {
                    fds.push(poll(r.ctl));
                    pids.push(pid);
                }
            }
            // SAFETY: pollfds we own.
            if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
                continue; // EINTR
            }
            if fds[1].revents != 0 {
                self.reap();
            }
            // A reaper's "done" before any request: a job that follows may go to it.
            for (k, &pid) in pids.iter().enumerate() {
                if fds[2 + k].revents != 0 {
                    self.read_done(pid, &mut chunk);
                }
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
        while let Some(frame) = whole_frame(&buf[used..]) {
            match Request::decode(&frame[4..]) {
                Some(Request::Start(s)) => self.start(&s, frame),
                Some(Request::Cancel { job, .. }) => {
                    // To the job's reaper, which acts on it only while it runs that job.
                    if let Some(r) = self.reapers.values().find(|r| r.job == Some(job)) {
                        write_all(r.ctl, frame);
                    }
                }
                None => {
                    eprintln!("[orchestrator] the reaper server got a malformed request; install orchestrator and orchestrator-reaper from the same build");
                    self.shut_down();
                }
            }
            used += frame.len();
        }
        buf.drain(..used);
    }

    /// An idle reaper gets the job (a job whose stage gets read-only mounts gets a reaper of
    /// its own: those mounts live in the reaper's namespace); else a new one is forked.
    fn start(&mut self, s: &StartJob, frame: &[u8]) {
        if s.files.read_only.is_empty() {
            while let Some(pid) = self.idle.pop() {
                let Some(r) = self.reapers.get_mut(&pid) else {
                    continue;
                };
                // A failed write: that reaper is gone (its end is reaped), try the next one.
                if r.ctl >= 0 && write_all(r.ctl, frame) {
                    r.job = Some(s.job);
                    return;
                }
            }
        }
        let Some(pair) = socket_pair() else {
            self.reply(s.job, errno(), NOT_STARTED);
            return;
        };
        // SAFETY: this process is single-threaded, so the child may allocate after the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the fresh child, which never returns.
            unsafe { reaper_main(self.me, self.tx, pair[1], s) }
        }
        // SAFETY: the reaper's end, which is the child's alone now.
        unsafe { libc::close(pair[1]) };
        if pid < 0 {
            // SAFETY: our end of a pair that serves nobody.
            unsafe { libc::close(pair[0]) };
            self.reply(s.job, errno(), NOT_STARTED);
            return;
        }
        let r = Reaper {
            ctl: pair[0],
            job: Some(s.job),
            buf: Vec::new(),
        };
        self.reapers.insert(pid, r);
    }

    /// A reaper's "done" records (the job it finished, 8 bytes each): it is idle again.
    fn read_done(&mut self, pid: pid_t, chunk: &mut [u8]) {
        let Some(r) = self.reapers.get_mut(&pid) else {
            return;
        };
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(r.ctl, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            if n == 0 || errno() != libc::EINTR {
                // It ended (reaped through SIGCHLD): nothing more to read.
                // SAFETY: our end of its socket, closed once.
                unsafe { libc::close(r.ctl) };
                r.ctl = -1;
                self.idle.retain(|&p| p != pid);
            }
            return;
        }
        r.buf.extend_from_slice(&chunk[..n as usize]);
        let whole = r.buf.len() / 8 * 8;
        let done: Vec<u64> = r.buf[..whole]
            .chunks(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        r.buf.drain(..whole);
        for job in done {
            if r.job == Some(job) {
                r.job = None;
                self.idle.push(pid);
            }
        }
    }

    /// Every reaper that ended: the job it ran, if any, ended with it (it had not said so).
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
            let Some(r) = self.reapers.remove(&pid) else {
                continue;
            };
            self.idle.retain(|&p| p != pid);
            if r.ctl >= 0 {
                // SAFETY: our end of its socket, closed once.
                unsafe { libc::close(r.ctl) };
            }
            if let Some(job) = r.job {
                self.reply(job, st, EXITED);
            }
        }
    }

    fn reply(&mut self, job: u64, value: i32, what: u32) {
        if !write_all(self.tx, &encode_reply(job, value, what)) {
            self.shut_down();
        }
    }

    /// The orchestrator is gone: so are the stages. The reapers are waited for (a running
    /// stage is killed at once), so that their CPU time, and their stages', is accounted to
    /// the orchestrator like that of any child.
    fn shut_down(&mut self) -> ! {
        for &pid in self.reapers.keys() {
            // SAFETY: children of ours not yet waited for.
            unsafe { libc::kill(pid, SIG_HARD) };
        }
        for &pid in self.reapers.keys() {
            let mut st = 0;
            // SAFETY: waiting for a child of ours.
            while unsafe { libc::waitpid(pid, &mut st, 0) } < 0 && errno() == libc::EINTR {}
        }
        // SAFETY: ending this process.
        unsafe { libc::_exit(0) }
    }
}

/// The first request frame in `buf` (`u32` length and body), when it is there whole.
fn whole_frame(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().expect("4 bytes")) as usize;
    buf.get(..4 + len)
}

/// A connected pair of Unix stream sockets, both close-on-exec.
fn socket_pair() -> Option<[c_int; 2]> {
    let mut pair = [0 as c_int; 2];
    // SAFETY: a socket pair into an array of two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    (rc == 0).then_some(pair)
}

/// All of `b` to the socket `fd` (blocking); `false` when the other end is gone (no SIGPIPE,
/// whatever this process's disposition of it).
fn write_all(fd: c_int, b: &[u8]) -> bool {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: sending from a buffer we own.
        let n = unsafe {
            libc::send(
                fd,
                b[off..].as_ptr().cast(),
                b.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        off += n as usize;
    }
    true
}

/// A reaper forked by the server: its replies on [`REPORT_FD`], its control socket on
/// [`CTL_FD`], nothing else open but stdin and the log. It runs `first`, then each job the
/// server sends, one at a time, until the server closes its socket or goes away: a stage is
/// finished only when every process of it is gone, so the next stage's processes are the only
/// children it has while that one runs. After each stage it tells the server it is idle, then
/// writes the stage's end to the orchestrator (so the server knows before the next request can
/// come). A job with read-only mounts ends its reaper (they live in its mount namespace).
unsafe fn reaper_main(server: pid_t, tx: c_int, ctl: c_int, first: &StartJob) -> ! {
    let Ok(set) = super::become_reaper(server) else {
        libc::_exit(127)
    };
    // Above the fixed numbers first, so that neither is overwritten by the other's `dup2`.
    let (t, c) = (
        libc::fcntl(tx, libc::F_DUPFD_CLOEXEC, 64),
        libc::fcntl(ctl, libc::F_DUPFD_CLOEXEC, 64),
    );
    if t < 0
        || c < 0
        || libc::dup2(t, REPORT_FD) < 0
        || libc::dup2(c, CTL_FD) < 0
        || libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0
        || libc::fcntl(CTL_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0
    {
        libc::_exit(127);
    }
    super::close_from(CTL_FD + 1);
    let sigfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
    if sigfd < 0 {
        libc::_exit(127);
    }
    let mut ctl = Ctl {
        fd: CTL_FD,
        sigfd,
        open: true,
        buf: Vec::new(),
        job: first.job,
    };
    let mut job = first.clone();
    loop {
        ctl.job = job.job;
        let status = run_job(&job, &mut ctl);
        // The server is gone (its end of the control socket closes as it dies, before this
        // process is reparented): the stage was killed for that, and the orchestrator says so
        // for every job the server had; a report of that kill would read as the stage's own.
        if !ctl.open || libc::getppid() != server {
            libc::_exit(0);
        }
        write_all(CTL_FD, &job.job.to_le_bytes());
        write_all(REPORT_FD, &encode_reply(job.job, status, EXITED));
        if !job.files.read_only.is_empty() {
            libc::_exit(0);
        }
        match ctl.next_job() {
            Some(next) => job = next,
            None => libc::_exit(0),
        }
    }
}

/// One stage in a reaper: stdout and stderr to its log, its working directory and
/// environment, then [`super::run_stage`]. Returns its wait status (exit 127 when it could not
/// start, said in the log when there is one).
unsafe fn run_job(s: &StartJob, ctl: &mut Ctl) -> c_int {
    const NOT_RUN: c_int = 127 << 8;
    let log = libc::open(
        s.log.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
        0o666,
    );
    if log < 0 {
        // Nowhere to say it: the orchestrator opened this log before asking, so this is rare.
        return NOT_RUN;
    }
    libc::dup2(log, 1);
    libc::dup2(log, 2);
    libc::close(log);
    if libc::chdir(s.cwd.as_ptr()) != 0 {
        eprintln!(
            "[orchestrator] cannot start the stage: cannot enter {}: {}",
            s.cwd.to_string_lossy(),
            std::io::Error::last_os_error()
        );
        return NOT_RUN;
    }
    let extra = s.env.iter().map(|kv| {
        let b = kv.as_bytes();
        let eq = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
        (&b[..eq], b.get(eq + 1..).unwrap_or(&[]))
    });
    let stage = StageExec::from_parts(s.program.clone(), s.argv.clone(), environ_with(extra));
    match super::run_stage(&s.files, &stage, ctl, || {}) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("[orchestrator] cannot start the stage: {e}");
            NOT_RUN
        }
    }
}

/// A reaper's side of its control socket (`fd`: [`CTL_FD`]) and of its signals (`sigfd`).
struct Ctl {
    fd: c_int,
    sigfd: c_int,
    /// Whether the server's end is still open.
    open: bool,
    /// Bytes of an incomplete frame.
    buf: Vec<u8>,
    /// The job running now: a cancel of any other is stale.
    job: u64,
}

impl Ctl {
    /// Wait up to `ms` (`-1`: no limit) for a signal or the server; `Err(())` when the server
    /// closed its end.
    unsafe fn poll(&mut self, ms: c_int) -> (Option<c_int>, Result<(), ()>) {
        let mut fds = [
            libc::pollfd {
                fd: self.sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if self.open { self.fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, ms) <= 0 {
            return (None, Ok(()));
        }
        let mut sig = None;
        if fds[0].revents != 0 {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            if libc::read(
                self.sigfd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            ) == size as isize
            {
                sig = Some(info.ssi_signo as c_int);
            }
        }
        if fds[1].revents != 0 {
            let mut chunk = [0u8; 4096];
            let n = libc::read(self.fd, chunk.as_mut_ptr().cast(), chunk.len());
            if n == 0 || (n < 0 && errno() != libc::EINTR && errno() != libc::EAGAIN) {
                self.open = false;
                return (sig, Err(()));
            }
            if n > 0 {
                self.buf.extend_from_slice(&chunk[..n as usize]);
            }
        }
        (sig, Ok(()))
    }

    /// The next whole request the server sent, if any; `Err(())` for a malformed one.
    fn frame(&mut self) -> Option<Result<Request, ()>> {
        let frame = whole_frame(&self.buf)?;
        let (r, n) = (Request::decode(&frame[4..]).ok_or(()), frame.len());
        self.buf.drain(..n);
        Some(r)
    }

    /// Idle: the next job, skipping stale cancels; `None` when the reaper should end (the
    /// server closed its socket or sent something malformed; a signal other than SIGCHLD).
    unsafe fn next_job(&mut self) -> Option<StartJob> {
        loop {
            while let Some(r) = self.frame() {
                match r {
                    Ok(Request::Start(s)) => return Some(*s),
                    Ok(Request::Cancel { .. }) => {}
                    Err(()) => return None,
                }
            }
            match self.poll(-1) {
                (_, Err(())) => return None,
                (Some(sig), _) if sig != libc::SIGCHLD => return None,
                _ => {}
            }
        }
    }
}

impl super::Wait for Ctl {
    /// A signal, or a cancel of the running job from the server (hard: [`SIG_HARD`], else
    /// SIGTERM); the server's end closing stands for [`SIG_HARD`] (it died).
    unsafe fn wait(&mut self, ms: i64) -> Option<c_int> {
        let (sig, open) = self.poll(ms as c_int);
        if open.is_err() {
            return Some(SIG_HARD);
        }
        let mut cancel = None;
        while let Some(r) = self.frame() {
            if let Ok(Request::Cancel { job, hard }) = r {
                if job == self.job {
                    let s = if hard { SIG_HARD } else { libc::SIGTERM };
                    if cancel != Some(SIG_HARD) {
                        cancel = Some(s);
                    }
                }
            }
        }
        match (sig, cancel) {
            (Some(SIG_HARD), _) | (_, Some(SIG_HARD)) => Some(SIG_HARD),
            (Some(s), _) if s != libc::SIGCHLD => Some(s),
            (_, c) => c.or(sig),
        }
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

    /// A reaper's control end on one side of a socket pair (no signals), the server's on the other.
    fn ctl_pair(job: u64) -> (Ctl, c_int) {
        let pair = socket_pair().expect("a socket pair");
        let ctl = Ctl {
            fd: pair[0],
            sigfd: -1,
            open: true,
            buf: Vec::new(),
            job,
        };
        (ctl, pair[1])
    }

    fn start(job: u64) -> Request {
        Request::Start(Box::new(StartJob {
            job,
            cwd: c("/"),
            log: c("/dev/null"),
            files: ReaperFiles::in_run_dir(std::path::Path::new("/c/runs/k.1"), false),
            program: c("/bin/true"),
            argv: vec![c("true")],
            env: vec![],
        }))
    }

    #[test]
    fn a_reaper_acts_only_on_cancels_of_the_job_it_runs() {
        use super::super::Wait;
        let (mut ctl, server) = ctl_pair(2);
        // A cancel of the job before (which ended while the cancel was on its way): nothing.
        assert!(write_all(
            server,
            &Request::Cancel { job: 1, hard: true }.encode()
        ));
        // SAFETY: our own descriptors.
        assert_eq!(unsafe { ctl.wait(1000) }, None);
        assert!(write_all(
            server,
            &Request::Cancel {
                job: 2,
                hard: false
            }
            .encode()
        ));
        assert_eq!(unsafe { ctl.wait(1000) }, Some(libc::SIGTERM));
        // Soft and hard in one read: hard wins.
        let mut both = Request::Cancel { job: 2, hard: true }.encode();
        both.extend(
            Request::Cancel {
                job: 2,
                hard: false,
            }
            .encode(),
        );
        assert!(write_all(server, &both));
        assert_eq!(unsafe { ctl.wait(1000) }, Some(SIG_HARD));
        // Nothing sent: the wait times out.
        assert_eq!(unsafe { ctl.wait(10) }, None);
        // The server's end closing (it died) stands for a hard stop, once.
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(server) };
        assert_eq!(unsafe { ctl.wait(1000) }, Some(SIG_HARD));
        assert_eq!(unsafe { ctl.wait(10) }, None);
        unsafe { libc::close(ctl.fd) };
    }

    #[test]
    fn an_idle_reaper_skips_stale_cancels_takes_the_next_job_and_ends_with_the_server() {
        let (mut ctl, server) = ctl_pair(1);
        let mut bytes = Request::Cancel {
            job: 1,
            hard: false,
        }
        .encode();
        bytes.extend(start(2).encode());
        // Split mid-frame: the rest comes in a later read.
        let (a, b) = bytes.split_at(bytes.len() - 5);
        assert!(write_all(server, a));
        let writer = std::thread::spawn({
            let b = b.to_vec();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                assert!(write_all(server, &b));
                server
            }
        });
        // SAFETY: our own descriptors.
        let next = unsafe { ctl.next_job() }.expect("a job");
        assert_eq!(Request::Start(Box::new(next)), start(2));
        let server = writer.join().unwrap();
        // A malformed request ends it; so does the server's end closing.
        assert!(write_all(server, &[3, 0, 0, 0, 9, 9, 9]));
        assert!(unsafe { ctl.next_job() }.is_none());
        unsafe { libc::close(server) };
        let (mut ctl2, server2) = ctl_pair(1);
        unsafe { libc::close(server2) };
        assert!(unsafe { ctl2.next_job() }.is_none());
        unsafe { libc::close(ctl.fd) };
        unsafe { libc::close(ctl2.fd) };
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
