//! [`write_roc`]: the ROC plot of an IJB evaluation as SVG and PNG (plotters), plus the full curve
//! as CSV.
//!
//! plotters' bitmap backend cannot draw text without a font backend (it panics), and system fonts
//! are not guaranteed on compute nodes, so the crate enables plotters' `ab_glyph` feature and embeds
//! Lato Regular (SIL Open Font License 1.1, `fonts/OFL.txt`, 75 kB): both files carry the same
//! labels and legend. PNG text is drawn by [`text::Text`] (plotters' own loses the glyphs' side
//! bearings, squashing words and spaces).

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result};
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::element::ComposedElement;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::roc::{RocCurve, TarAtFar};

mod text;
use text::Text;

const FONT: &[u8] = include_bytes!("fonts/Lato-Regular.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (800, 600);
/// The x range of the plots: InsightFace's IJB evaluation plots FAR 1e-6..1e-1 (log scale).
const FAR_MIN: f64 = FAR_TICKS[0];
const FAR_MAX: f64 = FAR_TICKS[5];

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the embedded plot font could not be parsed");
    Ok(())
}

/// Points to draw: on a log-x plot the first and last point of each 1/400-decade bin keep the
/// staircase shape of a curve with millions of points.
fn plot_points(curve: &RocCurve) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let (mut bin_of_last, mut in_bin) = (i64::MIN, 0);
    for (&f, &t) in curve.fpr.iter().zip(&curve.tpr) {
        if !(FAR_MIN..=FAR_MAX).contains(&f) {
            continue;
        }
        let bin = (f.log10() * 400.0).floor() as i64;
        if bin != bin_of_last || in_bin == 1 {
            in_bin = if bin != bin_of_last { 1 } else { 2 };
            bin_of_last = bin;
            out.push((f, t));
        } else if let Some(last) = out.last_mut() {
            *last = (f, t);
        }
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    curve: &RocCurve,
    label: &str,
    title: &str,
    auc: f64,
    picks: &[TarAtFar],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(far_axis(), 0.0..1.0f64)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("False Positive Rate")
        .y_desc("True Positive Rate")
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(plot_points(curve), blue.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?
        .label(format!("{label} (AUC = {:.2}%)", auc * 100.0))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_series(
            picks
                .iter()
                .filter(|p| (FAR_MIN..=FAR_MAX).contains(&p.far))
                .map(|p| Circle::new((p.far, p.tar), 4, RED.filled())),
        )
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?
        .label("TAR@FAR table points")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}

/// Write `roc.svg`, `roc.png` and `roc.csv` (`fpr,tpr,threshold`, the whole curve) into `dir`.
pub fn write_roc(
    dir: &Path,
    curve: &RocCurve,
    label: &str,
    title: &str,
    auc: f64,
    picks: &[TarAtFar],
) -> Result<()> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let svg = dir.join("roc.svg");
    draw(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        curve,
        label,
        title,
        auc,
        picks,
    )
    .with_context(|| format!("cannot draw {}", svg.display()))?;
    let png = dir.join("roc.png");
    draw(
        Text(BitMapBackend::new(&png, SIZE)).into_drawing_area(),
        curve,
        label,
        title,
        auc,
        picks,
    )
    .with_context(|| format!("cannot draw {}", png.display()))?;
    let csv = dir.join("roc.csv");
    let f =
        std::fs::File::create(&csv).with_context(|| format!("cannot create {}", csv.display()))?;
    let mut w = std::io::BufWriter::new(f);
    writeln!(w, "fpr,tpr,threshold")?;
    for ((f, t), th) in curve.fpr.iter().zip(&curve.tpr).zip(&curve.thresholds) {
        // `{}` prints the shortest string that round-trips, so the CSV keeps every bit.
        writeln!(w, "{f},{t},{th}")?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", csv.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::roc::{auc, roc_curve, tar_at_far, IJB_FAR_TARGETS};

    #[test]
    fn writes_svg_png_and_csv() {
        let n = 20_000;
        let scores: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % n) as f32 / n as f32 + if i % 50 == 0 { 0.5 } else { 0.0 })
            .collect();
        let labels: Vec<bool> = (0..n).map(|i| i % 50 == 0).collect();
        let c = roc_curve(&scores, &labels).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = auc(&c.fpr, &c.tpr);
        write_roc(
            dir.path(),
            &c,
            "test model",
            "ROC on IJB-C",
            a,
            &tar_at_far(&c, &IJB_FAR_TARGETS),
        )
        .unwrap();
        let svg = std::fs::read_to_string(dir.path().join("roc.svg")).unwrap();
        assert!(svg.contains("False Positive Rate") && svg.contains("AUC"));
        assert_eq!(
            x_labels(&svg),
            ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]
        );
        let png = image::open(dir.path().join("roc.png")).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), SIZE);
        // Text and the curve drew dark pixels; not a blank canvas.
        assert!(png.pixels().filter(|p| p.0[0] < 100).count() > 1000);
        let csv = std::fs::read_to_string(dir.path().join("roc.csv")).unwrap();
        assert_eq!(csv.lines().count(), c.fpr.len() + 1);
        assert!(csv.lines().nth(1).unwrap().starts_with("0,0,inf"));
    }

    /// The texts of an SVG that look like `1e<k>` (the FAR axis' labels), in order.
    fn x_labels(svg: &str) -> Vec<String> {
        svg.split('>')
            .filter_map(|t| t.strip_suffix("</text"))
            .map(|t| t.trim().to_string())
            .filter(|t| t.starts_with("1e"))
            .collect()
    }

    #[test]
    fn a_count_axis_is_labelled_at_whole_numbers_and_patterns_cycle() {
        assert_eq!(x_tick(2.0, Scale::Count), "2");
        assert_eq!(x_tick(2.5, Scale::Count), "");
        assert_eq!(x_tick(2.5, Scale::Linear), "2.5");
        assert_eq!(dash_pattern(0), None);
        assert!(dash_pattern(1).is_some() && dash_pattern(2).is_some());
        assert_ne!(dash_pattern(1), dash_pattern(2));
        assert_eq!(dash_pattern(3), None);
        // A dashed series draws (and its legend entry composes) in both back ends.
        let dir = tempfile::tempdir().unwrap();
        let series: Vec<Series> = (0..3)
            .map(|dash| Series {
                label: format!("pattern {dash}"),
                points: vec![(1.0, 3.0 - dash as f64), (2.0, 2.0), (3.0, 1.0)],
                dash,
                ..Series::default()
            })
            .collect();
        write_lines(
            dir.path(),
            "loss",
            "t",
            ("epoch", "loss"),
            Scale::Count,
            &series,
        )
        .unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains("pattern 2") && dir.path().join("loss.png").is_file());
    }

    #[test]
    fn the_far_axis_is_labelled_at_each_power_of_ten_from_1e_6_to_1e_1() {
        let dir = tempfile::tempdir().unwrap();
        let s = Series {
            label: "a curve".into(),
            points: vec![(1e-7, 0.1), (1e-3, 0.5), (0.5, 0.9)],
            ..Series::default()
        };
        write_lines(dir.path(), "roc", "ROC", ("FAR", "TAR"), Scale::Far, &[s]).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("roc.svg")).unwrap();
        assert_eq!(
            x_labels(&svg),
            ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]
        );
    }

    #[test]
    fn plot_points_thin_long_curves() {
        let m = 1_000_000;
        let fpr: Vec<f64> = (0..=m).map(|i| i as f64 / m as f64).collect();
        let c = RocCurve {
            tpr: fpr.clone(),
            thresholds: vec![0.0; fpr.len()],
            fpr,
            positives: 1,
            negatives: 1,
        };
        let p = plot_points(&c);
        assert!(p.len() < 6000, "{}", p.len());
        assert_eq!(p.last().unwrap().0, FAR_MAX);
    }
}

