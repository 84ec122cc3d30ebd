//! [`Tracker`]: the dashboard's read-only view of one pipeline in one cache, rebuilt into an
//! immutable [`Snapshot`] whenever one of the few files it watches changes.
//!
//! It reads only plain files, so it works while `orchestrator run` holds the cache (the lock and
//! the sled index are the run's; sled allows one opener): the pipeline file, the history
//! (`history/<pipeline>.jsonl`), the run log (`history/runs/<pipeline>.jsonl`), committed
//! manifests (`manifests/<key>.json`), store objects, and the run dirs' `log` / `progress.jsonl`.
//! It writes nothing, anywhere.
//!
//! An instance's state follows `plan`: its current fingerprint is computed as `plan` computes it
//! (upstream digests from the upstream's current result, external inputs hashed, read-only, with
//! an in-memory stat memo instead of the index's stat cache), and it is `cached` exactly when a
//! committed manifest of that fingerprint exists. The history adds what `plan` cannot see:
//! `running` (a started record of the live run), `failed`, `interrupted`, `waiting` (the live run
//! of this pipeline has not reached it yet) and `blocked` (an upstream failed).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::files::{JsonlTail, Stamp};
use crate::cache::{Manifest, RunEvent, RunLog, RunRecord, RunStart, RunStatus, Store};
use crate::exec::plan::{describe_field, input_digests};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Input, Pipeline};

/// How long a folder given as an external input keeps its digest before it is walked again
/// (a file is re-checked by its stat on every refresh).
const FOLDER_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its current fingerprint has committed outputs (what `plan` calls cached).
    Cached,
    /// Started by the live run.
    Running,
    /// The live run of this pipeline will get to it.
    Waiting,
    /// Its latest attempt failed.
    Failed,
    /// An upstream failed, so it cannot run.
    Blocked,
    /// Started by a run that is gone (killed, power cut); the next run resumes it.
    Interrupted,
    /// It has results, but of an older fingerprint: the next run reruns it.
    Stale,
    NeverRun,
}

/// One instance in a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct Inst {
    pub state: State,
    /// Its current fingerprint key, when every input digest is known.
    pub key: Option<String>,
    pub fingerprint: Option<Fingerprint>,
    /// The committed outputs of `key`.
    pub result: Option<Arc<Manifest>>,
    /// Index in [`Snapshot::records`] of its latest history record.
    pub last: Option<usize>,
    /// Why it would run (as `plan --explain`), or what it waits on; empty when cached.
    pub reasons: Vec<String>,
    /// Fingerprint fields that differ from its latest result's.
    pub changed: Vec<String>,
    /// Upstream instances without a current result.
    pub waits_on: Vec<usize>,
}

/// The run of this pipeline (or, for runs that left no run-log line, some run of this cache)
/// whose process is alive.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    /// Unix seconds: records from then on belong to it.
    pub since: u64,
    /// Its start line, when it is a run of this pipeline.
    pub start: Option<RunStart>,
}

/// Everything the API serves about one pipeline at one moment; immutable, shared by `Arc`.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub name: String,
    pub root: PathBuf,
    pub pipeline: Arc<Pipeline>,
    /// The pipeline file's errors, when its last edit does not load (the previous version is
    /// served meanwhile).
    pub load_error: Option<String>,
    pub insts: Vec<Inst>,
    pub records: Arc<Vec<RunRecord>>,
    pub runs: Arc<Vec<RunEvent>>,
    pub live: Option<Live>,
    /// Instance index -> downstream instances.
    pub dependents: Vec<Vec<usize>>,
    /// Things the dashboard should say are wrong (corrupt manifest, missing object, ...).
    pub problems: Vec<String>,
}

impl Snapshot {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.pipeline.instances.iter().position(|i| i.id == id)
    }

    pub fn last_record(&self, i: usize) -> Option<&RunRecord> {
        self.insts[i].last.map(|r| &self.records[r])
    }

    /// The run dir of the instance's latest attempt (where its log is), if recorded: in this
    /// cache's `runs/`, wherever the cache was when the record was written.
    pub fn run_dir(&self, i: usize) -> Option<PathBuf> {
        self.records
            .iter()
            .rev()
            .filter(|r| r.instance == self.pipeline.instances[i].id)
            .find_map(|r| crate::cache::run_dir_in(&self.root, r))
    }

    pub fn counts(&self) -> BTreeMap<State, usize> {
        let mut m = BTreeMap::new();
        for i in &self.insts {
            *m.entry(i.state).or_insert(0) += 1;
        }
        m
    }
}

