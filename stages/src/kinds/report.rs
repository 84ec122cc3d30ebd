//! Params and ports of `report`: the paper-style comparison table of gathered results, as a stage
//! (its output cached like any other). Its inputs are gathers of `metrics` (any stage) and `roc`
//! (ijbc stages), under names of the pipeline's choosing; the table itself is built by the
//! engine's `report` module, which the lite worker (in the engine's package) links.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamError, Params, Port};
use crate::kind_spec;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportParams {
    /// Matrix axes that are repeats (e.g. `seed`): each row is the mean ± sample std over them,
    /// with n. Empty: one row per cell.
    pub aggregate: Vec<String>,
}

impl Params for ReportParams {
    fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        for (i, a) in self.aggregate.iter().enumerate() {
            if self.aggregate[..i].contains(a) {
                errs.push(ParamError::new(
                    format!("aggregate[{i}]"),
                    format!("axis `{a}` is listed twice"),
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Reads gathers only: `STAGE.metrics[...]` of any stage, `STAGE.roc[...]` of
/// ijbc stages; a gathered stage without matrix axes gives the baseline rows.
pub static REPORT: super::KindSpec = kind_spec!(ReportParams,
    name: "report",
    worker: Lite,
    version: 1,
    summary: "the comparison table and plots of `orchestrator report`, from gathered metrics (`STAGE.metrics[*]`) and ROC curves (`IJBC.roc[*]`)",
    inputs: &[],
    outputs: &[Port::output("report", "report/", "report.md, report.csv, report.json and the plots")],
    default_gpus: 0,
    in_place: &[],
    gathers: &["metrics", "roc"],
);
