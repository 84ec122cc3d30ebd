//! Pipeline files through the real binary: matrix expansion, shared stages, interpolation,
//! `extend`, fingerprints that change exactly downstream of an edit, `dag` renderings, the
//! checked-in JSON schema, and the exact rendered errors of every file in `tests/bad/`
//! (`BLESS=1` rewrites the expected `.stderr` files; `UPDATE_SCHEMA=1` rewrites the schema).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{dedent, Project};

fn json_of(p: &Project, args: &[&str]) -> Value {
    let r = p.run(args);
    r.success();
    serde_json::from_str(&r.stdout()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout()))
}

fn instances(v: &Value) -> Vec<Value> {
    v["instances"].as_array().cloned().unwrap_or_default()
}

fn count_stage(v: &Value, stage: &str) -> usize {
    instances(v).iter().filter(|i| i["stage"] == stage).count()
}

/// id -> static fingerprint key.
fn keys(v: &Value) -> BTreeMap<String, String> {
    instances(v)
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["static_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const SWEEP: &str = r#"
    name: sweep
    params: { epochs: 2, ratio: "${matrix.ratio}" }
    matrix:
      method: [{m: diffprob, seed: 1}, {m: dynunc, seed: 2}, {m: rand, seed: 3}, {m: rand, seed: 4}]
      ratio: [0.75, 0.5, 0.25]
    stages:
      data:    { uses: synthetic-faces, with: { identities: 20, images_per_identity: 4 } }
      train:   { uses: train, inputs: { train: data.train }, with: { network: iresnet-tiny, epochs: "${params.epochs}", record_history: true } }
      evalt:   { uses: eval-trainset, inputs: { model: train.model, train: data.train } }
      score:   { uses: score, inputs: { probs: evalt.probs, history: train.history, train: data.train }, with: { method: "${matrix.method.m}", seed: "${matrix.method.seed}" } }
      prune:   { uses: prune, inputs: { scores: score.scores, train: data.train }, with: { target_ratio: "${params.ratio}" } }
      retrain: { uses: train, inputs: { train: data.train, kept: prune.kept }, with: { network: iresnet-tiny, epochs: "${params.epochs}" } }
      verify:  { uses: verify, inputs: { model: retrain.model, pairs: data.pairs } }
"#;

#[test]
fn a_4x3_matrix_gives_12_dependent_instances_and_one_of_each_shared_stage() {
    let p = Project::new();
    p.file("sweep.yaml", SWEEP);
    let v = json_of(&p, &["validate", "sweep.yaml", "--format", "json"]);
    assert_eq!(v["cells"].as_array().unwrap().len(), 12);
    assert_eq!(count_stage(&v, "data"), 1, "shared root");
    assert_eq!(count_stage(&v, "train"), 1, "shared");
    assert_eq!(count_stage(&v, "evalt"), 1, "shared");
    assert_eq!(count_stage(&v, "score"), 4, "one per method");
    assert_eq!(count_stage(&v, "prune"), 12);
    assert_eq!(
        count_stage(&v, "retrain"),
        12,
        "inherits both axes from prune"
    );
    assert_eq!(count_stage(&v, "verify"), 12);
    let ids: Vec<String> = instances(&v)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids[..7],
        [
            "data",
            "train",
            "evalt",
            "score[method=diffprob+1]",
            "score[method=dynunc+2]",
            "score[method=rand+3]",
            "score[method=rand+4]"
        ]
    );
    assert!(
        ids.contains(&"prune[method=diffprob+1,ratio=0.25]".to_string()),
        "{ids:?}"
    );
    // Topological order: every upstream appears before its user.
    for (i, inst) in instances(&v).iter().enumerate() {
        for input in inst["inputs"].as_object().unwrap().values() {
            if let Some(up) = input["upstream"].as_str() {
                assert!(ids[..i].iter().any(|x| x == up), "{} before {up}", ids[i]);
            }
        }
    }
    // Typed interpolation: `"${params.epochs}"` stays a number; the ratio flows through params.
    let prune = instances(&v)
        .into_iter()
        .find(|i| i["id"] == "prune[method=dynunc+2,ratio=0.5]")
        .unwrap();
    assert_eq!(prune["params"]["target_ratio"], serde_json::json!(0.5));
    assert_eq!(
        prune["inputs"]["scores"],
        serde_json::json!({"upstream": "score[method=dynunc+2]", "output": "scores"})
    );
    let train = instances(&v)
        .into_iter()
        .find(|i| i["id"] == "train")
        .unwrap();
    assert_eq!(train["params"]["epochs"], serde_json::json!(2));
    assert_eq!(
        train["params"]["batch_size"],
        serde_json::json!(512),
        "defaults filled in"
    );
    assert_eq!(
        train["resources"]["gpus"],
        serde_json::json!(1),
        "the kind's default"
    );

    // The same count through `dag --format json` and the text summary.
    let d = json_of(&p, &["dag", "sweep.yaml", "--format", "json"]);
    assert_eq!(instances(&d).len(), 3 + 4 + 12 * 3);
    p.run(&["validate", "sweep.yaml"])
        .success()
        .stdout_has("ok: `sweep.yaml`: 43 stage instances of 7 stages, 12 matrix cells");

    // A value the kind rejects in one cell only is reported with that cell.
    p.file(
        "bad.yaml",
        &SWEEP.replace("{m: rand, seed: 4}", "{m: random, seed: 4}"),
    );
    p.run(&["validate", "bad.yaml"])
        .exit(2)
        .stderr_has("param `method` of `score`: unknown variant `random`")
        .stderr_has("= note: in matrix cell method=random+4");
}

#[test]
fn changing_one_param_changes_exactly_the_fingerprints_downstream_of_it() {
    let p = Project::new();
    p.file("a.yaml", SWEEP);
    let a = keys(&json_of(&p, &["validate", "a.yaml", "--format", "json"]));
    assert_eq!(a.len(), 43);
    let changed_by = |name: &str, text: String| {
        p.file(name, &text);
        let b = keys(&json_of(&p, &["validate", name, "--format", "json"]));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        a.keys()
            .filter(|id| a[*id] != b[*id])
            .cloned()
            .collect::<Vec<String>>()
    };
    let below = |stages: &[&str]| {
        a.keys()
            .filter(|id| {
                stages
                    .iter()
                    .any(|s| id.as_str() == *s || id.starts_with(&format!("{s}[")))
            })
            .cloned()
            .collect::<Vec<String>>()
    };

    // A param of one stage: that stage and everything downstream of it.
    let changed = changed_by(
        "b.yaml",
        SWEEP.replace("images_per_identity: 4", "images_per_identity: 5"),
    );
    assert_eq!(
        changed,
        a.keys().cloned().collect::<Vec<_>>(),
        "data is upstream of everything"
    );
    let changed = changed_by(
        "c.yaml",
        SWEEP.replace("record_history: true", "record_history: false"),
    );
    assert_eq!(
        changed,
        below(&["train", "evalt", "score", "prune", "retrain", "verify"])
    );
    // The verify stage alone.
    let changed = changed_by(
        "d.yaml",
        SWEEP.replace(
            "pairs: data.pairs } }",
            "pairs: data.pairs }, with: { batch_size: 32 } }",
        ),
    );
    assert_eq!(changed, below(&["verify"]));
    // A pipeline param used by two stages: both, and everything downstream of either.
    let changed = changed_by("e.yaml", SWEEP.replace("epochs: 2,", "epochs: 3,"));
    assert_eq!(
        changed,
        below(&["train", "evalt", "score", "prune", "retrain", "verify"])
    );
    // One matrix value: only the cells that have it change (they get new ids); the rest keep
    // their keys.
    p.file(
        "g.yaml",
        &SWEEP.replace("ratio: [0.75, 0.5, 0.25]", "ratio: [0.75, 0.5, 0.3]"),
    );
    let g = keys(&json_of(&p, &["validate", "g.yaml", "--format", "json"]));
    let kept: Vec<&String> = a.keys().filter(|id| g.get(*id) == Some(&a[*id])).collect();
    let expected: Vec<&String> = a.keys().filter(|id| !id.contains("ratio=0.25")).collect();
    assert_eq!(kept, expected);
    assert_eq!(g.keys().filter(|id| id.contains("ratio=0.3")).count(), 12);
}

#[test]
fn shell_stages_paths_and_optional_inputs() {
    let p = Project::new();
    p.file("scripts/check.py", "print('hi')\n");
    p.file(
        "pipes/run.yaml",
        r#"
        name: shell
        params: { ratio: "${matrix.ratio}", tag: "r${matrix.ratio}" }
        matrix:
          method: [{name: diffprob, flags: clean.flags}, {name: rand, flags: null}]
          ratio: [0.5, 0.25]
        stages:
          data:  { uses: synthetic-faces }
          train: { uses: train, inputs: { train: data.train }, with: { network: iresnet-tiny, epochs: 1 } }
          evalt: { uses: eval-trainset, inputs: { model: train.model, train: data.train } }
          clean: { uses: clean, inputs: { predictions: evalt.predictions, train: data.train } }
          score: { uses: score, inputs: { probs: evalt.probs, train: data.train }, with: { method: "${matrix.method.name}" } }
          prune: { uses: prune, inputs: { scores: score.scores, train: data.train, flags: "${matrix.method.flags}" }, with: { target_ratio: "${params.ratio}" }, retry: 2 }
          check:
            run: "python3 ${inputs.script} ${inputs.kept} --ratio ${params.ratio} --tag ${params.tag} > ${outputs.report} && echo $${HOME}"
            inputs: { kept: prune.kept, script: ../scripts/check.py }
            outputs: [report, plots/]
            env: { RATIO: "${params.ratio}", N: 3 }
            resources: { cpus: 2, mem_gb: 1.5, time_min: 30, slurm: { partition: short } }
        "#,
    );
    let v = json_of(&p, &["validate", "pipes/run.yaml", "--format", "json"]);
    let by_id: BTreeMap<String, Value> = instances(&v)
        .into_iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i))
        .collect();
    // Null in one cell: no such input.
    assert!(by_id["prune[method=diffprob,ratio=0.5]"]["inputs"]
        .get("flags")
        .is_some());
    assert!(by_id["prune[method=rand,ratio=0.5]"]["inputs"]
        .get("flags")
        .is_none());
    assert_eq!(by_id["prune[method=rand,ratio=0.5]"]["retry"], 2);
    let check = &by_id["check[method=rand,ratio=0.25]"];
    assert_eq!(check["kind"], "run");
    assert_eq!(check["command"], "python3 ${inputs.script} ${inputs.kept} --ratio 0.25 --tag r0.25 > ${outputs.report} && echo $${HOME}");
    assert_eq!(check["env"], serde_json::json!({"RATIO": "0.25", "N": "3"}));
    assert_eq!(
        check["outputs"],
        serde_json::json!({"report": "report", "plots": "plots/"})
    );
    assert_eq!(
        check["resources"],
        serde_json::json!({"gpus": 0, "cpus": 2, "mem_gb": 1.5, "time_min": 30, "slurm": {"partition": "short"}})
    );
    // An external path is relative to the file that wrote it, made absolute (not checked now).
    let script = PathBuf::from(check["inputs"]["script"]["path"].as_str().unwrap());
    assert!(script.is_absolute());
    assert_eq!(
        script.canonicalize().unwrap(),
        p.path("scripts/check.py").canonicalize().unwrap()
    );
    assert_eq!(
        check["inputs"]["kept"],
        serde_json::json!({"upstream": "prune[method=rand,ratio=0.25]", "output": "kept"})
    );
    // An external input that does not exist is fine at load time (the executor checks it).
    p.file(
        "pipes/missing.yaml",
        "stages:\n  r: { uses: recordio, inputs: { source: ./nowhere/faces } }\n",
    );
    p.run(&["validate", "pipes/missing.yaml"])
        .success()
        .stdout_has("1 stage instances of 1 stages");
}

