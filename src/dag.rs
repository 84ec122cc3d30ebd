//! [`Dag`]: the one graph of an expanded [`Pipeline`], built once with petgraph (node `i` is
//! instance `i`, an edge `u -> v` means `v` reads an output of `u`) and used by everything that
//! needs dependencies: `plan` (what waits on what), the scheduler (readiness and its
//! longest-remaining-path priorities, [`Dag::critical_path_lengths`]) and the renderings of
//! `orchestrator dag`. Also the cycle search with the full path ([`find_cycle`]) the loader uses
//! on the stage graph before instances exist.

use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::pipeline::{Input, Pipeline};

/// The instance graph of a pipeline plus, per instance, its upstream and downstream instances
/// (deduplicated; upstream in input-name order, downstream in index order).
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<usize, String>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    order: Vec<usize>,
}

impl Dag {
    pub fn new(p: &Pipeline) -> Dag {
        let n = p.instances.len();
        let mut graph = DiGraph::with_capacity(n, n * 2);
        for i in 0..n {
            graph.add_node(i);
        }
        for (i, inst) in p.instances.iter().enumerate() {
            for (name, input) in &inst.inputs {
                for instance in input.upstreams() {
                    graph.add_edge(NodeIndex::new(instance), NodeIndex::new(i), name.clone());
                }
            }
        }
        let mut upstream = vec![Vec::new(); n];
        let mut downstream = vec![Vec::new(); n];
        for i in 0..n {
            let node = NodeIndex::new(i);
            // Upstream in input-name order (as the pipeline lists them), each instance once.
            let mut ins: Vec<(&str, usize)> = graph
                .edges_directed(node, Direction::Incoming)
                .map(|e| (e.weight().as_str(), e.source().index()))
                .collect();
            ins.sort_unstable();
            // Each upstream once, in the order of its first input (a set: a gather has
            // thousands).
            let mut seen = std::collections::HashSet::with_capacity(ins.len());
            upstream[i] = ins
                .into_iter()
                .map(|(_, u)| u)
                .filter(|u| seen.insert(*u))
                .collect();
            let mut outs: Vec<usize> = graph
                .neighbors_directed(node, Direction::Outgoing)
                .map(|x| x.index())
                .collect();
            outs.sort_unstable();
            outs.dedup();
            downstream[i] = outs;
        }
        // The loader rejects cycles and stores instances in a topological order; petgraph's own
        // order is used when it agrees that there is one.
        let order = petgraph::algo::toposort(&graph, None)
            .map(|v| v.into_iter().map(|x| x.index()).collect())
            .unwrap_or_else(|_| (0..n).collect());
        Dag {
            graph,
            upstream,
            downstream,
            order,
        }
    }

    pub fn len(&self) -> usize {
        self.upstream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty()
    }

    /// The petgraph graph (node weight: instance index; edge weight: the reading input's name).
    pub fn graph(&self) -> &DiGraph<usize, String> {
        &self.graph
    }

    /// The instances `i` reads an output of.
    pub fn upstream(&self, i: usize) -> &[usize] {
        &self.upstream[i]
    }

    /// The instances that read an output of `i`.
    pub fn downstream(&self, i: usize) -> &[usize] {
        &self.downstream[i]
    }

    /// Every instance, each after all of its upstreams.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// For each instance, its own weight plus the heaviest chain of dependents below it: the
    /// length of the longest path from it to the end of the run. Ready stages with the largest
    /// value go first, which keeps a sweep's makespan short.
    pub fn critical_path_lengths(&self, weight: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut len = vec![0.0; self.len()];
        for &i in self.order.iter().rev() {
            let tail = self.downstream[i]
                .iter()
                .map(|&j| len[j])
                .fold(0.0, f64::max);
            len[i] = weight(i) + tail;
        }
        len
    }

    /// For each instance, the number of stages on the longest chain of upstreams above it (0 for
    /// an instance that reads no other instance). The scheduler runs deeper ready instances
    /// first: they continue work already done, so matrix cells finish early.
    pub fn depths(&self) -> Vec<usize> {
        let mut depth = vec![0; self.len()];
        for &i in &self.order {
            depth[i] = self.upstream[i]
                .iter()
                .map(|&u| depth[u] + 1)
                .max()
                .unwrap_or(0);
        }
        depth
    }
}

/// A topological order of the instances (the loader already stores them in one; this checks
/// the graph agrees).
pub fn topological_order(p: &Pipeline) -> Result<Vec<usize>, Vec<usize>> {
    let dag = Dag::new(p);
    petgraph::algo::toposort(dag.graph(), None)
        .map(|v| v.into_iter().map(|n| n.index()).collect())
        .map_err(|c| vec![c.node_id().index()])
}

