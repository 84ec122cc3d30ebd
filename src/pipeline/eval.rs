//! The fourth pass: evaluate a stage in one matrix cell — interpolate its templates, resolve a
//! kind's params through the kind (defaults filled in, ranges checked), resolve its inputs to
//! upstream stages or external paths, read its resources and retries. A stage is evaluated once
//! per distinct combination of the axes it uses directly; errors that depend on the cell name
//! it in a note.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value as J;

use super::de::{Checked, MapEntry};
use super::diagnostics::suggest;
use super::interp::{self, Ns, Piece, Ref, Template};
use super::loader::{json_type, normalize, show, Loader};
use super::model::{Action, Resources};
use super::raw::{RawResources, MAX_CPUS, MAX_GPUS, MAX_MEM_GB, MAX_RETRY, MAX_TIME_MIN};
use super::sections::Cells;
use super::stage::StageDef;
use super::templates::Mode;
use super::yaml::{Loc, Node};

/// The output name that gathers a stage's metrics.json (`stage.metrics[*]`) when the stage
/// declares no output of that name (see `exec::gather::listing`).
pub const METRICS: &str = "metrics";

/// One evaluation of a stage for one projection of the cells on its direct axes.
pub(super) struct StageEval {
    pub action: Action,
    pub inputs: Vec<(String, InRef)>,
    pub resources: Resources,
    pub retry: u32,
}

pub(super) enum InRef {
    Upstream {
        stage: usize,
        output: String,
    },
    /// `stage[axis=value,...].output`: the one instance of `stage` in the cells with those
    /// values (axis index, value index); the reading stage does not take `stage`'s axes.
    Pinned {
        stage: usize,
        output: String,
        values: Vec<(usize, u32)>,
        loc: Loc,
        key: String,
    },
    /// `stage.output[*]` / `stage.output[axis=value,...]`: that output of every instance of
    /// `stage` in the matching cells (no values: all); the reading stage does not take
    /// `stage`'s axes.
    Gather {
        stage: usize,
        output: String,
        values: Vec<(usize, u32)>,
        loc: Loc,
        key: String,
    },
    External(PathBuf),
}

/// An input's `stage.output` reference, split.
struct Reference {
    stage: String,
    output: String,
    which: Which,
}

/// Which instances of the upstream stage a reference reads, with the (axis, value) indices it
/// names.
enum Which {
    /// `stage.output`: the instance in the same cell (the reading stage takes `stage`'s axes).
    Same,
    /// `stage[axis=value,...].output`.
    Pinned(Vec<(usize, u32)>),
    /// `stage.output[*]` (no values) or `stage.output[axis=value,...]`.
    Gather(Vec<(usize, u32)>),
}

/// What `${...}` can see while evaluating one stage in one cell.
pub(super) struct Ctx<'a> {
    pub params: &'a BTreeMap<String, &'a Node>,
    pub cells: &'a Cells,
    pub cell: &'a [u32],
    /// Stage name -> index in the definitions.
    pub stage_index: &'a HashMap<&'a str, usize>,
    /// The axes the stage uses directly (they name the cell in messages).
    pub axes: &'a [usize],
}

impl Ctx<'_> {
    /// The matrix cell, for messages (`in matrix cell method=rand`); `None` outside a matrix.
    /// Built only when a message needs it (a stage is evaluated in up to a million cells).
    pub fn note(&self) -> Option<String> {
        (!self.axes.is_empty()).then(|| {
            let parts: Vec<String> = self
                .axes
                .iter()
                .map(|a| format!("{}={}", self.cells.axes[*a], self.cells.name(*a, self.cell)))
                .collect();
            format!("in matrix cell {}", parts.join(","))
        })
    }
}

