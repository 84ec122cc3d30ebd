//! One module per CLI command: its `Args` (clap) and its `run`; here, what they share: the
//! options every command takes ([`Global`]), loading a pipeline with them, finding its cache
//! and an instance by name. Commands use the engine; the engine knows nothing of them.

pub mod cache;
pub mod dag;
pub mod gc;
pub mod logs;
pub mod plan;
pub mod report;
pub mod run;
pub mod schema;
pub mod serve;
pub mod show;
pub mod status;
pub mod validate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cache::{Cache, CacheLock, NameOwner};
use crate::exit::{CliError, CliResult};
use crate::pipeline::{Instance, LoadOptions, Pipeline, DEFAULT_MAX_INSTANCES};

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Cache root (object store + index + work dirs). Default: `cache/` beside the pipeline's
    /// project (the nearest folder above the pipeline file that holds a `cache/` folder or
    /// `Cargo.toml`; else the pipeline's folder).
    #[arg(long, global = true, env = "ORCHESTRATOR_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Override a pipeline param: `--set ratio=0.25` (repeatable; YAML values).
    #[arg(long = "set", global = true, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Replace the values of a matrix axis: `--matrix ratio=0.1,0.3` (or `ratio=[0.1,0.3]`;
    /// repeatable; YAML values).
    #[arg(long = "matrix", global = true, value_name = "AXIS=VALUES")]
    pub matrix: Vec<String>,
    /// Most stage instances (and matrix cells) a pipeline may expand to; more is an error
    /// found before they are built.
    #[arg(long, global = true, env = "ORCHESTRATOR_MAX_INSTANCES", default_value_t = DEFAULT_MAX_INSTANCES)]
    pub max_instances: usize,
    /// Colour in messages: `auto` (only on a terminal, and not with NO_COLOR set), `always`,
    /// `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether text written to stderr may carry terminal colour codes.
    pub fn stderr(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

impl Global {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            overrides: self.set.clone(),
            matrix: self.matrix.clone(),
            max_instances: self.max_instances,
            walk_inputs: true,
        }
    }
}

/// `--format` of the commands whose output is a text for people or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

/// Load and validate a pipeline with the global options (`--set`, `--max-instances`); every
/// error rendered, exit 2. External input folders are searched for symlink loops (for the
/// commands that check or hash inputs: plan, run).
pub fn load(path: &Path, g: &Global) -> CliResult<Pipeline> {
    load_opts(path, g.load_options())
}

/// [`load`] for the commands that only read what is recorded (status, logs, show):
/// input folders are not listed.
pub fn load_to_read(path: &Path, g: &Global) -> CliResult<Pipeline> {
    load_opts(
        path,
        LoadOptions {
            walk_inputs: false,
            ..g.load_options()
        },
    )
}

fn load_opts(path: &Path, opts: LoadOptions) -> CliResult<Pipeline> {
    if !path.exists() {
        return Err(CliError::bad_input(format!(
            "error: pipeline file {} does not exist",
            path.display()
        )));
    }
    Ok(crate::pipeline::load_opts(path, &opts)?)
}

pub fn cache_root(g: &Global, pipeline: &Path) -> PathBuf {
    crate::cache::resolve_root(g.cache_dir.as_deref(), pipeline)
}

/// The cache root for commands that take no pipeline file: `--cache-dir`, else found from the
/// current folder upwards.
pub fn cache_root_here(g: &Global, pipeline: Option<&Path>) -> PathBuf {
    match pipeline {
        Some(p) => cache_root(g, p),
        None => crate::cache::find_root(
            g.cache_dir.as_deref(),
            &std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        ),
    }
}

pub fn open_locked(root: &Path) -> CliResult<(Cache, CacheLock)> {
    Ok(Cache::open_locked(root)?)
}

/// For read-only commands: see [`Cache::open_shared`].
pub fn open_shared(root: &Path) -> CliResult<(Cache, Option<CacheLock>)> {
    Ok(Cache::open_shared(root)?)
}

