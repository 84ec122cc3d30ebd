//! One attempt of one stage: [`prepare`] makes its run dir, invocation and command line;
//! [`commit`] moves its outputs into the store after a successful exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestrator_stages::invocation::{Device, Invocation, INVOCATION_VERSION};
use orchestrator_stages::KindSpec;

use super::backend::{JobId, JobSpec};
use super::resources::Grant;
use crate::cache::{Cache, Manifest, ObjKind, OutputEntry, MANIFEST_VERSION};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Action, Instance, Output};

/// A prepared attempt: the spec for the backend plus what commit needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: JobSpec,
    pub run_dir: PathBuf,
    pub out_dir: PathBuf,
    pub work_dir: PathBuf,
    pub progress: PathBuf,
    pub device: String,
}

/// Quote for `sh`: single quotes, with embedded `'` closed, escaped and reopened.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replace `${inputs.x}` / `${outputs.x}` with shell-quoted absolute paths; other text is kept.
pub fn substitute(
    command: &str,
    inputs: &BTreeMap<String, PathBuf>,
    outputs: &BTreeMap<String, PathBuf>,
) -> String {
    let mut out = String::with_capacity(command.len() + 64);
    let mut rest = command;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let value = if let Some(n) = inner.strip_prefix("inputs.") {
            inputs.get(n)
        } else if let Some(n) = inner.strip_prefix("outputs.") {
            outputs.get(n)
        } else {
            None
        };
        match value {
            Some(p) => out.push_str(&shell_quote(&p.to_string_lossy())),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

pub struct PrepareArgs<'a> {
    pub cache: &'a Cache,
    pub inst: &'a Instance,
    pub key: &'a str,
    pub job: JobId,
    /// Input name -> store view (upstream output) or external path.
    pub inputs: BTreeMap<String, PathBuf>,
    /// The fingerprint's input digests (what the inputs must still hold at launch).
    pub input_digests: &'a BTreeMap<String, String>,
    pub grant: &'a Grant,
    /// The stage's CPU-thread budget ([`super::resources::Resources::cpu_threads`]).
    pub cpu_threads: u32,
    pub workers: &'a super::Workers,
}

/// The variables that carry a stage's CPU-thread budget: the worker reads the first (torch
/// intra-op threads, loader workers, rayon); OpenMP and MKL read the others, so a `run:` stage's
/// numpy or PyTorch gets the same budget. A stage's own `env:` may set them differently.
pub const THREAD_VARS: [&str; 3] = [
    "ORCHESTRATOR_CPU_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
];

/// Where one attempt reads and writes: its run dir, in it the outputs (`out/`) and the progress
/// file, and the fingerprint's work dir (kept across attempts).
struct Layout {
    run_dir: PathBuf,
    out_dir: PathBuf,
    work_dir: PathBuf,
    progress: PathBuf,
}

impl Layout {
    fn new(cache: &Cache, key: &str, run_dir: PathBuf) -> Self {
        Layout {
            out_dir: run_dir.join("out"),
            work_dir: cache.work_dir(key),
            progress: run_dir.join("progress.jsonl"),
            run_dir,
        }
    }

    fn prepared(self, spec: JobSpec, device: String) -> Prepared {
        Prepared {
            spec,
            run_dir: self.run_dir,
            out_dir: self.out_dir,
            work_dir: self.work_dir,
            progress: self.progress,
            device,
        }
    }
}

/// The attempt an earlier orchestrator process prepared in `run_dir` for fingerprint `key`, as
/// the scheduler follows it when the backend adopts its job.
pub fn adopted(
    cache: &Cache,
    key: &str,
    job: JobId,
    inst: &Instance,
    run_dir: PathBuf,
    grant: &Grant,
) -> Prepared {
    let spec = JobSpec {
        job,
        stage_id: inst.id.clone(),
        argv: Vec::new(),
        env: Vec::new(),
        cwd: run_dir.clone(),
        log: run_dir.join("log"),
        run_dir: run_dir.clone(),
        outputs: BTreeMap::new(),
        timeout: None,
    };
    Layout::new(cache, key, run_dir).prepared(spec, grant.device())
}

pub fn prepare(a: PrepareArgs<'_>) -> Result<Prepared, String> {
    let run_dir = a.cache.new_run_dir(a.key).map_err(|e| e.to_string())?;
    let l = Layout::new(a.cache, a.key, run_dir);
    for d in [&l.out_dir, &l.work_dir] {
        create_dir(d)?;
    }
    let out_spec = make_outputs(&a.inst.outputs, &l.out_dir)?;
    let outputs: BTreeMap<String, PathBuf> = out_spec
        .iter()
        .map(|(name, (p, _))| (name.clone(), p.clone()))
        .collect();
    guard_inputs(a.cache, &a.inst.id, &l.run_dir, &a.inputs, a.input_digests)?;
    let mut env = attempt_env(&a, &l);
    let argv = match &a.inst.action {
        Action::Shell {
            command,
            env: stage_env,
        } => {
            env.extend(stage_env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let cmd = substitute(command, &a.inputs, &outputs);
            let _ = std::fs::write(l.run_dir.join("command.sh"), &cmd);
            vec!["sh".to_string(), "-c".to_string(), cmd]
        }
        Action::Builtin { kind, params } => worker_argv(&a, kind, params, outputs, &l)?,
    };
    let spec = JobSpec {
        job: a.job,
        stage_id: a.inst.id.clone(),
        argv,
        env,
        // Inputs and outputs are absolute paths; a stray relative write lands in the run dir,
        // never in the user's project.
        cwd: l.run_dir.clone(),
        log: l.run_dir.join("log"),
        run_dir: l.run_dir.clone(),
        outputs: out_spec,
        timeout: a
            .inst
            .resources
            .time_min
            .map(|m| std::time::Duration::from_secs(m as u64 * 60)),
    };
    Ok(l.prepared(spec, a.grant.device()))
}

fn create_dir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))
}

