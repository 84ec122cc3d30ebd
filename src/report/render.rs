//! Rendering a [`Report`]: Markdown, CSV and JSON tables, and the plots.

use super::*;

impl Report {
    fn label(&self, r: &Row, axis: &str) -> String {
        match r.cell.get(axis) {
            Some(v) => v.clone(),
            None if r.role == "baseline" => "full data".into(),
            None => String::new(),
        }
    }

    /// The text of row `r` in column `c` as every format shows it (`—` when missing), without
    /// the best-of-group mark.
    pub fn cell_text(&self, r: &Row, c: &Column) -> String {
        let Some(&v) = r.values.get(&c.key) else {
            return "—".into();
        };
        let fmt = |v: f64| match c.key.as_str() {
            "identities" if r.std.is_empty() => format!("{v:.0}"),
            "identities" | "train_minutes" => format!("{v:.1}"),
            "gpu_hours" => format!("{v:.3}"),
            _ => format!("{v:.2}"),
        };
        let mut s = fmt(v);
        if let Some(&sd) = r.std.get(&c.key) {
            s = format!("{s} ± {}", fmt(sd));
        }
        // Fewer repeats in this column than in the row (some have no result yet).
        if let Some(&n) = r.n.get(&c.key).filter(|&&n| n < self.repeats(r)) {
            s = format!("{s} (n={n})");
        }
        if self.below_far_floor(r, c) {
            s.push_str(" †");
        }
        if r.over_target && c.key == "kept_percent" {
            s.push_str(" ◊");
        }
        if c.score {
            if let Some(b) = r.baseline.and_then(|b| self.rows[b].values.get(&c.key)) {
                s = format!("{s} ({:+.2})", v - b);
            }
        }
        s
    }

    fn markdown_cell(&self, r: &Row, c: &Column) -> String {
        let s = self.cell_text(r, c);
        if r.best.contains(&c.key) {
            format!("**{s}**")
        } else {
            s
        }
    }

