//! What the scheduler knows of time: launch priorities (depth, then the longest remaining path
//! over recorded durations), the overall progress and its ETA for the view, and the progress
//! lines of running stages.

use std::time::{Duration, Instant};

use super::super::eta::{self, Overall};
use super::super::view::ViewEvent;
use super::{Node, Scheduler, OVERALL_EVERY};

impl Scheduler<'_> {
    /// Per instance: its depth, its recorded duration (a done one's from its manifest, a pending
    /// one's from the manifest of its last fingerprint) and its longest remaining path over the
    /// DAG, each pending instance weighted by its recorded duration (1 s when unknown).
    pub(super) fn compute_priorities(&mut self) {
        let (p, cache) = (self.p, self.cache);
        for (i, n) in self.nodes.iter().enumerate() {
            self.recorded[i] = match n {
                Node::Done => self.done[i].as_ref().map(|m| m.duration_ms as f64 / 1000.0),
                Node::Skipped | Node::Failed => None,
                _ => cache
                    .index
                    .get_last_key(&p.name, &p.instances[i].id)
                    .ok()
                    .flatten()
                    .and_then(|k| cache.index.get_manifest(&k).ok().flatten())
                    .map(|m| m.duration_ms as f64 / 1000.0),
            };
        }
        let pending: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| !matches!(n, Node::Done | Node::Skipped | Node::Failed))
            .collect();
        let recorded = &self.recorded;
        let priority = self.dag.critical_path_lengths(|i| match pending[i] {
            true => recorded[i].map_or(1.0, |d| d.max(0.001)),
            false => 0.0,
        });
        self.nodes.rank(self.dag.depths(), priority);
        self.expected_stale = true;
    }

    /// Whether this turn recomputes the overall progress: something settled or started since
    /// the last time, or [`OVERALL_EVERY`] has passed (the terminal's running ETA).
    pub(super) fn overall_due(&mut self, active: usize) -> bool {
        let now = [
            self.ran,
            self.cached,
            self.failures.len(),
            self.skipped,
            self.cancelled,
            active,
        ];
        let due = match self.overall_at {
            None => true,
            Some((last, at)) => last != now || at.elapsed() >= OVERALL_EVERY,
        };
        if due {
            self.overall_at = Some((now, Instant::now()));
        }
        due
    }

    /// The run's overall progress now: counts, and the ETA while nothing stops the run.
    pub(super) fn overall(&mut self) -> Overall {
        if self.expected_stale {
            let stage: Vec<&str> = self.p.instances.iter().map(|i| i.stage.as_str()).collect();
            self.expected = eta::expected(&stage, &self.recorded, &self.finished);
            self.expected_stale = false;
        }
        let c = self.nodes.counts();
        let mut o = Overall {
            total: self.nodes.len(),
            done: c.done,
            running: c.running,
            failed: c.failed,
            skipped: c.skipped,
            ..Overall::default()
        };
        let left: Vec<Option<f64>> = self
            .nodes
            .iter()
            .zip(&self.expected)
            .map(|(n, e)| match n {
                Node::Waiting | Node::Ready { .. } => *e,
                Node::Running { started, .. } => {
                    e.map(|e| (e - started.elapsed().as_secs_f64()).max(0.0))
                }
                // Its job has ended (and holds no slot); its outputs are being stored.
                Node::Committing { .. } => Some(0.0),
                Node::Done | Node::Failed | Node::Skipped | Node::Cancelled => Some(0.0),
            })
            .collect();
        if !self.stopping {
            let chain = self
                .dag
                .critical_path_lengths(|i| left[i].unwrap_or(0.0))
                .into_iter()
                .fold(0.0, f64::max);
            o.eta = eta::eta(&left, chain, self.resources.slots()).map(Duration::from_secs_f64);
        }
        o
    }

    pub(super) fn poll_progress(&mut self) {
        let mut events = Vec::new();
        for (i, tail) in self.nodes.running_tails() {
            if let Some(text) = tail.poll() {
                events.push(ViewEvent::Progress {
                    instance: self.p.instances[i].id.clone(),
                    text,
                });
            }
        }
        for e in events {
            self.view.event(e);
        }
    }
}