impl PartialOrd for State {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for State {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*o as u8))
    }
}

/// Keeps one pipeline's [`Snapshot`] current. Not `Sync`: shared behind a mutex, called from
/// blocking tasks.
pub struct Tracker {
    pub name: String,
    file: PathBuf,
    overrides: Vec<String>,
    root: PathBuf,
    pipeline: Arc<Pipeline>,
    load_error: Option<String>,
    history: JsonlTail<RunRecord>,
    runs: JsonlTail<RunEvent>,
    /// pipeline file, history, run log, lock, manifests/ folder, external input files.
    stamps: Vec<(PathBuf, Stamp)>,
    file_digests: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    folder_digests: HashMap<PathBuf, (Instant, String)>,
    manifests: HashMap<String, Arc<Manifest>>,
    snapshot: Arc<Snapshot>,
}

impl Tracker {
    /// `root` must be canonical (it bounds every file the server opens).
    pub fn new(pipeline: Pipeline, overrides: Vec<String>, root: PathBuf) -> Tracker {
        let name = pipeline.name.clone();
        let pipeline = Arc::new(pipeline);
        let snapshot = Arc::new(Snapshot {
            version: 0,
            name: name.clone(),
            root: root.clone(),
            pipeline: pipeline.clone(),
            load_error: None,
            insts: Vec::new(),
            records: Arc::default(),
            runs: Arc::default(),
            live: None,
            dependents: Vec::new(),
            problems: Vec::new(),
        });
        let mut t = Tracker {
            file: pipeline.file.clone(),
            history: JsonlTail::new(
                root.clone(),
                crate::cache::History::new(&root, &name)
                    .path()
                    .to_path_buf(),
            ),
            runs: JsonlTail::new(root.clone(), RunLog::new(&root, &name).path().to_path_buf()),
            name,
            overrides,
            root,
            pipeline,
            load_error: None,
            stamps: Vec::new(),
            file_digests: Mutex::default(),
            folder_digests: HashMap::new(),
            manifests: HashMap::new(),
            snapshot,
        };
        t.refresh();
        t
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn watched(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.file.clone(),
            self.history.path().to_path_buf(),
            self.runs.path().to_path_buf(),
            self.root.join("lock"),
            self.root.join("manifests"),
        ];
        for inst in &self.pipeline.instances {
            for input in inst.inputs.values() {
                if let Input::External { path } = input {
                    if !v.contains(path) {
                        v.push(path.clone());
                    }
                }
            }
        }
        v
    }

    /// Re-stat the watched files; when one changed (or a folder input is due for a re-check),
    /// rebuild the snapshot. Returns whether it was rebuilt. Costs a few `stat`s otherwise.
    pub fn refresh(&mut self) -> bool {
        let now: Vec<(PathBuf, Stamp)> = self
            .watched()
            .into_iter()
            .map(|p| {
                let s = Stamp::of(&p);
                (p, s)
            })
            .collect();
        let folders_due = self
            .folder_digests
            .values()
            .any(|(t, _)| t.elapsed() > FOLDER_RECHECK);
        if now == self.stamps && !folders_due && self.snapshot.version > 0 {
            return false;
        }
        let file_changed = self.stamps.first() != now.first();
        self.stamps = now;
        if file_changed && self.snapshot.version > 0 {
            self.reload();
        }
        self.history.poll();
        self.runs.poll();
        let next = self.build(self.snapshot.version + 1);
        let changed = !same(&next, &self.snapshot);
        if changed || self.snapshot.version == 0 {
            self.snapshot = Arc::new(next);
        }
        // Stamps may include new external inputs after a reload.
        self.stamps = self
            .watched()
            .into_iter()
            .map(|p| {
                let s = Stamp::of(&p);
                (p, s)
            })
            .collect();
        changed
    }

