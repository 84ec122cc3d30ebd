//! [`Template`]: a string with `${namespace.path}` references, parsed once and evaluated per
//! matrix cell.
//!
//! Rules: a value that is exactly one `${...}` keeps the referenced value's type (a number stays
//! a number); inside a longer string the value is rendered (strings as is, `null` as empty,
//! numbers and booleans as JSON, lists and maps as compact JSON). `$${` is a literal `${`.
//! Namespaces: `params`, `matrix` (evaluated at load time), `inputs`, `outputs` (only in a
//! `run:` command; left in place for the executor).

/// A reference namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    Params,
    Matrix,
    Inputs,
    Outputs,
}

impl Ns {
    pub const NAMES: [&'static str; 4] = ["params", "matrix", "inputs", "outputs"];
    pub fn name(self) -> &'static str {
        match self {
            Ns::Params => "params",
            Ns::Matrix => "matrix",
            Ns::Inputs => "inputs",
            Ns::Outputs => "outputs",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ref {
    pub ns: Ns,
    /// At least one segment: the param / axis / input / output name, then keys inside it.
    pub path: Vec<String>,
    /// Char offset of the `$` in the string.
    pub offset: usize,
    /// Length in chars of `${...}`.
    pub len: usize,
}

impl Ref {
    /// `${ns.a.b}`.
    pub fn text(&self) -> String {
        format!("${{{}.{}}}", self.ns.name(), self.path.join("."))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Lit(String),
    Ref(Ref),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

/// A syntax error in a template: where (char offset, length) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Template {
    /// True when `s` needs no interpolation at all (the common case; saves an allocation).
    pub fn is_plain(s: &str) -> bool {
        !s.contains("${")
    }

    pub fn parse(s: &str) -> Result<Template, SyntaxError> {
        let chars: Vec<char> = s.chars().collect();
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
                lit.push_str("${");
                i += 3;
                continue;
            }
            if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                let start = i;
                // A reference is names and dots up to `}`; anything else first means the
                // `${` was never closed (`${params.n > out` or a missing brace at the end).
                let body_end = (i + 2..chars.len())
                    .find(|j| !is_ref_char(chars[*j]))
                    .unwrap_or(chars.len());
                if chars.get(body_end) != Some(&'}') {
                    let shown: String = chars[start..body_end].iter().collect();
                    return Err(SyntaxError {
                        offset: start,
                        len: body_end - start,
                        message: format!("unterminated `{}`", shown.trim_end()),
                        hint: Some("close it with `}`; write `$${` for a literal `${`".into()),
                    });
                }
                let inner: String = chars[i + 2..body_end].iter().collect();
                let len = body_end + 1 - start;
                let r = parse_ref(&inner, start, len)?;
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Ref(r));
                i += len;
                continue;
            }
            lit.push(chars[i]);
            i += 1;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// The single reference when the whole string is one `${...}`.
    pub fn whole_ref(&self) -> Option<&Ref> {
        match self.pieces.as_slice() {
            [Piece::Ref(r)] => Some(r),
            _ => None,
        }
    }

    pub fn refs(&self) -> impl Iterator<Item = &Ref> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Lit(_) => None,
        })
    }
}

fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == ' '
}

fn parse_ref(inner: &str, offset: usize, len: usize) -> Result<Ref, SyntaxError> {
    let err = |message: String, hint: Option<String>| SyntaxError {
        offset,
        len,
        message,
        hint,
    };
    let inner_t = inner.trim();
    if inner_t.is_empty() {
        return Err(err(
            "empty `${}`".into(),
            Some("write `${params.NAME}` or `${matrix.AXIS}`".into()),
        ));
    }
    let mut segs = inner_t.split('.');
    let ns_name = segs.next().unwrap_or("");
    let ns = match ns_name {
        "params" => Ns::Params,
        "matrix" => Ns::Matrix,
        "inputs" => Ns::Inputs,
        "outputs" => Ns::Outputs,
        other => {
            let hint = match super::diagnostics::did_you_mean(other, Ns::NAMES) {
                Some(c) => format!("did you mean `{c}`? (write `$${{` for a literal `${{`, e.g. a shell variable)"),
                None => "references are `${params.NAME}`, `${matrix.AXIS}`, `${inputs.NAME}` or `${outputs.NAME}`; write `$${` for a literal `${`".into(),
            };
            return Err(err(
                format!("unknown namespace `{other}` in `${{{inner}}}`"),
                Some(hint),
            ));
        }
    };
    let path: Vec<String> = segs.map(str::to_string).collect();
    if path.is_empty() {
        return Err(err(
            format!("`${{{inner}}}` names no {}", ns_name),
            Some(format!("write `${{{ns_name}.NAME}}`")),
        ));
    }
    for p in &path {
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(
                format!("bad name `{p}` in `${{{inner}}}`"),
                Some("names are letters, digits, `_` and `-`, joined by `.`".into()),
            ));
        }
    }
    Ok(Ref {
        ns,
        path,
        offset,
        len,
    })
}

/// Render a value inside a longer string.
pub fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs_and_literals() {
        let t = Template::parse("python ${inputs.script} --r ${params.ratio}!").unwrap();
        assert_eq!(t.pieces.len(), 5);
        let refs: Vec<String> = t.refs().map(Ref::text).collect();
        assert_eq!(refs, ["${inputs.script}", "${params.ratio}"]);
        assert!(t.whole_ref().is_none());
        let w = Template::parse("${matrix.model.net}").unwrap();
        assert_eq!(w.whole_ref().unwrap().path, ["model", "net"]);
    }

    #[test]
    fn escapes_and_errors() {
        let t = Template::parse("echo $${HOME}").unwrap();
        assert_eq!(t.pieces, [Piece::Lit("echo ${HOME}".into())]);
        let e = Template::parse("a ${params.x").unwrap_err();
        assert_eq!(e.message, "unterminated `${params.x`");
        assert_eq!(e.offset, 2);
        let e = Template::parse("${param.x}").unwrap_err();
        assert!(e.hint.unwrap().contains("did you mean `params`?"));
        assert!(Template::parse("${matrix}").is_err());
        assert!(Template::parse("${}").is_err());
    }

    #[test]
    fn renders_values() {
        assert_eq!(render(&serde_json::json!(0.5)), "0.5");
        assert_eq!(render(&serde_json::json!(null)), "");
        assert_eq!(render(&serde_json::json!("x")), "x");
        assert_eq!(render(&serde_json::json!({"a": 1})), "{\"a\":1}");
    }
}
