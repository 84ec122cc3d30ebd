//! [`Nodes`]: the state of every instance, and what the loop asks of it each turn kept up to date
//! with every change, so that a turn costs what changed, not the size of the pipeline.
//!
//! A node changes only through [`Nodes::set`], which keeps four things in step with it: the
//! count of nodes in each state (the overall progress, "is anything active"), the set of running
//! nodes, the ready nodes in launch order, and per node how many of its upstreams are not done
//! yet or failed (so a gather over 5,000 cells is not re-checked against all of them each time
//! one commits). With 5,000 ready instances and two free slots, a
//! launch then looks at the first few ready nodes in order instead of sorting and hashing all of
//! them on every event (what made a cold 5,000-cell run grow faster than its work).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::Index;

use super::Node;
use crate::exec::view::ProgressTail;

/// A ready node's place in the launch order: the deepest first, then the longest remaining
/// path, then pipeline order.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadyKey {
    depth: usize,
    priority: f64,
    pub(super) index: usize,
}

impl Ord for ReadyKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .depth
            .cmp(&self.depth)
            .then(other.priority.total_cmp(&self.priority))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for ReadyKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ReadyKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ReadyKey {}

/// How many nodes are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub waiting: usize,
    pub ready: usize,
    pub running: usize,
    pub committing: usize,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
}

impl Counts {
    fn slot(&mut self, n: &Node) -> &mut usize {
        match n {
            Node::Waiting => &mut self.waiting,
            Node::Ready { .. } => &mut self.ready,
            Node::Running { .. } => &mut self.running,
            Node::Committing { .. } => &mut self.committing,
            Node::Done => &mut self.done,
            Node::Failed => &mut self.failed,
            Node::Skipped => &mut self.skipped,
            Node::Cancelled => &mut self.cancelled,
        }
    }
}

pub(super) struct Nodes {
    nodes: Vec<Node>,
    counts: Counts,
    running: BTreeSet<usize>,
    ready: BTreeSet<ReadyKey>,
    /// Ready nodes by fingerprint key (twins: instances that would do the same work).
    ready_by_key: HashMap<String, BTreeSet<usize>>,
    /// Per node, the nodes that read its outputs.
    downstream: Vec<Vec<usize>>,
    /// Per node, how many of its upstreams are not `Done`, and how many failed or were skipped.
    undone_up: Vec<usize>,
    broken_up: Vec<usize>,
    /// Per node, its depth and priority (see [`Nodes::rank`]); zero until ranked.
    depth: Vec<usize>,
    priority: Vec<f64>,
}

impl Index<usize> for Nodes {
    type Output = Node;
    fn index(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

/// Where a node's upstreams stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upstreams {
    Done,
    Waiting,
    /// One of them failed or was skipped.
    Broken,
}

impl Nodes {
    /// A waiting node per instance of `dag`.
    pub fn of(dag: &crate::dag::Dag) -> Nodes {
        let n = dag.len();
        Nodes::new(
            (0..n).map(|i| dag.upstream(i).len()).collect(),
            (0..n).map(|i| dag.downstream(i).to_vec()).collect(),
        )
    }

