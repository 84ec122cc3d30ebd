//! [`Node`]: a YAML document as a tree whose every value and key knows its `file:line:col`.
//!
//! serde_yaml keeps no per-key locations, so pipeline files are read with yaml-rust2's event
//! parser into this tree; the loader walks it to report errors at the exact key, and converts
//! subtrees to `serde_json::Value` where serde does the typing (a kind's `with:`). Scalars are
//! typed with the YAML 1.2 core schema (quoted scalars are always strings). Duplicate keys are
//! errors (YAML forbids them; silently keeping one would hide a misspelt stage).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostics::{Diagnostic, Span};

/// A loaded source file (index = `Loc::file`).
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// As the user named it (for messages).
    pub display: String,
    /// Absolute, lexically normalised (for resolving relative paths written in it).
    pub abs: std::path::PathBuf,
    pub text: String,
    /// Byte offset of the start of each line, so that a line is found in O(1) (messages and
    /// positions are computed for every stage; scanning the text each time was quadratic).
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(display: String, abs: std::path::PathBuf, text: String) -> SourceFile {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            display,
            abs,
            text,
            line_starts,
        }
    }

    /// Line `n` (1-based) without its line break; empty past the end.
    pub fn line(&self, n: u32) -> &str {
        let i = n.saturating_sub(1) as usize;
        let Some(&start) = self.line_starts.get(i) else {
            return "";
        };
        let end = self
            .line_starts
            .get(i + 1)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches('\r')
    }

    /// Byte offset where line `n` (1-based) starts.
    fn line_start(&self, n: u32) -> usize {
        self.line_starts
            .get(n.saturating_sub(1) as usize)
            .copied()
            .unwrap_or(self.text.len())
    }
}

/// All files read for one pipeline (the file and what it `extend`s).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    /// The span that renders `loc`.
    pub fn span(&self, loc: Loc) -> Option<Span> {
        let f = self.files.get(loc.file as usize)?;
        let source_line = f.line(loc.line).to_string();
        let avail = source_line
            .chars()
            .count()
            .saturating_sub(loc.col.saturating_sub(1) as usize);
        let len = (loc.len as usize).min(avail).max(1);
        Some(Span {
            file: f.display.clone(),
            line: loc.line as usize,
            col: loc.col as usize,
            len,
            source_line,
        })
    }

    pub fn display(&self, file: u32) -> &str {
        self.files
            .get(file as usize)
            .map(|f| f.display.as_str())
            .unwrap_or("?")
    }

    /// `file:line:col` of `loc`.
    pub fn position(&self, loc: Loc) -> String {
        format!("{}:{}:{}", self.display(loc.file), loc.line, loc.col)
    }
}

/// A place in a source file. `line` and `col` are 1-based (`col` in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub file: u32,
    pub line: u32,
    pub col: u32,
    /// Characters to underline.
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Node,
}

impl Node {
    pub fn null(loc: Loc) -> Node {
        Node {
            value: Value::Null,
            loc,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }
    /// What the value is, for "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The JSON form (maps keep file order, as `serde_json` with `preserve_order` is off they
    /// are sorted, which is what the canonical fingerprint encoding wants anyway).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(v) => J::Array(v.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node at a dotted / indexed path below this one (`a.b[2].c`), or the deepest existing
    /// ancestor and whether the whole path was found.
    pub fn find_path(&self, path: &str) -> (&Node, Option<&Entry>, bool) {
        let mut cur = self;
        let mut entry = None;
        for seg in split_path(path) {
            match (seg, &cur.value) {
                (PathSeg::Key(k), Value::Map(m)) => match m.iter().find(|e| e.key == k) {
                    Some(e) => {
                        entry = Some(e);
                        cur = &e.value;
                    }
                    None => return (cur, entry, false),
                },
                (PathSeg::Index(i), Value::Seq(v)) => match v.get(i) {
                    Some(n) => {
                        entry = None;
                        cur = n;
                    }
                    None => return (cur, entry, false),
                },
                _ => return (cur, entry, false),
            }
        }
        (cur, entry, true)
    }
}

enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<PathSeg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(PathSeg::Key(&rest[..b]));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(i) = stripped[..end].parse() {
                    out.push(PathSeg::Index(i));
                }
                rest = &stripped[end + 1..];
            }
        } else {
            out.push(PathSeg::Key(rest));
        }
    }
    out
}

