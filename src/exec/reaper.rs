//! The reaper: how [`super::LocalBackend`] makes every process of a stage end with the stage
//! and with the run.
//!
//! `PR_SET_PDEATHSIG` reaches only a direct child, and a stage's shell starts children of its
//! own (`sh -c '... &'`, `python` workers) that would be reparented and keep writing into its run
//! dir. So the backend's direct child is not the stage but this reaper, a fork of the
//! orchestrator that never execs:
//!
//! - it dies with the orchestrator's thread (`PR_SET_PDEATHSIG` = [`SIG_HARD`]) and is a child
//!   subreaper, so every descendant of the stage that loses its parent is reparented to it;
//! - it forks the stage into a process group of its own (recorded in `<run dir>/pgid`), which
//!   dies with it (`PR_SET_PDEATHSIG` = SIGKILL);
//! - a stage is finished when all its processes are gone: once the main process exits, the
//!   reaper waits for the rest ([`LEFTOVER_WAIT_MS`]), then stops them (SIGTERM, 2 s, SIGKILL),
//!   notes it in the log and in `<run dir>/leftovers`, and only then exits with the main
//!   process's status, so outputs are hashed when nothing can write to them any more;
//! - SIGTERM / SIGHUP / SIGINT to the reaper: SIGTERM to the stage, SIGKILL after
//!   [`TERM_GRACE_MS`]; [`SIG_HARD`] (the orchestrator died, or a hard cancel): SIGKILL now.
//!
//! It runs between `fork` and `exec` of a multi-threaded process, so it only makes
//! async-signal-safe system calls: no allocation, no locks, no Rust std I/O. The second fork is
//! a raw `clone` (glibc's `fork` runs atfork handlers that may take locks).

use std::ffi::CString;

use libc::{c_int, c_long, pid_t};

/// The signal that asks the reaper to kill the stage at once (and that it gets when the
/// orchestrator dies).
pub const SIG_HARD: c_int = libc::SIGUSR1;
/// How long a stage's background processes may outlive its main process.
pub const LEFTOVER_WAIT_MS: i64 = 10_000;
/// How long a stage asked to stop (SIGTERM) has before it is killed.
pub const TERM_GRACE_MS: i64 = 10_000;
/// How long stopped leftovers get between SIGTERM and SIGKILL.
const LEFTOVER_TERM_MS: i64 = 2_000;

const WAITED: [c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGINT,
    SIG_HARD,
];

const LEFTOVER_NOTE: &[u8] = b"\n[orchestrator] the stage's main process ended, but processes it started were still running 10 s later; they were stopped (SIGTERM, then SIGKILL)\n";

/// Files the reaper writes, prepared before the fork (no allocation after it).
#[derive(Debug, Clone)]
pub struct ReaperFiles {
    /// `<run dir>/pgid`: the stage's process group while it lives.
    pub pgid: CString,
    /// `<run dir>/leftovers`: made when background processes had to be stopped.
    pub leftovers: CString,
}

impl ReaperFiles {
    pub fn in_run_dir(run_dir: &std::path::Path) -> ReaperFiles {
        use std::os::unix::ffi::OsStrExt;
        let c = |name: &str| {
            CString::new(run_dir.join(name).as_os_str().as_bytes())
                .unwrap_or_else(|_| CString::new("/dev/null").expect("no NUL"))
        };
        ReaperFiles {
            pgid: c("pgid"),
            leftovers: c("leftovers"),
        }
    }
}

/// Called in the backend's child between fork and exec. Returns `Ok` in the stage process,
/// which then execs the stage; the reaper side never returns.
///
/// # Safety
/// Only between `fork` and `exec` (a `pre_exec` hook), where the caller is the only thread.
pub unsafe fn split(orchestrator: pid_t, files: &ReaperFiles) -> std::io::Result<()> {
    if libc::prctl(libc::PR_SET_PDEATHSIG, SIG_HARD as libc::c_ulong) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::getppid() != orchestrator {
        // The orchestrator died while this process was being made: start nothing.
        libc::_exit(1);
    }
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for s in WAITED {
        libc::sigaddset(&mut set, s);
    }
    let mut old: libc::sigset_t = std::mem::zeroed();
    libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
    let me = libc::getpid();
    let pid = libc::syscall(
        libc::SYS_clone,
        libc::SIGCHLD as c_long,
        0 as c_long,
        0 as c_long,
        0 as c_long,
        0 as c_long,
    ) as pid_t;
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        return Err(e);
    }
    if pid == 0 {
        // The stage: a process group of its own (what the reaper signals), killed if the reaper
        // dies, with every signal unblocked and SIGPIPE at its default.
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != me {
            libc::_exit(1);
        }
        default_action(libc::SIGPIPE);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        return Ok(());
    }
    reap(pid, &set, files)
}