#[test]
fn extend_deep_merges_and_keeps_paths_relative_to_their_file() {
    let p = Project::new();
    p.file(
        "base/single.yaml",
        r#"
        name: single
        params: { ratio: 0.5, epochs: 2 }
        stages:
          data:  { uses: synthetic-faces, with: { identities: 20, seed: 1 } }
          src:   { uses: recordio, inputs: { source: ./faces } }
          train: { uses: train, inputs: { train: data.train }, with: { network: iresnet-tiny, epochs: "${params.epochs}" } }
          prune_dummy: { run: "true", outputs: [x] }
        "#,
    );
    p.file(
        "sweep.yaml",
        r#"
        extend: ./base/single.yaml
        name: sweep
        matrix: { seed: [1, 2] }
        stages:
          data: { with: { seed: "${matrix.seed}" } }
          prune_dummy: null
          extra: { uses: recordio, inputs: { source: ./more } }
        "#,
    );
    let v = json_of(&p, &["validate", "sweep.yaml", "--format", "json"]);
    assert_eq!(v["name"], "sweep");
    let ids: Vec<String> = instances(&v)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "data[seed=1]",
            "data[seed=2]",
            "src",
            "train[seed=1]",
            "train[seed=2]",
            "extra"
        ]
    );
    let data = &instances(&v)[0];
    assert_eq!(data["params"]["identities"], 20, "kept from the base");
    assert_eq!(data["params"]["seed"], 1, "overridden per cell");
    let src = instances(&v)
        .into_iter()
        .find(|i| i["id"] == "src")
        .unwrap();
    assert!(
        src["inputs"]["source"]["path"]
            .as_str()
            .unwrap()
            .ends_with("base/faces"),
        "{src}"
    );
    let extra = instances(&v)
        .into_iter()
        .find(|i| i["id"] == "extra")
        .unwrap();
    assert!(
        !extra["inputs"]["source"]["path"]
            .as_str()
            .unwrap()
            .contains("base"),
        "{extra}"
    );
    // Errors in the base point at the base file.
    p.file(
        "base/single.yaml",
        &std::fs::read_to_string(p.path("base/single.yaml"))
            .unwrap()
            .replace("identities: 20", "identitis: 20"),
    );
    p.run(&["validate", "sweep.yaml"])
        .exit(2)
        .stderr_has(" --> base/single.yaml:4:")
        .stderr_has("did you mean `identities`?");
}

