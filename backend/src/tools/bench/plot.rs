//! `hermod bench --plot DIR`: the report as SVG charts, drawn with plotters' SVG backend (the
//! text is left to the viewer's fonts): throughput against the floor, latency percentiles, and
//! the memory idle long-polls hold, for whichever of those scenarios ran.

use plotters::prelude::*;
use std::path::{Path, PathBuf};

use super::{IdleResult, LoadResult, Report};

const WIDTH: u32 = 860;
const HEIGHT: u32 = 420;
const PALETTE: [RGBColor; 4] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
];

/// Writes the charts the report has data for into `dir`; returns their paths.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let e2e: Vec<&LoadResult> = report.load.iter().filter(|l| l.scenario == "e2e").collect();
    if !e2e.is_empty() {
        let groups: Vec<Group> = e2e
            .iter()
            .map(|l| Group {
                name: match l.ratio_to_floor {
                    Some(r) if l.server != "floor" => format!("{} ({r:.2}× floor)", label(l)),
                    _ => label(l),
                },
                values: vec![l.outcome.per_second],
            })
            .collect();
        let path = dir.join("throughput.svg");
        grouped_bars(
            &path,
            "End-to-end throughput (hermod bench --scenario e2e)",
            "commands completed / s",
            &["completed / s"],
            &groups,
        )?;
        written.push(path);

        let groups: Vec<Group> = e2e
            .iter()
            .map(|l| {
                let p =
                    |o: &Option<super::driver::Percentiles>| o.as_ref().map_or((0.0, 0.0), |p| (p.p50_ms, p.p99_ms));
                let (device_p50, device_p99) = p(&l.outcome.create_to_receive);
                let (callback_p50, callback_p99) = p(&l.outcome.answer_to_callback);
                Group {
                    name: label(l),
                    values: vec![device_p50, device_p99, callback_p50, callback_p99],
                }
            })
            .collect();
        let path = dir.join("latency.svg");
        grouped_bars(
            &path,
            "Latency under the e2e load",
            "milliseconds",
            &[
                "create → device p50",
                "create → device p99",
                "answer → callback p50",
                "answer → callback p99",
            ],
            &groups,
        )?;
        written.push(path);
    }
    if !report.idle.is_empty() {
        let groups: Vec<Group> = report
            .idle
            .iter()
            .map(|i: &IdleResult| Group {
                name: format!(
                    "{} ({} long-polls)",
                    i.db.map_or("floor".to_owned(), |d| format!("Hermod {}", d.name())),
                    i.polls
                ),
                values: vec![i.rss_before_mb, i.rss_idle_mb, i.peak_rss_mb],
            })
            .collect();
        let path = dir.join("idle-memory.svg");
        grouped_bars(
            &path,
            "Memory holding idle long-polls (hermod bench --scenario idle)",
            "RSS, MB",
            &["before", "holding", "peak"],
            &groups,
        )?;
        written.push(path);
    }
    Ok(written)
}

fn label(l: &LoadResult) -> String {
    match l.db {
        Some(db) if l.server != "floor" => format!("Hermod {}", db.name()),
        _ => "floor".to_owned(),
    }
}

/// One group of bars: a server and its value for each series.
struct Group {
    name: String,
    values: Vec<f64>,
}

fn grouped_bars(path: &Path, title: &str, y_label: &str, series: &[&str], groups: &[Group]) -> anyhow::Result<()> {
    let plot = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(&e))?;
    let top = groups
        .iter()
        .flat_map(|g| g.values.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.2;
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..top)
        .map_err(|e| plot(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            // Each group's name under its middle.
            let middle = x - x.floor();
            if (middle - 0.5).abs() < 1e-6 {
                names.get(x.floor() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if top >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| plot(&e))?;
    let width = 0.8 / series.len() as f64;
    for (s, name) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        chart
            .draw_series(groups.iter().enumerate().map(|(g, group)| {
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let value = group.values.get(s).copied().unwrap_or(0.0);
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, value)], color.filled())
            }))
            .map_err(|e| plot(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(groups.iter().enumerate().map(|(g, group)| {
                let x0 = g as f64 + 0.1 + s as f64 * width;
                let value = group.values.get(s).copied().unwrap_or(0.0);
                Text::new(figure(value), (x0, value + top * 0.02), ("sans-serif", 12))
            }))
            .map_err(|e| plot(&e))?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| plot(&e))?;
    }
    root.present().map_err(|e| plot(&e))?;
    Ok(())
}

fn figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