/// A cycle in a graph given as `adj[i]` = the nodes `i` points to, as the list of its nodes
/// starting at the smallest index (`[a, b]` is `a -> b -> a`), or `None`.
pub fn find_cycle(adj: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let n = adj.len();
    let mut color = vec![Color::White; n];
    for start in 0..n {
        if color[start] != Color::White {
            continue;
        }
        // Iterative DFS: (node, next edge index); the stack is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = Color::Grey;
        while let Some(&mut (v, ref mut ei)) = stack.last_mut() {
            if *ei < adj[v].len() {
                let w = adj[v][*ei];
                *ei += 1;
                match color.get(w).copied() {
                    Some(Color::White) => {
                        color[w] = Color::Grey;
                        stack.push((w, 0));
                    }
                    Some(Color::Grey) => {
                        let pos = stack.iter().position(|(x, _)| *x == w).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(x, _)| *x).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, x)| **x)
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(min);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[v] = Color::Black;
                stack.pop();
            }
        }
    }
    None
}

/// Output formats of `orchestrator dag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Mermaid,
    Json,
}

pub fn render(p: &Pipeline, format: Format) -> String {
    let dag = Dag::new(p);
    match format {
        Format::Text => render_text(p, &dag),
        Format::Dot => render_dot(p),
        Format::Mermaid => render_mermaid(p),
        Format::Json => serde_json::to_string_pretty(&to_json(p)).unwrap_or_default() + "\n",
    }
}

fn upstream_edges(p: &Pipeline, i: usize) -> Vec<(usize, &str, &str)> {
    p.instances[i]
        .inputs
        .iter()
        .flat_map(|(name, input)| match input {
            Input::Upstream { instance, output } => {
                vec![(*instance, name.as_str(), output.as_str())]
            }
            Input::Gather { output, from } => from
                .iter()
                .map(|g| (g.instance, name.as_str(), output.as_str()))
                .collect(),
            Input::External { .. } => vec![],
        })
        .collect()
}

fn render_text(p: &Pipeline, dag: &Dag) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: {} stage instances", p.name, p.instances.len());
    for (i, inst) in p.instances.iter().enumerate() {
        let ups: Vec<&str> = dag
            .upstream(i)
            .iter()
            .map(|u| p.instances[*u].id.as_str())
            .collect();
        if ups.is_empty() {
            let _ = writeln!(s, "{}", inst.id);
        } else {
            let _ = writeln!(s, "{} <- {}", inst.id, ups.join(", "));
        }
    }
    s
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn render_dot(p: &Pipeline) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", dot_quote(&p.name));
    let _ = writeln!(s, "  rankdir=LR;");
    let _ = writeln!(s, "  node [shape=box];");
    for (i, inst) in p.instances.iter().enumerate() {
        let _ = writeln!(s, "  n{i} [label={}];", dot_quote(&inst.id));
    }
    for i in 0..p.instances.len() {
        for (u, input, output) in upstream_edges(p, i) {
            let label = if input == output {
                input.to_string()
            } else {
                format!("{output} -> {input}")
            };
            let _ = writeln!(s, "  n{u} -> n{i} [label={}];", dot_quote(&label));
        }
    }
    s.push_str("}\n");
    s
}

fn mermaid_label(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "#quot;"))
}

fn render_mermaid(p: &Pipeline) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, inst) in p.instances.iter().enumerate() {
        let _ = writeln!(s, "  n{i}[{}]", mermaid_label(&inst.id));
    }
    for i in 0..p.instances.len() {
        for (u, input, output) in upstream_edges(p, i) {
            let label = if input == output {
                input.to_string()
            } else {
                format!("{output} -> {input}")
            };
            let _ = writeln!(s, "  n{u} -->|{}| n{i}", mermaid_label(&label));
        }
    }
    s
}

/// `{ name, axes, instances: [{ id, stage, cell, deps: [{ id, input, output }] }] }`.
pub fn to_json(p: &Pipeline) -> serde_json::Value {
    let instances: Vec<serde_json::Value> = p
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let deps: Vec<serde_json::Value> =
                upstream_edges(p, i).into_iter().map(|(u, input, output)| serde_json::json!({"id": p.instances[u].id, "input": input, "output": output})).collect();
            serde_json::json!({"id": inst.id, "stage": inst.stage, "cell": crate::pipeline::cell_map(&inst.cell), "deps": deps})
        })
        .collect();
    serde_json::json!({"name": p.name, "axes": p.matrix_axes, "instances": instances})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_with_their_path() {
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
        assert_eq!(
            find_cycle(&[vec![1], vec![2], vec![0]]),
            Some(vec![0, 1, 2])
        );
        assert_eq!(find_cycle(&[vec![], vec![2], vec![1]]), Some(vec![1, 2]));
        assert_eq!(find_cycle(&[vec![0]]), Some(vec![0]));
        // The cycle is rotated to start at its smallest node.
        assert!(find_cycle(&[vec![], vec![], vec![3], vec![1], vec![]]).is_none());
        assert_eq!(
            find_cycle(&[vec![3], vec![2], vec![0], vec![1]]),
            Some(vec![0, 3, 1, 2])
        );
    }
}