/// The declared outputs' paths under `out_dir` by name, each with whether it is a folder. A
/// declared folder exists when the stage starts (`cd ${outputs.d}` works); for a file, its
/// parent does.
fn make_outputs(
    declared: &[Output],
    out_dir: &Path,
) -> Result<BTreeMap<String, (PathBuf, bool)>, String> {
    let mut out_spec = BTreeMap::new();
    for o in declared {
        let p = out_dir.join(&o.rel_path);
        let made = if o.is_dir {
            Some(p.as_path())
        } else {
            p.parent()
        };
        // `out_dir` itself was just made.
        if let Some(d) = made.filter(|d| *d != out_dir) {
            create_dir(d)?;
        }
        out_spec.insert(o.name.clone(), (p, o.is_dir));
    }
    Ok(out_spec)
}

/// The environment every attempt gets: its devices, identity, directories and CPU-thread
/// budget (a `run:` stage's own `env:` comes after, so it may override these).
fn attempt_env(a: &PrepareArgs<'_>, l: &Layout) -> Vec<(String, String)> {
    let cuda = !a.grant.gpus.is_empty();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env = vec![
        (
            "CUDA_VISIBLE_DEVICES".to_string(),
            a.grant.cuda_visible_devices(),
        ),
        (
            "ORCHESTRATOR_DEVICE".to_string(),
            if cuda { "cuda" } else { "cpu" }.to_string(),
        ),
        ("ORCHESTRATOR_STAGE_ID".to_string(), a.inst.id.clone()),
        ("ORCHESTRATOR_RUN_DIR".to_string(), path(&l.run_dir)),
        ("ORCHESTRATOR_OUT_DIR".to_string(), path(&l.out_dir)),
        ("ORCHESTRATOR_WORK_DIR".to_string(), path(&l.work_dir)),
        ("ORCHESTRATOR_PROGRESS".to_string(), path(&l.progress)),
    ];
    let threads = a.cpu_threads.max(1).to_string();
    env.extend(THREAD_VARS.iter().map(|v| (v.to_string(), threads.clone())));
    env
}

/// A built-in kind's command line: its worker, run on the invocation written to
/// `<run dir>/invocation.json`.
fn worker_argv(
    a: &PrepareArgs<'_>,
    kind: &KindSpec,
    params: &serde_json::Value,
    outputs: BTreeMap<String, PathBuf>,
    l: &Layout,
) -> Result<Vec<String>, String> {
    let inv = Invocation {
        version: INVOCATION_VERSION,
        kind: kind.name.to_string(),
        stage_id: a.inst.id.clone(),
        params: params.clone(),
        inputs: a.inputs.clone(),
        input_digests: a.input_digests.clone(),
        outputs,
        out_dir: l.out_dir.clone(),
        work_dir: l.work_dir.clone(),
        device: if a.grant.gpus.is_empty() {
            Device::Cpu
        } else {
            Device::Cuda
        },
        progress: l.progress.clone(),
    };
    let inv_path = l.run_dir.join("invocation.json");
    let bytes = serde_json::to_vec_pretty(&inv).map_err(|e| e.to_string())?;
    std::fs::write(&inv_path, bytes)
        .map_err(|e| format!("cannot write {}: {e}", inv_path.display()))?;
    let bin = a
        .workers
        .for_kind(kind)
        .ok_or_else(|| format!("the stage worker `{}` was not found", kind.worker.binary()))?;
    Ok(vec![
        bin.to_string_lossy().into_owned(),
        "run".to_string(),
        inv_path.to_string_lossy().into_owned(),
    ])
}

