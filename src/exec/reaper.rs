//! The reaper: how [`super::LocalBackend`] makes every process of a stage end with the stage
//! and with the run.
//!
//! `PR_SET_PDEATHSIG` reaches only a direct child, and a stage's shell starts children of its
//! own (`sh -c '... &'`, `python` workers) that would be reparented and keep writing into its run
//! dir. So a stage's parent is not the orchestrator but this reaper, a process that never
//! execs:
//!
//! - it dies with its parent (`PR_SET_PDEATHSIG` = [`SIG_HARD`]; the parent is the run's reaper
//!   server, which dies the same way with the orchestrator's thread) and is a child subreaper,
//!   so every descendant of the stage that loses its parent is reparented to it;
//! - it starts the stage in a process group of its own (recorded, with the attempt's run dir,
//!   in `<work dir>/.pgid`, emptied when the attempt ends);
//! - a stage is finished when all its processes are gone: once the main process exits, the
//!   reaper waits for the rest ([`LEFTOVER_WAIT_MS`]), then stops them (SIGTERM, 2 s, SIGKILL),
//!   notes it in the log and in `<run dir>/leftovers`, and only then reports the main
//!   process's status (exits with it, or, under the server, says it and takes the next
//!   stage), so outputs are hashed when nothing can write to them any more;
//! - SIGTERM / SIGHUP / SIGINT to the reaper: SIGTERM to the stage, SIGKILL after
//!   [`TERM_GRACE_MS`]; [`SIG_HARD`] (the orchestrator died, or a hard cancel): SIGKILL now;
//! - with `ORCHESTRATOR_READONLY_INPUTS=1` and where the system allows it, the stage gets a
//!   mount namespace of its own in which the cache's `views/` and `objects/` are read-only, so
//!   no write reaches a stored object.
//!
//! How reapers are started: once per run, when its first local stage starts, the orchestrator
//! starts a reaper *server* ([`server`]; `posix_spawn`, nothing of the orchestrator's memory is
//! copied) and sends it each stage over a socket; the server hands it to an idle reaper, or
//! forks a new one, and a reaper runs one stage after another ([`server`]). A fork of the
//! small server costs a fraction of an `exec` (no loader, no program start-up), and a reused
//! reaper costs none, which matters at a sweep's scale: 5,000 cells start 5,000 stages.
//! (Before: a reaper per stage, forked; before that exec'd; before that the orchestrator
//! itself was forked, whose cost grew with the orchestrator's memory.) The server's program is the small
//! `orchestrator-reaper` installed next to the orchestrator (`src/bin/orchestrator-reaper.rs`:
//! this module and libc), pinned by a descriptor opened when the first stage starts, so that a
//! rebuild during a run changes nothing. Where it is missing (a copied `orchestrator` alone),
//! the orchestrator runs itself as `orchestrator __orchestrator-reaper/2 <pid>`
//! ([`enter_if_reaper`], first thing in `main`). Where no entry point is installed at all (the
//! library's own unit tests), the backend forks itself per stage; that child runs [`split`]
//! between `fork` and `exec` of a multi-threaded process, so that code only makes system calls
//! that need no allocation and take no lock (no Rust std I/O), and starts the stage with
//! `posix_spawn` from arguments, environment and attributes made before the fork. Both paths
//! run the same [`become_reaper`] and [`run_stage`].

use std::ffi::CString;

use libc::{c_int, pid_t};

pub mod client;
pub mod server;

/// `argv[1]` of the reaper server. It names the version of its protocol ([`server`]), so that an
/// `orchestrator-reaper` of another build says so instead of misreading it. `argv[2]` is the
/// orchestrator's pid.
pub const REAPER_ARG: &str = "__orchestrator-reaper/2";

/// The file name of the dedicated reaper binary, looked for next to the orchestrator's.
pub const REAPER_BIN: &str = "orchestrator-reaper";

/// Set by [`enter_if_reaper`]: this program can serve as its own reaper.
static ENTRY_POINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The program that serves as the reaper, found when the first stage starts ([`reaper_exe`]).
static REAPER_EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// First thing in the `main` of a binary that runs stages. Started as the reaper server
/// (`<exe> __orchestrator-reaper/2 <pid>`): become it, and never return. Otherwise: note that
/// this program can start the server ([`reaper_exe`]).
pub fn enter_if_reaper() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(REAPER_ARG)) {
        serve_from_args(args.next());
    }
    ENTRY_POINT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The server's entry: `pid` is the orchestrator's.
fn serve_from_args(pid: Option<std::ffi::OsString>) -> ! {
    match pid.and_then(|p| p.to_str().and_then(|p| p.parse::<pid_t>().ok())) {
        Some(pid) => server::serve(pid),
        None => {
            eprintln!("[orchestrator] the reaper server needs the orchestrator's pid");
            std::process::exit(2)
        }
    }
}