/// Refuse a pipeline whose `name:` belongs to another pipeline file in this cache (their
/// history, GC roots and `results/<name>` would mix); read-only commands check, `run` also
/// records the owner ([`claim_name`]).
pub fn check_name(root: &Path, p: &Pipeline, given: &Path) -> CliResult<()> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    name_guard(&root, p, given, false)
}

/// [`check_name`], then record `p`'s file as the owner of its name in the cache at `root`.
pub fn claim_name(root: &Path, p: &Pipeline, given: &Path) -> CliResult<()> {
    name_guard(root, p, given, true)
}

fn name_guard(root: &Path, p: &Pipeline, given: &Path, claim: bool) -> CliResult<()> {
    let here = std::env::current_dir().unwrap_or_default();
    let shown = |f: &Path| f.strip_prefix(&here).unwrap_or(f).display().to_string();
    match crate::cache::name_owner(root, &p.name, &p.file) {
        NameOwner::Free => {}
        NameOwner::Taken(owner) => {
            return Err(CliError::bad_input(format!(
                "error: pipeline name `{}` is already used by {} in the cache {}: two files would share its history and results/{}\nhint: give {} its own `name:` (a file that `extend`s another keeps that file's name unless it sets one)",
                p.name,
                shown(&owner),
                root.display(),
                crate::cache::sanitize(&p.name),
                given.display()
            )))
        }
        NameOwner::Gone(old) if claim => tracing::warn!(
            "pipeline name `{}` belonged to {}, which no longer exists; {} takes it over",
            p.name,
            shown(&old),
            given.display()
        ),
        NameOwner::Gone(_) => {}
    }
    if claim {
        crate::cache::claim_name(root, &p.name, &p.file)?;
    }
    Ok(())
}

/// Find the instance a user names: an exact instance id, or a stage with exactly one instance.
pub fn find_instance<'a>(p: &'a Pipeline, name: &'a str) -> CliResult<&'a Instance> {
    if let Some((_, i)) = p.instance(name) {
        return Ok(i);
    }
    let of_stage: Vec<_> = p.instances_of(name).map(|(_, i)| i).collect();
    match of_stage.len() {
        1 => Ok(of_stage[0]),
        0 => {
            let ids: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
            let hint = crate::pipeline::diagnostics::suggest(name, &ids, "the stage instances are")
                .unwrap_or_else(|| format!("the stage instances are: {}", ids.join(", ")));
            Err(CliError::bad_input(format!(
                "error: pipeline `{}` has no stage `{name}`\nhint: {hint}",
                p.name
            )))
        }
        _ => Err(CliError::bad_input(format!(
            "error: stage `{name}` has {} instances; name one:\n{}",
            of_stage.len(),
            of_stage
                .iter()
                .map(|i| format!("  {}", i.id))
                .collect::<Vec<_>>()
                .join("\n")
        ))),
    }
}

/// The part of a pipeline `run` and `plan` work on: targets and `--force`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Run only these and what they need: a stage name (all its instances), an instance id
    /// (`'prune[method=rand,ratio=0.5]'`), or a filter (`'retrain[ratio=0.5]'`). Default: all.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Run these targets again even when cached (same forms as TARGET); their dependents then
    /// rerun only if the outputs changed.
    #[arg(long, value_name = "TARGET", num_args = 1..)]
    pub force: Vec<String>,
}

/// The pipeline cut down to `sel`'s targets and their upstream (all of it without targets),
/// and the instances (indices into the returned pipeline) to run even when cached. A target
/// that names nothing is an error with a did-you-mean, exit 2.
pub fn select(p: Pipeline, sel: &Selection) -> CliResult<(Pipeline, BTreeSet<usize>)> {
    let bad = |e: crate::pipeline::TargetError| CliError::bad_input(e.to_string());
    let force = p.select(&sel.force).map_err(bad)?;
    if sel.targets.is_empty() {
        return Ok((p, force));
    }
    let mut keep = p.select(&sel.targets).map_err(bad)?;
    keep.extend(force.iter().copied());
    let (q, old) = p.restrict(&keep);
    let force = old
        .iter()
        .enumerate()
        .filter(|(_, o)| force.contains(o))
        .map(|(new, _)| new)
        .collect();
    Ok((q, force))
}
