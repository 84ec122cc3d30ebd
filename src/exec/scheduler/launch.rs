//! Launching: ready instances, highest priority first, either adopted from an earlier process's
//! job or prepared as a fresh attempt and handed to the backend in one batch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::super::job::{self, PrepareArgs, Prepared};
use super::super::resources::Grant;
use super::super::view::{ProgressTail, ViewEvent};
use super::{Node, Record, Scheduler};
use crate::cache::RunStatus;
use crate::exec::ExecError;
use crate::fingerprint::Fingerprint;
use crate::pipeline::Input;

impl Scheduler<'_> {
    /// Start every ready instance whose resources are free, highest priority first (the
    /// deepest, then the longest remaining path, then pipeline order; one whose resources are
    /// taken is passed over for the next that fits): follow an earlier process's job where the
    /// backend has one, else prepare an attempt; the new attempts go to the backend in one batch.
    pub(super) fn launch(&mut self) -> Result<(), ExecError> {
        let p = self.p;
        let mut batch = Vec::new();
        let mut result = Ok(());
        let mut cursor = None;
        // In launch order; a cursor, since launching takes nodes out of the ready set. Once no
        // slot at all is free, nothing further can start: the walk stops there.
        while let Some(at) = self.nodes.next_ready(cursor) {
            cursor = Some(at);
            if self.resources.exhausted() {
                break;
            }
            let i = at.index;
            let inst = &p.instances[i];
            let Some(grant) = self.resources.try_take(&inst.resources) else {
                continue;
            };
            if matches!(&self.nodes[i], Node::Ready { key, .. } if self.busy.contains_key(key)) {
                // Its twin runs: it waits for that result (and will be a cache hit).
                self.resources.give_back(&grant);
                continue;
            }
            let Node::Ready { fp, key, attempt } = self.nodes.set(i, Node::Waiting) else {
                unreachable!("the ready set holds ready nodes only")
            };
            if let Some(a) = self.backend.adopt(i, &key) {
                self.view.event(ViewEvent::Note {
                    message: format!(
                        "`{}`: re-attached to job {} submitted by an earlier run",
                        inst.id, a.id
                    ),
                });
                let mut prepared = job::adopted(self.cache, &key, i, inst, a.run_dir, &grant);
                if let Some(d) = self.backend.placement(!grant.gpus.is_empty()) {
                    prepared.device = d;
                }
                self.mark_running(i, fp, key, attempt, grant, prepared);
                continue;
            }
            let mut prepared = match self.prepare(i, &key, &fp, &grant) {
                Ok(p) => p,
                Err(e) => {
                    self.fail_to_start(i, attempt, &grant, e)?;
                    continue;
                }
            };
            if let Some(d) = self.backend.placement(!grant.gpus.is_empty()) {
                prepared.device = d;
            }
            let started = Record {
                device: prepared.device.clone(),
                run_dir: Some(prepared.run_dir.clone()),
                ..Record::default()
            };
            if let Err(e) = self.record(i, &key, RunStatus::Started, started) {
                self.resources.give_back(&grant);
                self.nodes.set(i, Node::Ready { fp, key, attempt });
                result = Err(e);
                break;
            }
            batch.push(prepared.spec.clone());
            self.mark_running(i, fp, key, attempt, grant, prepared);
        }
        if !batch.is_empty() {
            self.backend.submit(batch);
        }
        result
    }

    /// A fresh attempt of instance `i`: its run dir, invocation and command line.
    fn prepare(
        &self,
        i: usize,
        key: &str,
        fp: &Fingerprint,
        grant: &Grant,
    ) -> Result<Prepared, String> {
        let inst = &self.p.instances[i];
        job::prepare(PrepareArgs {
            cache: self.cache,
            inst,
            key,
            job: i,
            inputs: self.input_paths(i)?,
            input_digests: &fp.inputs,
            grant,
            cpu_threads: self.resources.cpu_threads(&inst.resources, grant),
            workers: &self.opts.workers,
        })
    }

    /// Absolute paths a stage reads: store views for upstream outputs, the path for externals.
    fn input_paths(&self, i: usize) -> Result<BTreeMap<String, PathBuf>, String> {
        let mut out = BTreeMap::new();
        for (name, input) in &self.p.instances[i].inputs {
            match input {
                Input::External { path } => {
                    out.insert(name.clone(), path.clone());
                }
                Input::Gather { output, from } => {
                    let items = super::super::gather::listing(output, from, &self.done)
                        .ok_or_else(|| {
                            format!("input `{name}`: a gathered instance has no outputs")
                        })?;
                    let stage = from
                        .first()
                        .map(|g| self.p.instances[g.instance].stage.as_str())
                        .unwrap_or_default();
                    // The gathered stage's axes: those its instances' cells name, in matrix order.
                    let axes: Vec<String> = (self.p.matrix_axes.iter())
                        .filter(|a| from.iter().any(|g| g.cell.contains_key(*a)))
                        .cloned()
                        .collect();
                    let head = super::super::gather::Head {
                        stage,
                        output,
                        axes: &axes,
                    };
                    let v =
                        super::super::gather::materialize(&self.cache.store, name, head, &items)
                            .map_err(|e| e.to_string())?;
                    out.insert(name.clone(), v);
                }
                Input::Upstream { instance, output } => {
                    let m = self.done[*instance].as_ref().ok_or_else(|| {
                        format!(
                            "upstream `{}` has no outputs",
                            self.p.instances[*instance].id
                        )
                    })?;
                    if let Some(o) = m.outputs.get(output) {
                        let base = o.rel_path.rsplit('/').next().unwrap_or(output).to_string();
                        let v = self
                            .cache
                            .store
                            .view(&o.digest, o.kind, &base)
                            .map_err(|e| e.to_string())?;
                        out.insert(name.clone(), v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// A stage that was granted resources but could not be started: the grant goes back and
    /// the attempt fails (retry or skip dependents).
    pub(super) fn fail_to_start(
        &mut self,
        i: usize,
        attempt: u32,
        grant: &Grant,
        message: String,
    ) -> Result<(), ExecError> {
        self.resources.give_back(grant);
        self.nodes.set(
            i,
            Node::Committing {
                attempt,
                log: PathBuf::new(),
                accounting: None,
            },
        );
        self.fail(i, attempt, message, None, None)
    }

    /// A submitted (or adopted) job: show it and track it as running.
    fn mark_running(
        &mut self,
        i: usize,
        fp: Fingerprint,
        key: String,
        attempt: u32,
        grant: Grant,
        prepared: Prepared,
    ) {
        self.view.event(ViewEvent::Started {
            instance: self.p.instances[i].id.clone(),
            device: prepared.device.clone(),
            attempt,
            log: prepared.spec.log.clone(),
        });
        let tail = ProgressTail::new(prepared.progress.clone());
        self.busy.insert(key.clone(), i);
        self.nodes.set(
            i,
            Node::Running {
                fp,
                key,
                attempt,
                grant,
                prepared: Box::new(prepared),
                started: Instant::now(),
                tail,
                cancelled: false,
            },
        );
    }
}
