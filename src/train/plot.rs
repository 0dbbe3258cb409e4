//! Training curves as a PNG: loss on top (mean and per offset), accuracy per offset below,
//! both against the step.
//!
//! Drawn with plotters into an RGB buffer (no plotters image encoder, so no second `image`
//! crate), encoded with `image`'s PNG encoder and written atomically. Text uses an embedded
//! ASCII subset of DejaVu Sans (assets/fonts, license beside it) through plotters' ab_glyph
//! backend, so nothing is asked of the system's fonts.

use std::path::Path;
use std::sync::Once;

use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::atomic::write_atomically;
use super::metrics::MetricsRow;
use crate::error::{Error, Result};

/// Width and height of the PNG, pixels.
pub const PLOT_SIZE: (u32, u32) = (1000, 800);

/// Background colour, so tests can tell a drawn image from a blank one.
pub const BACKGROUND: RGBColor = WHITE;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-ascii.ttf");

/// One colour per offset k (cycled when K is larger).
const OFFSET_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known good; a failure here is a build defect.
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("embedded font assets/fonts/DejaVuSans-ascii.ttf does not parse");
        }
    });
}

/// Draws the loss panel (legend upper right, where a falling loss leaves room), the
/// accuracy panel (legend upper left, where a rising accuracy leaves room) and, where rows
/// carry `probe_top1`, a panel of the linear probe's accuracy for `rows` into a
/// PNG of [`PLOT_SIZE`] at `path`, written atomically. The k-th curve of a panel is labelled
/// with the row offset it predicts, `offsets[k]` (`ModelConfig::offsets`: 2, 3, ... with the
/// default skip), not with its index. Non-finite values (a diverged step) are left out.
pub fn plot_curves(rows: &[MetricsRow], offsets: &[u32], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let plot_err = |message: String| Error::Plot {
        path: path.to_path_buf(),
        message,
    };
    if rows.is_empty() {
        return Err(plot_err("no metrics rows to plot".into()));
    }
    register_embedded_font();
    let (width, height) = PLOT_SIZE;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    draw(rows, offsets, &mut pixels).map_err(|e| plot_err(e.to_string()))?;

    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| plot_err(format!("PNG encoding: {e}")))?;
    write_atomically(path, |w| w.write_all(&png))
}

/// A legend label, a line style and the (step, value) points of one curve.
type Series = (String, ShapeStyle, Vec<(f64, f64)>);

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The name of the k-th (0-based) per-offset curve: the row offset it predicts,
/// `offsets[k]`; a row with more offsets than named (a log of another configuration) shows
/// its index instead.
pub fn offset_label(offsets: &[u32], k: usize) -> String {
    offsets
        .get(k)
        .map_or_else(|| format!("#{}", k + 1), |o| format!("offset {o}"))
}

fn draw(rows: &[MetricsRow], offset_names: &[u32], pixels: &mut [u8]) -> DrawResult {
    let offset = |k: usize| offset_label(offset_names, k);
    let root = BitMapBackend::with_buffer(pixels, PLOT_SIZE).into_drawing_area();
    root.fill(&BACKGROUND)?;
    // A third panel for the linear probe when it ran (`--probe-every`): its top-1 lives
    // on another scale than the InfoNCE accuracies.
    let probe = points(rows, |r| r.probe_top1);
    let areas = root.split_evenly((if probe.is_empty() { 2 } else { 3 }, 1));
    let (top, bottom) = (&areas[0], &areas[1]);
    let offsets = rows
        .iter()
        .map(|r| r.loss_k.len().max(r.accuracy_k.len()))
        .max()
        .unwrap_or(0);

    // Panel 1: mean loss (black, thicker) and loss per offset.
    let mut loss_series: Vec<Series> = vec![(
        "loss (mean)".into(),
        BLACK.stroke_width(3),
        points(rows, |r| Some(r.loss)),
    )];
    for k in 0..offsets {
        loss_series.push((
            format!("loss, {}", offset(k)),
            OFFSET_COLOURS[k % OFFSET_COLOURS.len()].stroke_width(2),
            points(rows, |r| r.loss_k.get(k).copied()),
        ));
    }
    panel(
        top,
        "InfoNCE loss",
        "loss",
        &loss_series,
        SeriesLabelPosition::UpperRight,
    )?;

    // Panel 2: accuracy per offset, and the mean.
    let mut accuracy_series = vec![(
        "accuracy (mean)".to_string(),
        BLACK.stroke_width(3),
        points(rows, |r| Some(r.accuracy)),
    )];
    for k in 0..offsets {
        accuracy_series.push((
            format!("accuracy, {}", offset(k)),
            OFFSET_COLOURS[k % OFFSET_COLOURS.len()].stroke_width(2),
            points(rows, |r| r.accuracy_k.get(k).copied()),
        ));
    }
    panel(
        bottom,
        "Accuracy per prediction offset",
        "accuracy",
        &accuracy_series,
        SeriesLabelPosition::UpperLeft,
    )?;

    // Panel 3: the linear probe's test top-1 at the steps it ran.
    if !probe.is_empty() {
        panel(
            &areas[2],
            "Linear probe (test top-1)",
            "top-1",
            &[(
                "linear probe top-1".to_string(),
                BLACK.stroke_width(3),
                probe,
            )],
            SeriesLabelPosition::UpperLeft,
        )?;
    }
    root.present()?;
    Ok(())
}

/// (step, value) for every row whose value exists and is finite.
fn points(rows: &[MetricsRow], value: impl Fn(&MetricsRow) -> Option<f32>) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| {
            value(r)
                .filter(|v| v.is_finite())
                .map(|v| (r.step as f64, v as f64))
        })
        .collect()
}

/// `lo..hi` covering every point, widened when empty or flat so the axes stay drawable.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1.0)
    };
    (lo - pad, hi + pad)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
    legend_at: SeriesLabelPosition,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = || series.iter().flat_map(|(_, _, pts)| pts.iter());
    let (x0, x1) = range(all().map(|p| p.0));
    let (y0, y1) = range(all().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (name, style, pts) in series {
        let style = *style;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(legend_at)
        .draw()?;
    Ok(())
}