/// Parse file `file` of `sources` into a tree. Syntax errors end the parse (the rest of the
/// file cannot be trusted); duplicate and non-scalar keys are collected and the parse goes on.
/// Linear in the size of the file: keys are checked for duplicates through a hash set, and
/// scalar widths are measured from a cursor that moves forward through the text.
pub fn parse(file: u32, sources: &Sources) -> Result<Node, Vec<Diagnostic>> {
    let Some(src) = sources.files.get(file as usize) else {
        return Err(vec![Diagnostic::new("internal: no such source file")]);
    };
    let mut b = Builder {
        file,
        stack: Vec::new(),
        root: None,
        anchors: Default::default(),
        errors: Vec::new(),
        sources,
        src,
        cursor: (0, 0),
    };
    let mut parser = Parser::new_from_str(&src.text);
    if let Err(e) = parser.load(&mut b, false) {
        let m = e.marker();
        let loc = Loc {
            file,
            line: m.line() as u32,
            col: m.col() as u32 + 1,
            len: 1,
        };
        let mut errs = b.errors;
        let line = src
            .text
            .lines()
            .nth(m.line().saturating_sub(1))
            .unwrap_or("");
        let hint = unquoted_bracket(line, m.col()).map(|r| {
            format!("inside `{{ ... }}` a reference with `[` must be quoted: write `\"{r}\"` (or use block style: one `key: value` per line)")
        });
        errs.push(
            Diagnostic::new(format!("invalid YAML: {}", e.info()))
                .at(sources.span(loc))
                .hint_opt(hint),
        );
        return Err(errs);
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    Ok(b.root.unwrap_or(Node::null(Loc {
        file,
        line: 1,
        col: 1,
        len: 1,
    })))
}

/// The reference (`prune.kept[*]`, `prune[method=rand].kept`) written unquoted in flow style
/// whose `[` at char `col` (0-based) of `line` stopped the YAML parser, if that is what it is.
fn unquoted_bracket(line: &str, col: usize) -> Option<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.get(col) != Some(&'[') {
        return None;
    }
    let word = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let start = chars[..col]
        .iter()
        .rposition(|c| !word(c))
        .map_or(0, |p| p + 1);
    if start == col {
        return None;
    }
    let close = col + chars[col..].iter().position(|c| *c == ']')?;
    let end = close + 1 + chars[close + 1..].iter().take_while(|c| word(c)).count();
    Some(chars[start..end].iter().collect())
}

enum Frame {
    Seq(Node, Vec<Node>, usize),
    Map(MapFrame),
}

struct MapFrame {
    node: Node,
    entries: Vec<Entry>,
    /// The key read last, waiting for its value (`None` when it was a duplicate or bad key:
    /// that value is dropped).
    pending: Option<Option<(String, Loc)>>,
    anchor: usize,
    /// Keys seen so far -> their position (duplicate check in O(1)).
    seen: std::collections::HashMap<String, Loc>,
}

struct Builder<'a> {
    file: u32,
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: std::collections::HashMap<usize, Node>,
    errors: Vec<Diagnostic>,
    sources: &'a Sources,
    src: &'a SourceFile,
    /// (char index, byte offset) of the last scalar start: markers arrive in document order,
    /// so converting a marker's char index to a byte offset costs what lies in between.
    cursor: (usize, usize),
}

impl Builder<'_> {
    fn loc(&self, m: Marker, len: usize) -> Loc {
        Loc {
            file: self.file,
            line: m.line() as u32,
            col: m.col() as u32 + 1,
            len: len as u32,
        }
    }

    /// Byte offset of the marker `m` in the text.
    fn byte_offset(&mut self, m: Marker) -> usize {
        let text = &self.src.text;
        let (ci, bi) = if m.index() >= self.cursor.0 {
            self.cursor
        } else {
            // Rare (a marker before the previous one): restart from its line.
            let start = self.src.line_start(m.line() as u32);
            (m.index().saturating_sub(m.col()), start)
        };
        let b = text[bi..]
            .char_indices()
            .nth(m.index() - ci)
            .map(|(o, _)| bi + o)
            .unwrap_or(text.len());
        self.cursor = (m.index(), b);
        b
    }

    /// Characters to underline for a scalar starting at `m`: a plain scalar's text (up to the
    /// end of its line), a quoted one up to its closing quote on the same line.
    fn scalar_len(&mut self, m: Marker, s: &str, style: TScalarStyle) -> usize {
        let at = self.byte_offset(m);
        let rest = self.src.text[at.min(self.src.text.len())..]
            .split('\n')
            .next()
            .unwrap_or("")
            .trim_end_matches('\r');
        match style {
            TScalarStyle::Plain => {
                let n = s.chars().count();
                rest.chars().take(n).count()
            }
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                let mut it = rest.chars();
                let q = it.next().unwrap_or('"');
                let mut len = 1;
                for c in it {
                    len += 1;
                    if c == q {
                        return len;
                    }
                }
                rest.chars().count()
            }
            _ => 1,
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(f)) => match f.pending.take() {
                None => {
                    // A key.
                    let key = match &node.value {
                        Value::Str(s) => Some(s.clone()),
                        Value::Int(i) => Some(i.to_string()),
                        Value::Float(x) => Some(x.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        Value::Null => Some(String::new()),
                        _ => None,
                    };
                    match key {
                        Some(k) => match f.seen.get(&k) {
                            Some(first) => {
                                let d = Diagnostic::new(format!("duplicate key `{k}`"))
                                    .at(self.sources.span(node.loc))
                                    .hint("each key may appear once in a map; rename or merge the two entries")
                                    .note(format!("first defined at {}", self.sources.position(*first)));
                                self.errors.push(d);
                                // Keep parsing; the duplicate's value is dropped.
                                f.pending = Some(None);
                            }
                            None => {
                                f.seen.insert(k.clone(), node.loc);
                                f.pending = Some(Some((k, node.loc)));
                            }
                        },
                        None => {
                            self.errors.push(
                                Diagnostic::new("map keys must be plain strings")
                                    .at(self.sources.span(node.loc)),
                            );
                            f.pending = Some(None);
                        }
                    }
                }
                Some(Some((key, key_loc))) => f.entries.push(Entry {
                    key,
                    key_loc,
                    value: node,
                }),
                Some(None) => {}
            },
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let len = self.scalar_len(mark, &s, style);
                let loc = self.loc(mark, len);
                let value = if style == TScalarStyle::Plain && tag.is_none() {
                    resolve_plain(&s)
                } else {
                    Value::Str(s)
                };
                self.push_value(Node { value, loc }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let loc = self.loc(mark, 1);
                self.stack
                    .push(Frame::Seq(Node::null(loc), Vec::new(), anchor));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(mut n, items, anchor)) = self.stack.pop() {
                    n.value = Value::Seq(items);
                    self.push_value(n, anchor);
                }
            }
            Event::MappingStart(anchor, _) => {
                let loc = self.loc(mark, 1);
                self.stack.push(Frame::Map(MapFrame {
                    node: Node::null(loc),
                    entries: Vec::new(),
                    pending: None,
                    anchor,
                    seen: Default::default(),
                }));
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(mut f)) = self.stack.pop() {
                    f.node.value = Value::Map(f.entries);
                    self.push_value(f.node, f.anchor);
                }
            }
            Event::Alias(id) => {
                let loc = self.loc(mark, 1);
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => {
                        self.errors.push(
                            Diagnostic::new("alias to an unknown anchor")
                                .at(self.sources.span(loc)),
                        );
                        Node::null(loc)
                    }
                };
                self.push_value(node, 0);
            }
            _ => {}
        }
    }
}