#[test]
fn dag_renders_text_dot_and_mermaid() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: small
        matrix: { r: [0.5, 0.25] }
        stages:
          data:  { uses: synthetic-faces }
          score: { uses: score, inputs: { train: data.train }, with: { method: rand } }
          prune: { uses: prune, inputs: { scores: score.scores, labels: data.train }, with: { target_ratio: "${matrix.r}" } }
        "#,
    );
    p.run(&["dag", "p.yaml"]).success().stdout_has("small: 4 stage instances\ndata\nscore <- data\nprune[r=0.5] <- data, score\nprune[r=0.25] <- data, score\n");
    p.run(&["dag", "p.yaml", "--format", "dot"])
        .success()
        .stdout_has("digraph \"small\" {")
        .stdout_has("  n2 [label=\"prune[r=0.5]\"];")
        .stdout_has("  n1 -> n2 [label=\"scores\"];")
        .stdout_has("  n0 -> n2 [label=\"train -> labels\"];");
    p.run(&["dag", "p.yaml", "--format", "mermaid"])
        .success()
        .stdout_has("flowchart LR\n  n0[\"data\"]")
        .stdout_has("  n1 -->|\"scores\"| n3");
}

#[test]
fn checked_in_schema_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("docs/pipeline.schema.json");
    let p = Project::new();
    let r = p.run(&["schema"]);
    r.success();
    let got = r.stdout();
    let schema: Value = serde_json::from_str(&got).expect("schema is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(
        schema["definitions"]
            .as_object()
            .unwrap()
            .contains_key("PruneParams"),
        "kinds' params are in the schema"
    );
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        want == got,
        "{} is out of date: rerun with UPDATE_SCHEMA=1",
        file.display()
    );
}

