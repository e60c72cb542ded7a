//! Results: the summary (terminal table and versioned JSON), thresholds, and the
//! charts (PNG and SVG) with a self-contained HTML report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use giftstream::engine::Event;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::audit::AuditReport;

/// The JSON summary's schema; bump on an incompatible change.
pub const SUMMARY_SCHEMA: &str = "giftload.summary/v1";
pub const COMPARE_SCHEMA: &str = "giftload.compare/v1";

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub second: u64,
    pub planned_rate: Option<f64>,
    pub events: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

pub struct Summary {
    pub scenario: String,
    pub target: String,
    pub mode: String,
    pub seed: u64,
    pub connections: usize,
    pub batch: usize,
    pub in_flight: usize,
    pub measured_s: f64,
    pub setup_events: u64,
    pub setup_s: f64,
    /// Events/s the schedule planned (open loop).
    pub planned_rate: Option<f64>,
    /// Events answered per second of the measured phase.
    pub achieved_rate: f64,
    pub events_sent: u64,
    pub events_answered: u64,
    pub events_failed: u64,
    /// Batches sent more than 1 ms after their planned time.
    pub missed_sends: u64,
    /// Batch latency from the planned send time (coordinated omission corrected), µs.
    pub corrected: Histogram<u64>,
    /// Batch latency from the actual send, µs.
    pub raw: Histogram<u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub intervals: Vec<Interval>,
    /// Accepted gift coins per creator id (for the audit).
    pub coins: BTreeMap<u64, u64>,
    pub sample: Vec<(Event, String)>,
    /// HTTP reads (`mixed`): latency µs and results.
    pub reads: Histogram<u64>,
    pub read_results: BTreeMap<String, u64>,
    pub audit: Option<AuditReport>,
}

const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p999", 0.999),
    ("p9999", 0.9999),
    ("max", 1.0),
];

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, q) in QUANTILES {
        let v = if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        };
        m.insert(name.to_owned(), v.into());
    }
    serde_json::Value::Object(m)
}

impl Summary {
    /// Failed events / events sent in the measured phase.
    pub fn error_rate(&self) -> f64 {
        let total = self.events_answered + self.events_failed;
        if total == 0 {
            0.0
        } else {
            self.events_failed as f64 / total as f64
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": SUMMARY_SCHEMA,
            "scenario": self.scenario,
            "target": self.target,
            "mode": self.mode,
            "seed": self.seed,
            "connections": self.connections,
            "batch": self.batch,
            "in_flight": self.in_flight,
            "measured_s": self.measured_s,
            "setup": {"events": self.setup_events, "seconds": self.setup_s},
            "planned_rate": self.planned_rate,
            "achieved_rate": self.achieved_rate,
            "events_sent": self.events_sent,
            "events_answered": self.events_answered,
            "events_failed": self.events_failed,
            "error_rate": self.error_rate(),
            "missed_sends": self.missed_sends,
            "latency_us": percentiles(&self.corrected),
            "latency_raw_us": percentiles(&self.raw),
            "outcomes": self.outcomes,
            "errors": self.errors,
            "intervals": self.intervals,
            "reads": {"results": self.read_results, "latency_us": percentiles(&self.reads)},
            "audit": self.audit,
        })
    }

    /// The terminal summary.
    pub fn print(&self) {
        println!(
            "{} -> {} ({} loop, {} connections x {} in flight, {} events per batch, seed {})",
            self.scenario,
            self.target,
            self.mode,
            self.connections,
            self.in_flight,
            self.batch,
            self.seed
        );
        if self.setup_events > 0 {
            println!(
                "  setup: {} wallets funded in {:.1} s",
                self.setup_events, self.setup_s
            );
        }
        match self.planned_rate {
            Some(p) => println!(
                "  rate: planned {:.0} events/s, achieved {:.0} events/s ({:.1} %), {} sends missed their planned time",
                p,
                self.achieved_rate,
                100.0 * self.achieved_rate / p,
                self.missed_sends
            ),
            None => println!("  rate: achieved {:.0} events/s", self.achieved_rate),
        }
        println!(
            "  events: {} sent, {} answered, {} failed (error rate {:.5}) in {:.1} s measured",
            self.events_sent,
            self.events_answered,
            self.events_failed,
            self.error_rate(),
            self.measured_s
        );
        println!("  batch latency (ms)      p50      p90      p99    p99.9   p99.99      max");
        for (name, h) in [("corrected", &self.corrected), ("raw", &self.raw)] {
            let mut line = format!("  {name:<18}");
            for (_, q) in QUANTILES {
                let v = if q >= 1.0 {
                    h.max()
                } else {
                    h.value_at_quantile(q)
                };
                let _ = write!(line, " {:>8.2}", v as f64 / 1000.0);
            }
            println!("{line}");
        }
        println!("  outcomes:");
        for (k, v) in &self.outcomes {
            println!("    {k:<28} {v}");
        }
        if !self.read_results.is_empty() {
            println!(
                "  reads over HTTP: {:?}, latency p50 {:.2} ms, p99 {:.2} ms",
                self.read_results,
                self.reads.value_at_quantile(0.5) as f64 / 1000.0,
                self.reads.value_at_quantile(0.99) as f64 / 1000.0
            );
        }
        if !self.errors.is_empty() {
            println!("  errors:");
            for (k, v) in &self.errors {
                println!("    {k:<28} {v} events");
            }
        }
        if let Some(a) = &self.audit {
            println!(
                "  audit: {} creators checked, {} acknowledged events sent again: {}",
                a.creators_checked,
                a.resent,
                if a.is_clean() { "clean" } else { "VIOLATIONS" }
            );
            for v in &a.violations {
                println!("    VIOLATION: {v}");
            }
        }
    }

    /// The value a threshold metric names.
    fn metric(&self, name: &str) -> Option<f64> {
        let q = |q: f64| Some(self.corrected.value_at_quantile(q) as f64);
        match name {
            "p50" => q(0.5),
            "p90" => q(0.9),
            "p99" => q(0.99),
            "p999" | "p99.9" => q(0.999),
            "p9999" | "p99.99" => q(0.9999),
            "max" => Some(self.corrected.max() as f64),
            "error_rate" => Some(self.error_rate()),
            // A fraction of the planned rate (1 in closed loop).
            "achieved_rate" => Some(self.planned_rate.map_or(1.0, |p| self.achieved_rate / p)),
            "rate" => Some(self.achieved_rate),
            _ => None,
        }
    }
}

