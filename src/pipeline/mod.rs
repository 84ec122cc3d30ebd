//! Pipeline files: YAML -> validated, expanded [`Pipeline`] (pure: reads files, spawns nothing).
//!
//! [`load`] is the entry point; it returns every error at once as [`Diagnostics`]. The pieces:
//! [`yaml`] (a located YAML tree), [`interp`] (`${...}` templates), [`matrix`] (cells),
//! [`diagnostics`] (rendering, did-you-mean), [`schema`] (the JSON schema of the format).

pub mod diagnostics;
pub mod interp;
mod load;
pub mod matrix;
mod model;
pub mod schema;
pub mod yaml;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use load::{
    load, load_with, normalize, MAX_CPUS, MAX_GPUS, MAX_MEM_GB, MAX_RETRY, MAX_TIME_MIN,
};
pub use model::*;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name: t
params: { ratio: "${matrix.ratio}", epochs: 2, tag: "r${matrix.ratio}" }
matrix:
  method: [{name: diffprob, flags: clean.flags}, {name: rand, flags: null}]
  ratio: [0.5, 0.25]
  include: [{method: {name: rand, flags: null}, ratio: 0.75}]
  exclude: [{ratio: 0.25, method: {name: rand, flags: null}}]
executor: { kind: slurm, slurm: { partition: gpu } }
report: { stages: [prune], baseline: [train] }
stages:
  data:  { uses: synthetic-faces, with: { identities: 20 } }
  train: { uses: train, inputs: { train: data.train }, with: { epochs: "${params.epochs}", network: iresnet-tiny }, resources: { gpus: 2 } }
  evalt: { uses: eval-trainset, inputs: { model: train.model, train: data.train } }
  clean: { uses: clean, inputs: { predictions: evalt.predictions, train: data.train } }
  score: { uses: score, inputs: { probs: evalt.probs, train: data.train }, with: { method: "${matrix.method.name}" } }
  prune: { uses: prune, inputs: { scores: score.scores, train: data.train, flags: "${matrix.method.flags}" }, with: { target_ratio: "${params.ratio}" }, retry: 1 }
  check: { run: "cat ${inputs.kept} > ${outputs.out} # ${params.tag}", inputs: { kept: prune.kept, extra: ../x/y }, outputs: [out, plots/], env: { R: "${params.ratio}" } }
"#;

    fn load_text(text: &str) -> Result<Pipeline, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub").join("p.yaml");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, text).unwrap();
        load(&f)
    }

    #[test]
    fn a_good_pipeline_expands() {
        let p = load_text(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.matrix_axes, ["method", "ratio"]);
        // 2 x 2 - 1 excluded + 1 included.
        assert_eq!(p.cells.len(), 4);
        let ids: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "data",
                "train",
                "evalt",
                "clean",
                "score[method=diffprob]",
                "score[method=rand]",
                "prune[method=diffprob,ratio=0.5]",
                "prune[method=diffprob,ratio=0.25]",
                "prune[method=rand,ratio=0.5]",
                "prune[method=rand,ratio=0.75]",
                "check[method=diffprob,ratio=0.5]",
                "check[method=diffprob,ratio=0.25]",
                "check[method=rand,ratio=0.5]",
                "check[method=rand,ratio=0.75]",
            ]
        );
        let (_, train) = p.instance("train").unwrap();
        assert_eq!(train.resources.gpus, 2);
        match &train.action {
            Action::Builtin { kind, params } => {
                assert_eq!(kind.name, "train");
                assert_eq!(params["epochs"], serde_json::json!(2));
            }
            other => panic!("{other:?}"),
        }
        let (_, chk) = p.instance("check[method=rand,ratio=0.75]").unwrap();
        match &chk.action {
            Action::Shell { command, env } => {
                assert_eq!(command, "cat ${inputs.kept} > ${outputs.out} # r0.75");
                assert_eq!(env["R"], "0.75");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            chk.outputs[1],
            Output {
                name: "plots".into(),
                rel_path: "plots".into(),
                is_dir: true,
                required: true
            }
        );
        match &chk.inputs["extra"] {
            Input::External { path } => assert!(
                path.ends_with("x/y") && !path.to_string_lossy().contains("sub"),
                "{path:?}"
            ),
            other => panic!("{other:?}"),
        }
        let (pi, _) = p.instance("prune[method=rand,ratio=0.75]").unwrap();
        assert!(
            !p.instances[pi].inputs.contains_key("flags"),
            "null flags = no input"
        );
        assert_eq!(p.instances[pi].retry, 1);
        // Topological order: every upstream index is smaller.
        for (i, inst) in p.instances.iter().enumerate() {
            for input in inst.inputs.values() {
                if let Input::Upstream { instance, output } = input {
                    assert!(*instance < i);
                    assert!(p.instances[*instance]
                        .outputs
                        .iter()
                        .any(|o| &o.name == output));
                }
            }
        }
        assert_eq!(p.executor.kind.as_deref(), Some("slurm"));
        assert_eq!(p.report.stages, ["prune"]);
        assert_eq!(
            crate::dag::topological_order(&p).map(|v| v.len()),
            Ok(p.instances.len())
        );
    }

    #[test]
    fn id_collisions_between_matrix_values_are_errors() {
        let e =
            load_text("matrix: { v: [\"1\", 1] }\nstages:\n  a: { run: \"echo ${matrix.v}\" }\n")
                .unwrap_err();
        assert!(e.to_string().contains("would both be named `1`"), "{e}");
    }

    /// Every truncation and every one-line deletion of a good file loads or fails with
    /// diagnostics; none panics.
    #[test]
    fn mangled_files_never_panic() {
        let lines: Vec<&str> = GOOD.lines().collect();
        for i in 0..lines.len() {
            let mut l = lines.clone();
            l.remove(i);
            let _ = load_text(&l.join("\n"));
        }
        let chars: Vec<char> = GOOD.chars().collect();
        for cut in (0..chars.len()).step_by(11) {
            let text: String = chars[..cut].iter().collect();
            if let Err(e) = load_text(&text) {
                assert!(!e.items.is_empty());
            }
        }
    }
}
