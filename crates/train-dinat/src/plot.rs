//! The loss and accuracy curves, per epoch, as a PNG (plotters' bitmap backend; the font is
//! DejaVu Sans from the `dejavu` crate, so no system font is needed).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One curve: a name and its value per epoch (epoch 1 first).
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Values, epoch 1 first.
    pub values: Vec<f64>,
}

/// Draws two panels side by side (loss, accuracy in %) into the PNG at `path`.
pub fn plot(
    path: &Path,
    loss: &[Series],
    accuracy: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    // Registering twice (a second plot in one process) is harmless.
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded DejaVu font did not load")?;
    let root = BitMapBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    panel(
        &left,
        "loss (cross-entropy)",
        loss,
        None,
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &right,
        "accuracy (%)",
        accuracy,
        Some(100.0),
        SeriesLabelPosition::LowerRight,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    y_max: Option<f64>,
    legend: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    let epochs = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max);
    let y_max = y_max.unwrap_or(top * 1.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(1i32..epochs as i32, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.min(10))
        .label_style(("sans-serif", 14))
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (s, color) in series.iter().zip(colors) {
        let points = s.values.iter().enumerate().map(|(i, v)| (i as i32 + 1, *v));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(legend)
        .draw()?;
    Ok(())
}