/// One named series of a line plot.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Error bar half-heights, one per point (empty: no error bars), e.g. a std over repeats.
    pub y_err: Vec<f64>,
    /// A fixed colour (so a method keeps its colour across plots); `None`: by position.
    pub color: Option<(u8, u8, u8)>,
    /// The line's pattern, which tells apart series of one colour: 0 solid, 1 dashed, 2 dotted
    /// (and so on, cycling).
    pub dash: usize,
}

/// Okabe & Ito's colour-blind-safe palette (Color Universal Design), black left out for the
/// baseline: colour `i` of a plot's series.
pub const OKABE_ITO: [(u8, u8, u8); 7] = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (213, 94, 0),
    (0, 114, 178),
    (204, 121, 167),
    (240, 228, 66),
];

/// The FAR axis' labelled ticks: every power of ten from 1e-6 to 1e-1, both ends included.
pub const FAR_TICKS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// The FAR axis: log scale over exactly `FAR_TICKS[0]..=FAR_TICKS[5]`, labelled at
/// [`FAR_TICKS`], light grid lines at 2..9 × 10^k. The ticks are given, not generated: plotters'
/// log axis starts its ticks at `10^ceil(log10(start))`, and `log10(1e-6)` rounds to
/// -5.999…, so its own ticks would leave 1e-6 unlabelled.
fn far_axis() -> WithKeyPoints<LogCoord<f64>> {
    let minor = FAR_TICKS[..5]
        .iter()
        .flat_map(|&p| (2..10).map(move |m| p * f64::from(m)));
    (FAR_TICKS[0]..FAR_TICKS[5])
        .log_scale()
        .with_key_points(FAR_TICKS.to_vec())
        .with_light_points(minor)
}