/// `metric op value`, e.g. `p99<10ms`, `error_rate<0.001`, `achieved_rate>=0.99`,
/// `rate>=100000`. Latency values take a unit (`us`, `ms`, `s`).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    metric: String,
    op: String,
    /// In µs for latencies.
    value: f64,
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = t
            .find(['<', '>', '='])
            .ok_or_else(|| format!("{text:?}: want metric<value, e.g. p99<10ms"))?;
        let (metric, rest) = t.split_at(at);
        let op_len = rest.chars().take_while(|c| "<>=".contains(*c)).count();
        let (op, value) = rest.split_at(op_len);
        if !["<", "<=", ">", ">="].contains(&op) {
            return Err(format!("{text:?}: the operator must be <, <=, > or >="));
        }
        let latency = matches!(
            metric,
            "p50" | "p90" | "p99" | "p999" | "p99.9" | "p9999" | "p99.99" | "max"
        );
        let value = if latency {
            let (number, scale) = if let Some(n) = value.strip_suffix("us") {
                (n, 1.0)
            } else if let Some(n) = value.strip_suffix("ms") {
                (n, 1_000.0)
            } else if let Some(n) = value.strip_suffix('s') {
                (n, 1_000_000.0)
            } else {
                return Err(format!("{text:?}: a latency needs a unit: us, ms or s"));
            };
            number
                .parse::<f64>()
                .map_err(|e| format!("{text:?}: {e}"))?
                * scale
        } else if ["error_rate", "achieved_rate", "rate"].contains(&metric) {
            value.parse::<f64>().map_err(|e| format!("{text:?}: {e}"))?
        } else {
            return Err(format!(
                "{text:?}: unknown metric {metric:?} (p50, p90, p99, p999, p9999, max, error_rate, achieved_rate, rate)"
            ));
        };
        Ok(Threshold {
            text: text.to_owned(),
            metric: metric.to_owned(),
            op: op.to_owned(),
            value,
        })
    }

    /// (passed, the measured value)
    pub fn check(&self, s: &Summary) -> (bool, f64) {
        let v = s.metric(&self.metric).expect("parsed metrics exist");
        let ok = match self.op.as_str() {
            "<" => v < self.value,
            "<=" => v <= self.value,
            ">" => v > self.value,
            _ => v >= self.value,
        };
        (ok, v)
    }
}

/// Checks every threshold, prints each, returns whether all passed and the JSON.
pub fn check_thresholds(s: &Summary, thresholds: &[Threshold]) -> (bool, serde_json::Value) {
    let mut all = true;
    let mut out = Vec::new();
    for t in thresholds {
        let (ok, v) = t.check(s);
        all &= ok;
        println!(
            "  threshold {:<24} {} (measured {})",
            t.text,
            if ok { "ok" } else { "FAILED" },
            v
        );
        out.push(serde_json::json!({"threshold": t.text, "ok": ok, "value": v}));
    }
    (all, serde_json::Value::Array(out))
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ =
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT);
    });
}

