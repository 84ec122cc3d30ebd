//! [`Scheduler`]: the one loop that owns all run state. Backends, commit workers, signals and the
//! progress ticker send it messages; only the loop changes a [`Node`].
//!
//! Readiness (the one rule): an instance is resolved when every upstream is `Done`: its input
//! digests are then known, so its fingerprint is computed and looked up; a hit is `Done` at once
//! (early cutoff falls out of this: a byte-identical upstream output gives the same digest), a
//! miss is `Ready`. An instance with a failed or skipped upstream is `Skipped`. Ready instances
//! launch in order of longest remaining path (recorded durations, 1 s when unknown) whenever
//! their resources are free.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::backend::{Backend, BackendEvent, ExitStatus};
use super::job::{self, CommitArgs, PrepareArgs, Prepared};
use super::plan::{hash_externals, input_digests, lookup, Verdict};
use super::resources::{Grant, Resources};
use super::view::{ProgressTail, View, ViewEvent};
use super::{ExecError, Failure, RunOptions, RunSummary};
use crate::cache::{Cache, Manifest, RunRecord, RunStatus};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Action, Input, Pipeline};

/// The lifecycle of one stage instance within a run; data only where it is valid.
#[derive(Debug)]
enum Node {
    Waiting,
    Ready {
        fp: Fingerprint,
        key: String,
        attempt: u32,
    },
    Running {
        fp: Fingerprint,
        key: String,
        attempt: u32,
        grant: Grant,
        prepared: Box<Prepared>,
        started: Instant,
        tail: ProgressTail,
    },
    Committing {
        attempt: u32,
        log: PathBuf,
    },
    Done,
    Failed,
    Skipped,
}

struct Committed {
    job: usize,
    result: Result<Manifest, String>,
}

pub struct Scheduler<'a> {
    p: &'a Pipeline,
    cache: &'a Cache,
    opts: RunOptions,
    backend: Box<dyn Backend + 'a>,
    view: &'a mut View,
    nodes: Vec<Node>,
    done: Vec<Option<Manifest>>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    external: Vec<BTreeMap<String, String>>,
    priority: Vec<f64>,
    resources: Resources,
    stopping: bool,
    interrupted: bool,
    failures: Vec<Failure>,
    ran: usize,
    cached: usize,
    skipped: usize,
    commit_tx: mpsc::UnboundedSender<Committed>,
    commit_rx: Option<mpsc::UnboundedReceiver<Committed>>,
}

impl<'a> Scheduler<'a> {
    pub fn new(
        p: &'a Pipeline,
        cache: &'a Cache,
        opts: RunOptions,
        backend: Box<dyn Backend + 'a>,
        view: &'a mut View,
    ) -> Result<Self, ExecError> {
        let n = p.instances.len();
        let mut deps = vec![Vec::new(); n];
        let mut dependents = vec![Vec::new(); n];
        for (i, inst) in p.instances.iter().enumerate() {
            for input in inst.inputs.values() {
                if let Input::Upstream { instance, .. } = input {
                    if !deps[i].contains(instance) {
                        deps[i].push(*instance);
                        dependents[*instance].push(i);
                    }
                }
            }
        }
        let resources = Resources::new(opts.gpus.clone(), opts.jobs);
        for inst in &p.instances {
            if let Some(why) = resources.impossible(&inst.resources) {
                return Err(ExecError::Unsatisfiable {
                    stage: inst.id.clone(),
                    location: inst.location.clone(),
                    why,
                });
            }
        }
        let external = hash_externals(p, cache)?;
        let (commit_tx, commit_rx) = mpsc::unbounded_channel();
        Ok(Scheduler {
            p,
            cache,
            opts,
            backend,
            view,
            nodes: (0..n).map(|_| Node::Waiting).collect(),
            done: vec![None; n],
            deps,
            dependents,
            external,
            priority: vec![0.0; n],
            resources,
            stopping: false,
            interrupted: false,
            failures: Vec::new(),
            ran: 0,
            cached: 0,
            skipped: 0,
            commit_tx,
            commit_rx: Some(commit_rx),
        })
    }