/// Axis scale of [`write_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
    /// An ROC's FAR axis: log, fixed to 1e-6..1e-1, labelled at the powers of ten.
    Far,
    /// A count (epochs): linear, labelled at whole numbers only.
    Count,
}

/// A line plot with markers (a series of one point is still visible) as `<stem>.svg` and
/// `<stem>.png` in `dir`: used for the report's metric-vs-kept-ratio and overlaid ROC plots.
pub fn write_lines(
    dir: &Path,
    stem: &str,
    title: &str,
    axes: (&str, &str),
    x_scale: Scale,
    series: &[Series],
) -> Result<()> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let svg = dir.join(format!("{stem}.svg"));
    draw_lines(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        title,
        axes,
        x_scale,
        series,
    )
    .with_context(|| format!("cannot draw {}", svg.display()))?;
    let png = dir.join(format!("{stem}.png"));
    draw_lines(
        Text(BitMapBackend::new(&png, SIZE)).into_drawing_area(),
        title,
        axes,
        x_scale,
        series,
    )
    .with_context(|| format!("cannot draw {}", png.display()))?;
    Ok(())
}

/// The range of the points to plot (error bars included; x > 0 on log axes, within the FAR
/// range on [`Scale::Far`]); 0..1 × 0..1 when there is none.
fn data_bounds(series: &[Series], x_scale: Scale) -> (f64, f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in pts
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (x_scale == Scale::Linear || *x > 0.0))
        .filter(|(x, _)| x_scale != Scale::Far || (FAR_MIN..=FAR_MAX).contains(x))
    {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    // The error bars fit too.
    for s in series {
        for (&(_, y), &e) in s.points.iter().zip(&s.y_err) {
            if y.is_finite() && e.is_finite() {
                (y0, y1) = (y0.min(y - e), y1.max(y + e));
            }
        }
    }
    if !x0.is_finite() {
        return (0.0, 1.0, 0.0, 1.0);
    }
    (x0, x1, y0, y1)
}

/// `a..b` widened by 5 % on each side (by 0.5 when empty).
fn pad(a: f64, b: f64) -> (f64, f64) {
    if (b - a).abs() < 1e-12 {
        (a - 0.5, b + 0.5)
    } else {
        (a - 0.05 * (b - a), b + 0.05 * (b - a))
    }
}

/// Where the legend covers least: ROC curves rise to the right (the upper left is empty); on
/// linear axes the upper right when most series fall (loss curves), else the lower right.
fn legend_corner(series: &[Series], x_scale: Scale) -> SeriesLabelPosition {
    let falling = series
        .iter()
        .filter(|s| matches!((s.points.first(), s.points.last()), (Some(a), Some(b)) if b.1 < a.1))
        .count();
    if x_scale == Scale::Far {
        SeriesLabelPosition::UpperLeft
    } else if 2 * falling > series.len() {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::LowerRight
    }
}

