//! The third pass: static checks of each stage, before any matrix cell — a name, exactly one
//! of `uses` (a known kind) and `run`, the keys its kind allows, its ports and outputs, its
//! `with:` keys, the names its templates use — and the matrix axes it uses directly.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_stages::kinds::{self, KindSpec};

use super::de::{Checked, MapEntry};
use super::diagnostics::suggest;
use super::loader::{valid_ident, Loader};
use super::model::Output;
use super::raw::RawStage;
use super::sections::MatrixInfo;
use super::templates::{Mode, Scope};
use super::yaml::{Loc, Node, Value};

/// A stage after the static checks.
pub(super) struct StageDef<'a> {
    pub name: String,
    pub key_loc: Loc,
    /// `None` when the stage is not even a map.
    pub raw: Option<&'a RawStage>,
    pub kind: Option<&'static KindSpec>,
    pub is_run: bool,
    pub outputs: Vec<Output>,
    /// Declared input names (`run:` stages: for `${inputs.x}`).
    pub input_names: Vec<String>,
    /// The kind's param names (asked once: the kind builds them from its defaults).
    pub param_names: Vec<String>,
    /// Axis indices the stage's own text references (directly or through params).
    pub direct_axes: BTreeSet<usize>,
    /// False when the shape is so wrong that evaluating it would only repeat errors.
    pub ok: bool,
}

impl<'a> StageDef<'a> {
    /// `stages.NAME`, the key path prefix of the stage's errors.
    pub fn key(&self) -> String {
        format!("stages.{}", self.name)
    }
}