impl Loader {
    /// Evaluate stage `si` in the cell of `ctx`; the upstream stages it reads are added to
    /// `edges` (with where the reference is written).
    pub(super) fn eval_stage(
        &mut self,
        defs: &[StageDef],
        si: usize,
        ctx: &Ctx,
        edges: &mut BTreeMap<usize, Loc>,
    ) -> Option<StageEval> {
        let d = &defs[si];
        let raw = d.raw?;
        let before = self.errors.len();
        let action = self.eval_action(d, ctx);
        let mut inputs = Vec::new();
        if let Some(Checked::Valid(m)) = &raw.inputs {
            for kv in m.iter() {
                if let Some(r) = self.eval_input(defs, d, kv, ctx, edges) {
                    inputs.push((kv.key.clone(), r));
                }
            }
        }
        let resources = match &raw.resources {
            None => Some(self.default_resources(d)),
            Some(Checked::Valid(r)) => self.eval_resources(d, r, ctx),
            Some(Checked::Invalid) => None,
        };
        let retry = self.eval_retry(d, ctx);
        if self.errors.len() > before {
            return None;
        }
        Some(StageEval {
            action: action?,
            inputs,
            resources: resources?,
            retry,
        })
    }

    /// One input in one cell: `stage.output`, a path, or nothing (an optional input whose
    /// value is empty).
    fn eval_input(
        &mut self,
        defs: &[StageDef],
        d: &StageDef,
        kv: &MapEntry<Node>,
        ctx: &Ctx,
        edges: &mut BTreeMap<usize, Loc>,
    ) -> Option<InRef> {
        let key = format!("{}.inputs.{}", d.key(), kv.key);
        let s = self.input_text(kv, ctx, &key)?;
        if s.is_empty() {
            self.check_empty_input(d, kv, ctx, &key);
            return None;
        }
        if s.starts_with("./") || s.starts_with("../") || s.starts_with('/') {
            if let Some(kind) = d.kind.filter(|k| !k.gathers.is_empty()) {
                let message = format!(
                    "input `{}`: kind `{}` reads gathers of the pipeline's stages, not a path",
                    kv.key, kind.name
                );
                let hint = format!("e.g. `\"verify.{}[*]\"`", kind.gathers[0]);
                self.err_note(kv.value.loc, message, &key, Some(hint), ctx.note());
                return None;
            }
            return self.external_input(kv, &s, &key);
        }
        let r = self.parse_reference(kv, s, ctx, &key)?;
        let ui = self.resolve_reference(defs, d, kv, &r, ctx, &key)?;
        let loc = kv.value.loc;
        edges.entry(ui).or_insert(loc);
        let output = r.output;
        Some(match r.which {
            Which::Gather(values) => InRef::Gather {
                stage: ui,
                output,
                values,
                loc,
                key,
            },
            Which::Pinned(values) => InRef::Pinned {
                stage: ui,
                output,
                values,
                loc,
                key,
            },
            Which::Same => InRef::Upstream { stage: ui, output },
        })
    }

    /// An input's value in this cell as trimmed text (empty for null); anything but a string
    /// is an error.
    fn input_text(&mut self, kv: &MapEntry<Node>, ctx: &Ctx, key: &str) -> Option<String> {
        match self.interp(&kv.value, ctx, Mode::Value, key)? {
            J::Null => Some(String::new()),
            J::String(s) => Some(s.trim().to_string()),
            other => {
                self.err_note(kv.value.loc, format!("an input must be `stage.output` or a path, got {}", json_type(&other)), key, Some("e.g. `data.train`, or `./data/faces` for a file or folder outside the pipeline".into()), ctx.note());
                None
            }
        }
    }

    /// An empty input is an error unless the kind declares it optional.
    fn check_empty_input(&mut self, d: &StageDef, kv: &MapEntry<Node>, ctx: &Ctx, key: &str) {
        let required = d
            .kind
            .is_none_or(|k| k.input(&kv.key).is_some_and(|p| p.required));
        if required {
            let hint = if d.kind.is_some() {
                "a required input needs a value in every cell"
            } else {
                "inputs of a `run:` stage cannot be empty; remove the input or give it a value"
            };
            let message = format!("input `{}` is empty", kv.key);
            self.err_note(kv.value.loc, message, key, Some(hint.into()), ctx.note());
        }
    }

