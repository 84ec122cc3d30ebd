//! The first pass: files. Read the pipeline file and the chain of files it `extend`s into one
//! located tree (deep-merged, the extending file winning), then apply `--set NAME=VALUE`
//! overrides to its `params`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diagnostics::suggest;
use super::interp::{Ns, Template};
use super::loader::{io_reason, normalize, valid_ident, Loader};
use super::raw::RawPipeline;
use super::templates::contains_template;
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
        // A param that shadows an axis would silently remove the axis from every stage that
        // reads the param: `--matrix` is the way to change an axis.
        let axes = axis_names(entries);
        if !entries.iter().any(|e| e.key == "params") {
            if let Some(n) = new.iter().find(|n| axes.contains(&n.key)) {
                self.set_of_axis(n);
                return None;
            }
        }
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
            if axes.contains(&n.key) {
                self.set_of_axis(&n);
                ok = false;
                continue;
            }
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

impl Loader {
    /// `--set AXIS=...`: an axis is changed with `--matrix`.
    fn set_of_axis(&mut self, n: &Entry) {
        self.err(
            Some(n.key_loc),
            format!(
                "`--set {}`: `{}` is a matrix axis, not a param",
                n.key, n.key
            ),
            "params",
            Some(format!(
                "replace the axis's values with `--matrix {}={}` (several: `--matrix {}=V1,V2`)",
                n.key,
                super::loader::scalar_text(&n.value),
                n.key
            )),
        );
    }

