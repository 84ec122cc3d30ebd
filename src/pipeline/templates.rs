//! Static checks of `${...}` templates, before any matrix cell is evaluated: syntax, names that
//! exist (params, axes, declared inputs and outputs), `${inputs.x}` / `${outputs.x}` only in a
//! `run:` command, a param never using another param; and which matrix axes a value depends on.

use std::collections::{BTreeMap, BTreeSet};

use super::diagnostics::suggest;
use super::interp::{Ns, Ref, Template};
use super::loader::Loader;
use super::sections::MatrixInfo;
use super::yaml::{Node, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `${inputs.x}` / `${outputs.x}` are errors.
    Value,
    /// A `run:` command: `${inputs.x}` / `${outputs.x}` stay for the executor.
    Command,
    /// A param's value: only `${matrix.x}`.
    Param,
}

/// What the templates of one value may name.
pub(super) struct Scope<'a> {
    pub mode: Mode,
    pub matrix: &'a MatrixInfo,
    pub params: &'a BTreeMap<String, &'a Node>,
    /// Declared inputs and outputs (for `run:` commands).
    pub inputs: &'a [String],
    pub outputs: &'a [String],
}

impl Loader {
    /// Parse every string below `n`, report syntax errors and unknown names, and add the matrix
    /// axes referenced (through params too) to `axes`. True when a reference goes to an axis
    /// that has errors of its own.
    pub(super) fn check_templates(
        &mut self,
        n: &Node,
        key: &str,
        scope: &Scope,
        axes: &mut BTreeSet<usize>,
    ) -> bool {
        match &n.value {
            Value::Str(s) if !Template::is_plain(s) => {
                let t = match Template::parse(s) {
                    Ok(t) => t,
                    Err(e) => {
                        let loc = self.sub_loc(n, e.offset, e.len);
                        self.err(Some(loc), e.message, key, e.hint);
                        return false;
                    }
                };
                let mut broken = false;
                for r in t.refs() {
                    broken |= self.check_ref(r, n, key, scope, axes);
                }
                broken
            }
            Value::Seq(v) => v.iter().enumerate().fold(false, |b, (i, it)| {
                self.check_templates(it, &format!("{key}[{i}]"), scope, axes) | b
            }),
            Value::Map(m) => m.iter().fold(false, |b, kv| {
                self.check_templates(&kv.value, &format!("{key}.{}", kv.key), scope, axes) | b
            }),
            _ => false,
        }
    }

    fn check_ref(
        &mut self,
        r: &Ref,
        n: &Node,
        key: &str,
        scope: &Scope,
        axes: &mut BTreeSet<usize>,
    ) -> bool {
        let first = &r.path[0];
        let names = scope.matrix.axis_names();
        match r.ns {
            Ns::Matrix => match names.iter().position(|a| a == first) {
                Some(i) => {
                    axes.insert(i);
                }
                None if scope.matrix.broken.contains(first) => return true,
                None => self.unknown_ref(r, n, key, "matrix axis", &names, "`matrix:`"),
            },
            Ns::Params if scope.mode == Mode::Param => {
                let loc = self.sub_loc(n, r.offset, r.len);
                self.err(
                    Some(loc),
                    format!("a param cannot use another param (`{}`)", r.text()),
                    key,
                    Some("params may use `${matrix.AXIS}`; write the value out".into()),
                );
            }
            Ns::Params => match scope.params.get(first) {
                Some(pn) => return collect_matrix_axes(pn, &names, axes),
                None => {
                    let pnames: Vec<&str> = scope.params.keys().map(String::as_str).collect();
                    self.unknown_ref(r, n, key, "param", &pnames, "`params:`");
                }
            },
            Ns::Inputs | Ns::Outputs if scope.mode != Mode::Command => {
                let loc = self.sub_loc(n, r.offset, r.len);
                self.err(
                    Some(loc),
                    format!("`{}` is only allowed in a `run:` command", r.text()),
                    key,
                    Some("built-in kinds get their inputs through `inputs:`; write `$${` for a literal `${`".into()),
                );
            }
            Ns::Inputs | Ns::Outputs => self.check_io_ref(r, n, key, scope),
        }
        false
    }

    /// A reference to a name the pipeline does not have (`what`: `param`, `matrix axis`; the
    /// names it has; the section that would declare one).
    fn unknown_ref<S: AsRef<str>>(
        &mut self,
        r: &Ref,
        n: &Node,
        key: &str,
        what: &str,
        names: &[S],
        section: &str,
    ) {
        let first = &r.path[0];
        let hint = if names.is_empty() {
            Some(format!("this pipeline has no {section}"))
        } else {
            let plural = if what == "param" { "params" } else { "axes" };
            suggest(first, names, &format!("the {plural} are"))
        };
        let loc = self.sub_loc(n, r.offset, r.len);
        let message = format!("unknown {what} `{first}` in `{}`", r.text());
        self.err(Some(loc), message, key, hint);
    }

    /// `${inputs.x}` / `${outputs.x}` in a command: a declared name, and no keys below it.
    fn check_io_ref(&mut self, r: &Ref, n: &Node, key: &str, scope: &Scope) {
        let first = &r.path[0];
        let (declared, what, section) = if r.ns == Ns::Inputs {
            (scope.inputs, "input", "inputs")
        } else {
            (scope.outputs, "output", "outputs")
        };
        let loc = self.sub_loc(n, r.offset, r.len);
        if r.path.len() > 1 {
            self.err(
                Some(loc),
                format!("`{}`: an {what} is a path, it has no keys", r.text()),
                key,
                Some(format!("write `${{{}.{first}}}`", r.ns.name())),
            );
        } else if !declared.iter().any(|d| d == first) {
            let hint = if declared.is_empty() {
                let example = if r.ns == Ns::Inputs {
                    format!("{{ {first}: STAGE.OUTPUT }}")
                } else {
                    format!("[{first}]")
                };
                Some(format!("declare it: `{section}: {example}`"))
            } else {
                suggest(first, declared, &format!("the declared {what}s are"))
            };
            self.err(
                Some(loc),
                format!("`{}` names an undeclared {what}", r.text()),
                key,
                hint,
            );
        }
    }
}

pub(super) fn contains_template(n: &Node) -> bool {
    match &n.value {
        Value::Str(s) => !Template::is_plain(s),
        Value::Seq(v) => v.iter().any(contains_template),
        Value::Map(m) => m.iter().any(|e| contains_template(&e.value)),
        _ => false,
    }
}

/// Adds the axes `n` references to `out`; true when it references an axis not in `names`.
fn collect_matrix_axes(n: &Node, names: &[String], out: &mut BTreeSet<usize>) -> bool {
    match &n.value {
        Value::Str(s) if !Template::is_plain(s) => {
            let mut unknown = false;
            if let Ok(t) = Template::parse(s) {
                for r in t.refs().filter(|r| r.ns == Ns::Matrix) {
                    match names.iter().position(|a| *a == r.path[0]) {
                        Some(i) => {
                            out.insert(i);
                        }
                        None => unknown = true,
                    }
                }
            }
            unknown
        }
        Value::Seq(v) => v
            .iter()
            .fold(false, |u, x| collect_matrix_axes(x, names, out) | u),
        Value::Map(m) => m
            .iter()
            .fold(false, |u, e| collect_matrix_axes(&e.value, names, out) | u),
        _ => false,
    }
}