/// Check the inputs a stage is about to read and record what is checked again when it ends
/// (`<run dir>/guards.json`; the mechanism is in `cache::inputs`): store views are checked
/// against their digests, external inputs against the fingerprint's digests.
fn guard_inputs(
    cache: &Cache,
    stage: &str,
    run_dir: &Path,
    inputs: &BTreeMap<String, PathBuf>,
    digests: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut guards = Vec::new();
    for (name, path) in inputs {
        match cache.view_digest(path) {
            Some(digest) => cache
                .guard_view(stage, name, path, &digest, &mut guards)
                .map_err(|e| e.to_string())?,
            None => {
                let identity = cache
                    .external_identity(path)
                    .map_err(|e| format!("input `{name}`: {e}"))?;
                if let Some(want) = digests.get(name) {
                    let now = cache
                        .digest_external(path)
                        .map_err(|e| format!("input `{name}`: {e}"))?;
                    if &now != want {
                        return Err(format!(
                            "input `{name}` ({}) changed after this run computed its fingerprint\nhint: run again (the stage then runs on what the input holds now)",
                            path.display()
                        ));
                    }
                }
                guards.push(crate::cache::Guard::External {
                    input: name.clone(),
                    path: path.clone(),
                    identity,
                });
            }
        }
    }
    crate::cache::Guards { inputs: guards }
        .write(run_dir)
        .map_err(|e| e.to_string())
}

/// After a failed attempt (the stage's exit, or its commit): say what the failure alone does
/// not (a full disk, an input the stage damaged) and, on a full disk, remove the partial
/// outputs (the log and the work dir stay).
///
/// `stage_exited`: the stage itself failed, so its inputs are checked here (a failed commit
/// checked them first thing already).
pub fn after_failure(cache: &Cache, run_dir: &Path, stage: &str, stage_exited: bool) -> String {
    let mut extra = String::new();
    if stage_exited {
        let views = crate::cache::Guards::read(run_dir).views_only();
        if let Ok(Some(m)) = cache.check_guards(stage, &views) {
            extra.push_str(&format!("\n{m}"));
        }
    }
    let out = run_dir.join("out");
    if let Some(free) = crate::cache::free_bytes(&cache.root) {
        if free < crate::cache::FULL_BELOW {
            let written = crate::cache::du(&out);
            let _ = std::fs::remove_dir_all(&out);
            extra.push_str(&format!(
                "\nno space left on device: the cache {} has {} free; the stage had written {} in {} (removed)\nhint: free space (`orchestrator gc` removes what no pipeline uses), or use a cache on a bigger disk (--cache-dir); results already cached are kept",
                cache.root.display(),
                crate::commands::gc::human_bytes(free),
                crate::commands::gc::human_bytes(written),
                out.display()
            ));
        }
    }
    extra
}

pub struct CommitArgs {
    pub cache: Cache,
    pub pipeline: String,
    pub instance: String,
    /// (name, rel_path, is_dir, required)
    pub outputs: Vec<(String, String, bool, bool)>,
    pub fingerprint: Fingerprint,
    pub key: String,
    pub out_dir: PathBuf,
    pub work_dir: PathBuf,
    pub duration_ms: u64,
    pub device: String,
}

/// Hash and move the outputs into the store, then write the manifest (the commit point) and the
/// index entry. An error names the stage, the output and the expected path.
pub fn commit(a: CommitArgs) -> Result<Manifest, String> {
    let stage = |e: crate::cache::CacheError| format!("stage `{}`: {e}", a.instance);
    let run_dir = a.out_dir.parent().unwrap_or(&a.out_dir).to_path_buf();
    // Nothing is committed from inputs that changed under the stage.
    let guards = crate::cache::Guards::read(&run_dir);
    if let Some(problem) = a.cache.check_guards(&a.instance, &guards).map_err(stage)? {
        return Err(problem);
    }
    // Where output symlinks may point (see the symlink rule in ARCHITECTURE.md). Both are
    // canonical already: folders the orchestrator made under the cache's canonical root. (Were
    // one replaced by a symlink, its target would not count as the stage's own.)
    let roots: Vec<PathBuf> = [a.out_dir.parent(), Some(a.work_dir.as_path())]
        .into_iter()
        .flatten()
        .map(Path::to_path_buf)
        .collect();
    let mut entries = BTreeMap::new();
    for (name, rel, is_dir, required) in &a.outputs {
        let p = a.out_dir.join(rel);
        if !check_output(&a.instance, name, &p, *is_dir, *required)? {
            continue;
        }
        let (digest, kind) = ingest_output(&a, name, &p, *is_dir, &roots)?;
        entries.insert(
            name.clone(),
            OutputEntry {
                digest,
                kind,
                rel_path: rel.clone(),
            },
        );
    }
    let metrics_path = a.out_dir.join("metrics.json");
    let metrics = if metrics_path.is_file() {
        Some(
            a.cache
                .ingest_output_file(&metrics_path, "metrics.json", &roots)
                .map_err(stage)?,
        )
    } else {
        None
    };
    let m = Manifest {
        version: MANIFEST_VERSION,
        key: a.key.clone(),
        fingerprint: a.fingerprint,
        outputs: entries,
        metrics,
        duration_ms: a.duration_ms,
        device: a.device,
        finished_at: crate::cache::now_unix(),
        pipeline: a.pipeline,
        instance: a.instance,
    };
    a.cache.commit_manifest(&m).map_err(|e| e.to_string())?;
    tidy(&run_dir, &a.work_dir, &a.out_dir);
    Ok(m)
}

