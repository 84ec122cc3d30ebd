//! [`schema`]: the JSON schema (draft-07) of a pipeline file, with every built-in kind's params
//! (from `KindSpec::schema`) and ports. `orchestrator schema` prints it; a test keeps the copy in
//! `docs/pipeline.schema.json` current, so editors (yaml-language-server) can complete and check
//! pipeline files. It describes the merged file: a file that `extend`s another may leave out
//! what the base gives.

use orchestrator_stages::kinds::{self, KindSpec};
use schemars::gen::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use super::load::{MAX_CPUS, MAX_GPUS, MAX_MEM_GB, MAX_RETRY, MAX_TIME_MIN};

const MATRIX_DOC: &str = "Sweep axes: each key is an axis with a non-empty list of values (scalars, or maps whose \
keys are read as `${matrix.AXIS.KEY}`). Cells are the cartesian product in axis order (the first axis varies \
slowest); then every `exclude` entry removes the cells it matches (an entry matches when each key it gives has \
that value; keys it omits match anything); then every `include` entry adds its cell unless an identical one \
exists. Unlike GitHub Actions, an include entry is a whole cell: it must give a value for every axis and nothing \
else. A stage depends on the axes it references (directly or through `params`) and on its upstream stages' axes, \
and has one instance per distinct combination of those values, with the id `stage[axis=value,...]` (a map value \
is named by its `name` key if it has one, else by its values joined with `+`; two values of an axis may not get \
the same name); a stage that depends on no axis has one instance, shared by every cell.";

const INTERP_DOC: &str = "`${params.NAME}` or `${matrix.AXIS}` (`.KEY` reaches into a map). A value that is \
exactly one reference keeps the referenced value's type; inside a longer string the value is rendered. \
`$${` is a literal `${`.";

const INPUT_DOC: &str = "`stage.output` (an output of another stage), or a path starting with `./`, `../` or `/` \
(a file or folder outside the pipeline, relative to the file that writes it, hashed by content; its existence is \
checked when the stage runs). May interpolate `${params.x}` / `${matrix.x}`; a value that comes out null or empty \
means \"no such input\" (only for optional ports).";

/// The schema as JSON.
pub fn schema() -> Value {
    let mut gen = SchemaGenerator::new(SchemaSettings::draft07());
    let mut stage_refs = Vec::new();
    let mut defs = Map::new();
    for kind in kinds::ALL {
        let params = serde_json::to_value((kind.schema)(&mut gen)).unwrap_or(Value::Null);
        let def_name = format!("stage-{}", kind.name);
        defs.insert(def_name.clone(), builtin_stage(kind, params));
        stage_refs.push(json!({"$ref": format!("#/definitions/{def_name}")}));
    }
    stage_refs.push(json!({"$ref": "#/definitions/run-stage"}));
    for (name, s) in gen.take_definitions() {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        allow_interpolation(&mut v);
        defs.insert(name, v);
    }
    defs.insert("stage".into(), json!({"oneOf": stage_refs}));
    defs.insert("run-stage".into(), run_stage());
    defs.insert(
        "interpolation".into(),
        json!({"type": "string", "pattern": "\\$\\{(params|matrix)\\.[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*\\}", "description": INTERP_DOC}),
    );
    defs.insert(
        "input".into(),
        json!({"type": ["string", "null"], "description": INPUT_DOC}),
    );
    defs.insert("resources".into(), resources());
    defs.insert("retry".into(), json!({"description": "Extra attempts after a failure.", "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_RETRY}, {"$ref": "#/definitions/interpolation"}]}));
    defs.insert("string-map".into(), json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}));

    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "orchestrator pipeline",
        "description": "A pipeline file of `orchestrator`: stages of built-in kinds (`uses:`) or shell commands (`run:`), wired by `stage.output` references, swept over an optional `matrix`. Unknown keys are errors.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "Names the results folder. Default: the file name without extension."},
            "extend": {"type": "string", "description": "Another pipeline file (relative to this one) that this file is deep-merged over: maps merge key by key, this file wins, a `null` removes the key (e.g. `stages: { old: null }`), lists are replaced. Paths stay relative to the file that wrote them."},
            "params": {"type": "object", "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"}, "description": "Named values for `${params.NAME}`. A param may use `${matrix.AXIS}` (not other params)."},
            "matrix": {
                "type": "object",
                "description": MATRIX_DOC,
                "properties": {
                    "include": {"type": "array", "items": {"type": "object", "minProperties": 1}, "description": "Cells to add: a value for every axis."},
                    "exclude": {"type": "array", "items": {"type": "object", "minProperties": 1}, "description": "Cells to remove: an entry matches every cell that has all of its values."}
                },
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {"type": "array", "minItems": 1}
            },
            "executor": {
                "type": "object",
                "additionalProperties": false,
                "description": "Where stages run by default (the command line's `--executor` wins).",
                "properties": {
                    "kind": {"enum": ["local", "slurm"]},
                    "slurm": {"$ref": "#/definitions/string-map", "description": "Pipeline-wide `sbatch` options: partition, account, qos, constraint, ..."}
                }
            },
            "report": {
                "type": "object",
                "additionalProperties": false,
                "description": "How `orchestrator report` builds its table.",
                "properties": {
                    "stages": {"type": "array", "items": {"type": "string"}, "description": "Stages whose metrics make the columns."},
                    "baseline": {"type": "array", "items": {"type": "string"}, "description": "Stages that hold the full-data baseline."}
                }
            },
            "stages": {
                "type": "object",
                "minProperties": 1,
                "description": "Stage name -> stage. Names are letters, digits, `_` and `-`. Order does not matter: the graph comes from the inputs.",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {"anyOf": [{"$ref": "#/definitions/stage"}, {"type": "null", "description": "In a file that `extend`s another: remove the stage."}]}
            }
        },
        "definitions": Value::Object(defs),
    })
}