    fn reload(&mut self) {
        match crate::pipeline::load_with(&self.file, &self.overrides) {
            Ok(p) if p.name == self.name => {
                self.pipeline = Arc::new(p);
                self.load_error = None;
            }
            Ok(p) => {
                self.load_error = Some(format!(
                    "{}: the pipeline's name changed from `{}` to `{}`; restart `orchestrator serve` to follow it",
                    self.file.display(),
                    self.name,
                    p.name
                ))
            }
            Err(d) => self.load_error = Some(d.to_string()),
        }
    }

    fn build(&mut self, version: u64) -> Snapshot {
        let p = self.pipeline.clone();
        let records: Arc<Vec<RunRecord>> = Arc::new(self.history.items.clone());
        let runs: Arc<Vec<RunEvent>> = Arc::new(self.runs.items.clone());
        let live = self.live();
        let mut problems = Vec::new();
        let ext = self.external_digests(&p);
        let mut latest: HashMap<&str, usize> = HashMap::new();
        let mut committed: HashMap<&str, Vec<&str>> = HashMap::new();
        for (k, r) in records.iter().enumerate() {
            latest.insert(&r.instance, k);
            if matches!(r.status, RunStatus::Ok | RunStatus::Cached) {
                let keys = committed.entry(&r.instance).or_default();
                keys.retain(|x| *x != r.key);
                keys.push(&r.key);
            }
        }
        let n = p.instances.len();
        let mut done: Vec<Option<Manifest>> = vec![None; n];
        let mut insts: Vec<Inst> = Vec::with_capacity(n);
        for (i, inst) in p.instances.iter().enumerate() {
            let last = latest.get(inst.id.as_str()).copied();
            let rec = last.map(|k| &records[k]);
            let mut reasons = Vec::new();
            let fp = match &ext[i] {
                Ok(e) => input_digests(inst, e, &done).map(|d| Fingerprint::of(inst, d)),
                Err(missing) => {
                    reasons.push(missing.clone());
                    None
                }
            };
            let key = fp.as_ref().map(Fingerprint::key);
            let result = key.as_deref().and_then(|k| self.manifest(k, &mut problems));
            done[i] = result.as_deref().cloned();
            let waits_on: Vec<usize> = upstreams(&p, i)
                .filter(|&u| insts[u].result.is_none())
                .collect();
            let previous = committed
                .get(inst.id.as_str())
                .and_then(|keys| keys.last())
                .and_then(|k| self.manifest(k, &mut problems));
            let upstream_failed =
                upstreams(&p, i).any(|u| matches!(insts[u].state, State::Failed | State::Blocked));
            let state = decide(
                rec,
                result.is_some(),
                previous.is_some(),
                upstream_failed,
                live.as_ref(),
            );
            let mut changed = Vec::new();
            if result.is_none() {
                // A running instance: why it runs now, not that its own start is unfinished.
                let rec = rec.filter(|_| state != State::Running);
                explain(
                    fp.as_ref(),
                    previous.as_deref(),
                    rec,
                    &waits_on,
                    &p,
                    &mut reasons,
                    &mut changed,
                );
            }
            insts.push(Inst {
                state,
                key,
                fingerprint: fp,
                result,
                last,
                reasons,
                changed,
                waits_on,
            });
        }
        Snapshot {
            version,
            name: self.name.clone(),
            root: self.root.clone(),
            dependents: {
                let dag = crate::dag::Dag::new(&p);
                (0..p.instances.len())
                    .map(|i| dag.downstream(i).to_vec())
                    .collect()
            },
            pipeline: p,
            load_error: self.load_error.clone(),
            insts,
            records,
            runs,
            live,
            problems,
        }
    }

    /// The committed manifest of `key` (manifests never change once written, so a hit is kept).
    /// A manifest whose objects are not all in the store is no result: that stage runs again.
    fn manifest(&mut self, key: &str, problems: &mut Vec<String>) -> Option<Arc<Manifest>> {
        if let Some(m) = self.manifests.get(key) {
            return objects_present(&self.root, m, problems).then(|| m.clone());
        }
        let path = Store::new(&self.root).manifest_path(key);
        let bytes = std::fs::read(&path).ok()?;
        match Manifest::from_bytes(&bytes) {
            Ok(m) if m.key == key => {
                let m = Arc::new(m);
                self.manifests.insert(key.to_string(), m.clone());
                objects_present(&self.root, &m, problems).then_some(m)
            }
            Ok(_) => {
                problems.push(format!("{} holds another key's manifest", path.display()));
                None
            }
            Err(e) => {
                problems.push(format!("{} is unreadable: {e}", path.display()));
                None
            }
        }
    }