/// Every `tests/bad/NN-name.yaml` fails `validate` with exit code 2 and exactly the text of
/// `NN-name.stderr`. `BLESS=1` writes the `.stderr` files from the current output.
#[test]
fn bad_pipelines_render_exact_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} bad pipelines", cases.len());
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = std::process::Command::new(crate::support::bin())
            .current_dir(&dir)
            .args(["validate", &name])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let expected_file = case.with_extension("stderr");
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit code {:?}, stdout:\n{}\nstderr:\n{stderr}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            ));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked:\n{stderr}"));
            continue;
        }
        if bless {
            std::fs::write(&expected_file, &stderr).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if want != stderr {
            failures.push(format!(
                "{name}: stderr differs (BLESS=1 to accept)\n--- want\n{want}\n--- got\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let p = Project::new();
    p.file(
        "p.yaml",
        &dedent(
            r#"
            name: many
            stages:
              a: { uses: trian }
              b: { uses: train, inputs: { train: a.train }, with: { epochs: 0, droput: 0.1 } }
              c: { run: "cat ${inputs.x}", inputs: { y: b.modle } }
            "#,
        ),
    );
    let r = p.run(&["validate", "p.yaml"]);
    r.exit(2)
        .stderr_has("unknown kind `trian`")
        .stderr_has("did you mean `train`?")
        .stderr_has("unknown param `droput` for kind `train`")
        .stderr_has("param `epochs` of `train`: must be at least 1")
        .stderr_has("`${inputs.x}` names an undeclared input")
        .stderr_has("stage `b` has no output `modle`")
        .stderr_has("is not a valid pipeline: 5 errors");
}

/// The pipelines users copy must always load.
#[test]
fn shipped_pipelines_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let out = std::process::Command::new(crate::support::bin())
                .arg("validate")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n > 0, "no pipelines in {}", dir.display());
}

#[test]
fn set_overrides_params_from_the_command_line() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
        name: p
        params: { ratio: 0.5, data: ./a.txt }
        stages:
          s: { run: "cp ${inputs.x} ${outputs.o} # ${params.ratio}", inputs: { x: "${params.data}" }, outputs: [o] }
        "#,
    );
    let base = keys(&json_of(&p, &["validate", "p.yaml", "--format", "json"]));
    let same = keys(&json_of(
        &p,
        &[
            "validate",
            "p.yaml",
            "--format",
            "json",
            "--set",
            "ratio=0.5",
        ],
    ));
    assert_eq!(base, same);
    let v = json_of(
        &p,
        &[
            "validate",
            "p.yaml",
            "--format",
            "json",
            "--set",
            "ratio=0.25",
        ],
    );
    assert_ne!(base, keys(&v));
    assert!(v.to_string().contains("# 0.25"), "{v}");
    let r = p.run(&["validate", "p.yaml", "--set", "ration=0.25"]);
    r.exit(2)
        .stderr_has("`--set ration`: the pipeline has no param `ration`")
        .stderr_has("did you mean `ratio`?");
    p.run(&["validate", "p.yaml", "--set", "ratio"])
        .exit(2)
        .stderr_has("write `--set NAME=VALUE`");
}

