//! SVG plots of a sweep: the Pareto chart (output tokens/s per GPU against tokens/s per
//! user) and TTFT/ITL percentiles against throughput.

use plotters::prelude::*;
use serde_json::{Map, Value};

type Points = [Map<String, Value>];
type PlotResult = Result<(), Box<dyn std::error::Error>>;

const W: u32 = 860;
const H: u32 = 560;
const P50: RGBColor = RGBColor(31, 119, 180);
const P90: RGBColor = RGBColor(44, 160, 44);
const P99: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(150, 150, 150);

fn get(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64).filter(|v| v.is_finite())
}

fn label(m: &Map<String, Value>) -> String {
    m.get("label")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// An upper bound for an axis: 15% above the largest value, at least `min`.
fn upper(values: impl Iterator<Item = f64>, min: f64) -> f64 {
    let m = values.fold(0.0, f64::max);
    if m > 0.0 {
        m * 1.15
    } else {
        min
    }
}

/// An axis label: no decimals on large ranges, trimmed zeros on small ones.
fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

fn or_message(buf: String, r: PlotResult) -> String {
    match r {
        Ok(()) => buf,
        Err(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"80\"><text x=\"10\" y=\"40\">plot failed: {}</text></svg>\n",
            e.to_string().replace('<', "&lt;").replace('&', "&amp;")
        ),
    }
}

/// The points on the Pareto frontier (no other point has both more tokens/s per user and
/// more throughput), sorted by tokens/s per user.
pub(crate) fn frontier(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut f: Vec<(f64, f64)> = pts
        .iter()
        .copied()
        .filter(|&(x, y)| {
            !pts.iter()
                .any(|&(a, b)| a >= x && b >= y && (a > x || b > y))
        })
        .collect();
    f.sort_by(|a, b| a.0.total_cmp(&b.0));
    f
}

/// Output tokens/s per GPU (or in total when the GPU count is unknown) against output
/// tokens/s per user, one marker per sweep point, the frontier joined.
pub(crate) fn pareto(points: &Points, per_gpu: bool) -> String {
    let mut buf = String::new();
    let r = draw_pareto(&mut buf, points, per_gpu);
    or_message(buf, r)
}

fn draw_pareto(buf: &mut String, points: &Points, per_gpu: bool) -> PlotResult {
    let ykey = if per_gpu {
        "output_throughput_per_gpu"
    } else {
        "output_throughput"
    };
    let data: Vec<(f64, f64, String)> = points
        .iter()
        .filter_map(|m| {
            Some((
                get(m, "output_throughput_per_user")?,
                get(m, ykey)?,
                label(m),
            ))
        })
        .collect();
    let root = SVGBackend::with_string(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = upper(data.iter().map(|d| d.0), 1.0);
    let ymax = upper(data.iter().map(|d| d.1), 1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput vs interactivity", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("output tokens/s per user (1 / TPOT)")
        .y_desc(if per_gpu {
            "output tokens/s per GPU"
        } else {
            "output tokens/s (total; give --gpus for per GPU)"
        })
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    let xy: Vec<(f64, f64)> = data.iter().map(|d| (d.0, d.1)).collect();
    let front = frontier(&xy);
    chart
        .draw_series(LineSeries::new(
            front.iter().copied(),
            ShapeStyle::from(&P50).stroke_width(2),
        ))?
        .label("Pareto frontier")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                ShapeStyle::from(&P50).stroke_width(2),
            )
        });
    chart
        .draw_series(xy.iter().map(|&p| {
            let on = front.contains(&p);
            Circle::new(p, 5, if on { P50.filled() } else { GREY.filled() })
        }))?
        .label("sweep point")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, P50.filled()));
    chart.draw_series(data.iter().map(|(x, y, l)| {
        EmptyElement::at((*x, *y)) + Text::new(l.clone(), (8, -18), ("sans-serif", 13).into_font())
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

/// TTFT (left) and ITL (right) p50/p90/p99 against output tokens/s.
pub(crate) fn latency(points: &Points) -> String {
    let mut buf = String::new();
    let r = draw_latency(&mut buf, points);
    or_message(buf, r)
}

fn draw_latency(buf: &mut String, points: &Points) -> PlotResult {
    let root = SVGBackend::with_string(buf, (W + 300, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally((W + 300) / 2);
    for (area, metric, title) in [
        (left, "ttft", "Time to first token"),
        (right, "itl", "Inter-token latency"),
    ] {
        let mut rows: Vec<(f64, [Option<f64>; 3])> = points
            .iter()
            .filter_map(|m| {
                Some((
                    get(m, "output_throughput")?,
                    [
                        get(m, &format!("median_{metric}_ms")),
                        get(m, &format!("p90_{metric}_ms")),
                        get(m, &format!("p99_{metric}_ms")),
                    ],
                ))
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let xmax = upper(rows.iter().map(|r| r.0), 1.0);
        let ymax = upper(rows.iter().flat_map(|r| r.1.iter().flatten().copied()), 1.0);
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc("output tokens/s")
            .y_desc("ms")
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()?;
        for (i, (name, color)) in [("p50", P50), ("p90", P90), ("p99", P99)]
            .into_iter()
            .enumerate()
        {
            let series: Vec<(f64, f64)> =
                rows.iter().filter_map(|r| Some((r.0, r.1[i]?))).collect();
            chart
                .draw_series(LineSeries::new(
                    series.iter().copied(),
                    ShapeStyle::from(&color).stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 20, y)],
                        ShapeStyle::from(&color).stroke_width(2),
                    )
                });
            chart.draw_series(series.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_keeps_undominated_points() {
        let f = frontier(&[(1.0, 10.0), (2.0, 8.0), (1.5, 7.0), (3.0, 2.0), (0.5, 9.0)]);
        assert_eq!(f, vec![(1.0, 10.0), (2.0, 8.0), (3.0, 2.0)]);
    }

    #[test]
    fn plots_render_svg_with_labels() {
        let pts: Vec<Map<String, Value>> = [(1, 90.0, 100.0), (8, 60.0, 600.0)]
            .iter()
            .map(|(c, u, t)| {
                serde_json::json!({"label": format!("c{c}"), "output_throughput_per_user": u,
                    "output_throughput": t, "median_ttft_ms": 50.0, "p90_ttft_ms": 55.0,
                    "p99_ttft_ms": 60.0, "median_itl_ms": 10.0, "p90_itl_ms": 11.0, "p99_itl_ms": 12.0})
                .as_object()
                .cloned()
                .unwrap()
            })
            .collect();
        let s = pareto(&pts, false);
        assert!(
            s.starts_with("<svg") && s.contains("c8") && s.contains("per user"),
            "{}",
            &s[..200.min(s.len())]
        );
        let l = latency(&pts);
        assert!(l.contains("Inter-token latency") && l.contains("p99"));
        // No data still draws axes, not an error.
        assert!(!pareto(&[], true).contains("plot failed"));
    }
}