/// `orchestrator-reaper` next to this program, opened (`O_PATH`, kept open for the process's
/// life) and named through `/proc/self/fd`; `None` when it is missing or not an executable file.
fn sibling_reaper() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::os::unix::io::IntoRawFd;
    let path = std::env::current_exe().ok()?.with_file_name(REAPER_BIN);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return None;
    }
    Some(std::path::PathBuf::from(format!(
        "/proc/self/fd/{}",
        file.into_raw_fd()
    )))
}

/// The `main` of the `orchestrator-reaper` binary: the reaper when started as one, else a
/// message that it is not a command to run by hand (exit 2).
pub fn reaper_binary_main() -> ! {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(a) if a == REAPER_ARG => {
            // Its command name is the descriptor's number otherwise (`/proc/self/fd/N`); the
            // reapers it forks keep it.
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"orch-reaper".as_ptr()) };
            serve_from_args(args.next())
        }
        Some(a) if a.to_string_lossy().starts_with("__orchestrator-reaper") => {
            eprintln!(
                "[orchestrator] cannot start the stage: this orchestrator-reaper speaks {REAPER_ARG}, the orchestrator that started it {}; install orchestrator and orchestrator-reaper from the same build (both come with `cargo build --bins` / `cargo install`)",
                a.to_string_lossy()
            );
            std::process::exit(127)
        }
        _ => {
            eprintln!("orchestrator-reaper: started by `orchestrator run` to start its stages; it is not a command to run by hand");
            std::process::exit(2)
        }
    }
}

/// The program to start as the reaper server, when [`enter_if_reaper`] was called in this process:
/// `orchestrator-reaper` next to this program when it is there, else this program itself. Found
/// when the first stage starts (commands that start none open nothing), then pinned for the
/// process's life: a descriptor of that file, or the running image itself, even if its file is
/// replaced or removed during the run.
pub fn reaper_exe() -> Option<&'static std::path::Path> {
    if !ENTRY_POINT.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let exe = REAPER_EXE.get_or_init(|| {
        sibling_reaper().unwrap_or_else(|| std::path::PathBuf::from("/proc/self/exe"))
    });
    Some(exe.as_path())
}

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

/// Files the reaper writes and folders it protects, prepared before the fork (no allocation
/// after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaperFiles {
    /// `<work dir>/.pgid`: `<process group> <run dir name>` of the attempt while it lives, empty
    /// after (the work dir belongs to the fingerprint, so the next attempt finds it in one read).
    pub pgid: CString,
    /// The run dir's name, written after the process group.
    pub attempt: CString,
    /// `<run dir>/leftovers`: made when background processes had to be stopped.
    pub leftovers: CString,
    /// Folders the stage sees read-only (the cache's `views/` and `objects/`), when the
    /// system lets us give it a mount namespace of its own.
    pub read_only: Vec<CString>,
}

impl ReaperFiles {
    /// For a run dir `<cache>/runs/<key>.<ms>`. `protect`: make the cache's objects and views
    /// read-only for the stage ([`protect_inputs`]).
    pub fn in_run_dir(run_dir: &std::path::Path, protect: bool) -> ReaperFiles {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &std::path::Path| CString::new(p.as_os_str().as_bytes()).ok();
        let root = run_dir.parent().and_then(|r| r.parent());
        let read_only = match root {
            Some(root) if protect => ["views", "objects"]
                .iter()
                .filter_map(|d| c(&root.join(d)))
                .collect(),
            _ => Vec::new(),
        };
        let dev_null = || CString::new("/dev/null").expect("no NUL");
        let pgid = attempt_record(run_dir)
            .and_then(|(record, _)| c(&record))
            .unwrap_or_else(dev_null);
        let name = run_dir.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
        ReaperFiles {
            pgid,
            attempt: CString::new(name).unwrap_or_default(),
            leftovers: c(&run_dir.join("leftovers")).unwrap_or_else(dev_null),
            read_only,
        }
    }
}

/// For a run dir `<cache>/runs/<key>.<ms>`: the attempt record `<cache>/work/<key>/.pgid` and
/// the run dir's name.
pub fn attempt_record(run_dir: &std::path::Path) -> Option<(std::path::PathBuf, String)> {
    let name = run_dir.file_name()?.to_str()?.to_string();
    let key = name.split('.').next()?.to_string();
    let root = run_dir.parent()?.parent()?;
    Some((root.join("work").join(key).join(".pgid"), name))
}