/// Writes `throughput.{png,svg}`, `latency.{png,svg}` and `report.html` (the SVGs
/// inline: no network needed to view it) into `dir`; returns the HTML path.
pub fn write_charts(dir: &Path, runs: &[&Summary]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    register_font();
    for ext in ["png", "svg"] {
        let path = dir.join(format!("throughput.{ext}"));
        if ext == "png" {
            throughput_chart(
                plotters::prelude::BitMapBackend::new(&path, (900, 450)),
                runs,
            )?;
        } else {
            throughput_chart(plotters::prelude::SVGBackend::new(&path, (900, 450)), runs)?;
        }
        let path = dir.join(format!("latency.{ext}"));
        if ext == "png" {
            latency_chart(
                plotters::prelude::BitMapBackend::new(&path, (900, 450)),
                runs,
            )?;
        } else {
            latency_chart(plotters::prelude::SVGBackend::new(&path, (900, 450)), runs)?;
        }
    }
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>giftload report</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>",
    );
    let _ = write!(html, "<h1>giftload: {}</h1>", escape(&runs[0].scenario));
    html.push_str("<table><tr><th>target</th><th>mode</th><th>planned/s</th><th>achieved/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th></tr>");
    for r in runs {
        let ms = |q: f64| r.corrected.value_at_quantile(q) as f64 / 1000.0;
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(&r.target),
            escape(&r.mode),
            r.planned_rate.map_or("-".to_owned(), |p| format!("{p:.0}")),
            r.achieved_rate,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            r.corrected.max() as f64 / 1000.0,
            r.events_failed
        );
    }
    html.push_str("</table>");
    for name in ["throughput", "latency"] {
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg")))?;
        let _ = write!(html, "<h2>{name}</h2>{svg}");
    }
    html.push_str("</body></html>");
    let path = dir.join("report.html");
    std::fs::write(&path, html)?;
    Ok(path)
}

/// One line of an x-y chart: its legend and points.
pub type Series = (String, Vec<(f64, f64)>);

/// Which axes of an [`xy_chart`] are log10.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogAxes {
    pub x: bool,
    pub y: bool,
}

/// An x-y line chart (PNG, 900x450) of `series`; a log axis shows log10 of its values
/// (a log y axis is labelled with the values themselves, and needs them all > 0).
pub fn xy_chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    log: LogAxes,
    series: &[Series],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    register_font();
    let log_x = log.x;
    let tx = |x: f64| if log_x { x.log10() } else { x };
    let ty = |y: f64| if log.y { y.log10() } else { y };
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        anyhow::ensure!(
            !log.y || y > 0.0,
            "chart {caption}: a log y axis needs values > 0, not {y}"
        );
        x0 = x0.min(tx(x));
        x1 = x1.max(tx(x));
        y0 = y0.min(ty(y));
        y1 = y1.max(ty(y));
    }
    anyhow::ensure!(x0 < x1, "chart {caption}: needs two distinct x values");
    // Linear: from 0 to 10 % above the highest; log: whole decades around the values.
    let y_range = if log.y {
        y0.floor()..y1.ceil().max(y0.floor() + 1.0)
    } else {
        0.0..y1.max(0.0) * 1.1
    };
    let root = BitMapBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y_range)
        .map_err(plot_error)?;
    let x_desc = if log_x {
        format!("{x_desc} (log10)")
    } else {
        x_desc.to_owned()
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| {
            if log.y {
                let value = 10f64.powf(*v);
                if value < 10.0 {
                    format!("{value:.1}")
                } else {
                    format!("{value:.0}")
                }
            } else {
                format!("{v:.0}")
            }
        })
        .x_label_formatter(&|v| {
            if log_x {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(plot_error)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        let pts: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (tx(x), ty(y))).collect();
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, style.filled())))
            .map_err(plot_error)?;
        line(&mut chart, pts, style, label.clone())?;
    }
    finish(chart, &root)
}