/// An x tick's label: on [`Scale::Far`] `1e<k>` at the powers of ten (the minor ticks stay
/// unlabelled), else the value to 4 decimals.
fn x_tick(x: f64, x_scale: Scale) -> String {
    match x_scale {
        Scale::Far => {
            let k = x.log10().round();
            if (x.log10() - k).abs() < 1e-9 {
                format!("1e{k}")
            } else {
                String::new()
            }
        }
        Scale::Count if (x - x.round()).abs() > 1e-9 => String::new(),
        _ => format!("{}", (x * 1e4).round() / 1e4),
    }
}

/// The dash and gap lengths (pixels) of pattern `dash` of [`Series::dash`]; `None`: solid.
fn dash_pattern(dash: usize) -> Option<(u32, u32)> {
    [None, Some((9, 5)), Some((2, 4))][dash % 3]
}

/// A legend entry's 18-pixel sample of a line in pattern `dash` (see [`dash_pattern`]) and
/// colour `c`: three segments, which for a solid line cover the same span.
fn legend_line<DB: DrawingBackend>(x: i32, y: i32, dash: usize, c: RGBAColor) -> LegendLine<DB> {
    let spans = match dash_pattern(dash) {
        None => [(0, 18); 3],
        Some((on, _)) if on > 4 => [(0, 8), (13, 18), (13, 18)],
        Some(_) => [(0, 2), (6, 8), (12, 14)],
    };
    let seg = |(a, b): (i32, i32)| PathElement::new(vec![(a, 0), (b, 0)], c.stroke_width(2));
    EmptyElement::at((x, y)) + seg(spans[0]) + seg(spans[1]) + seg(spans[2])
}

/// What `EmptyElement + PathElement × 3` composes to.
type LegendLine<DB> = ComposedElement<
    (i32, i32),
    DB,
    PathElement<(i32, i32)>,
    ComposedElement<(i32, i32), DB, PathElement<(i32, i32)>, PathElement<(i32, i32)>>,
>;

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    x_scale: Scale,
    series: &[Series],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot: {e}");
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x0, x1, y0, y1) = data_bounds(series, x_scale);
    let (y0, y1) = pad(y0, y1);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64);
    let palette = |i: usize| {
        let (r, g, b) = series[i].color.unwrap_or(OKABE_ITO[i % OKABE_ITO.len()]);
        RGBColor(r, g, b).to_rgba()
    };
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style((FAMILY, 16))
                .axis_desc_style((FAMILY, 18))
                .x_label_formatter(&|x: &f64| x_tick(*x, x_scale))
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let c = palette(i);
                let points = s.points.iter().copied();
                let drawn = match dash_pattern(s.dash) {
                    None => chart.draw_series(LineSeries::new(points, c.stroke_width(2))),
                    Some((on, off)) => {
                        chart.draw_series(DashedLineSeries::new(points, on, off, c.stroke_width(2)))
                    }
                };
                let dash = s.dash;
                drawn
                    .map_err(|e| err(&e))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| legend_line(x, y, dash, c));
                // Markers only where they stay readable (a ROC curve has hundreds of points).
                if s.points.len() <= 30 {
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                        .map_err(|e| err(&e))?;
                }
                // Error bars: a vertical line from y - e to y + e with 10-pixel caps.
                for (&(x, y), &e) in s.points.iter().zip(&s.y_err) {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, y - e), (x, y + e)],
                            c.stroke_width(2),
                        )))
                        .map_err(|e| err(&e))?;
                    chart
                        .draw_series([y - e, y + e].into_iter().map(|yc| {
                            EmptyElement::at((x, yc))
                                + PathElement::new(vec![(-5, 0), (5, 0)], c.stroke_width(2))
                        }))
                        .map_err(|e| err(&e))?;
                }
            }
            chart
                .configure_series_labels()
                .position(legend_corner(series, x_scale))
                .label_font((FAMILY, 16))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    match x_scale {
        Scale::Linear | Scale::Count => {
            let (x0, x1) = pad(x0, x1);
            finish!(builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| err(&e))?)
        }
        Scale::Log => finish!(builder
            .build_cartesian_2d((x0..x1.max(x0 * 10.0)).log_scale(), y0..y1)
            .map_err(|e| err(&e))?),
        Scale::Far => finish!(builder
            .build_cartesian_2d(far_axis(), y0..y1)
            .map_err(|e| err(&e))?),
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
