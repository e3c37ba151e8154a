//! A hand-written SVG chart for the demo: one panel per row, DB concurrency
//! over time on a shared log scale, with the TTL boundaries marked.

use std::fmt::Write;
use std::time::Duration;

/// One row's timeline: the peak number of concurrent DB queries per sample.
pub struct Series {
    pub label: String,
    pub queries: u64,
    pub points: Vec<usize>,
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 290.0;
const TOP: f64 = 60.0;
const PANEL: f64 = 80.0;
const GAP: f64 = 18.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Log scale that keeps 0 at the baseline: y = log10(1 + n).
fn scale(n: f64, max: f64) -> f64 {
    (1.0 + n).log10() / (1.0 + max).log10()
}

pub fn chart(series: &[Series], sample: Duration, ttl: Duration) -> String {
    let samples = series
        .iter()
        .map(|s| s.points.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let span = sample.as_secs_f64() * samples as f64;
    let ymax = 1000f64.max(
        series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .max()
            .unwrap_or(1) as f64,
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let height = TOP + series.len() as f64 * (PANEL + GAP) + BOTTOM;
    let x = |t: f64| LEFT + t / span * plot_w;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="26" font-size="18" font-weight="bold">Concurrent database queries over time</text>
<text x="{LEFT}" y="45" font-size="12" fill="#555">peak per {} ms sample, log scale; dashed lines: TTL expiries (every {} ms)</text>"##,
        sample.as_millis(),
        ttl.as_millis()
    );
    for (i, s) in series.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let base = top + PANEL;
        let y = |n: f64| base - scale(n, ymax) * PANEL;
        let color = COLORS[i % COLORS.len()];
        // frame and gridlines at 1, 10, 100, 1000
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="#fafafa" stroke="#ccc"/>"##
        );
        for g in [1.0, 10.0, 100.0, 1000.0] {
            if g > ymax {
                continue;
            }
            let gy = y(g);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#777">{g}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                gy + 3.5
            );
        }
        let mut t = ttl.as_secs_f64();
        while t < span {
            let tx = x(t);
            let _ = writeln!(
                out,
                r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{base}" stroke="#999" stroke-dasharray="4 3"/>"##
            );
            t += ttl.as_secs_f64();
        }
        // area as a step function of the samples
        let dt = sample.as_secs_f64();
        let mut path = format!("M{:.1},{base:.1}", x(0.0));
        for (k, n) in s.points.iter().enumerate() {
            let yy = y(*n as f64);
            let _ = write!(
                path,
                " L{:.1},{yy:.1} L{:.1},{yy:.1}",
                x(k as f64 * dt),
                x((k + 1) as f64 * dt)
            );
        }
        let _ = write!(path, " L{:.1},{base:.1} Z", x(s.points.len() as f64 * dt));
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="{color}" fill-opacity="0.35" stroke="{color}" stroke-width="1.2"/>"#
        );
        let peak = s.points.iter().copied().max().unwrap_or(0);
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            out,
            r##"<text x="{lx}" y="{:.1}" font-size="14" font-weight="bold" fill="{color}">{}</text>
<text x="{lx}" y="{:.1}" font-size="12" fill="#333">{} DB queries</text>
<text x="{lx}" y="{:.1}" font-size="12" fill="#333">peak {} at once</text>"##,
            top + 24.0,
            escape(&s.label),
            top + 44.0,
            s.queries,
            top + 62.0,
            peak
        );
    }
    // time axis
    let axis_y = TOP + series.len() as f64 * (PANEL + GAP) - GAP + 16.0;
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{axis_y:.1}" font-size="11" text-anchor="middle" fill="#555">{t:.1} s</text>"##,
            x(t)
        );
        t += 0.5;
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#333">time since the callers started</text>"##,
        LEFT + plot_w / 2.0,
        axis_y + 20.0
    );
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
