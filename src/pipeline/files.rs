//! The first pass: files. Read the pipeline file and the chain of files it `extend`s into one
//! located tree (deep-merged, the extending file winning), then apply `--set NAME=VALUE`
//! overrides to its `params`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diagnostics::suggest;
use super::loader::{io_reason, normalize, valid_ident, Loader};
use super::raw::RawPipeline;
use super::yaml::{self, Entry, Loc, Node, SourceFile, Value};

impl Loader {
    /// The merged tree of `path` and what it extends, or `None` after reporting why not.
    pub(super) fn read_tree(&mut self, path: &Path) -> Option<(Node, PathBuf)> {
        let abs = normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        let mut stack = Vec::new();
        let root = self.read_file(path.display().to_string(), abs.clone(), &mut stack, None)?;
        Some((root, abs))
    }

    fn read_file(
        &mut self,
        display: String,
        abs: PathBuf,
        stack: &mut Vec<(PathBuf, String)>,
        from: Option<Loc>,
    ) -> Option<Node> {
        if let Some(pos) = stack.iter().position(|(p, _)| *p == abs) {
            let mut chain: Vec<String> = stack[pos..].iter().map(|(_, d)| d.clone()).collect();
            chain.push(display.clone());
            self.err(
                from,
                format!("`extend` cycle: {}", chain.join(" -> ")),
                "extend",
                Some("a file cannot extend itself, directly or through others".into()),
            );
            return None;
        }
        let text = match std::fs::read_to_string(&abs) {
            Ok(t) => t,
            Err(e) => {
                let message = format!("cannot read `{display}`: {}", io_reason(&e));
                match from {
                    Some(loc) => self.err(
                        Some(loc),
                        message,
                        "extend",
                        Some("`extend` takes a path relative to the file that writes it, e.g. `./base.yaml`".into()),
                    ),
                    None => self.err(None, message, "", None),
                }
                return None;
            }
        };
        let file = self.sources.files.len() as u32;
        self.sources
            .files
            .push(SourceFile::new(display.clone(), abs.clone(), text));
        let root = match yaml::parse(file, &self.sources) {
            Ok(n) => n,
            Err(errs) => {
                self.errors.extend(errs);
                return None;
            }
        };
        let Value::Map(entries) = &root.value else {
            // Reading it as a pipeline reports the wrong shape in the format's own words.
            let mut errs = Vec::new();
            super::de::from_node::<RawPipeline>(&root, "", &mut errs);
            self.de_errors(errs);
            return None;
        };
        let Some(ext) = entries.iter().find(|e| e.key == "extend") else {
            return Some(root);
        };
        let Some(rel) = ext.value.as_str() else {
            self.err(
                Some(ext.value.loc),
                format!("`extend` must be a path, got {}", ext.value.type_name()),
                "extend",
                Some("e.g. `extend: ./base.yaml`".into()),
            );
            return None;
        };
        let base_display = if Path::new(rel).is_absolute() {
            rel.to_string()
        } else {
            let dir = Path::new(&display).parent().unwrap_or(Path::new(""));
            normalize(&dir.join(rel)).display().to_string()
        };
        let base_abs = normalize(&abs.parent().unwrap_or(Path::new("/")).join(rel));
        stack.push((abs, display));
        let base = self.read_file(base_display, base_abs, stack, Some(ext.value.loc));
        stack.pop();
        let mut merged = base?;
        let over: Vec<Entry> = entries
            .iter()
            .filter(|e| e.key != "extend")
            .cloned()
            .collect();
        merge_into(
            &mut merged,
            Node {
                value: Value::Map(over),
                loc: root.loc,
            },
        );
        Some(merged)
    }

    /// Replace `params` entries by `--set NAME=VALUE` overrides. The overrides are parsed as a
    /// YAML document of their own (shown as `--set` in messages), so errors point at them.
    pub(super) fn apply_overrides(&mut self, root: &mut Node, overrides: &[String]) -> Option<()> {
        let mut text = String::new();
        for o in overrides {
            match o.split_once('=') {
                Some((k, v)) if valid_ident(k.trim()) => {
                    text.push_str(&format!("{}: {}\n", k.trim(), v.trim()))
                }
                _ => {
                    self.err(
                        None,
                        format!("bad `--set {o}`"),
                        "",
                        Some("write `--set NAME=VALUE` with a param name of the pipeline, e.g. `--set ratio=0.25`".into()),
                    );
                    return None;
                }
            }
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        let file = self.sources.files.len() as u32;
        self.sources
            .files
            .push(SourceFile::new("--set".into(), cwd.join("--set"), text));
        let set = match yaml::parse(file, &self.sources) {
            Ok(n) => n,
            Err(errs) => {
                self.errors.extend(errs);
                return None;
            }
        };
        let (Value::Map(new), Value::Map(entries)) = (set.value, &mut root.value) else {
            return None;
        };
        let Some(params) = entries.iter_mut().find(|e| e.key == "params") else {
            self.err(
                None,
                "`--set` overrides params, but the pipeline has no `params`",
                "params",
                None,
            );
            return None;
        };
        let Value::Map(params) = &mut params.value.value else {
            return None;
        };
        let mut ok = true;
        for n in new {
            match params.iter_mut().find(|p| p.key == n.key) {
                Some(p) => p.value = n.value,
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.key.as_str()).collect();
                    let hint = suggest(&n.key, &names, "its params are");
                    self.err(
                        Some(n.key_loc),
                        format!("`--set {}`: the pipeline has no param `{}`", n.key, n.key),
                        "params",
                        hint,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(())
    }
}

/// Deep merge: maps merge key by key (the override wins; a `null` in the override removes the
/// key), anything else is replaced. Linear in the sizes of both maps.
fn merge_into(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(bm), Value::Map(om)) => {
            let mut at: HashMap<String, usize> = bm
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), i))
                .collect();
            // Dropped at the end, so that the positions in `at` stay valid.
            let mut removed = std::collections::HashSet::new();
            for oe in om {
                match at.get(&oe.key).copied() {
                    Some(i) if oe.value.is_null() => {
                        at.remove(&oe.key);
                        removed.insert(i);
                    }
                    Some(i) => {
                        bm[i].key_loc = oe.key_loc;
                        merge_into(&mut bm[i].value, oe.value);
                    }
                    None if oe.value.is_null() => {}
                    None => {
                        at.insert(oe.key.clone(), bm.len());
                        bm.push(oe);
                    }
                }
            }
            if !removed.is_empty() {
                let mut i = 0;
                bm.retain(|_| {
                    i += 1;
                    !removed.contains(&(i - 1))
                });
            }
            base.loc = over.loc;
        }
        (_, v) => {
            base.value = v;
            base.loc = over.loc;
        }
    }
}
