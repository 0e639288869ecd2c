//! The Pareto frontier as a self-contained SVG (file bytes → bits/param on x, perplexity on y):
//! mixed DP solutions as a line, uniform formats as squares, the chosen mix as a diamond, the
//! F32 perplexity as a dashed line. Measured perplexity where available, else the prediction
//! (hollow markers).

use std::fmt::Write;

use crate::report::{FrontierPoint, MixedReport, PointKind};

const W: f64 = 760.0;
const H: f64 = 480.0;
const L: f64 = 70.0;
const R: f64 = 190.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The y value of a point and whether it was measured.
fn y_of(p: &FrontierPoint) -> Option<(f64, bool)> {
    p.measured_ppl
        .map(|m| (m, true))
        .or(p.corrected_ppl.map(|c| (c, false)))
        .or(p.predicted_ppl.map(|c| (c, false)))
        .filter(|(v, _)| v.is_finite())
}

/// Nice tick positions covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// Renders the report's frontier (see the module docs). Always a well-formed SVG document, with
/// a note instead of points when nothing can be plotted.
pub fn frontier_svg(report: &MixedReport) -> String {
    let pts: Vec<(&FrontierPoint, f64, bool)> = report
        .frontier
        .iter()
        .filter_map(|p| y_of(p).map(|(y, m)| (p, y, m)))
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    s.push('\n');
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        L + (W - L - R) / 2.0,
        esc(&format!(
            "Mixed precision: file size vs perplexity ({} params)",
            report.parameters
        ))
    );
    if pts.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no perplexity measured or predicted</text>"#,
            W / 2.0,
            H / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for (p, y, _) in &pts {
        x0 = x0.min(p.bits_per_param);
        x1 = x1.max(p.bits_per_param);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if let Some(b) = report.base_ppl {
        y0 = y0.min(b);
        y1 = y1.max(b);
    }
    let (dx, dy) = ((x1 - x0).max(0.1) * 0.05, (y1 - y0).max(0.01) * 0.08);
    let (x0, x1, y0, y1) = (x0 - dx, x1 + dx, y0 - dy, y1 + dy);
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    // Axes, ticks, grid.
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    for t in ticks(x0, x1) {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{t:.2}</text>"##,
            H - B,
            H - B + 16.0
        );
    }
    for t in ticks(y0, y1) {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{t:.2}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">bits / parameter (file bytes × 8 / {})</text>"#,
        L + (W - L - R) / 2.0,
        H - 18.0,
        report.parameters
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">perplexity</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    if let Some(b) = report.base_ppl {
        let y = py(b);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#888" stroke-dasharray="5,4"/><text x="{}" y="{:.1}" fill="#666">F32 {b:.4}</text>"##,
            W - R,
            L + 4.0,
            y - 4.0
        );
    }
    // The mixed frontier as a line (sorted by bytes).
    let mut line: Vec<(f64, f64)> = pts
        .iter()
        .filter(|(p, _, _)| p.kind != PointKind::Uniform)
        .map(|(p, y, _)| (px(p.bits_per_param), py(*y)))
        .collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    if line.len() > 1 {
        let d: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
            d.join(" ")
        );
    }
    for (p, ppl, measured) in &pts {
        let (x, y) = (px(p.bits_per_param), py(*ppl));
        let title = esc(&format!(
            "{}: {} bytes, {:.3} bits/param, PPL {:.4} ({})",
            p.label,
            p.file_bytes,
            p.bits_per_param,
            ppl,
            if *measured { "measured" } else { "predicted" }
        ));
        let fill = |c: &str| {
            if *measured {
                c.to_string()
            } else {
                "white".into()
            }
        };
        let el = match p.kind {
            PointKind::Mixed => format!(
                r##"<circle class="point mixed" cx="{x:.1}" cy="{y:.1}" r="4" fill="{}" stroke="#1f77b4"><title>{title}</title></circle>"##,
                fill("#1f77b4")
            ),
            PointKind::Uniform => format!(
                r##"<rect class="point uniform" x="{:.1}" y="{:.1}" width="8" height="8" fill="{}" stroke="#ff7f0e"><title>{title}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" fill="#a65">{}</text>"##,
                x - 4.0,
                y - 4.0,
                fill("#ff7f0e"),
                x + 6.0,
                y + 3.0,
                esc(p.label.trim_start_matches("uniform "))
            ),
            PointKind::Chosen => format!(
                r##"<path class="point chosen" d="M {x:.1} {:.1} L {:.1} {y:.1} L {x:.1} {:.1} L {:.1} {y:.1} Z" fill="{}" stroke="#d62728"><title>{title}</title></path>"##,
                y - 7.0,
                x + 7.0,
                y + 7.0,
                x - 7.0,
                fill("#d62728")
            ),
        };
        s.push_str(&el);
        s.push('\n');
    }
    // Legend.
    let lx = W - R + 14.0;
    let items = [
        ("#1f77b4", "mixed (DP) frontier"),
        ("#ff7f0e", "uniform format"),
        ("#d62728", "chosen mix"),
    ];
    for (i, (c, t)) in items.iter().enumerate() {
        let y = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{c}"/><text x="{}" y="{}">{t}</text>"#,
            y - 8.0,
            lx + 16.0,
            y + 1.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{}" font-size="10">hollow = predicted, not measured</text>"#,
        T + 75.0
    );
    s.push_str("</svg>\n");
    s
}
