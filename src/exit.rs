//! Documented process exit codes and the top-level error that maps to them.

use std::process::ExitCode;

/// Everything ran (or was cached) successfully.
pub const OK: u8 = 0;
/// At least one stage failed; everything independent of it still ran.
pub const STAGE_FAILED: u8 = 1;
/// The user's input is wrong: pipeline file, command-line arguments, missing external input.
pub const BAD_INPUT: u8 = 2;
/// The cache or the environment is unusable: store not writable, lock held, disk full, corrupt index.
pub const ENVIRONMENT: u8 = 3;
/// Interrupted by Ctrl-C; what finished is committed. SIGTERM ends a run with 143 and SIGHUP
/// with 129 ([`signal_exit_code`]).
pub const INTERRUPTED: u8 = 130;

/// The error every command returns: a rendered message and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    /// Fully rendered (may span lines); printed to stderr as is.
    pub message: String,
}

impl CliError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        CliError {
            code: BAD_INPUT,
            message: message.into(),
        }
    }
    pub fn environment(message: impl Into<String>) -> Self {
        CliError {
            code: ENVIRONMENT,
            message: message.into(),
        }
    }
    pub fn stage_failed(message: impl Into<String>) -> Self {
        CliError {
            code: STAGE_FAILED,
            message: message.into(),
        }
    }
    pub fn interrupted(message: impl Into<String>) -> Self {
        CliError {
            code: INTERRUPTED,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::environment(format!("error: {e:#}"))
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

pub fn to_exit_code(r: CliResult<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{}", e.message.trim_end());
            ExitCode::from(e.code)
        }
    }
}

/// `true`: a write to a closed pipe ends the process quietly (SIGPIPE's default action, what
/// `cat` or `grep` do under `| head`); `false`: it is an `EPIPE` error the caller handles (the
/// Rust runtime's setting, which panics in `println!`).
pub fn default_sigpipe(on: bool) {
    let action = if on { libc::SIG_DFL } else { libc::SIG_IGN };
    // SAFETY: setting a standard disposition for SIGPIPE, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, action) };
}

/// Exit code of a process ended by signal `sig` (the shell's convention, 128 + the number):
/// 129 for SIGHUP, 130 for SIGINT, 143 for SIGTERM.
pub fn signal_exit_code(sig: i32) -> u8 {
    (128 + sig).clamp(0, 255) as u8
}