    /// A row's name in plot legends: its axis values, `full data` for a baseline.
    pub fn row_label(&self, r: &Row) -> String {
        if r.role == "baseline" {
            "full data".into()
        } else if self.axes.is_empty() {
            self.pipeline.clone()
        } else {
            self.axes
                .iter()
                .filter_map(|a| r.cell.get(a))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// An IJB-C TAR column whose FAR is below 1 / the row's impostor pairs (TAR at FAR 0 there).
    fn below_far_floor(&self, r: &Row, c: &Column) -> bool {
        let far = c
            .key
            .strip_prefix("ijbc.")
            .and_then(|f| f.parse::<f64>().ok());
        matches!((far, r.far_floor), (Some(f), Some(floor)) if f < floor)
    }

    /// How many repeats an aggregated row averages (the most any column has; 0 before any has a
    /// result); 1 when not aggregating.
    pub fn repeats(&self, r: &Row) -> usize {
        let none = if self.aggregate.is_empty() { 1 } else { 0 };
        r.n.values().copied().max().unwrap_or(none)
    }

    /// The header of the table: the axes (or `run`), `n` when aggregating, then the column titles.
    pub fn head(&self) -> Vec<String> {
        let mut axes: Vec<String> = if self.axes.is_empty() {
            vec!["run".into()]
        } else {
            self.axes.clone()
        };
        if !self.aggregate.is_empty() {
            axes.push("n".into());
        }
        axes.into_iter()
            .chain(self.columns.iter().map(|c| c.title.clone()))
            .collect()
    }

    /// The row's label cells under [`Report::head`]'s axis columns (`full data` for a baseline),
    /// and its number of repeats when aggregating.
    pub fn axis_values(&self, r: &Row) -> Vec<String> {
        let mut out: Vec<String> = if self.axes.is_empty() {
            vec![if r.role == "baseline" {
                "full data".into()
            } else {
                self.pipeline.clone()
            }]
        } else {
            self.axes.iter().map(|a| self.label(r, a)).collect()
        };
        if !r.warnings.is_empty() {
            out[0].push_str(" ‡");
        }
        if !self.aggregate.is_empty() {
            out.push(self.repeats(r).to_string());
        }
        out
    }

    pub fn markdown(&self) -> String {
        let head = self.head();
        let mut out = format!(
            "| {} |\n|{}|\n",
            head.join(" | "),
            head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        for r in &self.rows {
            let mut cols = self.axis_values(r);
            cols.extend(self.columns.iter().map(|c| self.markdown_cell(r, c)));
            out.push_str(&format!("| {} |\n", cols.join(" | ")));
        }
        let missing: Vec<&String> = self.rows.iter().flat_map(|r| &r.missing).collect();
        if !missing.is_empty() {
            out.push_str(&format!(
                "\n— = no current result ({} stage instance{} not run yet, or stale: {}).\n",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .take(6)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if missing.len() > 6 { ", …" } else { "" }
            ));
        }
        if self.aggregate.is_empty() {
            out.push_str("\nAccuracies and TAR in %; (±x) = difference to the full-data baseline; **bold** = best of its group (ahead of the runner-up).\n");
        } else {
            out.push_str(&format!(
                "\nAccuracies and TAR in %: mean ± sample std (n − 1) over {} (n = repeats with a result); (±x) = difference of the means to the full-data baseline; **bold** = best of its group, ahead of the runner-up by more than their combined std.\n",
                self.aggregate.join(", ")
            ));
        }
        if let Some(floor) = self
            .rows
            .iter()
            .filter_map(|r| r.far_floor)
            .reduce(f64::max)
        {
            if self
                .rows
                .iter()
                .any(|r| self.columns.iter().any(|c| self.below_far_floor(r, c)))
            {
                out.push_str(&format!(
                    "† that FAR is below 1 / {:.0} impostor pairs, the smallest non-zero FAR the set can measure: the TAR shown is TAR at FAR 0.\n",
                    1.0 / floor
                ));
            }
        }
        if self.columns.iter().any(|c| c.key.ends_with(".fold_std")) {
            out.push_str(
                "fold σ = the verification accuracy's std over its 10 folds (one model).\n",
            );
        }
        out.push_str(&self.warning_notes());
        if self.training_loss.iter().any(|c| !c.loss.is_empty()) {
            out.push_str("\nTraining loss per epoch of each training stage: [training_loss.png](training_loss.png) ([SVG](training_loss.svg)).\n");
        }
        if !self.cleaning.is_empty() {
            out.push_str("\nCleaning against the injected label noise:\n\n| stage | flagged | mislabeled | precision | recall |\n|---|---|---|---|---|\n");
            for c in &self.cleaning {
                let g = |k: &str| {
                    c.get(k)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "—".into())
                };
                let pct = |k: &str| {
                    c.get(k)
                        .and_then(|v| v.as_f64())
                        .map(|v| format!("{:.1} %", v * 100.0))
                        .unwrap_or_else(|| "—".into())
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    g("stage").trim_matches('"'),
                    g("flagged"),
                    g("mislabeled"),
                    pct("precision"),
                    pct("recall")
                ));
            }
        }
        out
    }

    /// The footnotes of the ◊ (kept more than the target) and ‡ (a stage warned) marks, each
    /// warning with its stage instance.
    fn warning_notes(&self) -> String {
        let mut out = String::new();
        if self.rows.iter().any(|r| r.over_target) {
            out.push_str(&format!("◊ kept more than its target: Kept % is {} points or more above Target % (the target is below the per-identity floor of `min_per_id` samples, or the method's per-identity counts step over it), so the cell is not like-for-like with the cells at the target; it is never marked best of its group nor counted as a runner-up.\n", super::OVER_TARGET * 100.0));
        }
        let warned: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !r.warnings.is_empty())
            .collect();
        if !warned.is_empty() {
            out.push_str("‡ warnings of that row's stages:\n");
            for r in warned {
                for w in &r.warnings {
                    out.push_str(&format!("- {}: {w}\n", self.row_label(r)));
                }
            }
        }
        out
    }

