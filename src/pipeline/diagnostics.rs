//! [`Diagnostics`]: every error found in a pipeline file, each pointing at the user's input
//! (`file:line:col`, the source line with a caret, the key path, a `hint:`), rendered like
//! rustc / just. The loader collects them all instead of stopping at the first.

use std::fmt;

/// Where a diagnostic points: enough to render itself without the source files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The file as the user named it (relative paths stay relative).
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// Characters to underline (at least 1).
    pub len: usize,
    /// The whole source line, without its newline.
    pub source_line: String,
}

/// One error in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Lowercase fragment, no `error:` prefix.
    pub message: String,
    /// Dotted key path of the offending value (`stages.prune.with.target_ratio`), if any.
    pub key_path: Option<String>,
    pub span: Option<Span>,
    /// The likely fix.
    pub hint: Option<String>,
    /// Extra context (e.g. the matrix cell the error happens in).
    pub note: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            key_path: None,
            span: None,
            hint: None,
            note: None,
        }
    }
    pub fn at(mut self, span: Option<Span>) -> Self {
        self.span = span;
        self
    }
    pub fn key(mut self, key_path: impl Into<String>) -> Self {
        let k = key_path.into();
        self.key_path = if k.is_empty() { None } else { Some(k) };
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let width = self
            .span
            .as_ref()
            .map(|s| s.line.to_string().len())
            .unwrap_or(1);
        let pad = " ".repeat(width);
        match &self.span {
            Some(s) => {
                writeln!(f, "{pad}--> {}:{}:{}", s.file, s.line, s.col)?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{:>width$} | {}", s.line, s.source_line)?;
                let lead: String = s
                    .source_line
                    .chars()
                    .take(s.col.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let carets = "^".repeat(s.len.max(1));
                match &self.key_path {
                    Some(k) => writeln!(f, "{pad} | {lead}{carets} {k}")?,
                    None => writeln!(f, "{pad} | {lead}{carets}")?,
                }
            }
            None => {
                if let Some(k) = &self.key_path {
                    writeln!(f, "{pad} = key: {k}")?;
                }
            }
        }
        if let Some(n) = &self.note {
            writeln!(f, "{pad} = note: {n}")?;
        }
        if let Some(h) = &self.hint {
            writeln!(f, "{pad} = hint: {h}")?;
        }
        Ok(())
    }
}

/// Every error found in one pipeline (in file order), plus the file they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// The pipeline file as the user named it.
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        let n = self.items.len();
        write!(
            f,
            "error: `{}` is not a valid pipeline: {n} error{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a, I, S>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str> + 'a,
{
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let c = c.as_ref();
        if c == word {
            continue;
        }
        // Transpositions count once (`trian` -> `train`); names of one or two characters get no
        // suggestion (every other short name is "close"), the caller lists the choices instead.
        let d = strsim::osa_distance(&word.to_lowercase(), &c.to_lowercase());
        let limit = word.chars().count().max(c.chars().count()) / 3;
        if d <= limit && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean `x`?` as a hint, or the list of valid choices when nothing is close.
pub fn suggest<S: AsRef<str>>(word: &str, candidates: &[S], what: &str) -> Option<String> {
    if let Some(c) = did_you_mean(word, candidates.iter().map(|s| s.as_ref())) {
        return Some(format!("did you mean `{c}`?"));
    }
    if candidates.is_empty() {
        return None;
    }
    let list: Vec<String> = candidates
        .iter()
        .map(|c| format!("`{}`", c.as_ref()))
        .collect();
    Some(format!("{what}: {}", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let d = Diagnostic::new("unknown param `epoch`")
            .at(Some(Span {
                file: "p.yaml".into(),
                line: 7,
                col: 5,
                len: 5,
                source_line: "    epoch: 3".into(),
            }))
            .key("stages.train.with.epoch")
            .hint("did you mean `epochs`?");
        assert_eq!(
            d.to_string(),
            "error: unknown param `epoch`\n --> p.yaml:7:5\n  |\n7 |     epoch: 3\n  |     ^^^^^ stages.train.with.epoch\n  = hint: did you mean `epochs`?\n"
        );
    }

    #[test]
    fn did_you_mean_finds_close_words_only() {
        assert_eq!(
            did_you_mean("epoch", ["epochs", "seed"]),
            Some("epochs".into())
        );
        assert_eq!(
            did_you_mean("treshold", ["threshold", "fraction"]),
            Some("threshold".into())
        );
        assert_eq!(did_you_mean("zzz", ["epochs", "seed"]), None);
    }
}