/// Reads a tab-separated table with a header: the first column is x, every other column
/// one series (an empty cell is a missing point).
pub fn read_table(text: &str) -> anyhow::Result<(String, Vec<Series>)> {
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty table"))?
        .split('\t')
        .collect();
    anyhow::ensure!(header.len() >= 2, "a table needs an x column and a series");
    let mut series: Vec<Series> = header[1..]
        .iter()
        .map(|h| ((*h).to_owned(), Vec::new()))
        .collect();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split('\t').collect();
        let x: f64 = cells[0]
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("row {}: x {:?}: {e}", n + 1, cells[0]))?;
        for (i, cell) in cells.iter().enumerate().skip(1).take(series.len()) {
            if cell.trim().is_empty() {
                continue;
            }
            let y: f64 = cell
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("row {}: {:?}: {e}", n + 1, cell))?;
            series[i - 1].1.push((x, y));
        }
    }
    Ok((header[0].to_owned(), series))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Ten distinct series colours (the "tab10" palette, the first four in the order the
/// earlier charts used), so that a chart of up to ten series repeats none.
const COLORS: [plotters::style::RGBColor; 10] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(148, 103, 189),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(140, 86, 75),
    plotters::style::RGBColor(227, 119, 194),
    plotters::style::RGBColor(127, 127, 127),
    plotters::style::RGBColor(188, 189, 34),
    plotters::style::RGBColor(23, 190, 207),
];

type Chart<'a, DB> = plotters::chart::ChartContext<
    'a,
    DB,
    plotters::coord::cartesian::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("chart: {e}")
}

/// A white chart over seconds of the run, up to `y_max`.
fn frame<'a, DB: plotters::prelude::DrawingBackend>(
    root: &'a plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    runs: &[&Summary],
    caption: &str,
    y_desc: &str,
    y_max: f64,
) -> anyhow::Result<Chart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(plot_error)?;
    let x_max = runs
        .iter()
        .flat_map(|r| r.intervals.iter().map(|i| i.second + 1))
        .max()
        .unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc(y_desc)
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

/// Draws one line with its legend entry.
fn line<'a, DB: plotters::prelude::DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: Vec<(f64, f64)>,
    style: plotters::style::ShapeStyle,
    label: String,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

fn finish<'a, DB: plotters::prelude::DrawingBackend + 'a>(
    mut chart: Chart<'a, DB>,
    root: &'a plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

fn throughput_chart<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    runs: &[&Summary],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let root = backend.into_drawing_area();
    let y_max = runs
        .iter()
        .flat_map(|r| {
            r.intervals
                .iter()
                .map(|i| (i.events as f64).max(i.planned_rate.unwrap_or(0.0)))
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = frame(
        &root,
        runs,
        "throughput (events answered per second)",
        "events/s",
        y_max,
    )?;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let at = |x: &Interval| x.second as f64 + 0.5;
        line(
            &mut chart,
            r.intervals
                .iter()
                .map(|x| (at(x), x.events as f64))
                .collect(),
            color.stroke_width(2),
            format!("{} achieved", r.target),
        )?;
        if r.planned_rate.is_some() {
            line(
                &mut chart,
                r.intervals
                    .iter()
                    .map(|x| (at(x), x.planned_rate.unwrap_or(0.0)))
                    .collect(),
                color.mix(0.4).into(),
                format!("{} planned", r.target),
            )?;
        }
    }
    finish(chart, &root)
}

fn latency_chart<DB: plotters::prelude::DrawingBackend>(
    backend: DB,
    runs: &[&Summary],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let root = backend.into_drawing_area();
    let y_max = runs
        .iter()
        .flat_map(|r| r.intervals.iter().map(|i| i.p999_us as f64 / 1000.0))
        .fold(0.1, f64::max)
        * 1.1;
    let mut chart = frame(
        &root,
        runs,
        "batch latency per second (ms, corrected)",
        "ms",
        y_max,
    )?;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (name, pick, width) in [
            ("p50", (|x: &Interval| x.p50_us) as fn(&Interval) -> u64, 1),
            ("p99", |x: &Interval| x.p99_us, 2),
            ("p99.9", |x: &Interval| x.p999_us, 3),
        ] {
            line(
                &mut chart,
                r.intervals
                    .iter()
                    .map(|x| (x.second as f64 + 0.5, pick(x) as f64 / 1000.0))
                    .collect(),
                color.stroke_width(width),
                format!("{} {name}", r.target),
            )?;
        }
    }
    finish(chart, &root)
}

/// The per-second interval log as text lines (`--interval-log`).
pub fn interval_log(s: &Summary) -> String {
    let mut out = String::from("second\tplanned_rate\tevents\terrors\tp50_us\tp99_us\tp999_us\n");
    for i in &s.intervals {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            i.second,
            i.planned_rate.map_or("-".to_owned(), |p| format!("{p:.0}")),
            i.events,
            i.errors,
            i.p50_us,
            i.p99_us,
            i.p999_us
        );
    }
    out
}