unsafe fn reap(stage: pid_t, set: &libc::sigset_t, files: &ReaperFiles) -> ! {
    close_from(3);
    write_number(&files.pgid, stage);
    let mut main_status: c_int = 0;
    let mut main_done_at: i64 = -1;
    let mut leftovers_stopped = false;
    let mut kill_at: i64 = -1;
    let mut hard = false;
    loop {
        // Collect every child that ended; no child left at all = the stage is finished.
        loop {
            let mut st: c_int = 0;
            let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
            if r > 0 {
                if r == stage {
                    main_status = st;
                    main_done_at = now_ms();
                }
                continue;
            }
            if r < 0 && errno() == libc::ECHILD {
                finish(main_status, files);
            }
            break;
        }
        let now = now_ms();
        if main_done_at >= 0 && !leftovers_stopped && now - main_done_at >= LEFTOVER_WAIT_MS {
            leftovers_stopped = true;
            let _ = libc::write(2, LEFTOVER_NOTE.as_ptr().cast(), LEFTOVER_NOTE.len());
            write_number(&files.leftovers, 1);
            signal_all(stage, libc::SIGTERM);
            kill_at = now + LEFTOVER_TERM_MS;
        }
        if kill_at >= 0 && now >= kill_at {
            hard = true;
        }
        if hard {
            // Every round: orphans reparented since the last one are caught too.
            signal_all(stage, libc::SIGKILL);
        }
        let wait = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let sig = libc::sigtimedwait(set, std::ptr::null_mut(), &wait);
        if sig == SIG_HARD {
            hard = true;
            signal_all(stage, libc::SIGKILL);
        } else if sig == libc::SIGTERM || sig == libc::SIGHUP || sig == libc::SIGINT {
            signal_all(stage, libc::SIGTERM);
            if kill_at < 0 {
                kill_at = now_ms() + TERM_GRACE_MS;
            }
        }
    }
}

/// Exit as the stage's main process did (same code, or the same signal).
unsafe fn finish(status: c_int, files: &ReaperFiles) -> ! {
    libc::unlink(files.pgid.as_ptr());
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        default_action(sig);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(libc::WEXITSTATUS(status));
}

/// `sig` to the stage's process group and to every child of the reaper (descendants that left
/// the group and were reparented here).
unsafe fn signal_all(stage: pid_t, sig: c_int) {
    libc::kill(-stage, sig);
    let fd = libc::open(
        c"/proc/thread-self/children".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut pid: pid_t = 0;
    let mut in_number = false;
    loop {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b.is_ascii_digit() {
                pid = pid * 10 + (b - b'0') as pid_t;
                in_number = true;
            } else if in_number {
                libc::kill(pid, sig);
                pid = 0;
                in_number = false;
            }
        }
    }
    if in_number {
        libc::kill(pid, sig);
    }
    libc::close(fd);
}

unsafe fn close_from(first: c_int) {
    if libc::syscall(libc::SYS_close_range, first as libc::c_uint, !0u32, 0u32) == 0 {
        return;
    }
    for fd in first..4096 {
        libc::close(fd);
    }
}

unsafe fn write_number(path: &CString, n: pid_t) {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
        0o644,
    );
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    i -= 1;
    buf[i] = b'\n';
    let mut x = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    let _ = libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
    libc::close(fd);
}

unsafe fn default_action(sig: c_int) {
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = libc::SIG_DFL;
    libc::sigemptyset(&mut sa.sa_mask);
    libc::sigaction(sig, &sa, std::ptr::null_mut());
}

unsafe fn now_ms() -> i64 {
    let mut ts: libc::timespec = std::mem::zeroed();
    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

unsafe fn errno() -> c_int {
    *libc::__errno_location()
}

/// Processes of process group `pgid` that belong to the stage attempt run in `run_dir` (their
/// environment holds `ORCHESTRATOR_RUN_DIR=<run_dir>`): what an earlier attempt left running
/// when its reaper was killed too.
pub fn members_of(pgid: pid_t, run_dir: &std::path::Path) -> Vec<pid_t> {
    use std::os::unix::ffi::OsStrExt;
    let mut needle = b"ORCHESTRATOR_RUN_DIR=".to_vec();
    needle.extend_from_slice(run_dir.as_os_str().as_bytes());
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<pid_t>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let fields: Vec<&[u8]> = stat[close + 1..]
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .collect();
        let pgrp = fields
            .get(2)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.parse::<pid_t>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_slice()) {
            out.push(pid);
        }
    }
    out
}
