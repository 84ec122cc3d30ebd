//! [`Loader`]: the state the passes share while one pipeline is loaded — the source files and
//! every error found so far — and the small helpers they all use (reporting an error at a
//! place, the place of part of a string, name checks).

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde_json::Value as J;

use super::de::DeError;
use super::diagnostics::{Diagnostic, Diagnostics};
use super::interp;
use super::yaml::{Loc, Node, Sources, Value};

#[derive(Default)]
pub(super) struct Loader {
    pub sources: Sources,
    pub errors: Vec<Diagnostic>,
    /// (position, message) of errors already reported: a stage evaluated in many cells reports
    /// each distinct problem once.
    seen: HashSet<(u32, u32, u32, String)>,
    /// External input paths checked for symlink loops (true: none).
    pub checked_inputs: HashMap<PathBuf, bool>,
    /// Look for symlink loops inside folder inputs too (see `LoadOptions::walk_inputs`).
    pub walk_inputs: bool,
    /// Templates parsed so far, by their text: a stage's strings are evaluated once per cell,
    /// parsed once (`None`: not a valid template, reported by the static checks).
    pub templates: HashMap<String, Option<std::rc::Rc<interp::Template>>>,
}

impl Loader {
    pub fn new(walk_inputs: bool) -> Loader {
        Loader {
            walk_inputs,
            ..Loader::default()
        }
    }

    /// `s` parsed as a template, once per distinct text.
    pub fn template(&mut self, s: &str) -> Option<std::rc::Rc<interp::Template>> {
        if let Some(t) = self.templates.get(s) {
            return t.clone();
        }
        let t = interp::Template::parse(s).ok().map(std::rc::Rc::new);
        self.templates.insert(s.to_string(), t.clone());
        t
    }

    /// The errors sorted by file (the pipeline first, then what it extends) and position.
    pub fn into_diagnostics(mut self, display: String) -> Diagnostics {
        let mut items = std::mem::take(&mut self.errors);
        if items.is_empty() {
            items.push(Diagnostic::new("the pipeline could not be loaded"));
        }
        let rank = |file: &str| {
            self.sources
                .files
                .iter()
                .position(|f| f.display == file)
                .unwrap_or(usize::MAX)
        };
        items.sort_by_cached_key(|d| {
            d.span
                .as_ref()
                .map(|s| (rank(&s.file), s.line, s.col))
                .unwrap_or((usize::MAX, 0, 0))
        });
        Diagnostics {
            file: display,
            items,
        }
    }

    pub fn err(
        &mut self,
        loc: Option<Loc>,
        message: impl Into<String>,
        key: &str,
        hint: Option<String>,
    ) {
        self.push(loc, message.into(), key, hint, None);
    }

    /// An error that happens in one matrix cell: `note` names the cell.
    pub fn err_note(
        &mut self,
        loc: Loc,
        message: impl Into<String>,
        key: &str,
        hint: Option<String>,
        note: Option<String>,
    ) {
        self.push(Some(loc), message.into(), key, hint, note);
    }

    fn push(
        &mut self,
        loc: Option<Loc>,
        message: String,
        key: &str,
        hint: Option<String>,
        note: Option<String>,
    ) {
        if let Some(l) = loc {
            if !self.seen.insert((l.file, l.line, l.col, message.clone())) {
                return;
            }
        }
        let mut d = Diagnostic::new(message)
            .at(loc.and_then(|l| self.sources.span(l)))
            .key(key)
            .hint_opt(hint);
        if let Some(n) = note {
            d = d.note(n);
        }
        self.errors.push(d);
    }

    /// Record what reading the raw structs found.
    pub fn de_errors(&mut self, errors: Vec<DeError>) {
        for e in errors {
            let d = super::raw::render(&e, &self.sources);
            self.push(Some(e.loc), d.message, &e.path, d.hint, None);
        }
    }

    /// The location of chars `offset..offset+len` of the string scalar `n`, when it sits on one
    /// line; else the scalar itself.
    pub fn sub_loc(&self, n: &Node, offset: usize, len: usize) -> Loc {
        let Some(f) = self.sources.files.get(n.loc.file as usize) else {
            return n.loc;
        };
        let line = f.line(n.loc.line);
        let first = line.chars().nth(n.loc.col.saturating_sub(1) as usize);
        let quote = matches!(first, Some('"') | Some('\'')) as usize;
        let s = n.as_str().unwrap_or("");
        let fits = (n.loc.len as usize) >= s.chars().count()
            && !s.contains('\n')
            && (quote == 0 || !line.contains('\\'));
        if !fits {
            return n.loc;
        }
        Loc {
            file: n.loc.file,
            line: n.loc.line,
            col: n.loc.col + (quote + offset) as u32,
            len: len as u32,
        }
    }
}

pub(super) fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// A value as the user wrote it, for messages.
pub(super) fn scalar_text(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => s.clone(),
        Value::Map(_) | Value::Seq(_) => n.to_json().to_string(),
        Value::Null => String::new(),
        _ => interp::render(&n.to_json()),
    }
}

pub(super) fn json_type(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "a list",
        J::Object(_) => "a map",
    }
}

pub(super) fn show(v: &J) -> String {
    match v {
        J::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// `a/./b/../c` -> `a/c`, without touching the file system (symlinks are the user's business).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let at_root = out.has_root() && out.parent().is_none();
                if !at_root && !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