    /// Run to completion (or interruption) and summarise.
    pub async fn run(mut self) -> Result<RunSummary, ExecError> {
        let started = Instant::now();
        self.settle((0..self.nodes.len()).collect())?;
        self.check_worker()?;
        self.compute_priorities();
        let (tx, mut rx) = mpsc::unbounded_channel::<BackendEvent>();
        let mut commit_rx = self.commit_rx.take().expect("run is called once");
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(ExecError::Runtime)?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ExecError::Runtime)?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if !self.stopping {
                self.launch(&tx)?;
            }
            let active = self
                .nodes
                .iter()
                .filter(|n| matches!(n, Node::Running { .. } | Node::Committing { .. }))
                .count();
            if active == 0 {
                // Nothing runs, so every slot is free: whatever is still ready can only be waiting
                // because we are stopping.
                break;
            }
            tokio::select! {
                Some(ev) = rx.recv() => self.on_backend(ev)?,
                Some(c) = commit_rx.recv() => self.on_committed(c)?,
                _ = sigint.recv() => self.on_interrupt(),
                _ = sigterm.recv() => self.on_interrupt(),
                _ = tick.tick() => self.poll_progress(),
            }
        }
        self.cache.index.flush()?;
        let results_dir = self.link_results();
        let not_started = self
            .nodes
            .iter()
            .filter(|n| matches!(n, Node::Ready { .. } | Node::Waiting))
            .count();
        Ok(RunSummary {
            ran: self.ran,
            cached: self.cached,
            failed: self.failures,
            skipped: self.skipped,
            not_started,
            interrupted: self.interrupted,
            wall: started.elapsed(),
            results_dir,
        })
    }

    /// Resolve every waiting instance in `work` (and, transitively, its dependents) whose
    /// upstreams are all settled. Indices are processed in topological order.
    fn settle(&mut self, work: Vec<usize>) -> Result<(), ExecError> {
        let mut queue: BTreeSet<usize> = work.into_iter().collect();
        while let Some(i) = queue.pop_first() {
            if !matches!(self.nodes[i], Node::Waiting) {
                continue;
            }
            let mut all_done = true;
            let mut broken = None;
            for &d in &self.deps[i] {
                match self.nodes[d] {
                    Node::Done => {}
                    Node::Failed | Node::Skipped => broken = Some(d),
                    _ => all_done = false,
                }
            }
            if let Some(d) = broken {
                self.skip(i, d);
                queue.extend(self.dependents[i].iter().copied());
                continue;
            }
            if !all_done {
                continue;
            }
            let p = self.p;
            let inst = &p.instances[i];
            let digests =
                input_digests(inst, &self.external[i], &self.done).expect("all upstreams are done");
            let fp = Fingerprint::of(inst, digests);
            let key = fp.key();
            match lookup(self.cache, &self.p.name, inst, &fp, &key, true)? {
                Verdict::Cached(m) => {
                    self.remember_last(i, &fp, &key, RunStatus::Cached, &m)?;
                    self.done[i] = Some(*m);
                    self.nodes[i] = Node::Done;
                    self.cached += 1;
                    self.view.event(ViewEvent::Cached {
                        instance: inst.id.clone(),
                    });
                    queue.extend(self.dependents[i].iter().copied());
                }
                Verdict::Run { .. } => {
                    self.nodes[i] = Node::Ready {
                        fp,
                        key,
                        attempt: 1,
                    }
                }
            }
        }
        Ok(())
    }

    /// Record the fingerprint an instance now stands on; a cache hit under a key different from
    /// the last one also gets a history record (so `status` and `show` follow it).
    fn remember_last(
        &self,
        i: usize,
        fp: &Fingerprint,
        key: &str,
        status: RunStatus,
        m: &Manifest,
    ) -> Result<(), ExecError> {
        let inst = &self.p.instances[i];
        let same = self
            .cache
            .index
            .get_last_key(&self.p.name, &inst.id)?
            .is_some_and(|old| old == key);
        if status == RunStatus::Cached && same {
            return Ok(());
        }
        if !same {
            self.cache.index.put_last(&self.p.name, &inst.id, fp)?;
        }
        self.cache.history(&self.p.name).append(&RunRecord {
            instance: inst.id.clone(),
            key: key.to_string(),
            status,
            at: crate::cache::now_unix(),
            duration_ms: m.duration_ms,
            device: m.device.clone(),
            run_dir: None,
            message: None,
        })?;
        Ok(())
    }

    fn skip(&mut self, i: usize, because: usize) {
        self.nodes[i] = Node::Skipped;
        self.skipped += 1;
        let up = &self.p.instances[because].id;
        self.view.event(ViewEvent::Skipped {
            instance: self.p.instances[i].id.clone(),
            because: format!("upstream `{up}` failed or was skipped"),
        });
    }

    fn check_worker(&self) -> Result<(), ExecError> {
        let needs = self.p.instances.iter().zip(&self.nodes).any(|(inst, n)| {
            matches!(&inst.action, Action::Builtin { kind, .. } if self.opts.workers.for_kind(kind).is_none())
                && matches!(n, Node::Ready { .. } | Node::Waiting)
        });
        if needs {
            return Err(ExecError::WorkerMissing {
                looked_at: super::stage_bin_candidate(),
            });
        }
        Ok(())
    }

    /// Longest remaining path per pending instance, weighting each by its last recorded duration.
    fn compute_priorities(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            if matches!(self.nodes[i], Node::Done | Node::Skipped | Node::Failed) {
                continue;
            }
            let inst = &self.p.instances[i];
            let weight = self
                .cache
                .index
                .get_last_key(&self.p.name, &inst.id)
                .ok()
                .flatten()
                .and_then(|k| self.cache.index.get_manifest(&k).ok().flatten())
                .map(|m| (m.duration_ms as f64 / 1000.0).max(0.001))
                .unwrap_or(1.0);
            let down = self.dependents[i]
                .iter()
                .map(|&j| self.priority[j])
                .fold(0.0, f64::max);
            self.priority[i] = weight + down;
        }
    }

    fn launch(&mut self, tx: &mpsc::UnboundedSender<BackendEvent>) -> Result<(), ExecError> {
        let mut ready: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i], Node::Ready { .. }))
            .collect();
        ready.sort_by(|&a, &b| {
            self.priority[b]
                .total_cmp(&self.priority[a])
                .then(a.cmp(&b))
        });
        let p = self.p;
        for i in ready {
            let inst = &p.instances[i];
            let Some(grant) = self.resources.try_take(&inst.resources) else {
                continue;
            };
            let Node::Ready { fp, key, attempt } =
                std::mem::replace(&mut self.nodes[i], Node::Waiting)
            else {
                unreachable!()
            };
            // A job an earlier orchestrator process submitted for this very fingerprint and that
            // still runs (SLURM): follow it instead of submitting again.
            if let Some((prepared, id)) =
                super::slurm::recorded_attempt(self.cache, &key, i, &inst.id, &grant)
            {
                if self.backend.reattach(&prepared.spec, &id, tx.clone()) {
                    self.view.event(ViewEvent::Note {
                        message: format!(
                            "`{}`: re-attached to job {id} submitted by an earlier run",
                            inst.id
                        ),
                    });
                    self.mark_running(i, fp, key, attempt, grant, prepared);
                    continue;
                }
            }
            let inputs = match self.input_paths(i) {
                Ok(x) => x,
                Err(e) => {
                    self.fail_to_start(i, attempt, &grant, e, None)?;
                    continue;
                }
            };
            let prepared = job::prepare(PrepareArgs {
                cache: self.cache,
                pipeline_dir: &self.p.dir,
                inst,
                key: &key,
                job: i,
                inputs,
                grant: &grant,
                workers: &self.opts.workers,
            });
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    self.fail_to_start(i, attempt, &grant, e, None)?;
                    continue;
                }
            };
            let log = prepared.spec.log.clone();
            self.cache.history(&self.p.name).append(&RunRecord {
                instance: inst.id.clone(),
                key: key.clone(),
                status: RunStatus::Started,
                at: crate::cache::now_unix(),
                duration_ms: 0,
                device: prepared.device.clone(),
                run_dir: Some(prepared.run_dir.clone()),
                message: None,
            })?;
            match self.backend.submit(prepared.spec.clone(), tx.clone()) {
                Ok(_id) => {
                    self.mark_running(i, fp, key, attempt, grant, prepared);
                }
                Err(e) => {
                    self.fail_to_start(i, attempt, &grant, e, Some(log))?;
                }
            }
        }
        Ok(())
    }

    /// Absolute paths a stage reads: store views for upstream outputs, the path for externals.
    fn input_paths(&self, i: usize) -> Result<BTreeMap<String, PathBuf>, String> {
        let mut out = BTreeMap::new();
        for (name, input) in &self.p.instances[i].inputs {
            match input {
                Input::External { path } => {
                    out.insert(name.clone(), path.clone());
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

    fn on_backend(&mut self, ev: BackendEvent) -> Result<(), ExecError> {
        let BackendEvent::Exited { job: i, status } = ev;
        let node = std::mem::replace(&mut self.nodes[i], Node::Waiting);
        let Node::Running {
            fp,
            key,
            attempt,
            grant,
            prepared,
            started,
            mut tail,
        } = node
        else {
            self.nodes[i] = node;
            return Ok(());
        };
        if let Some(text) = tail.poll() {
            self.view.event(ViewEvent::Progress {
                instance: self.p.instances[i].id.clone(),
                text,
            });
        }
        self.resources.give_back(&grant);
        let log = prepared.spec.log.clone();
        if status != ExitStatus::Success {
            self.nodes[i] = Node::Committing {
                attempt,
                log: log.clone(),
            };
            return self.fail(
                i,
                attempt,
                format!("stage `{}` failed: {status}", self.p.instances[i].id),
                Some(log),
            );
        }
        let p = self.p;
        let inst = &p.instances[i];
        let args = CommitArgs {
            cache: self.cache.clone(),
            pipeline: self.p.name.clone(),
            instance: inst.id.clone(),
            outputs: inst
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.rel_path.clone(), o.is_dir, o.required))
                .collect(),
            fingerprint: fp,
            key,
            out_dir: prepared.out_dir.clone(),
            work_dir: prepared.work_dir.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            device: prepared.device.clone(),
        };
        self.nodes[i] = Node::Committing { attempt, log };
        let tx = self.commit_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job::commit(args);
            let _ = tx.send(Committed { job: i, result });
        });
        Ok(())
    }

    fn on_committed(&mut self, c: Committed) -> Result<(), ExecError> {
        let i = c.job;
        let Node::Committing { attempt, log } =
            std::mem::replace(&mut self.nodes[i], Node::Waiting)
        else {
            return Ok(());
        };
        match c.result {
            Ok(m) => {
                let p = self.p;
                let inst = &p.instances[i];
                self.cache
                    .index
                    .put_last(&self.p.name, &inst.id, &m.fingerprint)?;
                self.cache.history(&self.p.name).append(&RunRecord {
                    instance: inst.id.clone(),
                    key: m.key.clone(),
                    status: RunStatus::Ok,
                    at: crate::cache::now_unix(),
                    duration_ms: m.duration_ms,
                    device: m.device.clone(),
                    run_dir: log.parent().map(PathBuf::from),
                    message: None,
                })?;
                self.view.event(ViewEvent::Finished {
                    instance: inst.id.clone(),
                    duration: Duration::from_millis(m.duration_ms),
                    device: m.device.clone(),
                });
                self.done[i] = Some(m);
                self.nodes[i] = Node::Done;
                self.ran += 1;
                let deps = self.dependents[i].clone();
                self.settle(deps)
            }
            Err(e) => {
                self.nodes[i] = Node::Committing {
                    attempt,
                    log: log.clone(),
                };
                self.fail(i, attempt, e, Some(log))
            }
        }
    }

    /// A stage that was granted resources but could not be started: the grant goes back and
    /// the attempt fails (retry or skip dependents).
    fn fail_to_start(
        &mut self,
        i: usize,
        attempt: u32,
        grant: &Grant,
        message: String,
        log: Option<PathBuf>,
    ) -> Result<(), ExecError> {
        self.resources.give_back(grant);
        self.nodes[i] = Node::Committing {
            attempt,
            log: log.clone().unwrap_or_default(),
        };
        self.fail(i, attempt, message, log)
    }

    /// A submitted (or re-attached) job: show it and track it as running.
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
        self.nodes[i] = Node::Running {
            fp,
            key,
            attempt,
            grant,
            prepared: Box::new(prepared),
            started: Instant::now(),
            tail,
        };
    }

    /// A failed attempt: retry if the stage allows, else fail it and skip its dependents.
    fn fail(
        &mut self,
        i: usize,
        attempt: u32,
        message: String,
        log: Option<PathBuf>,
    ) -> Result<(), ExecError> {
        let p = self.p;
        let inst = &p.instances[i];
        let log = log.filter(|l| !l.as_os_str().is_empty());
        let will_retry = attempt <= inst.retry && !self.stopping;
        self.view.event(ViewEvent::Failed {
            instance: inst.id.clone(),
            message: message.clone(),
            log: log.clone(),
            will_retry,
        });
        if will_retry {
            let digests =
                input_digests(inst, &self.external[i], &self.done).expect("upstreams are done");
            let fp = Fingerprint::of(inst, digests);
            let key = fp.key();
            self.nodes[i] = Node::Ready {
                fp,
                key,
                attempt: attempt + 1,
            };
            return Ok(());
        }
        let key = Fingerprint::of(
            inst,
            input_digests(inst, &self.external[i], &self.done).unwrap_or_default(),
        );
        self.cache.index.put_last(&self.p.name, &inst.id, &key)?;
        self.cache.history(&self.p.name).append(&RunRecord {
            instance: inst.id.clone(),
            key: key.key(),
            status: RunStatus::Failed,
            at: crate::cache::now_unix(),
            duration_ms: 0,
            device: String::new(),
            run_dir: log.as_ref().and_then(|l| l.parent()).map(PathBuf::from),
            message: Some(message.clone()),
        })?;
        self.nodes[i] = Node::Failed;
        self.failures.push(Failure {
            instance: inst.id.clone(),
            location: inst.location.clone(),
            message,
            log,
        });
        let deps = self.dependents[i].clone();
        self.settle(deps)?;
        if self.opts.fail_fast && !self.stopping {
            self.stopping = true;
            self.view.event(ViewEvent::Note {
                message: "--fail-fast: stopping the run".into(),
            });
            self.cancel_all(true);
        }
        Ok(())
    }

    fn on_interrupt(&mut self) {
        self.interrupted = true;
        if !self.stopping && self.backend.cancels_on_interrupt() {
            self.stopping = true;
            let n = self
                .nodes
                .iter()
                .filter(|n| matches!(n, Node::Running { .. }))
                .count();
            self.view.event(ViewEvent::Note {
                message: format!(
                    "interrupted: launching nothing more; cancelling {n} submitted job(s)"
                ),
            });
            self.cancel_all(false);
        } else if !self.stopping {
            self.stopping = true;
            let n = self
                .nodes
                .iter()
                .filter(|n| matches!(n, Node::Running { .. }))
                .count();
            self.view.event(ViewEvent::Note {
                message: format!("interrupted: launching nothing more; letting {n} running stage(s) finish (press Ctrl-C again to kill them)"),
            });
        } else {
            self.view.event(ViewEvent::Note {
                message: "interrupted again: killing running stages".into(),
            });
            self.cancel_all(true);
        }
    }

    fn cancel_all(&mut self, hard: bool) {
        for i in 0..self.nodes.len() {
            if matches!(self.nodes[i], Node::Running { .. }) {
                self.backend.cancel(i, hard);
            }
        }
    }

    fn poll_progress(&mut self) {
        let mut events = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Node::Running { tail, .. } = n {
                if let Some(text) = tail.poll() {
                    events.push(ViewEvent::Progress {
                        instance: self.p.instances[i].id.clone(),
                        text,
                    });
                }
            }
        }
        for e in events {
            self.view.event(e);
        }
    }

    /// `results/<pipeline>/<instance>/<output>` symlinks to the current outputs' views.
    fn link_results(&self) -> PathBuf {
        let dir = self.cache.results_dir(&self.p.name);
        for (i, m) in self.done.iter().enumerate() {
            let Some(m) = m else { continue };
            let inst_dir = dir.join(crate::cache::sanitize(&self.p.instances[i].id));
            let mut links: Vec<(String, String, crate::cache::ObjKind, String)> = Vec::new();
            for (name, o) in &m.outputs {
                let base = o.rel_path.rsplit('/').next().unwrap_or(name).to_string();
                links.push((name.clone(), o.digest.clone(), o.kind, base));
            }
            if let Some(d) = &m.metrics {
                links.push((
                    "metrics.json".into(),
                    d.clone(),
                    crate::cache::ObjKind::File,
                    "metrics.json".into(),
                ));
            }
            for (name, digest, kind, base) in links {
                let link = inst_dir.join(crate::cache::sanitize(&name));
                // An unchanged link whose view still exists (repair and gc remove views) is done.
                let want = self.cache.store.view_path(&digest, &base);
                if std::fs::read_link(&link).is_ok_and(|t| t == want)
                    && std::fs::symlink_metadata(&want).is_ok()
                {
                    continue;
                }
                let Ok(target) = self.cache.store.view(&digest, kind, &base) else {
                    continue;
                };
                let _ = std::fs::create_dir_all(&inst_dir);
                let tmp = inst_dir.join(format!(".{name}.tmp{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(&target, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, &link);
                }
            }
        }
        dir
    }
}