    /// Waiting nodes with these counts of (distinct) upstreams and lists of downstreams.
    pub fn new(upstreams: Vec<usize>, downstream: Vec<Vec<usize>>) -> Nodes {
        let n = upstreams.len();
        Nodes {
            downstream,
            undone_up: upstreams,
            broken_up: vec![0; n],
            nodes: (0..n).map(|_| Node::Waiting).collect(),
            counts: Counts {
                waiting: n,
                ..Counts::default()
            },
            running: BTreeSet::new(),
            ready: BTreeSet::new(),
            ready_by_key: HashMap::new(),
            depth: vec![0; n],
            priority: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Node> {
        self.nodes.iter()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Jobs started and not yet settled (running, or their outcome being recorded).
    pub fn active(&self) -> usize {
        self.counts.running + self.counts.committing
    }

    fn key(&self, i: usize) -> ReadyKey {
        ReadyKey {
            depth: self.depth[i],
            priority: self.priority[i],
            index: i,
        }
    }

    /// Put `node` in place of node `i` and return what was there.
    pub fn set(&mut self, i: usize, node: Node) -> Node {
        let old = std::mem::replace(&mut self.nodes[i], node);
        self.settled_upstream(i, &old);
        *self.counts.slot(&old) -= 1;
        *self.counts.slot(&self.nodes[i]) += 1;
        match &old {
            Node::Ready { key, .. } => {
                self.ready.remove(&self.key(i));
                if let Some(set) = self.ready_by_key.get_mut(key) {
                    set.remove(&i);
                    if set.is_empty() {
                        self.ready_by_key.remove(key);
                    }
                }
            }
            Node::Running { .. } => {
                self.running.remove(&i);
            }
            _ => {}
        }
        match &self.nodes[i] {
            Node::Ready { key, .. } => {
                self.ready.insert(self.key(i));
                self.ready_by_key.entry(key.clone()).or_default().insert(i);
            }
            Node::Running { .. } => {
                self.running.insert(i);
            }
            _ => {}
        }
        old
    }

    /// A node that has just become done, failed or skipped (these are final) counts so for
    /// its downstream nodes.
    fn settled_upstream(&mut self, i: usize, old: &Node) {
        let settled = |n: &Node| matches!(n, Node::Done | Node::Failed | Node::Skipped);
        if settled(old) || !settled(&self.nodes[i]) {
            return;
        }
        let done = matches!(self.nodes[i], Node::Done);
        for &d in &self.downstream[i] {
            self.undone_up[d] -= 1;
            if !done {
                self.broken_up[d] += 1;
            }
        }
    }

    /// Whether node `i`'s upstreams are all done, some still pending, or one broken.
    pub fn upstreams(&self, i: usize) -> Upstreams {
        if self.broken_up[i] > 0 {
            Upstreams::Broken
        } else if self.undone_up[i] > 0 {
            Upstreams::Waiting
        } else {
            Upstreams::Done
        }
    }

    /// The launch order from now on: per node its depth and priority.
    pub fn rank(&mut self, depth: Vec<usize>, priority: Vec<f64>) {
        self.depth = depth;
        self.priority = priority;
        self.ready = (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i], Node::Ready { .. }))
            .map(|i| self.key(i))
            .collect();
    }

    /// The first ready node in launch order after `after` (from the start when `None`). The set
    /// may change between calls: this is a cursor, not an iterator.
    pub fn next_ready(&self, after: Option<ReadyKey>) -> Option<ReadyKey> {
        match after {
            None => self.ready.first().copied(),
            Some(k) => self
                .ready
                .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    /// Ready nodes, in launch order.
    #[cfg(test)]
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        self.ready.iter().map(|k| k.index)
    }

    /// Ready nodes whose fingerprint key is `key`, in pipeline order.
    pub fn ready_with_key(&self, key: &str) -> Vec<usize> {
        self.ready_by_key
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Running nodes, in pipeline order.
    pub fn running(&self) -> Vec<usize> {
        self.running.iter().copied().collect()
    }

    /// Mark a running node as cancelled by this run (its end is then not a failure).
    pub fn mark_cancelled(&mut self, i: usize) {
        if let Node::Running { cancelled, .. } = &mut self.nodes[i] {
            *cancelled = true;
        }
    }

    /// The progress file of each running node.
    pub fn running_tails(&mut self) -> impl Iterator<Item = (usize, &mut ProgressTail)> + '_ {
        let nodes = &mut self.nodes;
        nodes.iter_mut().enumerate().filter_map(|(i, n)| match n {
            Node::Running { tail, .. } => Some((i, tail)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_knows_when_its_upstreams_are_done_or_broken() {
        // 0 -> 2 <- 1, 2 -> 3
        let mut n = Nodes::new(vec![0, 0, 2, 1], vec![vec![2], vec![2], vec![3], vec![]]);
        assert_eq!(n.upstreams(2), Upstreams::Waiting);
        n.set(0, Node::Done);
        assert_eq!(n.upstreams(2), Upstreams::Waiting);
        n.set(1, Node::Done);
        assert_eq!(n.upstreams(2), Upstreams::Done);
        assert_eq!(n.upstreams(3), Upstreams::Waiting);
        n.set(2, Node::Skipped);
        assert_eq!(n.upstreams(3), Upstreams::Broken);
        // Settled nodes are final: setting one again counts nothing twice.
        n.set(2, Node::Skipped);
        assert_eq!((n.undone_up[3], n.broken_up[3]), (0, 1));
    }

    fn ready() -> Node {
        Node::Ready {
            fp: crate::fingerprint::Fingerprint {
                version: 1,
                kind: "run".into(),
                kind_version: 0,
                params: serde_json::Value::Null,
                command: String::new(),
                env: Default::default(),
                outputs: Default::default(),
                inputs: Default::default(),
                locations: Default::default(),
            },
            key: String::new(),
            attempt: 1,
        }
    }

    #[test]
    fn counts_and_launch_order_follow_every_change() {
        let mut n = Nodes::new(vec![0; 4], vec![Vec::new(); 4]);
        for i in 0..4 {
            n.set(i, ready());
        }
        n.rank(vec![0, 1, 1, 0], vec![5.0, 1.0, 2.0, 9.0]);
        // Deepest first, then the higher priority, then pipeline order.
        assert_eq!(n.ready().collect::<Vec<_>>(), vec![2, 1, 3, 0]);
        let first = n.next_ready(None).unwrap();
        assert_eq!(first.index, 2);
        n.set(
            2,
            Node::Committing {
                attempt: 1,
                log: Default::default(),
                accounting: None,
            },
        );
        // The cursor survives the removal of the node it points at.
        assert_eq!(n.next_ready(Some(first)).unwrap().index, 1);
        n.set(1, Node::Done);
        n.set(0, Node::Failed);
        let c = n.counts();
        assert_eq!((c.ready, c.committing, c.done, c.failed), (1, 1, 1, 1));
        assert_eq!(n.active(), 1);
        assert_eq!(n.ready().collect::<Vec<_>>(), vec![3]);
        assert_eq!(n.ready_with_key(""), vec![3]);
        assert!(n.ready_with_key("other").is_empty());
        n.set(2, Node::Done);
        assert_eq!(n.active(), 0);
        assert_eq!(c.waiting + c.ready + c.committing + c.done + c.failed, 4);
    }
}