/// A symlink loop at an external input or inside an input folder is an error at the input
/// (it used to pass `validate` and make `run` exit 3 with the path repeated 40 times).
#[test]
fn symlink_loops_in_inputs_are_bad_input_at_their_place() {
    let p = Project::new();
    std::os::unix::fs::symlink(p.path("b"), p.path("a")).unwrap();
    std::os::unix::fs::symlink(p.path("a"), p.path("b")).unwrap();
    p.file("data/x/f.txt", "1\n");
    std::os::unix::fs::symlink("..", p.path("data/x/up")).unwrap();
    p.file(
        "p.yaml",
        r#"
        name: loops
        stages:
          s: { run: "cat ${inputs.x} > ${outputs.out}", inputs: { x: ./a }, outputs: [out] }
          t: { run: "ls ${inputs.d} > ${outputs.out}", inputs: { d: ./data }, outputs: [out] }
        "#,
    );
    for cmd in ["validate", "plan", "run"] {
        let r = p.run(&[cmd, "p.yaml"]);
        r.exit(2)
            .stderr_has("input `x`: ./a is a symlink loop: it never resolves")
            .stderr_has(" --> p.yaml:3:62")
            .stderr_has("input `d`: ./data/x/up is a symlink loop: it leads back to ./data\n")
            .stderr_has(" --> p.yaml:4:61")
            .stderr_has("stages.t.inputs.d")
            .stderr_has("is not a valid pipeline: 2 errors");
    }
    // Read-only commands look at the path itself only (listing a large input folder on every
    // `status` would cost seconds): the loop at the path is still found.
    p.run(&["status", "p.yaml"])
        .exit(2)
        .stderr_has("is not a valid pipeline: 1 error");
}