fn builtin_stage(kind: &KindSpec, params: Value) -> Value {
    let mut inputs = Map::new();
    for p in kind.inputs {
        inputs.insert(
            p.name.to_string(),
            json!({"$ref": "#/definitions/input", "description": p.doc}),
        );
    }
    let required: Vec<&str> = kind
        .inputs
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name)
        .collect();
    let outputs: Vec<String> = kind
        .outputs
        .iter()
        .map(|o| format!("`{}` ({})", o.name, o.doc))
        .collect();
    let mut props = json!({
        "uses": {"const": kind.name},
        "with": params,
        "inputs": {"type": "object", "additionalProperties": false, "required": required, "properties": inputs},
        "resources": {"$ref": "#/definitions/resources"},
        "retry": {"$ref": "#/definitions/retry"}
    });
    if kind.inputs.is_empty() {
        props["inputs"] =
            json!({"type": "object", "additionalProperties": false, "maxProperties": 0});
    }
    let description = format!(
        "`{}` (version {}): {}. Outputs: {}. Default GPUs: {}.",
        kind.name,
        kind.version,
        kind.summary,
        outputs.join("; "),
        kind.default_gpus
    );
    let mut required_keys = vec!["uses"];
    if kind.inputs.iter().any(|p| p.required) {
        required_keys.push("inputs");
    }
    json!({"type": "object", "description": description, "additionalProperties": false, "required": required_keys, "properties": props})
}

fn run_stage() -> Value {
    json!({
        "type": "object",
        "description": "A shell command (`sh -c`) with declared inputs and outputs. In `run`, `${inputs.NAME}` and `${outputs.NAME}` become shell-quoted absolute paths when the stage runs; `${params.x}` and `${matrix.x}` are filled in when the file is loaded. Its fingerprint is the command, `env`, the outputs and the inputs' content.",
        "additionalProperties": false,
        "required": ["run"],
        "properties": {
            "run": {"type": "string", "minLength": 1},
            "inputs": {"type": "object", "additionalProperties": {"$ref": "#/definitions/input"}},
            "outputs": {
                "description": "Output names (a trailing `/` marks a folder the command creates), or name -> path inside the stage's folder.",
                "anyOf": [
                    {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]+/?$"}},
                    {"type": "object", "additionalProperties": {"type": "string"}}
                ]
            },
            "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
            "resources": {"$ref": "#/definitions/resources"},
            "retry": {"$ref": "#/definitions/retry"}
        }
    })
}

fn resources() -> Value {
    let int_or_interp = |min: i64, max: i64, doc: &str| json!({"description": doc, "anyOf": [{"type": "integer", "minimum": min, "maximum": max}, {"$ref": "#/definitions/interpolation"}]});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "gpus": int_or_interp(0, MAX_GPUS, "GPUs (one machine's); default: the kind's, 0 for `run:` stages. Without GPUs on the machine, the stage runs on the CPU."),
            "cpus": int_or_interp(1, MAX_CPUS, "CPU slots, counted against `--jobs` (default 1)."),
            "mem_gb": {"description": "Memory (SLURM `--mem`).", "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEM_GB}, {"$ref": "#/definitions/interpolation"}]},
            "time_min": int_or_interp(1, MAX_TIME_MIN, "Wall-time limit in minutes (SLURM `--time`; locally a timeout)."),
            "slurm": {"$ref": "#/definitions/string-map", "description": "Per-stage `sbatch` options over the executor's."}
        }
    })
}

/// Let every property of a params definition also be a `${...}` reference.
fn allow_interpolation(def: &mut Value) {
    let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (_, p) in props.iter_mut() {
        let mut inner = p.take();
        let description = inner.as_object_mut().and_then(|o| o.remove("description"));
        let default = inner.as_object_mut().and_then(|o| o.remove("default"));
        let mut wrapped = json!({"anyOf": [inner, {"$ref": "#/definitions/interpolation"}]});
        if let Some(d) = description {
            wrapped["description"] = d;
        }
        if let Some(d) = default {
            wrapped["default"] = d;
        }
        *p = wrapped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_stage_definition_with_its_params() {
        let s = schema();
        let defs = s["definitions"].as_object().unwrap();
        for k in kinds::ALL {
            let d = &defs[&format!("stage-{}", k.name)];
            assert_eq!(d["properties"]["uses"]["const"], k.name);
        }
        let train = &defs["TrainParams"]["properties"]["epochs"];
        assert_eq!(train["anyOf"][1]["$ref"], "#/definitions/interpolation");
    }
}