/// Whether stages get the cache's objects and views as read-only mounts in a mount namespace
/// of their own (`ORCHESTRATOR_READONLY_INPUTS=1`). Off by default: creating and tearing down
/// a mount namespace costs ~5 ms of wall time per stage on a loaded machine (see
/// ARCHITECTURE.md), and the checks of `cache::inputs` already keep every stored object intact.
pub fn protect_inputs() -> bool {
    std::env::var_os("ORCHESTRATOR_READONLY_INPUTS").is_some_and(|v| v == "1")
}

/// The stage's program, arguments and whole environment, and its spawn attributes (a process
/// group of its own, no blocked signals, SIGPIPE at its default), made before the fork: the
/// reaper starts the stage with `posix_spawn`, which clones without copying the reaper's
/// memory (a second `fork` of the orchestrator cost ~2 ms per stage on a loaded VM).
pub struct StageExec {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    attr: libc::posix_spawnattr_t,
}

// SAFETY: the pointers point into the CStrings owned alongside them, which never move (their
// heap buffers are stable) and are only read.
unsafe impl Send for StageExec {}
unsafe impl Sync for StageExec {}

impl StageExec {
    /// `argv[0]` is looked up in `PATH` (as a shell would) when it holds no `/`; `env` is added
    /// to (and overrides) this process's environment.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<StageExec, String> {
        use std::os::unix::ffi::OsStrExt;
        let cstr = |b: &[u8]| CString::new(b).map_err(|_| "a NUL byte in the command".to_string());
        let program = resolve_program(argv)?;
        let program = cstr(program.as_os_str().as_bytes())?;
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        if env
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err("a NUL byte in the command".into());
        }
        let envp = environ_with(env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        Ok(StageExec::from_parts(program, argv, envp))
    }

    /// From a resolved program, its argv and the whole environment.
    fn from_parts(program: CString, argv: Vec<CString>, envp: Vec<CString>) -> StageExec {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        // SAFETY: plain initialisation of a spawn-attributes object we own.
        let attr = unsafe {
            let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
            libc::posix_spawnattr_init(&mut attr);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::posix_spawnattr_setsigmask(&mut attr, &none);
            let mut default: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            libc::posix_spawnattr_setsigdefault(&mut attr, &default);
            libc::posix_spawnattr_setpgroup(&mut attr, 0);
            libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETPGROUP
                    | libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            );
            attr
        };
        StageExec {
            program,
            argv_ptrs: ptrs(&argv),
            _argv: argv,
            envp_ptrs: ptrs(&envp),
            _envp: envp,
            attr,
        }
    }
}

/// This process's environment with `extra` (key, value) added, a later key replacing an
/// earlier one. Entries that hold a NUL byte are left out (the callers refuse them first).
pub(crate) fn environ_with<'a>(
    extra: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<CString> {
    use std::os::unix::ffi::OsStrExt;
    let mut vars: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in extra {
        vars.insert(k.to_vec(), v.to_vec());
    }
    vars.into_iter()
        .filter_map(|(mut kv, v)| {
            kv.push(b'=');
            kv.extend(v);
            CString::new(kv).ok()
        })
        .collect()
}

/// The program `argv[0]` names: looked up in this process's `PATH` (as a shell would) when it
/// holds no `/`.
pub fn resolve_program(argv: &[String]) -> Result<std::path::PathBuf, String> {
    let (prog, _) = argv.split_first().ok_or("empty command")?;
    if prog.contains('/') {
        return Ok(std::path::PathBuf::from(prog));
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(prog))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("`{prog}` is not on PATH"))
}

/// Called in the backend's child between fork and exec: that process becomes the reaper of the
/// stage it starts, and never returns.
///
/// # Safety
/// Only between `fork` and `exec` (a `pre_exec` hook), where the caller is the only thread.
pub unsafe fn split(
    orchestrator: pid_t,
    files: &ReaperFiles,
    stage: &StageExec,
) -> std::io::Result<()> {
    let set = become_reaper(orchestrator)?;
    let mut wait = SigWait(set);
    let status = run_stage(files, stage, &mut wait, || close_from(3))?;
    finish(status)
}

/// The once-per-process part of becoming a reaper: it dies with `parent` ([`SIG_HARD`]; it
/// ends at once when `parent` is already gone), is a child subreaper, and blocks the signals
/// it waits for ([`WAITED`], returned). Only system calls that need no allocation.
pub(crate) unsafe fn become_reaper(parent: pid_t) -> std::io::Result<libc::sigset_t> {
    if libc::prctl(libc::PR_SET_PDEATHSIG, SIG_HARD as libc::c_ulong) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::getppid() != parent {
        // The parent died while this process was being made: start nothing.
        libc::_exit(1);
    }
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for s in WAITED {
        libc::sigaddset(&mut set, s);
    }
    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    Ok(set)
}

