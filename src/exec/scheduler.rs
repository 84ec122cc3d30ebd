//! [`Scheduler`]: the one loop that owns all run state. Backends, commit workers, signals and the
//! progress ticker send it messages; only the loop changes a [`Node`]. Nothing in the loop waits
//! on a subprocess: backends submit and cancel off the loop (see [`Backend`]), commits hash on the
//! blocking pool.
//!
//! Readiness (the one rule): an instance is resolved when every upstream (from the one
//! [`Dag`]) is `Done`: its input digests are then known, so its fingerprint is computed and looked
//! up; a hit is `Done` at once (early cutoff falls out of this: a byte-identical upstream output
//! gives the same digest), a miss is `Ready`. An instance with a failed or skipped upstream is
//! `Skipped`. Ready instances launch whenever their resources are free, in this order (see
//! `launch.rs`): the deepest first ([`Dag::depths`]: an instance downstream of more finished work
//! finishes its matrix cell sooner, so complete rows show early), then the longest remaining
//! path ([`Dag::critical_path_lengths`] over recorded durations, 1 s when unknown). A ready
//! instance whose resources are taken is passed over for the next one that fits (GPU packing).
//!
//! The view gets the run's overall progress ([`Overall`](super::eta::Overall): counts and an ETA from recorded
//! durations, see [`super::eta`]) while jobs run, when something started or settled or 250 ms
//! have passed; it is computed only when the view shows it, from in-memory state (no file is
//! read for it).
//!
//! Draining (as cargo's job queue does): an error inside the loop (the cache cannot be written,
//! say) stops new work, cancels the running jobs and waits for them, and is then returned once,
//! with the summary of what ran ([`RunSummary::fatal`]). A job the run itself cancelled (Ctrl-C,
//! `--fail-fast`, an error) ends as cancelled, not failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::backend::{Backend, BackendEvent, ExitStatus, JobAccounting};
use super::job::{self, CommitArgs, Prepared};
use super::plan::{hash_externals, input_digests, lookup, Verdict, FORCED};
use super::resources::{GpuChoice, Grant, Resources};
use super::view::{ProgressTail, View, ViewEvent};
use super::{ExecError, Failure, RunOptions, RunSummary};
use crate::cache::{Cache, Manifest, RunRecord, RunStatus};
use crate::dag::Dag;
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Action, Pipeline};

mod launch;
mod links;
mod nodes;
mod progress;

use nodes::{Nodes, Upstreams};

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
        /// This run asked the backend to stop it (Ctrl-C, `--fail-fast`, an error).
        cancelled: bool,
    },
    /// Its job ended; the outcome (commit or failure) is being recorded.
    Committing {
        attempt: u32,
        log: PathBuf,
        accounting: Option<JobAccounting>,
    },
    Done,
    Failed,
    Skipped,
    /// Stopped by this run before it could finish; it runs again next time.
    Cancelled,
}

struct Committed {
    job: usize,
    result: Result<Manifest, String>,
}

/// How often the overall progress (the terminal's ETA) is recomputed while nothing settles.
const OVERALL_EVERY: Duration = Duration::from_millis(250);