/// YAML 1.2 core schema for plain scalars.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(h) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(h, 16) {
            return Value::Int(i);
        }
    }
    if let Some(o) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(o, 8) {
            return Value::Int(i);
        }
    }
    let b = s.as_bytes();
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits(unsigned) {
        if let Ok(i) = s.trim_start_matches('+').parse::<i64>() {
            return Value::Int(i);
        }
    }
    if is_core_float(unsigned) {
        if let Ok(x) = s.parse::<f64>() {
            return Value::Float(x);
        }
    }
    Value::Str(s.to_string())
}

/// `(\.[0-9]+ | [0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`: what YAML 1.2 calls a float (Rust's
/// parser also takes `inf` or `nan`, which YAML reads as strings).
fn is_core_float(b: &[u8]) -> bool {
    let mut i = 0;
    let n = b.len();
    let int_start = i;
    while i < n && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < n && b[i] == b'.' {
        i += 1;
        while i < n && b[i].is_ascii_digit() {
            i += 1;
            frac_digits += 1;
        }
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < n && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < n && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < n && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Node, Vec<Diagnostic>> {
        let sources = Sources {
            files: vec![SourceFile::new(
                "t.yaml".into(),
                "/t.yaml".into(),
                text.into(),
            )],
        };
        parse(0, &sources)
    }

    #[test]
    fn keys_and_values_know_their_place() {
        let n = load("a: 1\nb:\n  c: \"x\"\n  d: [1.5, null, true, yes]\n").unwrap();
        let (c, e, found) = n.find_path("b.c");
        assert!(found);
        assert_eq!(c.loc.line, 3);
        assert_eq!(c.loc.col, 6);
        assert_eq!(c.loc.len, 3);
        assert_eq!(e.unwrap().key_loc.col, 3);
        let (d, _, _) = n.find_path("b.d[3]");
        assert_eq!(d.value, Value::Str("yes".into()));
        assert_eq!(n.find_path("b.d[0]").0.value, Value::Float(1.5));
        assert_eq!(n.find_path("b.d[1]").0.value, Value::Null);
        assert_eq!(n.find_path("a").0.value, Value::Int(1));
        assert!(!n.find_path("b.zz").2);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errs = load("stages:\n  a: 1\n  a: 2\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("duplicate key `a`"));
        assert_eq!(errs[0].span.as_ref().unwrap().line, 3);
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let errs = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(errs[0].message.starts_with("invalid YAML"), "{errs:?}");
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(resolve_plain("1e-3"), Value::Float(1e-3));
        assert_eq!(resolve_plain("-7"), Value::Int(-7));
        assert_eq!(resolve_plain("inf"), Value::Str("inf".into()));
        assert_eq!(resolve_plain("0.5"), Value::Float(0.5));
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
    }
}