    /// A path (`./`, `../`, `/`) outside the pipeline, relative to the file that names it;
    /// it must exist.
    fn external_input(&mut self, kv: &MapEntry<Node>, s: &str, key: &str) -> Option<InRef> {
        let loc = kv.value.loc;
        let base = self
            .sources
            .files
            .get(loc.file as usize)
            .and_then(|f| f.abs.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let path = normalize(&base.join(s));
        self.check_external(&path, s, &kv.key, loc, key)
            .then_some(InRef::External(path))
    }

    /// Split a reference into stage, output and which instances it reads.
    fn parse_reference(
        &mut self,
        kv: &MapEntry<Node>,
        s: String,
        ctx: &Ctx,
        key: &str,
    ) -> Option<Reference> {
        let loc = kv.value.loc;
        // `stage.output[*]` or `stage.output[axis=value,...]`: a gather.
        let mut which = Which::Same;
        let gathered = s
            .strip_suffix(']')
            .and_then(|x| x.split_once('['))
            .filter(|(head, _)| head.contains('.'))
            .map(|(head, filter)| (head.to_string(), filter.trim().to_string()));
        let s = match gathered {
            Some((head, filter)) => {
                which = Which::Gather(if filter == "*" {
                    Vec::new()
                } else {
                    self.pin_values(kv, &filter, ctx, key, &s)?
                });
                head
            }
            None => s,
        };
        let (stage, output) = match s.split_once('[') {
            // `stage[axis=value,...].output` (the dots of values such as 0.5 are inside `[...]`).
            Some((stage, rest)) if !stage.contains('.') => {
                let Some((filter, output)) = rest
                    .split_once(']')
                    .and_then(|(f, o)| o.strip_prefix('.').map(|o| (f, o)))
                else {
                    self.err_note(
                        loc,
                        format!("input `{}`: `{s}` is not `stage[axis=value,...].output`", kv.key),
                        key,
                        Some("name one instance of a matrix stage, e.g. `\"prune[method=rand,ratio=0.5].kept\"`".into()),
                        ctx.note(),
                    );
                    return None;
                };
                which = Which::Pinned(self.pin_values(kv, filter, ctx, key, &s)?);
                (stage, output)
            }
            _ => match s.split_once('.') {
                Some(so) => so,
                None => {
                    self.err_note(
                        loc,
                        format!("input `{}`: `{s}` is neither `stage.output` nor a path", kv.key),
                        key,
                        Some(format!("a file or folder outside the pipeline starts with `./`, `../` or `/` (e.g. `./{s}`)")),
                        ctx.note(),
                    );
                    return None;
                }
            },
        };
        Some(Reference {
            stage: stage.to_string(),
            output: output.to_string(),
            which,
        })
    }

    /// The index of the stage a reference names, once the stage, its output and (for a gather)
    /// the reading stage's kind are checked.
    fn resolve_reference(
        &mut self,
        defs: &[StageDef],
        d: &StageDef,
        kv: &MapEntry<Node>,
        r: &Reference,
        ctx: &Ctx,
        key: &str,
    ) -> Option<usize> {
        let loc = kv.value.loc;
        let (stage, output) = (r.stage.as_str(), r.output.as_str());
        let Some(&ui) = ctx.stage_index.get(stage) else {
            let names: Vec<&str> = defs.iter().map(|x| x.name.as_str()).collect();
            self.err_note(
                loc,
                format!("input `{}` refers to an unknown stage `{stage}`", kv.key),
                key,
                suggest(stage, &names, "the stages are"),
                ctx.note(),
            );
            return None;
        };
        let up = &defs[ui];
        if up.kind.is_none() && !up.is_run {
            return None; // its own errors are reported
        }
        // `metrics` names the stage's metrics.json unless it declares an output of that name.
        let declared = up.outputs.iter().any(|o| o.name == output);
        let gather = matches!(r.which, Which::Gather(_));
        if !declared && output == METRICS && !gather {
            let message = format!(
                "input `{}`: `{stage}.metrics` (the stage's metrics.json) is read as a gather",
                kv.key
            );
            let hint = format!("gather it: `\"{stage}.metrics[*]\"` (one entry per cell), or `\"{stage}.metrics[axis=value,...]\"`");
            self.err_note(loc, message, key, Some(hint), ctx.note());
            return None;
        }
        if !declared && output != METRICS {
            let outs: Vec<&str> = up.outputs.iter().map(|o| o.name.as_str()).collect();
            let hint = if outs.is_empty() {
                Some(format!("stage `{stage}` declares no outputs"))
            } else if output.contains('[') {
                Some(format!("a gather is `{stage}.OUTPUT[*]` or `{stage}.OUTPUT[axis=value,...]` (the outputs of `{stage}` are: {})", outs.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")))
            } else {
                suggest(output, &outs, &format!("the outputs of `{stage}` are"))
            };
            let message = format!("stage `{stage}` has no output `{output}`");
            self.err_note(loc, message, key, hint, ctx.note());
            return None;
        }
        if let Some(kind) = d.kind.filter(|k| !k.gathers.is_empty()) {
            return self
                .gathering_kind_input(kind, kv, r, ctx, key)
                .then_some(ui);
        }
        if gather && d.kind.is_some() {
            self.err_note(
                loc,
                format!(
                    "input `{}`: a gather (`{stage}.{output}[...]`) is a folder of many results; a built-in kind cannot read it",
                    kv.key
                ),
                key,
                Some("read the gathered folder in a `run:` stage".into()),
                ctx.note(),
            );
            return None;
        }
        Some(ui)
    }

    /// An input of a kind that reads gathers ([`orchestrator_stages::kinds::KindSpec::gathers`]):
    /// a gather of one of the outputs it reads.
    fn gathering_kind_input(
        &mut self,
        kind: &orchestrator_stages::kinds::KindSpec,
        kv: &MapEntry<Node>,
        r: &Reference,
        ctx: &Ctx,
        key: &str,
    ) -> bool {
        let (stage, output) = (r.stage.as_str(), r.output.as_str());
        let reads = kind
            .gathers
            .iter()
            .map(|o| format!("`STAGE.{o}[*]`"))
            .collect::<Vec<_>>()
            .join(", ");
        let (message, hint) = if !matches!(r.which, Which::Gather(_)) {
            (
                format!(
                    "input `{}`: kind `{}` reads gathers (`STAGE.OUTPUT[...]`), not one result",
                    kv.key, kind.name
                ),
                format!(
                    "gather it: `\"{stage}.{}[*]\"` (or a filter, `[axis=value,...]`)",
                    if kind.gathers.contains(&output) {
                        output
                    } else {
                        kind.gathers[0]
                    }
                ),
            )
        } else if !kind.gathers.contains(&output) {
            (
                format!(
                    "input `{}`: kind `{}` does not read gathered `{output}`",
                    kv.key, kind.name
                ),
                format!(
                    "it reads {reads}, e.g. `\"{stage}.{}[*]\"`",
                    kind.gathers[0]
                ),
            )
        } else {
            return true;
        };
        self.err_note(kv.value.loc, message, key, Some(hint), ctx.note());
        false
    }

    /// The `axis=value,...` of a pinned reference, as (axis, value) indices; every axis and
    /// value must exist.
    fn pin_values(
        &mut self,
        kv: &MapEntry<Node>,
        filter: &str,
        ctx: &Ctx,
        key: &str,
        whole: &str,
    ) -> Option<Vec<(usize, u32)>> {
        let loc = kv.value.loc;
        let cells = ctx.cells;
        let mut out = Vec::new();
        for part in filter.split(',').map(str::trim) {
            let Some((axis, value)) = part.split_once('=') else {
                self.err_note(
                    loc,
                    format!(
                        "input `{}`: `{part}` in `{whole}` is not `axis=value`",
                        kv.key
                    ),
                    key,
                    Some("e.g. `\"prune[method=rand,ratio=0.5].kept\"`".into()),
                    ctx.note(),
                );
                return None;
            };
            let (axis, value) = (axis.trim(), value.trim());
            let Some(a) = cells.axes.iter().position(|x| x == axis) else {
                self.err_note(
                    loc,
                    format!(
                        "input `{}`: `{whole}` names an unknown matrix axis `{axis}`",
                        kv.key
                    ),
                    key,
                    suggest(axis, &cells.axes, "the axes are"),
                    ctx.note(),
                );
                return None;
            };
            let Some(v) = cells.rendered[a].iter().position(|x| x == value) else {
                self.err_note(
                    loc,
                    format!(
                        "input `{}`: matrix axis `{axis}` has no value `{value}`",
                        kv.key
                    ),
                    key,
                    suggest(value, &cells.rendered[a], "its values are"),
                    ctx.note(),
                );
                return None;
            };
            out.push((a, v as u32));
        }
        Some(out)
    }

    fn eval_retry(&mut self, d: &StageDef, ctx: &Ctx) -> u32 {
        let Some(r) = d.raw.and_then(|r| r.retry.as_ref()) else {
            return 0;
        };
        let key = format!("{}.retry", d.key());
        match self.interp(r, ctx, Mode::Value, &key) {
            Some(J::Number(n)) if n.as_i64().is_some_and(|i| (0..=MAX_RETRY).contains(&i)) => {
                n.as_i64().unwrap_or(0) as u32
            }
            Some(v) => {
                self.err_note(r.loc, format!("`retry` must be a whole number of extra attempts in 0..={MAX_RETRY}, got {}", show(&v)), &key, None, ctx.note());
                0
            }
            None => 0,
        }
    }

    /// The stage's action in one cell: interpolated, and resolved by its kind.
    fn eval_action(&mut self, d: &StageDef, ctx: &Ctx) -> Option<Action> {
        let raw = d.raw?;
        let sk = d.key();
        let Some(kind) = d.kind else {
            let cmd = self.interp(raw.run.as_ref()?, ctx, Mode::Command, &format!("{sk}.run"))?;
            let env = self.eval_env(d, ctx);
            return Some(Action::Shell {
                command: interp::render(&cmd),
                env,
            });
        };
        let with_entry = raw.with.as_ref();
        let with_map = with_entry.and_then(|w| w.value.valid());
        let mut with = serde_json::Map::new();
        // Unknown keys were reported statically; the kind checks the rest.
        let names = &d.param_names;
        for kv in with_map.into_iter().flat_map(|m| m.iter()) {
            let v = self.interp(
                &kv.value,
                ctx,
                Mode::Value,
                &format!("{sk}.with.{}", kv.key),
            )?;
            if names.contains(&kv.key) {
                with.insert(kv.key.clone(), v);
            }
        }
        match (kind.resolve)(&J::Object(with)) {
            Ok(params) => Some(Action::Builtin { kind, params }),
            Err(errs) => {
                for pe in errs {
                    let (loc, key) = match with_entry {
                        Some(w) if pe.path.is_empty() => {
                            (w.key_loc.unwrap_or(w.loc), format!("{sk}.with"))
                        }
                        Some(w) => {
                            let loc = param_loc(with_map, &pe.path).unwrap_or(w.loc);
                            (loc, format!("{sk}.with.{}", pe.path))
                        }
                        None => (d.key_loc, format!("{sk}.with")),
                    };
                    let msg = if pe.path.is_empty() {
                        format!("params of `{}`: {}", kind.name, pe.message)
                    } else {
                        format!("param `{}` of `{}`: {}", pe.path, kind.name, pe.message)
                    };
                    self.err_note(loc, msg, &key, pe.hint, ctx.note());
                }
                None
            }
        }
    }

    fn eval_env(&mut self, d: &StageDef, ctx: &Ctx) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let entries = d
            .raw
            .and_then(|r| r.env.as_ref())
            .and_then(|e| e.value.valid());
        for kv in entries.into_iter().flat_map(|m| m.iter()) {
            let key = format!("{}.env.{}", d.key(), kv.key);
            match self.interp(&kv.value, ctx, Mode::Value, &key) {
                Some(v @ (J::String(_) | J::Number(_) | J::Bool(_))) => {
                    env.insert(kv.key.clone(), interp::render(&v));
                }
                Some(v) => self.err_note(
                    kv.value.loc,
                    format!(
                        "an env value must be a string or number, got {}",
                        json_type(&v)
                    ),
                    &key,
                    None,
                    ctx.note(),
                ),
                None => {}
            }
        }
        env
    }

    fn default_resources(&self, d: &StageDef) -> Resources {
        Resources {
            gpus: d.kind.map(|k| k.default_gpus).unwrap_or(0),
            cpus: 1,
            ..Default::default()
        }
    }

    fn eval_resources(&mut self, d: &StageDef, raw: &RawResources, ctx: &Ctx) -> Option<Resources> {
        let mut r = self.default_resources(d);
        if let Some(Checked::Valid(o)) = &raw.slurm {
            r.slurm = self.options(o, &format!("{}.resources.slurm", d.key()));
        }
        let mut ok = true;
        for (name, n) in raw.values() {
            let key = format!("{}.resources.{name}", d.key());
            let Some(v) = self.interp(n, ctx, Mode::Value, &key) else {
                ok = false;
                continue;
            };
            ok &= self.set_resource(&mut r, name, &v, n.loc, &key, ctx);
        }
        ok.then_some(r)
    }

    /// Check one resource value and store it; false (after reporting) when it is out of range.
    fn set_resource(
        &mut self,
        r: &mut Resources,
        name: &str,
        v: &J,
        loc: Loc,
        key: &str,
        ctx: &Ctx,
    ) -> bool {
        let int = v.as_i64();
        let (message, hint) = match name {
            "gpus" => match int {
                Some(g) if (0..=MAX_GPUS).contains(&g) => {
                    r.gpus = g as u32;
                    return true;
                }
                Some(g) if g > MAX_GPUS => (
                    format!("`gpus: {g}` is more than any machine has (at most {MAX_GPUS})"),
                    Some("a stage runs on one machine; ask for the GPUs of one node".to_string()),
                ),
                _ => (
                    format!("`gpus` must be a whole number in 0..={MAX_GPUS}, got {}", show(v)),
                    None,
                ),
            },
            "cpus" => match int {
                Some(c) if (1..=MAX_CPUS).contains(&c) => {
                    r.cpus = c as u32;
                    return true;
                }
                _ => (
                    format!("`cpus` must be a whole number in 1..={MAX_CPUS}, got {}", show(v)),
                    None,
                ),
            },
            "mem_gb" => match v.as_f64() {
                Some(x) if x > 0.0 && x <= MAX_MEM_GB => {
                    r.mem_gb = Some(x);
                    return true;
                }
                _ => (
                    format!("`mem_gb` must be a number in (0, {MAX_MEM_GB}], got {}", show(v)),
                    None,
                ),
            },
            _ => match int {
                Some(t) if (1..=MAX_TIME_MIN).contains(&t) => {
                    r.time_min = Some(t as u32);
                    return true;
                }
                _ => (
                    format!("`time_min` must be a whole number of minutes in 1..={MAX_TIME_MIN}, got {}", show(v)),
                    None,
                ),
            },
        };
        self.err_note(loc, message, key, hint, ctx.note());
        false
    }

    /// Evaluate every `${...}` below `n` in `ctx`. Errors found here depend on the cell (a map
    /// value without the key asked for); names were checked statically.
    pub(super) fn interp(&mut self, n: &Node, ctx: &Ctx, mode: Mode, key: &str) -> Option<J> {
        use super::yaml::Value;
        match &n.value {
            Value::Str(s) if !Template::is_plain(s) => {
                let t = self.template(s)?;
                if let Some(r) = t.whole_ref() {
                    if matches!(r.ns, Ns::Params | Ns::Matrix) {
                        return self.lookup(r, n, ctx, key);
                    }
                }
                let mut out = String::new();
                for p in &t.pieces {
                    match p {
                        // Keep `$${` escapes for the shell only where the executor substitutes
                        // again (commands); elsewhere it is the final text.
                        Piece::Lit(l) if mode == Mode::Command => {
                            out.push_str(&l.replace("${", "$${"))
                        }
                        Piece::Lit(l) => out.push_str(l),
                        Piece::Ref(r) => match r.ns {
                            Ns::Params | Ns::Matrix => {
                                out.push_str(&interp::render(&self.lookup(r, n, ctx, key)?))
                            }
                            // Reported statically outside commands; nothing to evaluate to.
                            Ns::Inputs | Ns::Outputs if mode != Mode::Command => return None,
                            Ns::Inputs | Ns::Outputs => out.push_str(&r.text()),
                        },
                    }
                }
                Some(J::String(out))
            }
            Value::Seq(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, it) in v.iter().enumerate() {
                    out.push(self.interp(it, ctx, mode, &format!("{key}[{i}]"))?);
                }
                Some(J::Array(out))
            }
            Value::Map(m) => {
                let mut out = serde_json::Map::new();
                for kv in m {
                    let v = self.interp(&kv.value, ctx, mode, &format!("{key}.{}", kv.key))?;
                    out.insert(kv.key.clone(), v);
                }
                Some(J::Object(out))
            }
            _ => Some(n.to_json()),
        }
    }

    fn lookup(&mut self, r: &Ref, n: &Node, ctx: &Ctx, key: &str) -> Option<J> {
        let first = &r.path[0];
        let root = match r.ns {
            Ns::Matrix => {
                let a = ctx.cells.axes.iter().position(|x| x == first)?;
                ctx.cells.value(a, ctx.cell).clone()
            }
            Ns::Params => {
                let pn = *ctx.params.get(first)?;
                self.interp(pn, ctx, Mode::Param, &format!("params.{first}"))?
            }
            _ => return None,
        };
        let mut cur = &root;
        for (i, seg) in r.path.iter().enumerate().skip(1) {
            match cur.get(seg) {
                Some(v) => cur = v,
                None => {
                    let at = r.path[..i].join(".");
                    let keys: Vec<String> = cur
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    let hint = if keys.is_empty() {
                        let t = json_type(cur);
                        Some(format!("`{}.{at}` is {t}, not a map", r.ns.name()))
                    } else {
                        suggest(seg, &keys, "its keys are")
                    };
                    let loc = self.sub_loc(n, r.offset, r.len);
                    let message =
                        format!("`{}`: `{}.{at}` has no key `{seg}`", r.text(), r.ns.name());
                    self.err_note(loc, message, key, hint, ctx.note());
                    return None;
                }
            }
        }
        Some(cur.clone())
    }
}

/// Where the `with:` param at `path` (`target_ratio`, `milestones[1]`) is written (as deep as
/// the path exists), or `None` when `with:` lacks its first key.
fn param_loc(with: Option<&super::raw::With>, path: &str) -> Option<Loc> {
    let (first, rest) = match path.find(['.', '[']) {
        Some(i) => (&path[..i], path[i..].trim_start_matches('.')),
        None => (path, ""),
    };
    let entry = with?.iter().find(|e| e.key == first)?;
    Some(entry.value.find_path(rest).0.loc)
}