pub struct Scheduler<'a> {
    p: &'a Pipeline,
    cache: &'a Cache,
    opts: RunOptions,
    backend: Box<dyn Backend + 'a>,
    view: &'a mut View,
    dag: Dag,
    /// Every instance's state; changed only through [`Nodes::set`].
    nodes: Nodes,
    done: Vec<Option<Manifest>>,
    external: Vec<BTreeMap<String, String>>,
    /// Per instance, its own last recorded duration in seconds (the manifest of its last
    /// fingerprint), when there is one.
    recorded: Vec<Option<f64>>,
    /// Durations (s) of the instances this run finished, per stage.
    finished: HashMap<String, Vec<f64>>,
    /// Expected duration (s) per instance, for the ETA ([`super::eta::expected`]); recomputed, when
    /// `expected_stale`, only by a turn that shows the overall progress (never under `-q`).
    expected: Vec<Option<f64>>,
    expected_stale: bool,
    /// What the last overall progress was computed from (the settled counts and the active
    /// jobs) and when: it is computed again when those change or [`OVERALL_EVERY`] has passed,
    /// so a run of n instances costs O(n) per settled instance, not per turn of the loop.
    overall_at: Option<([usize; 6], Instant)>,
    resources: Resources,
    stopping: bool,
    interrupted: bool,
    /// The signal that interrupted the run (SIGINT, SIGTERM or SIGHUP): its exit code.
    signal: i32,
    /// The first error inside the loop; the run drains and then reports it.
    fatal: Option<ExecError>,
    failures: Vec<Failure>,
    ran: usize,
    cached: usize,
    skipped: usize,
    cancelled: usize,
    commit_tx: mpsc::UnboundedSender<Committed>,
    commit_rx: Option<mpsc::UnboundedReceiver<Committed>>,
    /// Fingerprint key -> the instance running (or committing) it. One fingerprint runs once
    /// per run: instances with the same key wait for it and are then cache hits.
    busy: HashMap<String, usize>,
    links: links::Linker,
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
        let ids = match &opts.gpus {
            GpuChoice::Ids(ids) => ids.clone(),
            GpuChoice::None | GpuChoice::Discover => Vec::new(),
        };
        let resources = Resources::new(ids, opts.jobs);
        let external = hash_externals(p, cache)?;
        let (commit_tx, commit_rx) = mpsc::unbounded_channel();
        let dag = Dag::new(p);
        Ok(Scheduler {
            p,
            cache,
            opts,
            backend,
            view,
            recorded: vec![None; n],
            finished: HashMap::new(),
            expected: vec![None; n],
            expected_stale: true,
            overall_at: None,
            nodes: Nodes::of(&dag),
            dag,
            done: vec![None; n],
            external,
            resources,
            stopping: false,
            interrupted: false,
            signal: libc::SIGINT,
            fatal: None,
            failures: Vec::new(),
            ran: 0,
            cached: 0,
            skipped: 0,
            cancelled: 0,
            commit_tx,
            commit_rx: Some(commit_rx),
            busy: HashMap::new(),
            links: links::Linker::new(cache),
        })
    }

    /// Run to completion (or interruption, or a drained error) and summarise.
    pub async fn run(mut self) -> Result<RunSummary, ExecError> {
        let started = Instant::now();
        self.settle((0..self.nodes.len()).collect())?;
        self.find_gpus();
        self.check_requests()?;
        self.check_worker()?;
        self.compute_priorities();
        let (tx, mut rx) = mpsc::unbounded_channel::<BackendEvent>();
        self.backend.attach(tx);
        let mut commit_rx = self.commit_rx.take().expect("run is called once");
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(ExecError::Runtime)?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ExecError::Runtime)?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(ExecError::Runtime)?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if !self.stopping {
                if let Err(e) = self.launch() {
                    self.fail_run(e);
                }
            }
            let active = self.nodes.active();
            // A run that starts nothing (a no-op rerun) shows no progress, only its summary.
            let started_any = active > 0 || self.ran + self.failures.len() + self.cancelled > 0;
            if started_any && self.view.shows_overall() && self.overall_due(active) {
                let o = self.overall();
                self.view.event(ViewEvent::Overall(o));
            }
            if active == 0 {
                // Nothing runs, so every slot is free: whatever is still ready can only be waiting
                // because we are stopping.
                break;
            }
            // What settled in this turn gets its links before the loop waits.
            self.links.flush();
            let step = tokio::select! {
                Some(ev) = rx.recv() => self.on_backend(ev),
                Some(c) = commit_rx.recv() => self.on_committed(c),
                _ = sigint.recv() => {
                    self.on_interrupt(libc::SIGINT);
                    Ok(())
                }
                _ = sigterm.recv() => {
                    self.on_interrupt(libc::SIGTERM);
                    Ok(())
                }
                _ = sighup.recv() => {
                    self.on_interrupt(libc::SIGHUP);
                    Ok(())
                }
                _ = tick.tick() => {
                    self.poll_progress();
                    Ok(())
                }
            };
            if let Err(e) = step {
                self.fail_run(e);
            }
        }
        self.links.finish();
        if let Err(e) = self.cache.index.flush() {
            self.fail_run(e.into());
        }
        let results_dir = self.cache.results_dir(&self.p.name);
        let not_started = self
            .nodes
            .iter()
            .filter(|n| matches!(n, Node::Ready { .. } | Node::Waiting))
            .count();
        let metrics = (self.p.instances.iter().zip(&self.done))
            .filter_map(|(inst, m)| Some((inst.id.clone(), m.as_ref()?.metrics.clone()?)))
            .collect();
        Ok(RunSummary {
            ran: self.ran,
            cached: self.cached,
            failed: self.failures,
            skipped: self.skipped,
            cancelled: self.cancelled,
            not_started,
            interrupted: self.interrupted,
            signal: self.signal,
            wall: started.elapsed(),
            results_dir,
            metrics,
            fatal: self.fatal,
        })
    }

    /// An error inside the loop: keep the first, launch nothing more, cancel what runs, and let
    /// the loop drain before it is reported.
    fn fail_run(&mut self, e: ExecError) {
        let running = self.running();
        self.view.event(ViewEvent::Note {
            message: format!(
                "stopping after an error (reported at the end): launching nothing more; cancelling {} running stage(s)",
                running.len()
            ),
        });
        self.fatal.get_or_insert(e);
        if !self.stopping {
            self.stopping = true;
            self.cancel(&running, false);
        }
    }

    /// Resolve every waiting instance in `work` (and, transitively, its dependents) whose
    /// upstreams are all settled. Indices are processed in topological order.
    fn settle(&mut self, work: Vec<usize>) -> Result<(), ExecError> {
        let mut queue: BTreeSet<usize> = work.into_iter().collect();
        while let Some(i) = queue.pop_first() {
            if !matches!(self.nodes[i], Node::Waiting) {
                continue;
            }
            match self.nodes.upstreams(i) {
                Upstreams::Waiting => continue,
                Upstreams::Broken => {
                    let d = (self.dag.upstream(i).iter().copied())
                        .find(|&d| matches!(self.nodes[d], Node::Failed | Node::Skipped))
                        .expect("a broken upstream is failed or skipped");
                    self.skip(i, d);
                    queue.extend(self.dag.downstream(i).iter().copied());
                    continue;
                }
                Upstreams::Done => {}
            }
            let p = self.p;
            let inst = &p.instances[i];
            let digests =
                input_digests(inst, &self.external[i], &self.done).expect("all upstreams are done");
            let fp = Fingerprint::of(inst, digests);
            let key = fp.key();
            let verdict = if self.opts.force.contains(&i) {
                Verdict::Run {
                    reasons: vec![FORCED.into()],
                    changed: vec![],
                }
            } else {
                lookup(self.cache, &self.p.name, inst, &fp, &key, true)?
            };
            match verdict {
                Verdict::Cached(m) => {
                    self.remember_last(i, &fp, &key, &m)?;
                    self.links.link(&self.p.name, &inst.id, &m);
                    self.done[i] = Some(*m);
                    self.nodes.set(i, Node::Done);
                    self.cached += 1;
                    self.view.event(ViewEvent::Cached {
                        instance: inst.id.clone(),
                    });
                    queue.extend(self.dag.downstream(i).iter().copied());
                }
                Verdict::Run { .. } => {
                    self.nodes.set(
                        i,
                        Node::Ready {
                            fp,
                            key,
                            attempt: 1,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Append one history record for instance `i`.
    fn record(&self, i: usize, key: &str, status: RunStatus, r: Record) -> Result<(), ExecError> {
        self.cache.history(&self.p.name).append(&RunRecord {
            instance: self.p.instances[i].id.clone(),
            key: key.to_string(),
            status,
            at: crate::cache::now_unix(),
            duration_ms: r.duration_ms,
            device: r.device,
            run_dir: r.run_dir,
            message: r.message,
            job: r.job,
        })?;
        Ok(())
    }

    /// Record the fingerprint a cache hit now stands on; a hit under a key different from the
    /// last one also gets a history record (so `status` and `show` follow it).
    fn remember_last(
        &self,
        i: usize,
        fp: &Fingerprint,
        key: &str,
        m: &Manifest,
    ) -> Result<(), ExecError> {
        let inst = &self.p.instances[i];
        let same = self
            .cache
            .index
            .get_last_key(&self.p.name, &inst.id)?
            .is_some_and(|old| old == key);
        if same {
            return Ok(());
        }
        self.cache.index.put_last(&self.p.name, &inst.id, fp)?;
        let r = Record {
            duration_ms: m.duration_ms,
            device: m.device.clone(),
            ..Record::default()
        };
        self.record(i, key, RunStatus::Cached, r)
    }

    /// Ready instances whose fingerprint key is `key`.
    fn twins(&self, key: &str) -> Vec<usize> {
        self.nodes.ready_with_key(key)
    }

    fn skip(&mut self, i: usize, because: usize) {
        self.nodes.set(i, Node::Skipped);
        self.skipped += 1;
        let up = &self.p.instances[because].id;
        self.view.event(ViewEvent::Skipped {
            instance: self.p.instances[i].id.clone(),
            because: format!("upstream `{up}` failed or was skipped"),
        });
    }

    /// `--gpus auto`: ask `nvidia-smi` once, and only when a stage that asks for GPUs has to run
    /// (nothing has started yet, so the slots are simply rebuilt).
    fn find_gpus(&mut self) {
        if self.opts.gpus != GpuChoice::Discover {
            return;
        }
        let needed = self
            .p
            .instances
            .iter()
            .zip(self.nodes.iter())
            .any(|(inst, n)| {
                inst.resources.gpus > 0 && matches!(n, Node::Ready { .. } | Node::Waiting)
            });
        if needed {
            self.resources = Resources::new(super::resources::discover_gpus(), self.opts.jobs);
        }
    }

    /// A stage asking for more GPUs than this run has is an error before anything starts.
    fn check_requests(&self) -> Result<(), ExecError> {
        for inst in &self.p.instances {
            if let Some(why) = self.resources.impossible(&inst.resources) {
                return Err(ExecError::Unsatisfiable {
                    stage: inst.id.clone(),
                    location: inst.location.to_string(),
                    why,
                });
            }
        }
        Ok(())
    }

    fn check_worker(&self) -> Result<(), ExecError> {
        let needs = self.p.instances.iter().zip(self.nodes.iter()).any(|(inst, n)| {
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

    fn on_backend(&mut self, ev: BackendEvent) -> Result<(), ExecError> {
        match ev {
            BackendEvent::Note { message } => {
                self.view.event(ViewEvent::Note { message });
                Ok(())
            }
            BackendEvent::Exited {
                job,
                status,
                accounting,
            } => self.on_exited(job, status, accounting),
        }
    }

    /// A job ended: commit its outputs on the blocking pool, or settle a failure or our own
    /// cancellation.
    fn on_exited(
        &mut self,
        i: usize,
        status: ExitStatus,
        accounting: Option<JobAccounting>,
    ) -> Result<(), ExecError> {
        if !matches!(self.nodes[i], Node::Running { .. }) {
            return Ok(());
        }
        let Node::Running {
            fp,
            key,
            attempt,
            grant,
            prepared,
            started,
            mut tail,
            cancelled,
        } = self.nodes.set(i, Node::Waiting)
        else {
            unreachable!("checked above")
        };
        let p = self.p;
        let inst = &p.instances[i];
        if let Some(text) = tail.poll() {
            self.view.event(ViewEvent::Progress {
                instance: inst.id.clone(),
                text,
            });
        }
        self.resources.give_back(&grant);
        let log = prepared.spec.log.clone();
        if status != ExitStatus::Success && cancelled {
            self.backend.release(i);
            self.nodes.set(i, Node::Cancelled);
            self.cancelled += 1;
            self.view.event(ViewEvent::Cancelled {
                instance: inst.id.clone(),
            });
            return Ok(());
        }
        if status != ExitStatus::Success {
            self.nodes.set(
                i,
                Node::Committing {
                    attempt,
                    log: log.clone(),
                    accounting: None,
                },
            );
            let extra = job::after_failure(self.cache, &prepared.run_dir, &inst.id, true);
            let message = format!("stage `{}` failed: {status}{extra}", inst.id);
            return self.fail(i, attempt, message, Some(log), accounting);
        }
        // The backend's own clock (SLURM: time running, not queued) and placement, when known.
        let duration_ms = accounting
            .as_ref()
            .and_then(|a| a.elapsed_s)
            .map(|s| (s * 1000.0) as u64)
            .unwrap_or_else(|| started.elapsed().as_millis() as u64);
        let device = accounting
            .as_ref()
            .map(|a| super::device_of(a, !grant.gpus.is_empty()))
            .unwrap_or_else(|| prepared.device.clone());
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
            duration_ms,
            device,
        };
        self.nodes.set(
            i,
            Node::Committing {
                attempt,
                log,
                accounting,
            },
        );
        let tx = self.commit_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job::commit(args);
            let _ = tx.send(Committed { job: i, result });
        });
        Ok(())
    }

    fn on_committed(&mut self, c: Committed) -> Result<(), ExecError> {
        let i = c.job;
        if !matches!(self.nodes[i], Node::Committing { .. }) {
            return Ok(());
        }
        let Node::Committing {
            attempt,
            log,
            accounting,
        } = self.nodes.set(i, Node::Waiting)
        else {
            unreachable!("checked above")
        };
        let m = match c.result {
            Ok(m) => m,
            Err(e) => {
                self.nodes.set(
                    i,
                    Node::Committing {
                        attempt,
                        log: log.clone(),
                        accounting: None,
                    },
                );
                let extra = log
                    .parent()
                    .map(|d| job::after_failure(self.cache, d, &self.p.instances[i].id, false))
                    .unwrap_or_default();
                return self.fail(i, attempt, format!("{e}{extra}"), Some(log), accounting);
            }
        };
        // The commit point has passed: only now may the backend forget the job (a kill -9
        // before this leaves the record, and the next run commits the same outputs).
        self.backend.release(i);
        let inst = &self.p.instances[i];
        self.view.event(ViewEvent::Finished {
            instance: inst.id.clone(),
            duration: Duration::from_millis(m.duration_ms),
            device: m.device.clone(),
        });
        let key = m.key.clone();
        let ok = Record {
            duration_ms: m.duration_ms,
            device: m.device.clone(),
            run_dir: log.parent().map(PathBuf::from),
            job: accounting,
            ..Record::default()
        };
        let fp = m.fingerprint.clone();
        self.finished
            .entry(inst.stage.clone())
            .or_default()
            .push(m.duration_ms as f64 / 1000.0);
        self.expected_stale = true;
        self.done[i] = Some(m);
        self.nodes.set(i, Node::Done);
        self.ran += 1;
        self.cache.index.put_last(&self.p.name, &inst.id, &fp)?;
        self.record(i, &key, RunStatus::Ok, ok)?;
        if let Some(m) = &self.done[i] {
            self.links.link(&self.p.name, &inst.id, m);
        }
        self.busy.retain(|_, j| *j != i);
        // Instances waiting on the same fingerprint are cache hits now.
        let mut next = self.twins(&key);
        for &j in &next {
            self.nodes.set(j, Node::Waiting);
        }
        next.extend(self.dag.downstream(i).iter().copied());
        self.settle(next)
    }

    /// A failed attempt: retry if the stage allows, else fail it and skip its dependents.
    fn fail(
        &mut self,
        i: usize,
        attempt: u32,
        message: String,
        log: Option<PathBuf>,
        accounting: Option<JobAccounting>,
    ) -> Result<(), ExecError> {
        let p = self.p;
        let inst = &p.instances[i];
        self.busy.retain(|_, j| *j != i);
        let log = log.filter(|l| !l.as_os_str().is_empty());
        let will_retry = attempt <= inst.retry && !self.stopping;
        self.backend.release(i);
        self.view.event(ViewEvent::Failed {
            instance: inst.id.clone(),
            message: message.clone(),
            log: log.clone(),
            will_retry,
        });
        let digests = input_digests(inst, &self.external[i], &self.done).unwrap_or_default();
        let fp = Fingerprint::of(inst, digests);
        if will_retry {
            let key = fp.key();
            self.nodes.set(
                i,
                Node::Ready {
                    fp,
                    key,
                    attempt: attempt + 1,
                },
            );
            return Ok(());
        }
        self.nodes.set(i, Node::Failed);
        self.failures.push(Failure {
            instance: inst.id.clone(),
            location: inst.location.to_string(),
            message: message.clone(),
            log: log.clone(),
        });
        if self.opts.fail_fast && !self.stopping {
            self.stopping = true;
            self.view.event(ViewEvent::Note {
                message: "--fail-fast: stopping the run".into(),
            });
            let running = self.running();
            self.cancel(&running, true);
        }
        self.cache.index.put_last(&self.p.name, &inst.id, &fp)?;
        let key = fp.key();
        let failed = Record {
            run_dir: log.as_ref().and_then(|l| l.parent()).map(PathBuf::from),
            message: Some(message.clone()),
            job: accounting,
            ..Record::default()
        };
        self.record(i, &key, RunStatus::Failed, failed)?;
        self.settle(self.dag.downstream(i).to_vec())?;
        // Instances with the same fingerprint would fail the same way (each keeps its retries).
        for j in self.twins(&key) {
            if let Node::Ready { attempt, .. } = self.nodes[j] {
                let first = message.lines().next().unwrap_or("");
                self.fail(
                    j,
                    attempt,
                    format!("same fingerprint as `{}`, which failed: {first}", inst.id),
                    None,
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// SIGINT (Ctrl-C): launch nothing more and let running stages finish; again: kill them.
    /// SIGTERM and SIGHUP (the session is going away): launch nothing more and stop running
    /// stages now (SIGTERM, then SIGKILL after the backend's grace period).
    fn on_interrupt(&mut self, sig: i32) {
        if !self.interrupted || sig != libc::SIGINT {
            self.signal = sig;
        }
        self.interrupted = true;
        let running = self.running();
        if !self.stopping && sig != libc::SIGINT && !self.backend.cancels_on_interrupt() {
            self.stopping = true;
            let name = if sig == libc::SIGHUP {
                "SIGHUP"
            } else {
                "SIGTERM"
            };
            self.view.event(ViewEvent::Note {
                message: format!(
                    "{name}: launching nothing more; stopping {} running stage(s) (SIGTERM, then SIGKILL after {} s)",
                    running.len(),
                    super::reaper::TERM_GRACE_MS / 1000
                ),
            });
            self.cancel(&running, false);
        } else if self.stopping {
            self.view.event(ViewEvent::Note {
                message: "interrupted again: killing running stages".into(),
            });
            self.cancel(&running, true);
        } else if self.backend.cancels_on_interrupt() {
            self.stopping = true;
            self.view.event(ViewEvent::Note {
                message: format!(
                    "interrupted: launching nothing more; cancelling {} submitted job(s)",
                    running.len()
                ),
            });
            self.cancel(&running, false);
        } else {
            self.stopping = true;
            self.view.event(ViewEvent::Note {
                message: format!("interrupted: launching nothing more; letting {} running stage(s) finish (press Ctrl-C again to kill them)", running.len()),
            });
        }
    }

    /// Instances whose job is running (submitted, for a cluster).
    fn running(&self) -> Vec<usize> {
        self.nodes.running()
    }

    /// Ask the backend to stop these jobs, in one call; their ends are then ours, not failures.
    fn cancel(&mut self, jobs: &[usize], hard: bool) {
        for &i in jobs {
            self.nodes.mark_cancelled(i);
        }
        if !jobs.is_empty() {
            self.backend.cancel(jobs, hard);
        }
    }
}

/// The fields of a history record that differ between its kinds.
#[derive(Default)]
struct Record {
    duration_ms: u64,
    device: String,
    run_dir: Option<PathBuf>,
    message: Option<String>,
    job: Option<JobAccounting>,
}