    /// Numbers stay numbers: a baseline's axis cells are empty (its `role` says what it is), an
    /// aggregated column is followed by its `std` column, and `n` follows the axes.
    pub fn csv(&self) -> String {
        let agg = !self.aggregate.is_empty();
        let mut head: Vec<String> = if self.axes.is_empty() {
            vec!["run".into()]
        } else {
            self.axes.clone()
        };
        if agg {
            head.push("n".into());
        }
        for c in &self.columns {
            head.push(c.title.clone());
            if agg {
                head.push(format!("{} std", c.title));
            }
        }
        head.push("role".into());
        head.push("missing".into());
        head.push("over_target".into());
        head.push("warnings".into());
        let mut out = head.join(",") + "\n";
        let num = |v: Option<&f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.rows {
            let mut cols: Vec<String> = if self.axes.is_empty() {
                vec![if r.role == "baseline" {
                    String::new()
                } else {
                    self.pipeline.clone()
                }]
            } else {
                self.axes
                    .iter()
                    .map(|a| r.cell.get(a).cloned().unwrap_or_default())
                    .collect()
            };
            if agg {
                cols.push(self.repeats(r).to_string());
            }
            for c in &self.columns {
                cols.push(num(r.values.get(&c.key)));
                if agg {
                    cols.push(num(r.std.get(&c.key)));
                }
            }
            cols.push(r.role.clone());
            cols.push(r.missing.join(" "));
            cols.push(r.over_target.to_string());
            cols.push(r.warnings.join("; "));
            out.push_str(
                &cols
                    .iter()
                    .map(|s| csv_field(s))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        out
    }

    /// Write report.md, report.csv, report.json and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in [
            ("report.md", self.markdown()),
            ("report.csv", self.csv()),
            ("report.json", serde_json::to_string_pretty(self)?),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
        written.extend(self.plots(dir)?);
        Ok(written)
    }

    /// One fixed colour per method (the first axis's values in matrix order), the same in every
    /// plot; black for the full-data baseline.
    fn color_of(&self, r: &Row) -> (u8, u8, u8) {
        self.color_of_cell(&r.cell, r.role == "baseline")
    }

    /// [`Report::color_of`] of a matrix cell (a baseline: black).
    fn color_of_cell(&self, cell: &BTreeMap<String, String>, baseline: bool) -> (u8, u8, u8) {
        if baseline {
            return (0, 0, 0);
        }
        let Some(axis) = self.axes.first() else {
            return OKABE_ITO[0];
        };
        let mut seen: Vec<&String> = Vec::new();
        for x in self.rows.iter().filter_map(|x| x.cell.get(axis)) {
            if !seen.contains(&x) {
                seen.push(x);
            }
        }
        let i = cell
            .get(axis)
            .and_then(|v| seen.iter().position(|s| *s == v))
            .unwrap_or(0);
        OKABE_ITO[i % OKABE_ITO.len()]
    }

    /// Every plot of the report: metrics against the kept ratio, ROC overlays, cleaning quality,
    /// training loss; the paths of the SVG and PNG files written.
    fn plots(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut plot = |stem: &str, title: &str, axes: (&str, &str), scale, series: &[Series]| {
            write_lines(dir, stem, title, axes, scale, series)?;
            out.push(dir.join(format!("{stem}.svg")));
            out.push(dir.join(format!("{stem}.png")));
            anyhow::Ok(())
        };
        for c in self.plotted_metrics() {
            let series = self.by_method(&c.key);
            if series.iter().all(|s| s.points.is_empty()) {
                continue;
            }
            let stem = format!("{}_vs_kept", c.key.replace(['.', '-'], "_"));
            let title = format!("{} vs kept ratio", c.title);
            let y = format!("{} %", c.title);
            plot(&stem, &title, ("kept %", &y), Scale::Linear, &series)?;
        }
        for (stem, title, x_label, rocs) in self.roc_overlays() {
            plot(&stem, &title, (&x_label, "TAR"), Scale::Far, &rocs)?;
        }
        let pr = self.cleaning_series();
        if !pr.is_empty() {
            let title = "Cleaning vs injected label noise";
            plot(
                "cleaning",
                title,
                ("recall %", "precision %"),
                Scale::Linear,
                &pr,
            )?;
        }
        let loss = self.loss_series();
        if !loss.is_empty() {
            let mut title = "Training loss".to_string();
            if !self.aggregate.is_empty() {
                title.push_str(&format!(" (mean over {})", self.aggregate.join(", ")));
            }
            plot(
                "training_loss",
                &title,
                ("epoch", "loss"),
                Scale::Count,
                &loss,
            )?;
        }
        Ok(out)
    }

    /// The columns plotted against the kept ratio: the verification average (else the first
    /// set) and IJB-C TAR@1e-4.
    fn plotted_metrics(&self) -> Vec<&Column> {
        let mut cols: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| c.key == "verify.avg")
            .collect();
        if cols.is_empty() {
            cols.extend(
                self.columns
                    .iter()
                    .filter(|c| c.key.starts_with("verify."))
                    .take(1),
            );
        }
        cols.extend(self.columns.iter().filter(|c| c.key == "ijbc.1e-04"));
        cols
    }

