//! One attempt of one stage: [`prepare`] makes its run dir, invocation and command line;
//! [`commit`] moves its outputs into the store after a successful exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestrator_stages::invocation::{Device, Invocation, INVOCATION_VERSION};

use super::backend::{JobId, JobSpec};
use super::resources::Grant;
use crate::cache::{Cache, Manifest, ObjKind, OutputEntry, MANIFEST_VERSION};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Action, Instance};

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
    pub pipeline_dir: &'a Path,
    pub inst: &'a Instance,
    pub key: &'a str,
    pub job: JobId,
    pub inputs: BTreeMap<String, PathBuf>,
    pub grant: &'a Grant,
    pub workers: &'a super::Workers,
}

pub fn prepare(a: PrepareArgs<'_>) -> Result<Prepared, String> {
    let run_dir = a.cache.new_run_dir(a.key).map_err(|e| e.to_string())?;
    let out_dir = run_dir.join("out");
    let work_dir = a.cache.work_dir(a.key);
    let progress = run_dir.join("progress.jsonl");
    let log = run_dir.join("log");
    for d in [&out_dir, &work_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut outputs = BTreeMap::new();
    let mut out_spec = BTreeMap::new();
    for o in &a.inst.outputs {
        let p = out_dir.join(&o.rel_path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        outputs.insert(o.name.clone(), p.clone());
        out_spec.insert(o.name.clone(), (p, o.is_dir));
    }
    let cuda = !a.grant.gpus.is_empty();
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
        (
            "ORCHESTRATOR_OUT_DIR".to_string(),
            out_dir.to_string_lossy().into_owned(),
        ),
        (
            "ORCHESTRATOR_WORK_DIR".to_string(),
            work_dir.to_string_lossy().into_owned(),
        ),
        (
            "ORCHESTRATOR_PROGRESS".to_string(),
            progress.to_string_lossy().into_owned(),
        ),
    ];
    let argv = match &a.inst.action {
        Action::Shell {
            command,
            env: stage_env,
        } => {
            env.extend(stage_env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let cmd = substitute(command, &a.inputs, &outputs);
            let _ = std::fs::write(run_dir.join("command.sh"), &cmd);
            vec!["sh".to_string(), "-c".to_string(), cmd]
        }
        Action::Builtin { kind, params } => {
            let inv = Invocation {
                version: INVOCATION_VERSION,
                kind: kind.name.to_string(),
                stage_id: a.inst.id.clone(),
                params: params.clone(),
                inputs: a.inputs.clone(),
                outputs: outputs.clone(),
                out_dir: out_dir.clone(),
                work_dir: work_dir.clone(),
                device: if cuda { Device::Cuda } else { Device::Cpu },
                progress: progress.clone(),
            };
            let inv_path = run_dir.join("invocation.json");
            let bytes = serde_json::to_vec_pretty(&inv).map_err(|e| e.to_string())?;
            std::fs::write(&inv_path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", inv_path.display()))?;
            let bin = a.workers.for_kind(kind).ok_or_else(|| {
                format!("the stage worker `{}` was not found", kind.worker.binary())
            })?;
            vec![
                bin.to_string_lossy().into_owned(),
                "run".to_string(),
                inv_path.to_string_lossy().into_owned(),
            ]
        }
    };
    let spec = JobSpec {
        job: a.job,
        stage_id: a.inst.id.clone(),
        argv,
        env,
        cwd: a.pipeline_dir.to_path_buf(),
        log,
        run_dir: run_dir.clone(),
        outputs: out_spec,
        timeout: a
            .inst
            .resources
            .time_min
            .map(|m| std::time::Duration::from_secs(m as u64 * 60)),
    };
    Ok(Prepared {
        spec,
        run_dir,
        out_dir,
        work_dir,
        progress,
        device: a.grant.device(),
    })
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
    let mut entries = BTreeMap::new();
    for (name, rel, is_dir, required) in &a.outputs {
        let p = a.out_dir.join(rel);
        let meta = std::fs::metadata(&p);
        let what = if *is_dir { "folder" } else { "file" };
        match meta {
            Err(_) if !required => continue,
            Err(_) => {
                return Err(format!(
                    "stage `{}` exited successfully but did not write its declared output `{name}` (expected a {what} at {})\nhint: the command must create ${{outputs.{name}}}",
                    a.instance,
                    p.display()
                ))
            }
            Ok(m) if m.is_dir() != *is_dir => {
                return Err(format!(
                    "stage `{}`: output `{name}` at {} is a {}, but it is declared as a {what}",
                    a.instance,
                    p.display(),
                    if m.is_dir() { "folder" } else { "file" }
                ))
            }
            Ok(_) => {}
        }
        let (digest, kind) = if *is_dir {
            (
                a.cache.ingest_dir(&p).map_err(|e| e.to_string())?.0,
                ObjKind::Dir,
            )
        } else {
            (
                a.cache.ingest_file(&p).map_err(|e| e.to_string())?,
                ObjKind::File,
            )
        };
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
                .ingest_file(&metrics_path)
                .map_err(|e| e.to_string())?,
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
    // After the commit point: leftovers are only disk space.
    let _ = std::fs::remove_dir_all(&a.work_dir);
    let _ = std::fs::remove_dir_all(&a.out_dir);
    Ok(m)
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
