//! Documented process exit codes, the top-level error every command returns, and the one place
//! where the engine's typed errors are mapped to codes (the engine knows nothing of them).

use std::process::ExitCode;

use crate::cache::CacheError;
use crate::exec::slurm::SlurmError;
use crate::exec::ExecError;
use crate::pipeline::Diagnostics;

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

/// A bad pipeline is bad input: every error rendered.
impl From<Diagnostics> for CliError {
    fn from(d: Diagnostics) -> Self {
        CliError::bad_input(d.to_string())
    }
}

/// The exit code of an execution error: what the user can fix in the pipeline or its inputs
/// is bad input, the rest is the environment.
pub fn exec_code(e: &ExecError) -> u8 {
    match e {
        ExecError::MissingInput { .. } | ExecError::Unsatisfiable { .. } => BAD_INPUT,
        ExecError::WorkerMissing { .. } | ExecError::Cache(_) | ExecError::Runtime(_) => {
            ENVIRONMENT
        }
    }
}

impl From<ExecError> for CliError {
    fn from(e: ExecError) -> Self {
        CliError {
            code: exec_code(&e),
            message: format!("error: {e}"),
        }
    }
}

/// A SLURM run that cannot start: an impossible request is bad input, a missing or unusable
/// SLURM is the environment.
impl From<SlurmError> for CliError {
    fn from(e: SlurmError) -> Self {
        let code = match e {
            SlurmError::Request(_) => BAD_INPUT,
            SlurmError::Environment(_) => ENVIRONMENT,
        };
        CliError {
            code,
            message: format!("error: {e}"),
        }
    }
}

/// The cache unusable (not writable, locked by a live run, corrupt index): the environment.
impl From<CacheError> for CliError {
    fn from(e: CacheError) -> Self {
        CliError::environment(format!("error: {e}"))
    }
}

/// An error carried through `anyhow` (the report): mapped by the typed error at its root, the
/// environment when there is none.
impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        let code = e
            .chain()
            .find_map(|c| {
                if let Some(x) = c.downcast_ref::<ExecError>() {
                    Some(exec_code(x))
                } else if c.downcast_ref::<Diagnostics>().is_some() {
                    Some(BAD_INPUT)
                } else {
                    c.downcast_ref::<CacheError>().map(|_| ENVIRONMENT)
                }
            })
            .unwrap_or(ENVIRONMENT);
        CliError {
            code,
            message: format!("error: {e:#}"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_map_to_documented_codes() {
        let missing = ExecError::MissingInput {
            path: "/gone".into(),
            stage: "a".into(),
            input: "x".into(),
            location: "p.yaml:1:1".into(),
            help: Box::new(crate::exec::MissingHelp {
                what: None,
                hint: "restore it".into(),
            }),
        };
        assert_eq!(exec_code(&missing), BAD_INPUT);
        let through_anyhow = CliError::from(anyhow::Error::from(missing).context("report"));
        assert_eq!(through_anyhow.code, BAD_INPUT);
        let worker = ExecError::WorkerMissing {
            looked_at: "/x".into(),
        };
        assert_eq!(CliError::from(worker).code, ENVIRONMENT);
        assert_eq!(
            CliError::from(anyhow::anyhow!("disk full")).code,
            ENVIRONMENT
        );
    }
}
