//! [`schema`]: the JSON schema (draft-07) of a pipeline file, derived from the typed raw structs
//! of [`super::raw`] (keys, documentation, shapes), with every built-in kind's params (from
//! `KindSpec::schema`) and ports filled into one stage definition per kind.
//! `orchestrator schema` prints it; a test keeps the copy in `docs/pipeline.schema.json`
//! current, so editors (yaml-language-server) can complete and check pipeline files. It
//! describes the merged file: a file that `extend`s another may leave out what the base gives.

use orchestrator_stages::kinds::{self, KindSpec};
use schemars::gen::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use super::raw::{retry_definition, RawPipeline, RawResources, RawStage, INPUT_DOC, INTERP_DOC};

fn settings() -> SchemaSettings {
    SchemaSettings::draft07().with(|s| {
        s.option_add_null_type = false;
        s.option_nullable = false;
    })
}

/// The root schema of raw struct `T` as JSON (its definitions moved into `defs`; no title:
/// the struct's Rust name means nothing to a user).
fn root_of<T: schemars::JsonSchema>(defs: &mut Map<String, Value>) -> Value {
    let root = SchemaGenerator::new(settings()).into_root_schema_for::<T>();
    for (name, d) in root.definitions {
        defs.insert(name, serde_json::to_value(d).unwrap_or(Value::Null));
    }
    let mut v = serde_json::to_value(root.schema).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("title");
    }
    v
}

/// The schema as JSON.
pub fn schema() -> Value {
    // Kinds' params: an optional param may be written `null`.
    let mut gen = SchemaGenerator::new(SchemaSettings::draft07());
    let mut defs = Map::new();
    let stage = root_of::<RawStage>(&mut defs);
    let mut stage_refs = Vec::new();
    for kind in kinds::ALL {
        let params = serde_json::to_value((kind.schema)(&mut gen)).unwrap_or(Value::Null);
        let def_name = format!("stage-{}", kind.name);
        defs.insert(def_name.clone(), builtin_stage(&stage, kind, params));
        stage_refs.push(json!({"$ref": format!("#/definitions/{def_name}")}));
    }
    stage_refs.push(json!({"$ref": "#/definitions/run-stage"}));
    for (name, s) in gen.take_definitions() {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        allow_interpolation(&mut v);
        defs.insert(name, v);
    }
    defs.insert("stage".into(), json!({"oneOf": stage_refs}));
    defs.insert("run-stage".into(), run_stage(&stage));
    defs.insert(
        "interpolation".into(),
        json!({"type": "string", "pattern": "\\$\\{(params|matrix)\\.[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*\\}", "description": INTERP_DOC}),
    );
    defs.insert(
        "input".into(),
        json!({"type": ["string", "null"], "description": INPUT_DOC}),
    );
    let resources = root_of::<RawResources>(&mut defs);
    defs.insert("resources".into(), resources);
    defs.insert("retry".into(), retry_definition());
    defs.insert("string-map".into(), json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}));

    let mut root = root_of::<RawPipeline>(&mut defs);
    root["title"] = json!("orchestrator pipeline");
    root["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    root["definitions"] = Value::Object(defs);
    root
}

/// `stage` without the keys in `drop`, as a closed object with `required` keys.
fn stage_subset(stage: &Value, drop: &[&str], required: Vec<&str>) -> Value {
    let mut s = stage.clone();
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        for k in drop {
            props.remove(*k);
        }
    }
    s["required"] = json!(required);
    s["additionalProperties"] = json!(false);
    s
}

fn builtin_stage(stage: &Value, kind: &KindSpec, params: Value) -> Value {
    let mut drop = vec!["run"];
    drop.extend_from_slice(RawStage::RUN_ONLY);
    let mut required = vec!["uses"];
    if kind.inputs.iter().any(|p| p.required) || !kind.gathers.is_empty() {
        required.push("inputs");
    }
    let mut s = stage_subset(stage, &drop, required);
    let mut inputs = Map::new();
    for p in kind.inputs {
        inputs.insert(
            p.name.to_string(),
            json!({"$ref": "#/definitions/input", "description": p.doc}),
        );
    }
    let required_inputs: Vec<&str> = kind
        .inputs
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name)
        .collect();
    let props = &mut s["properties"];
    props["uses"] = json!({"const": kind.name});
    props["with"] = params;
    props["inputs"] = if !kind.gathers.is_empty() {
        let reads: Vec<String> = kind
            .gathers
            .iter()
            .map(|o| format!("`STAGE.{o}[*]`"))
            .collect();
        let doc = format!("gathers under names of your choosing: {}", reads.join(", "));
        json!({"type": "object", "minProperties": 1, "description": doc, "additionalProperties": {"$ref": "#/definitions/input"}})
    } else if kind.inputs.is_empty() {
        json!({"type": "object", "additionalProperties": false, "maxProperties": 0})
    } else {
        json!({"type": "object", "additionalProperties": false, "required": required_inputs, "properties": inputs})
    };
    let outputs: Vec<String> = kind
        .outputs
        .iter()
        .map(|o| format!("`{}` ({})", o.name, o.doc))
        .collect();
    s["description"] = json!(format!(
        "`{}` (version {}): {}. Outputs: {}. Default GPUs: {}.",
        kind.name,
        kind.version,
        kind.summary,
        outputs.join("; "),
        kind.default_gpus
    ));
    s
}

fn run_stage(stage: &Value) -> Value {
    let mut drop = vec!["uses"];
    drop.extend_from_slice(RawStage::BUILTIN_ONLY);
    let mut s = stage_subset(stage, &drop, vec!["run"]);
    s["description"] = json!("A shell command (`sh -c`) with declared inputs and outputs. In `run`, `${inputs.NAME}` and `${outputs.NAME}` become shell-quoted absolute paths when the stage runs; `${params.x}` and `${matrix.x}` are filled in when the file is loaded. Its fingerprint is the command, `env`, the outputs and the inputs' content.");
    s
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

    /// The key lists the loader checks against are the keys the structs define.
    #[test]
    fn key_lists_match_the_structs() {
        let s = schema();
        let top: Vec<&str> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = super::super::raw::TOP_KEYS.to_vec();
        want.sort();
        assert_eq!(top, want);
        let mut stage_keys: Vec<&str> = RawStage::KEYS.to_vec();
        stage_keys.sort();
        let mut defs = Map::new();
        let stage = root_of::<RawStage>(&mut defs);
        let got: Vec<&str> = stage["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got, stage_keys);
        let exclusive = ["with", "outputs", "env"];
        for k in RawStage::RUN_ONLY.iter().chain(RawStage::BUILTIN_ONLY) {
            assert!(
                exclusive.contains(k),
                "RawStage::key_locs does not know `{k}`"
            );
        }
    }

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
