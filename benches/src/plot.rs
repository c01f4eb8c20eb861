//! `throughput.svg`: MB/s against payload size, bus and wire baseline.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::Report;

/// Payload sizes of the sweep, bytes.
pub const SWEEP: [usize; 9] = [16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576];

fn series(report: &Report, prefix: &str) -> Vec<(f64, f64)> {
    SWEEP
        .iter()
        .filter_map(|&p| {
            report
                .get(&format!("{prefix}_{p}_mbs"))
                .map(|f| ((p as f64).log2(), f.median.max(1e-3)))
        })
        .collect()
}

/// Draws the plot.
pub fn throughput(report: &Report, path: &Path) -> Result<()> {
    let bus = series(report, "sweep_bus");
    let wire = series(report, "sweep_wire");
    let ymax = bus.iter().chain(&wire).map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "domi one-way throughput vs payload (loopback)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(3.5f64..20.5f64, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("payload bytes (log2)")
        .y_desc("MB/s")
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round() as u64))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (data, color, name) in [
        (&bus, RED, "domi notify"),
        (&wire, BLUE, "std sockets (wire baseline)"),
    ] {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