    /// Column `key` against the kept % as one series per method (the first axis; the baseline
    /// its own), sorted by kept %, with the repeats' std as error bars.
    fn by_method(&self, key: &str) -> Vec<Series> {
        let method_axis = self.axes.first();
        let mut series: Vec<Series> = Vec::new();
        for r in &self.rows {
            let (Some(&x), Some(&y)) = (r.values.get("kept_percent"), r.values.get(key)) else {
                continue;
            };
            let name = match (method_axis, r.role.as_str()) {
                (_, "baseline") => "full data".to_string(),
                (Some(a), _) => r.cell.get(a).cloned().unwrap_or_default(),
                (None, _) => self.pipeline.clone(),
            };
            let i = match series.iter().position(|s| s.label == name) {
                Some(i) => i,
                None => {
                    series.push(Series {
                        label: name,
                        color: Some(self.color_of(r)),
                        ..Series::default()
                    });
                    series.len() - 1
                }
            };
            series[i].points.push((x, y));
            series[i].y_err.push(r.std.get(key).copied().unwrap_or(0.0));
        }
        for s in &mut series {
            let mut both: Vec<((f64, f64), f64)> = s
                .points
                .iter()
                .copied()
                .zip(s.y_err.iter().copied())
                .collect();
            both.sort_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
            (s.points, s.y_err) = both.into_iter().unzip();
            if s.y_err.iter().all(|&e| e == 0.0) {
                s.y_err.clear();
            }
        }
        series
    }

