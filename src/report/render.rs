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
        if r.role == "baseline" {
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
        let i = r
            .cell
            .get(axis)
            .and_then(|v| seen.iter().position(|s| *s == v))
            .unwrap_or(0);
        OKABE_ITO[i % OKABE_ITO.len()]
    }

    fn plots(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let method_axis = self.axes.first().cloned();
        let by_method = |key: &str| -> Vec<Series> {
            let mut series: Vec<Series> = Vec::new();
            for r in &self.rows {
                let (Some(&x), Some(&y)) = (r.values.get("kept_percent"), r.values.get(key)) else {
                    continue;
                };
                let name = match (&method_axis, r.role.as_str()) {
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
        };
        let mut metric_cols: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| c.key == "verify.avg")
            .collect();
        if metric_cols.is_empty() {
            metric_cols.extend(
                self.columns
                    .iter()
                    .filter(|c| c.key.starts_with("verify."))
                    .take(1),
            );
        }
        metric_cols.extend(self.columns.iter().filter(|c| c.key == "ijbc.1e-04"));
        for c in metric_cols {
            let series = by_method(&c.key);
            if series.iter().all(|s| s.points.is_empty()) {
                continue;
            }
            let stem = format!("{}_vs_kept", c.key.replace(['.', '-'], "_"));
            write_lines(
                dir,
                &stem,
                &format!("{} vs kept ratio", c.title),
                ("kept %", &format!("{} %", c.title)),
                Scale::Linear,
                &series,
            )?;
            out.push(dir.join(format!("{stem}.svg")));
            out.push(dir.join(format!("{stem}.png")));
        }
        // ROC overlays: one plot per group (the cells that share every axis but the method, e.g.
        // one kept ratio) with the baseline, or one for everything without groups.
        let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
        for r in self.rows.iter().filter(|r| r.roc_csv.is_some()) {
            if r.role == "baseline" {
                continue;
            }
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
        for (g, rows) in &groups {
            let mut rocs = Vec::new();
            for r in base.iter().chain(rows) {
                let Some(text) = r
                    .roc_csv
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                else {
                    continue;
                };
                let mut label = self.row_label(r);
                if let Some(a) = r.roc_auc {
                    label = format!("{label} (AUC {:.2}%)", a * 100.0);
                }
                // The plotted FAR range ends at 1e-1.
                let mut points = roc_points(&text);
                points.retain(|&(far, _)| far <= 1e-1);
                rocs.push(Series {
                    label,
                    points,
                    color: Some(self.color_of(r)),
                    ..Series::default()
                });
            }
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
            let floor = base
                .iter()
                .chain(rows)
                .filter_map(|r| r.far_floor)
                .reduce(f64::max);
            let x_label = match floor {
                Some(f) if f > 1e-6 => {
                    format!("FAR (below {f:.1e} = 1/impostor pairs: TAR at FAR 0)")
                }
                _ => "FAR".to_string(),
            };
            write_lines(dir, &stem, &title, (&x_label, "TAR"), Scale::Far, &rocs)?;
            out.push(dir.join(format!("{stem}.svg")));
            out.push(dir.join(format!("{stem}.png")));
        }
        let pr: Vec<Series> = self
            .cleaning
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
            .collect();
        if !pr.is_empty() {
            write_lines(
                dir,
                "cleaning",
                "Cleaning vs injected label noise",
                ("recall %", "precision %"),
                Scale::Linear,
                &pr,
            )?;
            out.push(dir.join("cleaning.svg"));
            out.push(dir.join("cleaning.png"));
        }
        Ok(out)
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