    /// Per instance: input name -> digest of each external input, or why one is missing.
    fn external_digests(&mut self, p: &Pipeline) -> Vec<Result<BTreeMap<String, String>, String>> {
        let mut by_path: HashMap<PathBuf, Result<String, String>> = HashMap::new();
        p.instances
            .iter()
            .map(|inst| {
                let mut out = BTreeMap::new();
                for (name, input) in &inst.inputs {
                    let Input::External { path } = input else {
                        continue;
                    };
                    let d = match by_path.get(path) {
                        Some(d) => d.clone(),
                        None => {
                            let d = self.external_digest(path).map_err(|e| {
                                format!("input `{name}` ({}) cannot be read: {e}", path.display())
                            });
                            by_path.insert(path.clone(), d.clone());
                            d
                        }
                    };
                    out.insert(name.clone(), d?);
                }
                Ok(out)
            })
            .collect()
    }

    /// Content digest of an external input, the way the cache computes it, without the index.
    fn external_digest(&mut self, path: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return self.file_digest(path);
        }
        if let Some((t, d)) = self.folder_digests.get(path) {
            if t.elapsed() <= FOLDER_RECHECK {
                return Ok(d.clone());
            }
        }
        let store = Store::new(&self.root);
        let this = &*self;
        let tree = store
            .tree_of_dir(path, &|f, _| {
                this.file_digest(f)
                    .map_err(|e| crate::cache::CacheError::Corrupt {
                        what: "input file",
                        path: f.to_path_buf(),
                        message: e,
                    })
            })
            .map_err(|e| e.to_string())?;
        let d = tree.digest();
        self.folder_digests
            .insert(path.to_path_buf(), (Instant::now(), d.clone()));
        Ok(d)
    }

    fn file_digest(&self, path: &Path) -> Result<String, String> {
        let stamp = Stamp::of(path);
        if let Some((s, d)) = self.file_digests.lock().expect("memo").get(path) {
            if *s == stamp {
                return Ok(d.clone());
            }
        }
        let d = crate::cache::hash_file(path).map_err(|e| e.to_string())?;
        self.file_digests
            .lock()
            .expect("memo")
            .insert(path.to_path_buf(), (stamp, d.clone()));
        Ok(d)
    }

    /// The live run: the last start line of this pipeline without an end line, if the process
    /// holding the cache lock is that run. Without such a line (a run of another pipeline, or of
    /// a build before run logs), the lock holder alone, if alive, still marks started records as
    /// running.
    fn live(&self) -> Option<Live> {
        let lock = std::fs::read_to_string(self.root.join("lock")).unwrap_or_default();
        let mut it = lock.split_whitespace();
        let (pid, host) = (it.next()?, it.next()?);
        let pid: u32 = pid.parse().ok()?;
        if host == crate::cache::hostname() && !pid_alive(pid) {
            return None;
        }
        let start = self.runs.items.iter().rev().find_map(|e| match e {
            RunEvent::Start(s) => Some(s),
            RunEvent::End(_) => None,
        });
        if let Some(s) = start {
            let ended = self
                .runs
                .items
                .iter()
                .any(|e| matches!(e, RunEvent::End(x) if x.run == s.run));
            if !ended && s.pid == pid && s.host == host {
                return Some(Live {
                    since: s.at,
                    start: Some(s.clone()),
                });
            }
        }
        let since = Stamp::of(&self.root.join("lock")).mtime()?;
        Some(Live {
            since: since.max(0) as u64,
            start: None,
        })
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn upstreams(p: &Pipeline, i: usize) -> impl Iterator<Item = usize> + '_ {
    let mut seen = Vec::new();
    p.instances[i]
        .inputs
        .values()
        .flat_map(Input::upstreams)
        .filter(move |instance| {
            let new = !seen.contains(instance);
            if new {
                seen.push(*instance);
            }
            new
        })
}

fn objects_present(root: &Path, m: &Manifest, problems: &mut Vec<String>) -> bool {
    let store = Store::new(root);
    let digests = m
        .outputs
        .values()
        .map(|o| &o.digest)
        .chain(m.metrics.as_ref());
    for d in digests {
        if !store.object_path(d).is_file() {
            problems.push(format!(
                "stage `{}`: object {d} of its result is missing from the store, so it runs again",
                m.instance
            ));
            return false;
        }
    }
    true
}