    /// ROC overlays: one plot per group (the cells that share every axis but the method, e.g.
    /// one kept ratio) with the baseline, or one for everything without groups:
    /// `(stem, title, x-axis title, curves)`.
    fn roc_overlays(&self) -> Vec<(String, String, String, Vec<Series>)> {
        let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.roc_csv.is_some() && r.role != "baseline")
        {
            let g: Vec<String> = self
                .axes
                .iter()
                .skip(1)
                .filter_map(|a| r.cell.get(a).map(|v| format!("{a}={v}")))
                .collect();
            let g = g.join(",");
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, rs)) => rs.push(r),
                None => groups.push((g, vec![r])),
            }
        }
        let base: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.role == "baseline" && r.roc_csv.is_some())
            .collect();
        if groups.is_empty() && !base.is_empty() {
            groups.push((String::new(), vec![]));
        }
        let mut out = Vec::new();
        for (g, rows) in &groups {
            let members: Vec<&Row> = base.iter().chain(rows).copied().collect();
            let rocs: Vec<Series> = members.iter().filter_map(|r| self.roc_series(r)).collect();
            if rocs.is_empty() {
                continue;
            }
            let stem = if g.is_empty() {
                "roc".to_string()
            } else {
                format!("roc_{}", g.replace(['=', ',', '.', '+'], "_"))
            };
            let mut title = "IJB-C 1:1 ROC".to_string();
            if !g.is_empty() {
                title.push_str(&format!(" ({g})"));
            }
            if rows.len() > 1 && !self.aggregate.is_empty() {
                title.push_str(&format!(", first {}", self.aggregate.join(",")));
            }
            let floor = members.iter().filter_map(|r| r.far_floor).reduce(f64::max);
            let x_label = match floor {
                Some(f) if f > FAR_TICKS[0] => {
                    format!("FAR (below {f:.1e} = 1/impostor pairs: TAR at FAR 0)")
                }
                _ => "FAR".to_string(),
            };
            out.push((stem, title, x_label, rocs));
        }
        out
    }

    /// A row's ROC curve (its ijbc stage's roc.csv up to FAR 1e-1), AUC in the label.
    fn roc_series(&self, r: &Row) -> Option<Series> {
        let text = std::fs::read_to_string(r.roc_csv.as_ref()?).ok()?;
        let mut label = self.row_label(r);
        if let Some(a) = r.roc_auc {
            label = format!("{label} (AUC {:.2}%)", a * 100.0);
        }
        let mut points = roc_points(&text);
        points.retain(|&(far, _)| far <= FAR_TICKS[5]);
        Some(Series {
            label,
            points,
            color: Some(self.color_of(r)),
            ..Series::default()
        })
    }

    /// Each clean stage's (recall, precision) against the injected noise, as one point.
    fn cleaning_series(&self) -> Vec<Series> {
        self.cleaning
            .iter()
            .filter_map(|c| {
                let p = c.get("precision")?.as_f64()?;
                let r = c.get("recall")?.as_f64()?;
                Some(Series {
                    label: c.get("stage")?.as_str()?.to_string(),
                    points: vec![(r * 100.0, p * 100.0)],
                    ..Series::default()
                })
            })
            .collect()
    }

    /// One loss curve per training stage (epoch 1, 2, …), a method's colour where the stage
    /// depends on the method axis; the stages outside the matrix in black and grey.
    fn loss_series(&self) -> Vec<Series> {
        let mut shared = 0;
        // Curves of one colour (one method at several ratios) get successive line patterns.
        let mut of_color: BTreeMap<(u8, u8, u8), usize> = BTreeMap::new();
        self.training_loss
            .iter()
            .filter(|c| !c.loss.is_empty())
            .map(|c| {
                let color = match self.axes.first() {
                    Some(a) if c.cell.contains_key(a) => self.color_of_cell(&c.cell, false),
                    _ => {
                        shared += 1;
                        [(0, 0, 0), (120, 120, 120)][(shared - 1) % 2]
                    }
                };
                let seen = of_color.entry(color).or_default();
                *seen += 1;
                Series {
                    label: c.label.clone(),
                    points: (1..).map(f64::from).zip(c.loss.iter().copied()).collect(),
                    color: Some(color),
                    dash: *seen - 1,
                    ..Series::default()
                }
            })
            .collect()
    }
}

/// The points of an ijbc stage's `roc.csv` (`far,tar` rows after a header) from FAR 1e-6 on,
/// thinned for plotting.
pub fn roc_points(csv: &str) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .filter(|(f, _): &(f64, f64)| *f >= 1e-6)
        .collect();
    thin(points)
}

/// Keep at most ~400 points of a curve (every k-th, plus the last).
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let k = points.len().div_ceil(400).max(1);
    let last = points.last().copied();
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(k).collect();
    if let Some(l) = last {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