    /// `--matrix AXIS=V1,V2` (or `AXIS=[V1,V2]`): replace the values of an axis of the
    /// pipeline's `matrix`. The values are parsed as a YAML document of their own (shown as
    /// `--matrix` in messages), so errors point at them.
    pub(super) fn apply_matrix_overrides(
        &mut self,
        root: &mut Node,
        overrides: &[String],
    ) -> Option<()> {
        let mut text = String::new();
        for o in overrides {
            match o.split_once('=') {
                Some((k, v)) if valid_ident(k.trim()) => {
                    let v = v.trim();
                    if v.starts_with('[') {
                        text.push_str(&format!("{}: {v}\n", k.trim()));
                    } else {
                        text.push_str(&format!("{}: [{v}]\n", k.trim()));
                    }
                }
                _ => {
                    self.err(
                        None,
                        format!("bad `--matrix {o}`"),
                        "",
                        Some("write `--matrix AXIS=V1,V2` with a matrix axis of the pipeline, e.g. `--matrix ratio=0.1,0.3`".into()),
                    );
                    return None;
                }
            }
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        let file = self.sources.files.len() as u32;
        self.sources.files.push(SourceFile::new(
            "--matrix".into(),
            cwd.join("--matrix"),
            text,
        ));
        let given = match yaml::parse(file, &self.sources) {
            Ok(n) => n,
            Err(errs) => {
                self.errors.extend(errs);
                return None;
            }
        };
        let (Value::Map(new), Value::Map(entries)) = (given.value, &mut root.value) else {
            return None;
        };
        let Some(Value::Map(matrix)) = entries
            .iter_mut()
            .find(|e| e.key == "matrix")
            .map(|e| &mut e.value.value)
        else {
            self.err(
                None,
                "`--matrix` replaces the values of a matrix axis, but the pipeline has no `matrix`",
                "matrix",
                Some("add a `matrix:` section, or leave `--matrix` out".into()),
            );
            return None;
        };
        let names: Vec<String> = matrix
            .iter()
            .filter(|a| a.key != "include" && a.key != "exclude")
            .map(|a| a.key.clone())
            .collect();
        let mut ok = true;
        for n in new {
            let found = matrix
                .iter_mut()
                .filter(|a| a.key != "include" && a.key != "exclude")
                .find(|a| a.key == n.key);
            match found {
                Some(a) => a.value = by_name(&a.value, n.value),
                None => {
                    let hint = suggest(&n.key, &names, "its axes are");
                    self.err(
                        Some(n.key_loc),
                        format!(
                            "`--matrix {}`: the pipeline has no matrix axis `{}`",
                            n.key, n.key
                        ),
                        "matrix",
                        hint,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(())
    }

    /// Matrix axes whose value is `${params.NAME}` take the values of that param, which must
    /// be a literal list (after `--set`).
    pub(super) fn params_into_axes(&mut self, root: &mut Node) {
        let Value::Map(entries) = &mut root.value else {
            return;
        };
        let params: Vec<Entry> = match entries.iter().find(|e| e.key == "params") {
            Some(Entry {
                value:
                    Node {
                        value: Value::Map(p),
                        ..
                    },
                ..
            }) => p.clone(),
            _ => Vec::new(),
        };
        let Some(Value::Map(matrix)) = entries
            .iter_mut()
            .find(|e| e.key == "matrix")
            .map(|e| &mut e.value.value)
        else {
            return;
        };
        for a in matrix
            .iter_mut()
            .filter(|a| a.key != "include" && a.key != "exclude")
        {
            let Value::Str(s) = &a.value.value else {
                continue;
            };
            let Ok(t) = Template::parse(s) else { continue };
            let Some(r) = t.whole_ref().filter(|r| r.ns == Ns::Params) else {
                continue;
            };
            let key = format!("matrix.{}", a.key);
            let name = r.path[0].clone();
            let Some(p) = params.iter().find(|p| p.key == name) else {
                let names: Vec<&str> = params.iter().map(|p| p.key.as_str()).collect();
                self.err(
                    Some(a.value.loc),
                    format!(
                        "matrix axis `{}` takes its values from an unknown param `{name}`",
                        a.key
                    ),
                    &key,
                    suggest(&name, &names, "the params are"),
                );
                continue;
            };
            let literal_list = matches!(&p.value.value, Value::Seq(items) if items.iter().all(|i| !contains_template(i)));
            if r.path.len() > 1 || !literal_list {
                self.err(
                    Some(a.value.loc),
                    format!(
                        "matrix axis `{}` takes its values from param `{name}`, which is {}, not a literal list",
                        a.key,
                        if matches!(&p.value.value, Value::Seq(_)) { "a list that uses `${...}`" } else { p.value.type_name() }
                    ),
                    &key,
                    Some(format!("write the values in the param, e.g. `{name}: [0.25, 0.5]`")),
                );
                continue;
            }
            a.value = p.value.clone();
        }
    }
}

/// `--matrix` values for an axis: a scalar that names one of the axis's map values (by its
/// `name` key, as instance ids do: `--matrix method=rand`) stands for that map; anything else
/// is taken as written.
fn by_name(old: &Node, new: Node) -> Node {
    let (Value::Seq(olds), Value::Seq(news)) = (&old.value, &new.value) else {
        return new;
    };
    let named = |n: &Node| -> Option<String> {
        let name = n.as_map()?.iter().find(|e| e.key == "name")?;
        Some(super::matrix::render_id_value(&name.value.to_json()))
    };
    let items = news
        .iter()
        .map(|v| {
            let wanted = match &v.value {
                Value::Map(_) | Value::Seq(_) | Value::Null => None,
                _ => Some(super::matrix::render_id_value(&v.to_json())),
            };
            wanted
                .and_then(|w| {
                    olds.iter()
                        .find(|o| named(o).as_deref() == Some(w.as_str()))
                })
                .cloned()
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    Node {
        value: Value::Seq(items),
        loc: new.loc,
    }
}

/// The axis names of a `matrix:` map (not `include` / `exclude`).
fn axis_names(entries: &[Entry]) -> Vec<String> {
    let matrix = entries.iter().find(|e| e.key == "matrix");
    match matrix.map(|e| &e.value.value) {
        Some(Value::Map(m)) => m
            .iter()
            .filter(|a| a.key != "include" && a.key != "exclude")
            .map(|a| a.key.clone())
            .collect(),
        _ => Vec::new(),
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
