//! `orchestrator serve [PIPELINE...]`: the live dashboard (see [`crate::serve`]). Loads the
//! pipelines, picks their cache roots, prints the URL on stdout and serves until Ctrl-C.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Global;
use crate::exit::{CliError, CliResult};
use crate::serve::{Config, Source};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files to show (default: every `pipelines/*.yaml` under the current folder that
    /// loads).
    pub pipelines: Vec<PathBuf>,
    /// TCP port; 0 picks a free one (the printed URL says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. The default answers only this machine (reach it from a laptop
    /// through an SSH tunnel); anything else prints a warning.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The token a browser or script must present (default: a random one, printed in the URL).
    #[arg(long, env = "ORCHESTRATOR_SERVE_TOKEN", conflicts_with = "no_token")]
    pub token: Option<String>,
    /// Serve without a token (anyone who can reach the port can read the dashboard).
    #[arg(long)]
    pub no_token: bool,
    /// How often (milliseconds) the server looks for changes while a page is open.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub poll_ms: u64,
}

pub fn run(args: Args, g: &Global) -> CliResult<u8> {
    let sources = load_sources(&args.pipelines, g)?;
    let token = token(args.token, args.no_token)?;
    if token.is_none() && args.bind.is_loopback() {
        eprintln!("warning: without a token, every user of this machine can read the dashboard");
    }
    if !args.bind.is_loopback() {
        eprintln!(
            "warning: listening on {} makes the dashboard reachable from other machines{}; prefer the default 127.0.0.1 and an SSH tunnel",
            args.bind,
            if token.is_some() { " (token required)" } else { " WITHOUT a token" }
        );
    }
    let names: Vec<String> = sources.iter().map(|s| s.pipeline.name.clone()).collect();
    let roots: Vec<String> = sources
        .iter()
        .map(|s| s.root.display().to_string())
        .collect();
    let config = Config {
        sources,
        bind: args.bind,
        port: args.port,
        token: token.clone(),
        poll: Duration::from_millis(args.poll_ms),
    };
    let quiet = g.quiet;
    crate::serve::serve(config, |addr| {
        announce(addr, args.bind, token.as_deref(), &names, &roots, quiet)
    })
    .map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "\nhint: another program uses this port; pick another with --port, or --port 0 for a free one"
        } else {
            ""
        };
        CliError::environment(format!(
            "error: cannot serve on {}:{}: {e}{hint}",
            args.bind, args.port
        ))
    })?;
    Ok(crate::exit::OK)
}

/// The pipelines to serve with their cache roots: the named ones (each must load), or else
/// those of `pipelines/*.yaml` that load. Two pipelines may not share a name.
fn load_sources(named: &[PathBuf], g: &Global) -> CliResult<Vec<Source>> {
    let files = if named.is_empty() {
        discover()?
    } else {
        named.iter().map(|p| (p.clone(), true)).collect()
    };
    let mut sources: Vec<Source> = Vec::new();
    for (file, named) in files {
        let p = match super::load(&file, g) {
            Ok(p) => p,
            Err(e) if named => return Err(e),
            Err(_) => {
                eprintln!(
                    "warning: {} does not load (`orchestrator validate {}` says why); not served",
                    file.display(),
                    file.display()
                );
                continue;
            }
        };
        if let Some(other) = sources.iter().find(|s| s.pipeline.name == p.name) {
            return Err(CliError::bad_input(format!(
                "error: {} and {} are both named `{}`\nhint: serve one of them, or rename one (`name:`)",
                other.pipeline.file.display(),
                p.file.display(),
                p.name
            )));
        }
        let root = super::cache_root(g, &file);
        let root = root.canonicalize().map_err(|e| {
            CliError::environment(format!(
                "error: cache {} of {} cannot be opened: {e}\nhint: run the pipeline first, or pass the cache with --cache-dir",
                root.display(),
                file.display()
            ))
        })?;
        sources.push(Source {
            pipeline: p,
            overrides: g.set.clone(),
            root,
        });
    }
    if sources.is_empty() {
        return Err(CliError::bad_input(
            "error: no pipeline to serve (no pipelines/*.yaml here loads)\nhint: name one: `orchestrator serve pipelines/sweep.yaml`",
        ));
    }
    Ok(sources)
}

/// The token to require: the one given (checked to fit in a URL query), none with
/// `--no-token`, or else a random one.
fn token(given: Option<String>, no_token: bool) -> CliResult<Option<String>> {
    Ok(match (given, no_token) {
        (Some(t), _) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b'&') => {
            return Err(CliError::bad_input(
                "error: --token must be printable ASCII without spaces, `;` or `&`\nhint: e.g. --token \"$(openssl rand -hex 16)\"",
            ))
        }
        (Some(t), _) => Some(t),
        (None, true) => None,
        (None, false) => Some(crate::serve::random_token().map_err(|e| {
            CliError::environment(format!("error: cannot read /dev/urandom for a token: {e}"))
        })?),
    })
}

/// Once listening: the URL on stdout (what scripts read) and, unless quiet, what is served and
/// how to reach it through an SSH tunnel on stderr.
fn announce(
    addr: std::net::SocketAddr,
    bind: IpAddr,
    token: Option<&str>,
    names: &[String],
    roots: &[String],
    quiet: bool,
) {
    let host = if bind.is_unspecified() || bind.is_loopback() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "http://{host}:{}/{query}", addr.port());
    let _ = out.flush();
    if !quiet {
        let mut roots = roots.to_vec();
        roots.dedup();
        eprintln!(
            "serving {} (cache {}); Ctrl-C to stop\nfrom another machine: ssh -N -L {port}:127.0.0.1:{port} {user}@{machine}   then open http://localhost:{port}/{query}",
            names.join(", "),
            roots.join(", "),
            port = addr.port(),
            user = std::env::var("USER").unwrap_or_else(|_| "you".into()),
            machine = crate::cache::hostname(),
        );
    }
}

/// `pipelines/*.yaml` of the current folder, sorted (not named by the user: one that does not
/// load is skipped with a warning instead of stopping the server).
fn discover() -> CliResult<Vec<(PathBuf, bool)>> {
    let dir = Path::new("pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| {
            CliError::bad_input(
                "error: no pipeline named and no pipelines/ folder here\nhint: `orchestrator serve pipelines/sweep.yaml`",
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|f| (f, false)).collect())
}
