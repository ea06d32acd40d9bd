//! SVG plots for the HTML report, drawn with `plotters`.
//!
//! Each function returns a complete `<svg>` document, or `None` when there is
//! nothing to plot.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::experiments::boot::BootExperiment;
use crate::experiments::spinlock::WorkloadSpinLocks;

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0x76, 0xb7, 0xb2),
];

fn render(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Option<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        if let Err(e) = draw(&root) {
            tracing::warn!("plot failed: {e}");
            return None;
        }
        root.present().ok()?;
    }
    Some(svg)
}

/// The chart type every plot here draws on.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the series legend, boxed on a light background, at `position`.
fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| e.to_string())
}

/// Boot phases per boot: horizontal stacked bars on the host clock.
pub fn boot_phases(b: &BootExperiment) -> Option<String> {
    let rows: Vec<(u32, [f64; 3])> = b
        .samples
        .iter()
        .filter_map(|s| Some((s.boot, [s.kernel_banner_s?, s.init_s?, s.agent_hello_s?])))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let max_x = rows.iter().map(|(_, t)| t[2]).fold(0.0, f64::max) * 1.05;
    let n = rows.len() as f64;
    let labels = [
        "before kernel clock (firmware, load, decompress)",
        "kernel init",
        "user space to agent hello",
    ];
    render(760, 170 + 36 * rows.len() as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Boot phases per boot (host seconds since QEMU launch)",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.4..(n + 1.9))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() + 2)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 1.0 && i <= n {
                    format!("boot {}", i as u32)
                } else {
                    String::new()
                }
            })
            .x_label_formatter(&|x| tick(*x))
            .x_desc("seconds")
            .draw()
            .map_err(|e| e.to_string())?;
        for (phase, label) in labels.iter().enumerate() {
            let color = PALETTE[phase];
            chart
                .draw_series(rows.iter().enumerate().map(|(i, (_, t))| {
                    let x0 = if phase == 0 { 0.0 } else { t[phase - 1] };
                    let y = i as f64 + 1.0;
                    Rectangle::new([(x0, y - 0.35), (t[phase], y + 0.35)], color.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// spin_lock hits per subsystem, grouped by workload.
pub fn spin_lock_classes(data: &[WorkloadSpinLocks], classes: &[&str]) -> Option<String> {
    let workloads: Vec<&WorkloadSpinLocks> = data.iter().filter(|w| w.hits > 0).collect();
    if workloads.is_empty() {
        return None;
    }
    // Shares of each workload's own hits: one workload with a hundred times the hits
    // of the others (urandom's entropy loop) would flatten every other bar.
    let share = |w: &WorkloadSpinLocks, c: &str| {
        let hits = w
            .classes
            .iter()
            .find(|x| x.class == c)
            .map(|x| x.hits)
            .unwrap_or(0);
        100.0 * hits as f64 / w.hits as f64
    };
    let max_y = (workloads
        .iter()
        .flat_map(|w| classes.iter().map(|c| share(w, c)))
        .fold(0.0, f64::max)
        * 1.15)
        .clamp(1.0, 100.0);
    let nw = workloads.len() as f64;
    let width = 0.8 / classes.len() as f64;
    render(860, 360, |root| {
        // The legend has a column of its own: inside the plot, a workload whose one
        // class holds nearly all its hits (urandom's scheduler) ran under it.
        let (plot, key) = root.split_horizontally(730);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                "spin_lock hits per subsystem, as a share of each workload's hits",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..(nw - 0.5), 0.0..max_y)
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = workloads.iter().map(|w| w.workload.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(workloads.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{}%", tick(*y)))
            .y_desc("share of the workload's hits")
            .draw()
            .map_err(|e| e.to_string())?;
        for (ci, class) in classes.iter().enumerate() {
            let color = PALETTE[ci % PALETTE.len()];
            chart
                .draw_series(workloads.iter().enumerate().map(|(wi, w)| {
                    let x0 = wi as f64 - 0.4 + ci as f64 * width;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, share(w, class))],
                        color.filled(),
                    )
                }))
                .map_err(|e| e.to_string())?;
            let y = 50 + 22 * ci as i32;
            key.draw(&Rectangle::new([(4, y - 6), (16, y + 6)], color.filled()))
                .map_err(|e| e.to_string())?;
            key.draw(&Text::new(
                *class,
                (22, y - 7),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Events per time bin for several series: `(label, [(ms since start, count)])`.
pub fn timeline(title: &str, bin_ms: f64, series: &[(String, Vec<(f64, u64)>)]) -> Option<String> {
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(0.0, f64::max)
        + bin_ms;
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .max()? as f64
        * 1.15;
    render(760, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y.max(1.0))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .x_desc("ms since the workload started (guest clock)")
            .y_desc(format!("events per {} ms", tick(bin_ms)))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, y)| (*x, *y as f64)),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)
    })
}

/// A histogram of values (e.g. read latencies in µs) per series, on a log2 x axis.
pub fn log_histogram(title: &str, unit: &str, series: &[(String, Vec<f64>)]) -> Option<String> {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    if all.is_empty() {
        return None;
    }
    let lo = all
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log2()
        .floor();
    let hi = all
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .log2()
        .ceil()
        .max(lo + 1.0);
    let nbins = ((hi - lo) * 4.0) as usize;
    let bin = |v: f64| (((v.max(1e-9).log2() - lo) * 4.0) as usize).min(nbins - 1);
    let counts: Vec<(String, Vec<u64>)> = series
        .iter()
        .map(|(l, v)| {
            let mut c = vec![0u64; nbins];
            for x in v.iter().filter(|x| **x > 0.0) {
                c[bin(*x)] += 1;
            }
            (l.clone(), c)
        })
        .collect();
    let max_y = counts
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .max()
        .unwrap_or(1) as f64
        * 1.15;
    render(760, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
            .y_label_formatter(&|y| tick(*y))
            .x_desc(unit.to_string())
            .y_desc("reads")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, c)) in counts.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(c.iter().enumerate().map(|(b, n)| {
                    let x0 = lo + b as f64 / 4.0;
                    Rectangle::new([(x0, 0.0), (x0 + 0.25, *n as f64)], color.mix(0.6).filled())
                }))
                .map_err(|e| e.to_string())?
                .label(label.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)
    })
}

/// An axis label: whole numbers without a trailing ".0", others with at most two
/// decimals and no trailing zeros (`0.25`, `1.5`, `120`).
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        return format!("{}", v.round() as i64);
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_drop_needless_decimals() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1.5), "1.5");
        assert_eq!(tick(0.1 + 0.2), "0.3");
    }

    #[test]
    fn timeline_is_an_svg_with_the_series_label() {
        let svg = timeline(
            "t",
            10.0,
            &[("page_fault_user".into(), vec![(0.0, 5), (10.0, 7)])],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("page_fault_user"));
    }

    #[test]
    fn empty_inputs_give_no_plot() {
        assert!(timeline("t", 10.0, &[]).is_none());
        assert!(log_histogram("h", "µs", &[("a".into(), vec![])]).is_none());
        assert!(spin_lock_classes(&[], &["timers"]).is_none());
    }

    #[test]
    fn histogram_bins_every_positive_value() {
        let svg = log_histogram(
            "h",
            "µs",
            &[("urandom".into(), vec![1.0, 2.0, 3.0, 1000.0])],
        )
        .unwrap();
        assert!(svg.contains("urandom"));
    }
}