/// How a reaper's wait loop sleeps: until one of [`WAITED`] arrives (or what stands for one),
/// or `ms` have passed.
pub(crate) trait Wait {
    /// The signal that woke it (a cancel from the server stands for [`SIG_HARD`] or SIGTERM),
    /// or `None`.
    unsafe fn wait(&mut self, ms: i64) -> Option<c_int>;
}

/// The forked reaper's wait: the blocked signals themselves.
struct SigWait(libc::sigset_t);

impl Wait for SigWait {
    unsafe fn wait(&mut self, ms: i64) -> Option<c_int> {
        let t = libc::timespec {
            tv_sec: 0,
            tv_nsec: ms * 1_000_000,
        };
        let sig = libc::sigtimedwait(&self.0, std::ptr::null_mut(), &t);
        (sig > 0).then_some(sig)
    }
}

/// Start the stage (in a process group of its own, recorded in `.pgid`) and wait until every
/// process of it is gone; returns its main process's wait status. `spawned` runs right after
/// the stage started. Only system calls that need no allocation, apart from what `wait` does.
pub(crate) unsafe fn run_stage(
    files: &ReaperFiles,
    stage: &StageExec,
    wait: &mut dyn Wait,
    spawned: impl FnOnce(),
) -> std::io::Result<c_int> {
    // The stage inherits the reaper's mount namespace (and working directory, stdout, stderr).
    read_only_mounts(&files.read_only);
    let mut pid: pid_t = 0;
    let rc = libc::posix_spawn(
        &mut pid,
        stage.program.as_ptr(),
        std::ptr::null(),
        &stage.attr,
        stage.argv_ptrs.as_ptr() as *const *mut libc::c_char,
        stage.envp_ptrs.as_ptr() as *const *mut libc::c_char,
    );
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    spawned();
    Ok(reap(pid, wait, files))
}

/// In a mount namespace of the stage's own, make `dirs` read-only bind mounts of themselves, so
/// that nothing the stage runs (root included) can write to a stored object through its inputs.
/// Best effort: without CAP_SYS_ADMIN `unshare` fails and the stage runs as it would anyway
/// (the checks of `cache::inputs` still apply).
unsafe fn read_only_mounts(dirs: &[CString]) {
    if dirs.is_empty() || libc::unshare(libc::CLONE_NEWNS) != 0 {
        return;
    }
    // Nothing done here may reach the rest of the system.
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        return;
    }
    for d in dirs {
        let bound = libc::mount(
            d.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) == 0;
        if !bound {
            continue;
        }
        let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // A mount with locked flags (nosuid, nodev in a container) keeps them.
        if libc::mount(
            std::ptr::null(),
            d.as_ptr(),
            std::ptr::null(),
            ro,
            std::ptr::null(),
        ) != 0
        {
            libc::mount(
                std::ptr::null(),
                d.as_ptr(),
                std::ptr::null(),
                ro | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            );
        }
    }
}

/// Wait for every process of the stage (`stage` is its main process and process group);
/// returns the main process's wait status.
unsafe fn reap(stage: pid_t, wait: &mut dyn Wait, files: &ReaperFiles) -> c_int {
    write_record(&files.pgid, stage, &files.attempt);
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
                // Emptied, not removed: an empty record says that nothing of the attempt
                // lives, and a freed inode would slow the next ones made (see `job::tidy`).
                libc::truncate(files.pgid.as_ptr(), 0);
                return main_status;
            }
            break;
        }
        let now = now_ms();
        if main_done_at >= 0 && !leftovers_stopped && now - main_done_at >= LEFTOVER_WAIT_MS {
            leftovers_stopped = true;
            let _ = libc::write(2, LEFTOVER_NOTE.as_ptr().cast(), LEFTOVER_NOTE.len());
            write_record(&files.leftovers, 1, c"");
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
        let sig = wait.wait(100);
        if sig == Some(SIG_HARD) {
            hard = true;
            signal_all(stage, libc::SIGKILL);
        } else if matches!(sig, Some(libc::SIGTERM | libc::SIGHUP | libc::SIGINT)) {
            signal_all(stage, libc::SIGTERM);
            if kill_at < 0 {
                kill_at = now_ms() + TERM_GRACE_MS;
            }
        }
    }
}

/// Exit as the stage's main process did (same code, or the same signal).
unsafe fn finish(status: c_int) -> ! {
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

/// `<n> <tail>\n` into `path` (created or truncated).
unsafe fn write_record(path: &CString, n: pid_t, tail: &std::ffi::CStr) {
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
    buf[i] = b' ';
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
    let tail = tail.to_bytes();
    let _ = libc::write(fd, tail.as_ptr().cast(), tail.len());
    let _ = libc::write(fd, b"\n".as_ptr().cast(), 1);
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