/// The state of an instance from its latest record and what the plan found.
fn decide(
    rec: Option<&RunRecord>,
    current: bool,
    has_old_result: bool,
    upstream_failed: bool,
    live: Option<&Live>,
) -> State {
    let in_live_run = |r: &RunRecord| live.is_some_and(|l| r.at >= l.since);
    let ours = live.is_some_and(|l| l.start.is_some());
    match rec {
        Some(r) if r.status == RunStatus::Started && in_live_run(r) => State::Running,
        _ if current => State::Cached,
        Some(r) if r.status == RunStatus::Failed && (in_live_run(r) || !ours) => State::Failed,
        _ if upstream_failed => State::Blocked,
        _ if ours => State::Waiting,
        Some(r) if r.status == RunStatus::Started => State::Interrupted,
        _ if has_old_result => State::Stale,
        _ => State::NeverRun,
    }
}

/// `plan --explain`'s reasons for an instance without a current result.
fn explain(
    fp: Option<&Fingerprint>,
    previous: Option<&Manifest>,
    rec: Option<&RunRecord>,
    waits_on: &[usize],
    p: &Pipeline,
    reasons: &mut Vec<String>,
    changed: &mut Vec<String>,
) {
    if !waits_on.is_empty() {
        reasons.push(format!(
            "waits on {}",
            waits_on
                .iter()
                .map(|&u| format!("`{}`", p.instances[u].id))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match (fp, previous) {
        (Some(fp), Some(old)) if fp.key() != old.key => {
            changed.extend(fp.changed_fields(&old.fingerprint));
            reasons.extend(changed.iter().map(|f| describe_field(f)));
        }
        (_, None) if rec.is_none() => reasons.push("no previous run".into()),
        (Some(_), _) => reasons.push(
            "its previous run did not complete (failed, interrupted, or removed by gc)".into(),
        ),
        (None, _) => {}
    }
}

/// Two snapshots show the same thing (the version aside).
fn same(a: &Snapshot, b: &Snapshot) -> bool {
    a.insts.len() == b.insts.len()
        && a.records.len() == b.records.len()
        && a.runs.len() == b.runs.len()
        && a.load_error == b.load_error
        && a.problems == b.problems
        && a.live.as_ref().map(|l| l.since) == b.live.as_ref().map(|l| l.since)
        && Arc::ptr_eq(&a.pipeline, &b.pipeline)
        && a.insts.iter().zip(&b.insts).all(|(x, y)| {
            x.state == y.state && x.key == y.key && x.last == y.last && x.reasons == y.reasons
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: RunStatus, at: u64) -> RunRecord {
        RunRecord {
            instance: "a".into(),
            key: "k".into(),
            status,
            at,
            duration_ms: 0,
            device: String::new(),
            run_dir: None,
            message: None,
            job: None,
        }
    }

    #[test]
    fn states_follow_the_latest_record_and_the_live_run() {
        let ours = Live {
            since: 100,
            start: Some(RunStart::now("local")),
        };
        let foreign = Live {
            since: 100,
            start: None,
        };
        let started_now = rec(RunStatus::Started, 150);
        let started_before = rec(RunStatus::Started, 50);
        let failed_before = rec(RunStatus::Failed, 50);
        use State::*;
        let cases = [
            (Some(&started_now), false, Some(&ours), Running),
            (Some(&started_now), true, Some(&foreign), Running),
            (Some(&started_before), false, Some(&ours), Waiting),
            (Some(&started_before), false, None, Interrupted),
            (Some(&started_before), true, None, Cached),
            (Some(&failed_before), false, Some(&ours), Waiting),
            (Some(&failed_before), false, Some(&foreign), Failed),
            (Some(&failed_before), false, None, Failed),
            (None, false, None, NeverRun),
            (None, true, None, Cached),
        ];
        for (r, current, live, want) in cases {
            assert_eq!(
                decide(r, current, false, false, live),
                want,
                "{r:?} {current}"
            );
        }
        assert_eq!(decide(None, false, true, false, None), Stale);
        assert_eq!(decide(None, false, false, true, Some(&ours)), Blocked);
    }
}