impl Loader {
    pub(super) fn stage_def<'a>(
        &mut self,
        e: &'a MapEntry<Checked<RawStage>>,
        params: &BTreeMap<String, &Node>,
        matrix: &MatrixInfo,
    ) -> StageDef<'a> {
        let mut d = StageDef {
            name: e.key.clone(),
            key_loc: e.key_loc,
            raw: e.value.valid(),
            kind: None,
            is_run: false,
            outputs: Vec::new(),
            input_names: Vec::new(),
            param_names: Vec::new(),
            direct_axes: BTreeSet::new(),
            ok: e.value.valid().is_some(),
        };
        if !valid_ident(&d.name) {
            self.err(Some(e.key_loc), format!("bad stage name `{}`", d.name), &d.key(), Some("stage names are letters, digits, `_` and `-` (a `.` would make `stage.output` references ambiguous)".into()));
            d.ok = false;
        }
        let Some(raw) = d.raw else { return d };
        self.kind_or_command(&mut d, raw);
        self.outputs_and_exclusive_keys(&mut d, raw);
        self.input_ports(&mut d, raw);
        if let Some(kind) = d.kind {
            d.param_names = (kind.param_names)();
            self.required_inputs(&d, kind);
            self.with_keys(&mut d, raw, kind);
        }
        if raw.env.as_ref().is_some_and(|e| e.value.valid().is_none()) {
            d.ok = false;
        }
        // Template errors alone do not stop evaluation (failed lookups evaluate to nothing,
        // silently), so the rest of the stage is still checked.
        if self.stage_templates(&mut d, raw, params, matrix) {
            d.ok = false;
        }
        d
    }

    /// `uses: KIND` or `run: COMMAND`, exactly one.
    fn kind_or_command(&mut self, d: &mut StageDef, raw: &RawStage) {
        let sk = d.key();
        match (&raw.uses, &raw.run) {
            (Some(u), Some(_)) => {
                self.err(
                    u.key_loc,
                    format!("stage `{}` has both `uses` and `run`", d.name),
                    &sk,
                    Some(
                        "a stage is either a built-in kind (`uses:`) or a shell command (`run:`)"
                            .into(),
                    ),
                );
                d.ok = false;
            }
            (None, None) => {
                self.err(
                    Some(d.key_loc),
                    format!("stage `{}` has neither `uses` nor `run`", d.name),
                    &sk,
                    Some(format!(
                        "add `uses: KIND` (one of {}) or `run: COMMAND`",
                        kinds::names().join(", ")
                    )),
                );
                d.ok = false;
            }
            (Some(u), None) => match u.value.as_str() {
                Some(k) => match kinds::lookup(k) {
                    Some(spec) => d.kind = Some(spec),
                    None => {
                        self.err(
                            Some(u.value.loc),
                            format!("unknown kind `{k}`"),
                            &format!("{sk}.uses"),
                            suggest(k, &kinds::names(), "the built-in kinds are"),
                        );
                        d.ok = false;
                    }
                },
                None => {
                    self.err(
                        Some(u.value.loc),
                        format!("`uses` must name a kind, got {}", u.value.type_name()),
                        &format!("{sk}.uses"),
                        suggest("", &kinds::names(), "the built-in kinds are"),
                    );
                    d.ok = false;
                }
            },
            (None, Some(r)) => {
                d.is_run = true;
                if r.as_str().is_none_or(|s| s.trim().is_empty()) {
                    self.err(
                        Some(r.loc),
                        format!("`run` must be a non-empty command, got {}", r.type_name()),
                        &format!("{sk}.run"),
                        Some("e.g. `run: \"python3 ${inputs.script} > ${outputs.report}\"`".into()),
                    );
                    d.ok = false;
                }
            }
        }
    }

    /// A kind's outputs are its ports; a command declares its own. Keys of the other sort of
    /// stage are errors.
    fn outputs_and_exclusive_keys(&mut self, d: &mut StageDef, raw: &RawStage) {
        let sk = d.key();
        if let Some(kind) = d.kind {
            d.outputs = kind.outputs.iter().map(Output::of_port).collect();
            for (key, loc) in raw.key_locs(RawStage::RUN_ONLY) {
                let hint = if key == "outputs" {
                    let names: Vec<&str> = kind.outputs.iter().map(|p| p.name).collect();
                    format!("kind `{}` always writes {}", kind.name, names.join(", "))
                } else {
                    format!("`{key}` is for `run:` stages")
                };
                self.err(
                    Some(loc),
                    format!("`{key}` is only for `run:` stages"),
                    &format!("{sk}.{key}"),
                    Some(hint),
                );
            }
        } else if d.is_run {
            d.outputs = match &raw.outputs {
                Some(o) => self.run_outputs(&o.value, &sk),
                None => Vec::new(),
            };
            for (key, loc) in raw.key_locs(RawStage::BUILTIN_ONLY) {
                self.err(
                    Some(loc),
                    format!("`{key}` is only for built-in kinds (`uses:`)"),
                    &format!("{sk}.{key}"),
                    Some("pass values to a command through `${params.x}` or `env:`".into()),
                );
            }
        }
    }

    /// Input names: a kind's ports, or names of a command's choosing (the values are checked
    /// per cell).
    fn input_ports(&mut self, d: &mut StageDef, raw: &RawStage) {
        let sk = d.key();
        let inputs = match &raw.inputs {
            None => return,
            Some(Checked::Valid(m)) => m,
            Some(Checked::Invalid) => {
                d.ok = false;
                return;
            }
        };
        for inp in inputs.iter() {
            d.input_names.push(inp.key.clone());
            let key = format!("{sk}.inputs.{}", inp.key);
            if let Some(kind) = d.kind.filter(|k| k.gathers.is_empty()) {
                if kind.input(&inp.key).is_none() {
                    let ports: Vec<&str> = kind.inputs.iter().map(|p| p.name).collect();
                    self.not_of_kind(kind, "input", &ports, &inp.key, inp.key_loc, &key);
                }
            } else if !valid_ident(&inp.key) {
                self.err(
                    Some(inp.key_loc),
                    format!("bad input name `{}`", inp.key),
                    &key,
                    Some("names are letters, digits, `_` and `-`".into()),
                );
            }
        }
    }

    fn required_inputs(&mut self, d: &StageDef, kind: &KindSpec) {
        if !kind.gathers.is_empty() && d.input_names.is_empty() {
            self.err(
                Some(d.key_loc),
                format!(
                    "stage `{}` (kind `{}`) reads no gather",
                    d.name, kind.name
                ),
                &format!("{}.inputs", d.key()),
                Some(format!(
                    "add inputs that gather results, e.g. `inputs: {{ verify: \"verify.metrics[*]\" }}` ({})",
                    kind.summary
                )),
            );
        }
        for p in kind.inputs.iter().filter(|p| p.required) {
            if d.input_names.iter().any(|n| n == p.name) {
                continue;
            }
            self.err(
                Some(d.key_loc),
                format!(
                    "stage `{}` (kind `{}`) needs input `{}`",
                    d.name, kind.name, p.name
                ),
                &format!("{}.inputs", d.key()),
                Some(format!(
                    "add `inputs: {{ {}: STAGE.OUTPUT }}` ({})",
                    p.name, p.doc
                )),
            );
        }
    }

    /// `with:` keys: unknown params with a did-you-mean (before the kind's own checks).
    fn with_keys(&mut self, d: &mut StageDef, raw: &RawStage, kind: &KindSpec) {
        let with = match raw.with.as_ref().map(|w| &w.value) {
            None => return,
            Some(Checked::Valid(m)) => m,
            Some(Checked::Invalid) => {
                d.ok = false;
                return;
            }
        };
        for p in with.iter().filter(|p| !d.param_names.contains(&p.key)) {
            let key = format!("{}.with.{}", d.key(), p.key);
            self.not_of_kind(kind, "param", &d.param_names, &p.key, p.key_loc, &key);
        }
    }

    /// `name` is not one of the `what`s (`input`, `param`) of `kind`, which are `names`.
    fn not_of_kind<S: AsRef<str>>(
        &mut self,
        kind: &KindSpec,
        what: &str,
        names: &[S],
        name: &str,
        loc: Loc,
        key: &str,
    ) {
        let hint = if names.is_empty() {
            Some(format!("kind `{}` takes no {what}s", kind.name))
        } else {
            suggest(name, names, &format!("the {what}s of `{}` are", kind.name))
        };
        let message = if what == "input" {
            format!("kind `{}` has no input `{name}`", kind.name)
        } else {
            format!("unknown {what} `{name}` for kind `{}`", kind.name)
        };
        self.err(Some(loc), message, key, hint);
    }

    /// Check the templates of every value of the stage and collect the axes they use; true
    /// when one uses an axis that has errors of its own.
    fn stage_templates(
        &mut self,
        d: &mut StageDef,
        raw: &RawStage,
        params: &BTreeMap<String, &Node>,
        matrix: &MatrixInfo,
    ) -> bool {
        let sk = d.key();
        let outputs: Vec<String> = d.outputs.iter().map(|o| o.name.clone()).collect();
        let mut axes = BTreeSet::new();
        let mut broken = false;
        let mut check = |this: &mut Self, n: &Node, key: String, mode: Mode| {
            let scope = Scope {
                mode,
                matrix,
                params,
                inputs: &d.input_names,
                outputs: &outputs,
            };
            broken |= this.check_templates(n, &key, &scope, &mut axes);
        };
        if let Some(r) = &raw.run {
            check(self, r, format!("{sk}.run"), Mode::Command);
        }
        let maps: [(&str, Option<&[MapEntry<Node>]>); 3] = [
            (
                "with",
                raw.with
                    .as_ref()
                    .and_then(|w| w.value.valid())
                    .map(|m| &m.entries[..]),
            ),
            (
                "inputs",
                raw.inputs
                    .as_ref()
                    .and_then(Checked::valid)
                    .map(|m| &m.entries[..]),
            ),
            (
                "env",
                raw.env
                    .as_ref()
                    .and_then(|e| e.value.valid())
                    .map(|m| &m.entries[..]),
            ),
        ];
        for (name, map) in maps {
            for kv in map.unwrap_or_default() {
                check(
                    self,
                    &kv.value,
                    format!("{sk}.{name}.{}", kv.key),
                    Mode::Value,
                );
            }
        }
        if let Some(Checked::Valid(r)) = &raw.resources {
            for (name, n) in r.values() {
                check(self, n, format!("{sk}.resources.{name}"), Mode::Value);
            }
            if let Some(Checked::Valid(o)) = &r.slurm {
                for kv in o.iter() {
                    let key = format!("{sk}.resources.slurm.{}", kv.key);
                    check(self, &kv.value, key, Mode::Value);
                }
            }
        }
        if let Some(r) = &raw.retry {
            check(self, r, format!("{sk}.retry"), Mode::Value);
        }
        d.direct_axes = axes;
        broken
    }

    /// A command's `outputs:`: a list of names (`name/` for a folder) or name -> path.
    fn run_outputs(&mut self, n: &Node, sk: &str) -> Vec<Output> {
        let mut out: Vec<Output> = Vec::new();
        match &n.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    let key = format!("{sk}.outputs[{i}]");
                    match it.as_str() {
                        Some(s) => self.add_output(&mut out, s, s, it.loc, key),
                        None => self.err(
                            Some(it.loc),
                            format!(
                                "an output is a name (a trailing `/` marks a folder), got {}",
                                it.type_name()
                            ),
                            &key,
                            None,
                        ),
                    }
                }
            }
            Value::Map(m) => {
                for kv in m {
                    let key = format!("{sk}.outputs.{}", kv.key);
                    match kv.value.as_str() {
                        Some(p) => {
                            let name = if p.ends_with('/') {
                                format!("{}/", kv.key)
                            } else {
                                kv.key.clone()
                            };
                            self.add_output(&mut out, &name, p, kv.value.loc, key)
                        }
                        None => self.err(
                            Some(kv.value.loc),
                            format!(
                                "an output path must be a string, got {}",
                                kv.value.type_name()
                            ),
                            &key,
                            None,
                        ),
                    }
                }
            }
            Value::Null => {}
            _ => self.err(
                Some(n.loc),
                format!("`outputs` must be a list of names, got {}", n.type_name()),
                &format!("{sk}.outputs"),
                Some("e.g. `outputs: [report, plots/]`".into()),
            ),
        }
        out
    }

    fn add_output(&mut self, out: &mut Vec<Output>, name: &str, path: &str, loc: Loc, key: String) {
        let is_dir = path.ends_with('/');
        let name = name.trim_end_matches('/');
        let rel = path.trim_end_matches('/');
        if !valid_ident(name) {
            self.err(
                Some(loc),
                format!("bad output name `{name}`"),
                &key,
                Some(
                    "names are letters, digits, `_` and `-`; a trailing `/` marks a folder".into(),
                ),
            );
        } else if rel.is_empty()
            || rel.starts_with('/')
            || rel.split('/').any(|c| c == ".." || c == ".")
        {
            self.err(
                Some(loc),
                format!("output path `{path}` must be relative and stay inside the stage's folder"),
                &key,
                None,
            );
        } else if out.iter().any(|o| o.name == name) {
            self.err(
                Some(loc),
                format!("output `{name}` declared twice"),
                &key,
                None,
            );
        } else {
            out.push(Output {
                name: name.to_string(),
                rel_path: rel.to_string(),
                is_dir,
                required: true,
            });
        }
    }
}
