//! A gather input (`prune.kept[*]`, `prune.kept[method=diffprob]`, `verify.metrics[*]`): the same
//! output of many instances, given to a stage as one folder.
//!
//! The folder is a store tree made at launch: one entry per gathered instance,
//! `<entry>/<basename of the output>` (a folder output keeps its files below that), and
//! `index.json`, which names the gathered stage, its kind and its axes (in matrix order), and
//! lists each instance's axis values and its entry's relative path in matrix order. It holds
//! hardlinks of the gathered objects (nothing copied, nothing stored changes), read through a
//! view like any other input, and guarded like one. `metrics`, when the stage declares no output
//! of that name, gathers each instance's stored metrics.json as `<entry>/metrics.json`.
//!
//! Its fingerprint digest is the hash of [`listing`]: every gathered output's digest with its
//! entry and its stage's kind, so one changed instance changes it (and nothing else about the
//! gathering stage).

use std::path::PathBuf;

use serde::Serialize;

use crate::cache::{hash_bytes, Manifest, ObjKind, Store, TreeEntry, TreeObject};
use crate::pipeline::{Gathered, METRICS};

/// One gathered instance as the folder shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    #[serde(skip)]
    digest: Option<String>,
    #[serde(skip)]
    obj: ObjKind,
    /// Its stage's kind (`index.json` names it once, at the top).
    #[serde(skip)]
    kind: &'static str,
    /// Axis values (axis -> value name).
    pub cell: std::collections::BTreeMap<String, String>,
    /// Relative path of its entry in the folder; `None` when the instance did not produce
    /// that (optional) output.
    pub path: Option<String>,
}

/// The gathered items, or `None` while one of the instances has no result yet. A declared
/// output wins over the metrics.json that [`METRICS`] names otherwise (no built-in kind declares
/// an output of that name, and a `run:` stage's declared outputs are required).
pub fn listing(output: &str, from: &[Gathered], done: &[Option<Manifest>]) -> Option<Vec<Item>> {
    from.iter()
        .map(|g| {
            let m = done.get(g.instance)?.as_ref()?;
            let found = match m.outputs.get(output) {
                Some(o) => {
                    let base = match o.rel_path.rsplit('/').next() {
                        Some(b) if !b.is_empty() && b != "." => b,
                        _ => output,
                    };
                    Some((o.digest.clone(), o.kind, base))
                }
                None if output == METRICS => m
                    .metrics
                    .clone()
                    .map(|d| (d, ObjKind::File, "metrics.json")),
                None => None,
            };
            let (digest, obj, path) = match found {
                Some((d, obj, base)) => (Some(d), obj, Some(format!("{}/{base}", g.entry))),
                None => (None, ObjKind::File, None),
            };
            Some(Item {
                digest,
                obj,
                kind: g.kind,
                cell: crate::pipeline::cell_map(&g.cell),
                path,
            })
        })
        .collect()
}

/// The fingerprint digest of a gather: every entry with its object digest.
pub fn digest(items: &[Item]) -> String {
    let parts: Vec<_> = items
        .iter()
        .map(|i| (&i.path, &i.digest, &i.cell, i.kind))
        .collect();
    let bytes = serde_json::to_vec(&("gather", parts)).expect("a listing serializes");
    hash_bytes(&bytes)
}

/// What `index.json` says about the gathered stage: its name, kind and axes (matrix order).
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub stage: &'a str,
    pub output: &'a str,
    pub axes: &'a [String],
}

/// `index.json`: the gathered stage, its kind, its axes and output, and each item in matrix
/// order.
pub fn index_json(head: Head, items: &[Item]) -> Vec<u8> {
    let kind = items.first().map(|i| i.kind).unwrap_or("run");
    let mut bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "stage": head.stage,
        "kind": kind,
        "axes": head.axes,
        "output": head.output,
        "cells": items,
    }))
    .expect("an index serializes");
    bytes.push(b'\n');
    bytes
}

/// Store the gathered folder's tree (and its `index.json`) and give the read-only view the
/// stage reads, named `name`.
pub fn materialize(
    store: &Store,
    name: &str,
    head: Head,
    items: &[Item],
) -> crate::cache::Result<PathBuf> {
    let mut entries = Vec::new();
    let mut empty_dirs = Vec::new();
    for item in items {
        let (Some(path), Some(digest)) = (&item.path, &item.digest) else {
            continue;
        };
        match item.obj {
            ObjKind::File => entries.push(TreeEntry {
                path: path.clone(),
                digest: digest.clone(),
                mode: 0o644,
            }),
            ObjKind::Dir => {
                let tree = store.read_tree(digest)?;
                if tree.entries.is_empty() {
                    empty_dirs.push(path.clone());
                }
                empty_dirs.extend(tree.empty_dirs.iter().map(|d| format!("{path}/{d}")));
                entries.extend(tree.entries.into_iter().map(|e| TreeEntry {
                    path: format!("{path}/{}", e.path),
                    ..e
                }));
            }
        }
    }
    let index = index_json(head, items);
    let index_digest = hash_bytes(&index);
    if !store.has(&index_digest) {
        store.put_bytes(&index)?;
    }
    entries.push(TreeEntry {
        path: "index.json".into(),
        digest: index_digest,
        mode: 0o644,
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    empty_dirs.sort();
    let tree = TreeObject {
        tree: 1,
        entries,
        empty_dirs,
    };
    let bytes = tree.to_bytes();
    let digest = hash_bytes(&bytes);
    if !store.has(&digest) {
        store.put_bytes(&bytes)?;
    }
    store.view(&digest, ObjKind::Dir, name)
}