/// After the commit point, what is left of the attempt is only disk space. The usual case
/// deletes nothing: the emptied `out/` stays in the run dir, and a work dir that holds only
/// the attempt record (`.pgid`, emptied by the reaper) moves into the run dir as `work/`.
/// Anything else in them (checkpoints, stray files) is deleted, freeing its space.
///
/// Why not simply remove them: on ext4 without a journal, allocating an inode skips every inode
/// of its group freed in the last minute or more (`recently_deleted()` in fs/ext4/ialloc.c),
/// so three frees per stage made every later file of a 5,000-cell run slower to create (a cold
/// W4 ran ~7 % longer).
fn tidy(run_dir: &Path, work_dir: &Path, out_dir: &Path) {
    let only = |dir: &Path, allowed: &[&str]| {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten()
                .all(|e| allowed.iter().any(|a| e.file_name() == **a))
        })
    };
    if !only(out_dir, &[]) {
        let _ = std::fs::remove_dir_all(out_dir);
    }
    if !only(work_dir, &[".pgid"]) || std::fs::rename(work_dir, run_dir.join("work")).is_err() {
        let _ = std::fs::remove_dir_all(work_dir);
    }
}

/// Whether declared output `name` is there to commit at `p`: `false` for a missing optional
/// output; an error for a missing required one or a file where a folder is declared (or the
/// reverse). A dangling symlink counts as there (ingesting it says what is wrong).
fn check_output(
    instance: &str,
    name: &str,
    p: &Path,
    is_dir: bool,
    required: bool,
) -> Result<bool, String> {
    let what = if is_dir { "folder" } else { "file" };
    match std::fs::metadata(p) {
        Err(_) if std::fs::symlink_metadata(p).is_ok() => Ok(true),
        Err(_) if !required => Ok(false),
        Err(_) => Err(format!(
            "stage `{instance}` exited successfully but did not write its declared output `{name}` (expected a {what} at {})\nhint: the command must create ${{outputs.{name}}}",
            p.display()
        )),
        Ok(m) if m.is_dir() != is_dir => Err(format!(
            "stage `{instance}`: output `{name}` at {} is a {}, but it is declared as a {what}",
            p.display(),
            if m.is_dir() { "folder" } else { "file" }
        )),
        Ok(_) => Ok(true),
    }
}

/// Hash output `name` at `p` into the store: its digest and kind. A folder that is itself a
/// symlink must point into one of `roots` (the stage's run dir and work dir).
fn ingest_output(
    a: &CommitArgs,
    name: &str,
    p: &Path,
    is_dir: bool,
    roots: &[PathBuf],
) -> Result<(String, ObjKind), String> {
    let stage = |e: crate::cache::CacheError| format!("stage `{}`: {e}", a.instance);
    let shown = format!("output `{name}`");
    if !is_dir {
        let digest = a
            .cache
            .ingest_output_file(p, &shown, roots)
            .map_err(stage)?;
        return Ok((digest, ObjKind::File));
    }
    if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
        // The folder itself is a link: only to a folder the stage owns.
        let target = p
            .canonicalize()
            .map_err(|e| format!("stage `{}`: {shown}: {e}", a.instance))?;
        if !roots.iter().any(|r| target.starts_with(r)) {
            return Err(format!(
                "stage `{}`: {shown} is a symlink to {}, outside the stage's run dir\nhint: copy what it points to into the output (`cp -rL`); to read that data, declare it as an input",
                a.instance,
                target.display()
            ));
        }
    }
    let (digest, _) = a.cache.ingest_output_dir(p, &shown, roots).map_err(stage)?;
    Ok((digest, ObjKind::Dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_quotes_paths_and_keeps_unknown_placeholders() {
        let mut i = BTreeMap::new();
        i.insert("a".to_string(), PathBuf::from("/x/it's here"));
        let mut o = BTreeMap::new();
        o.insert("b".to_string(), PathBuf::from("/y/out.txt"));
        let s = substitute("cat ${inputs.a} > ${outputs.b}; echo ${HOME} ${x", &i, &o);
        assert_eq!(s, r"cat '/x/it'\''s here' > '/y/out.txt'; echo ${HOME} ${x");
    }
}
