//! A minimal SVG scatter/line plot (no dependencies): log-scaled x, linear y, labelled points.

/// One series of points.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// Points `(x, y, label)`.
    pub points: Vec<(f64, f64, String)>,
    /// Join the points with a line (sorted by x).
    pub line: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders a plot of `series` with a log10 x axis labelled in bytes; `hline` draws a dashed
/// horizontal reference.
pub fn plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> String {
    plot_with(title, x_label, y_label, series, hline, human_bytes)
}

/// [`plot`] with the x ticks labelled by `x_tick` (e.g. [`human_count`]).
pub fn plot_with(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
    x_tick: fn(f64) -> String,
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 20.0, 40.0, 60.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| (p.0, p.1)))
        .filter(|p| p.0 > 0.0 && p.0.is_finite() && p.1.is_finite())
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        esc(title)
    );
    if pts.is_empty() {
        svg.push_str("<text x=\"20\" y=\"80\">no data</text>\n</svg>\n");
        return svg;
    }
    let lx = |x: f64| x.log10();
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(lx(p.0)), b.max(lx(p.0)))
    });
    let mut ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    if let Some((y, _)) = hline {
        ys.push(y);
    }
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let (dx, dy) = ((x1 - x0).max(0.2) * 0.08, (y1 - y0).max(1e-3) * 0.1);
    x0 -= dx;
    x1 += dx;
    y0 -= dy;
    y1 += dy;
    let px = |x: f64| left + (lx(x) - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    // Axes and ticks.
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    ));
    let mut e = x0.floor();
    while e <= x1.ceil() {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(e);
            let l = v.log10();
            if l >= x0 && l <= x1 {
                let x = px(v);
                svg.push_str(&format!(
                    "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                    top,
                    h - bottom,
                    h - bottom + 14.0,
                    x_tick(v)
                ));
            }
        }
        e += 1.0;
    }
    for i in 0..=5 {
        let v = y0 + (y1 - y0) * i as f64 / 5.0;
        let y = py(v);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
            w - right,
            left - 4.0,
            y + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        (left + w - right) / 2.0,
        h - 18.0,
        esc(x_label),
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        esc(y_label)
    ));
    if let Some((y, label)) = hline {
        let yy = py(y);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#c00\" stroke-dasharray=\"5,4\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#c00\">{}</text>\n",
            w - right,
            w - right - 4.0,
            yy - 4.0,
            esc(label)
        ));
    }
    for (si, s) in series.iter().enumerate() {
        let mut p: Vec<&(f64, f64, String)> = s
            .points
            .iter()
            .filter(|p| p.0 > 0.0 && p.0.is_finite() && p.1.is_finite())
            .collect();
        if s.line && p.len() > 1 {
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            let d: Vec<String> = p
                .iter()
                .map(|q| format!("{:.1},{:.1}", px(q.0), py(q.1)))
                .collect();
            svg.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n",
                d.join(" "),
                s.color
            ));
        }
        for q in &p {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"/>\n",
                px(q.0),
                py(q.1),
                s.color
            ));
            if !q.2.is_empty() {
                svg.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                    px(q.0) + 6.0,
                    py(q.1) - 6.0,
                    esc(&q.2)
                ));
            }
        }
        let ly = top + 14.0 * si as f64 + 6.0;
        svg.push_str(&format!(
            "<circle cx=\"{}\" cy=\"{ly:.1}\" r=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\">{}</text>\n",
            w - right - 150.0,
            s.color,
            w - right - 142.0,
            ly + 4.0,
            esc(&s.name)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// `50000` → `50K`, `2048000` → `2.0M`: labels for count axes (parameters, tokens).
pub fn human_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}K", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `123456` → `121 KiB`-style labels for byte axes.
pub fn human_bytes(v: f64) -> String {
    if v >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0 / 1024.0)
    } else if v >= 1024.0 {
        format!("{:.0} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_is_well_formed_and_has_every_point() {
        let s = Series {
            name: "stages".into(),
            color: "#06c".into(),
            points: vec![
                (1.2e6, 8.85, "baseline".into()),
                (1.6e5, 9.1, "int4 <native>".into()),
                (5.0e4, 10.2, "mixed".into()),
            ],
            line: true,
        };
        let svg = plot("t", "bytes", "PPL", &[s], Some((11.68, "+32 %")));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4); // 3 points + legend marker
        assert!(svg.contains("int4 &lt;native&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn empty_plot_says_so() {
        assert!(plot("t", "x", "y", &[], None).contains("no data"));
        assert_eq!(
            (
                human_count(50_000.0),
                human_count(2_048_000.0),
                human_count(12.0)
            ),
            ("50K".to_string(), "2.0M".to_string(), "12".to_string())
        );
    }
}