/// A matrix too large is refused before anything is built, stating the count; the limit can
/// be raised on the command line or in the environment. Instances (stages x cells) count too.
#[test]
fn too_many_instances_is_an_error_stating_the_count() {
    let p = Project::new();
    let values: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let v = values.join(", ");
    p.file(
        "p.yaml",
        &format!(
            r#"
            name: big
            matrix: {{ a: [{v}], b: [{v}], exclude: [{{ a: 0 }}] }}
            stages:
              s: {{ run: "echo ${{matrix.a}} ${{matrix.b}} > ${{outputs.out}}", outputs: [out] }}
              t: {{ run: "cat ${{inputs.x}} > ${{outputs.out}}", inputs: {{ x: s.out }}, outputs: [out] }}
            "#
        ),
    );
    p.run(&["validate", "p.yaml", "--max-instances", "2000"])
        .exit(2)
        .stderr_has("the matrix has 2,450 cells, more than the limit of 2,000 stage instances")
        .stderr_has(" --> p.yaml:2:1")
        .stderr_has("--max-instances N");
    p.run(&["validate", "p.yaml", "--max-instances", "3000"])
        .exit(2)
        .stderr_has("the pipeline expands to 4,900 stage instances (2 stages over 2,450 matrix cells), more than the limit of 3,000");
    p.run(&["validate", "p.yaml", "--max-instances", "4900"])
        .success()
        .stdout_has("4900 stage instances of 2 stages, 2450 matrix cells");
    let r = p
        .cmd(&["validate", "p.yaml"])
        .env("ORCHESTRATOR_MAX_INSTANCES", "100")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("more than the limit of 100 stage instances")
    );
    // The default limit (100,000) takes a 10^6-cell matrix without building it.
    let big: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let w = big.join(", ");
    p.file(
        "m.yaml",
        &format!(
            r#"
            name: million
            matrix: {{ a: [{w}], b: [{w}], c: [{w}] }}
            stages:
              s: {{ run: "echo ${{matrix.a}} ${{matrix.b}} ${{matrix.c}} > ${{outputs.out}}", outputs: [out] }}
            "#
        ),
    );
    p.run(&["validate", "m.yaml"]).exit(2).stderr_has(
        "the matrix has 1,000,000 cells, more than the limit of 100,000 stage instances",
    );
}
