//! Graph views of an expanded [`Pipeline`]: the petgraph [`graph`] of stage instances (edges
//! from input references), cycle search with the full path ([`find_cycle`]), the
//! longest-remaining-path priority the scheduler orders ready stages by
//! ([`critical_path_lengths`]), and the renderings of `orchestrator dag`.

use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::pipeline::{Input, Pipeline};

/// Node `i` is instance `i`; an edge `u -> v` (weight: `v`'s input name) means `v` reads an
/// output of `u`.
pub fn graph(p: &Pipeline) -> DiGraph<usize, String> {
    let mut g = DiGraph::with_capacity(p.instances.len(), p.instances.len() * 2);
    for i in 0..p.instances.len() {
        g.add_node(i);
    }
    for (i, inst) in p.instances.iter().enumerate() {
        for (name, input) in &inst.inputs {
            if let Input::Upstream { instance, .. } = input {
                g.add_edge(NodeIndex::new(*instance), NodeIndex::new(i), name.clone());
            }
        }
    }
    g
}

/// A topological order of the instances (the loader already stores them in one; this checks
/// the graph agrees and is what code that builds its own graphs should use).
pub fn topological_order(p: &Pipeline) -> Result<Vec<usize>, Vec<usize>> {
    let g = graph(p);
    petgraph::algo::toposort(&g, None)
        .map(|v| v.into_iter().map(|n| n.index()).collect())
        .map_err(|c| vec![c.node_id().index()])
}

/// Indices of the instances that read an output of each instance.
pub fn dependents(p: &Pipeline) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); p.instances.len()];
    for (i, inst) in p.instances.iter().enumerate() {
        for input in inst.inputs.values() {
            if let Input::Upstream { instance, .. } = input {
                if !out[*instance].contains(&i) {
                    out[*instance].push(i);
                }
            }
        }
    }
    out
}

/// Upstream instance indices of each instance (deduplicated, in input-name order).
pub fn dependencies(p: &Pipeline) -> Vec<Vec<usize>> {
    p.instances
        .iter()
        .map(|inst| {
            let mut v: Vec<usize> = Vec::new();
            for input in inst.inputs.values() {
                if let Input::Upstream { instance, .. } = input {
                    if !v.contains(instance) {
                        v.push(*instance);
                    }
                }
            }
            v
        })
        .collect()
}

/// For each instance, its own weight plus the heaviest chain of dependents below it: the
/// length of the longest path from it to the end of the run. Ready stages with the largest value
/// go first, which keeps a sweep's makespan short.
pub fn critical_path_lengths(p: &Pipeline, weights: &dyn Fn(usize) -> f64) -> Vec<f64> {
    let deps = dependents(p);
    let mut len = vec![0.0; p.instances.len()];
    // Instances are topologically ordered, so every dependent comes later.
    for i in (0..p.instances.len()).rev() {
        let tail = deps[i].iter().map(|j| len[*j]).fold(0.0, f64::max);
        len[i] = weights(i) + tail;
    }
    len
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
    match format {
        Format::Text => render_text(p),
        Format::Dot => render_dot(p),
        Format::Mermaid => render_mermaid(p),
        Format::Json => serde_json::to_string_pretty(&to_json(p)).unwrap_or_default() + "\n",
    }
}

fn upstream_edges(p: &Pipeline, i: usize) -> Vec<(usize, &str, &str)> {
    p.instances[i]
        .inputs
        .iter()
        .filter_map(|(name, input)| match input {
            Input::Upstream { instance, output } => {
                Some((*instance, name.as_str(), output.as_str()))
            }
            Input::External { .. } => None,
        })
        .collect()
}

fn render_text(p: &Pipeline) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: {} stage instances", p.name, p.instances.len());
    let deps = dependencies(p);
    for (i, inst) in p.instances.iter().enumerate() {
        let ups: Vec<&str> = deps[i]
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
            serde_json::json!({"id": inst.id, "stage": inst.stage, "cell": inst.cell, "deps": deps})
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
