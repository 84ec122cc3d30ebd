//! [`Invocation`]: the versioned JSON document with which the engine starts one stage process.
//!
//! The same file drives a local process and a SLURM job. The worker reads it, runs the kind, writes
//! every declared output under `outputs` and a `metrics.json` in `out_dir`, and reports progress as
//! JSON lines appended to `progress` (the engine tails that file; it works over a shared filesystem).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped whenever the shape of [`Invocation`] changes incompatibly.
pub const INVOCATION_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    pub version: u32,
    /// Built-in kind name, e.g. `prune`.
    pub kind: String,
    /// Readable stage instance id, e.g. `prune[ratio=0.5]` (for messages only).
    pub stage_id: String,
    /// Resolved params: every default filled in, validated by the kind's params type.
    pub params: serde_json::Value,
    /// Input name -> absolute path of the file or folder it points at (read-only).
    pub inputs: BTreeMap<String, PathBuf>,
    /// Input name -> blake3 content digest the engine computed (what the fingerprint holds);
    /// a kind that refers to an input in place records it, so that a change of that data
    /// changes its output. Empty when run without the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_digests: BTreeMap<String, String>,
    /// Output name -> absolute path the stage must create (file or folder, as the kind declares).
    pub outputs: BTreeMap<String, PathBuf>,
    /// Where outputs and `metrics.json` go; moved into the store on success.
    pub out_dir: PathBuf,
    /// Survives interruption: checkpoints live here; removed after a successful commit.
    pub work_dir: PathBuf,
    /// `cpu` or `cuda` (the stage sees its GPUs through `CUDA_VISIBLE_DEVICES`, renumbered from 0).
    pub device: Device,
    /// JSON-lines progress file the engine tails.
    pub progress: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Invocation {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read invocation {}: {e}", path.display()))?;
        let inv: Invocation = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid invocation {}: {e}", path.display()))?;
        if inv.version != INVOCATION_VERSION {
            anyhow::bail!(
                "invocation {} has version {}, this worker understands {}\nhint: rebuild the worker and the engine together",
                path.display(),
                inv.version,
                INVOCATION_VERSION
            );
        }
        Ok(inv)
    }

    /// An invocation that runs `kind` without the engine (benches, tests, one-off tools): params
    /// resolved by the kind's spec, every declared output at its declared path under `out_dir`
    /// (created), the work dir and progress file inside it, on the CPU.
    pub fn standalone(
        kind: &str,
        stage_id: &str,
        params: &serde_json::Value,
        inputs: &[(&str, &Path)],
        out_dir: &Path,
    ) -> anyhow::Result<Invocation> {
        let spec = crate::kinds::lookup(kind).ok_or_else(|| anyhow::anyhow!("no kind `{kind}`"))?;
        let params =
            (spec.resolve)(params).map_err(|e| anyhow::anyhow!("{stage_id}: bad params {e:?}"))?;
        std::fs::create_dir_all(out_dir)?;
        Ok(Invocation {
            version: INVOCATION_VERSION,
            kind: kind.into(),
            stage_id: stage_id.into(),
            params,
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_path_buf()))
                .collect(),
            input_digests: BTreeMap::new(),
            outputs: spec
                .outputs
                .iter()
                .map(|p| (p.name.to_string(), out_dir.join(p.rel_path())))
                .collect(),
            out_dir: out_dir.to_path_buf(),
            work_dir: out_dir.join("work"),
            device: Device::Cpu,
            progress: out_dir.join("progress.jsonl"),
        })
    }

    /// Path of a required input; an error naming the stage and input otherwise.
    pub fn input(&self, name: &str) -> anyhow::Result<&Path> {
        self.inputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            anyhow::anyhow!(
                "stage `{}` ({}) needs input `{name}`",
                self.stage_id,
                self.kind
            )
        })
    }

    pub fn opt_input(&self, name: &str) -> Option<&Path> {
        self.inputs.get(name).map(PathBuf::as_path)
    }

    /// Path of a declared output.
    pub fn output(&self, name: &str) -> anyhow::Result<&Path> {
        self.outputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            anyhow::anyhow!(
                "stage `{}` ({}) has no output `{name}`",
                self.stage_id,
                self.kind
            )
        })
    }

    /// Deserialize the resolved params into the kind's params type.
    pub fn params<P: serde::de::DeserializeOwned>(&self) -> anyhow::Result<P> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| anyhow::anyhow!("stage `{}`: bad params: {e}", self.stage_id))
    }

    /// Write `metrics.json` into `out_dir`.
    pub fn write_metrics(&self, metrics: &serde_json::Value) -> anyhow::Result<()> {
        let path = self.out_dir.join("metrics.json");
        std::fs::write(&path, serde_json::to_vec_pretty(metrics)?)?;
        Ok(())
    }

    pub fn progress(&self) -> Progress {
        Progress {
            path: self.progress.clone(),
        }
    }
}

/// Appends progress events (one JSON object per line) that the engine shows live.
#[derive(Debug, Clone)]
pub struct Progress {
    path: PathBuf,
}

impl Progress {
    /// Report an event such as `{"epoch": 3, "epochs": 12, "step": 40, "loss": 5.1}`.
    /// Progress is best effort: a failure to write it never fails the stage. The event also goes
    /// to stderr, i.e. into the stage's log: on a cluster the log is where the user looks.
    pub fn report(&self, event: serde_json::Value) {
        match event.get("message").and_then(|m| m.as_str()) {
            Some(m) => eprintln!("[progress] {m}"),
            None => eprintln!("[progress] {event}"),
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let mut line = event.to_string();
            line.push('\n');
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Free-form message shown in the terminal view.
    pub fn message(&self, msg: &str) {
        self.report(serde_json::json!({ "message": msg }));
    }
}
