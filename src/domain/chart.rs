//! Charts of a node's values as PNG images (SPEC §9, issue 19: `/chart` in Telegram). Pure:
//! time series in, PNG bytes out, no I/O; the service layer reads the rows and the bot sends
//! the picture.
//!
//! Drawn with `plotters` (bitmap backend only: no browser, no system fonts) and encoded with
//! the `png` crate. The text is DejaVu Sans, vendored in `static/fonts/` with its license and
//! compiled into the binary (Latin and Cyrillic, so titles in Russian and unit names in any
//! of them render), registered once as plotters' `sans-serif` family.
//!
//! **Downsampling.** A line never has more points drawn than twice the image's width: when a
//! series holds more, the time axis is cut into one bucket per pixel column and each bucket
//! keeps its lowest and its highest value, in time order (min/max decimation). The picture is
//! the same as with every point (each column spans its full min..max range, spikes included),
//! and drawing 100k points costs a pass over them plus ~1,600 line segments.
//!
//! Times are naive UTC (the product keeps no time zone per unit or user); the caller names the
//! zone in the axis label.

use std::sync::OnceLock;

use chrono::NaiveDateTime;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// What Telegram shows well on a phone (landscape, 1.6:1).
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;

const FONT: &[u8] = include_bytes!("../../static/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];
/// A line with at most this many points (after downsampling) also gets a dot per point, so
/// a single value shows.
const MARKERS_UP_TO: usize = 60;

/// One line of the chart: its legend name and `(time, value)` points in any order.
#[derive(Clone, Debug, Default)]
pub struct Line {
    pub name: String,
    pub points: Vec<(NaiveDateTime, f64)>,
}

/// What to draw: the time range `from..to` (points outside are left out), the texts, the
/// lines, the image size in pixels.
pub struct ChartSpec<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    pub lines: &'a [Line],
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("chart not drawn: {0}")]
pub struct ChartError(String);

fn fail(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

fn register() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ok.then_some(())
        .ok_or_else(|| fail("the vendored font does not load"))
}

fn seconds(t: NaiveDateTime) -> f64 {
    t.and_utc().timestamp_millis() as f64 / 1000.0
}

/// Min/max decimation (see the module docs): `points` sorted by time, `columns` buckets over
/// `from..to`; at most `2 * columns` points come out, every bucket's extremes kept.
pub fn downsample(points: &[(f64, f64)], from: f64, to: f64, columns: usize) -> Vec<(f64, f64)> {
    if columns == 0 || points.len() <= 2 * columns {
        return points.to_vec();
    }
    let span = (to - from).max(f64::MIN_POSITIVE);
    let column = |x: f64| {
        (((x - from) / span) * columns as f64)
            .floor()
            .clamp(0.0, (columns - 1) as f64) as usize
    };
    let mut out = Vec::with_capacity(2 * columns);
    let flush = |out: &mut Vec<(f64, f64)>, lo: (f64, f64), hi: (f64, f64)| {
        if lo == hi {
            out.push(lo);
        } else if lo.0 <= hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    // the current column, its lowest and its highest point
    type Bucket = (usize, (f64, f64), (f64, f64));
    let mut bucket: Option<Bucket> = None;
    for &p in points {
        let c = column(p.0);
        match &mut bucket {
            Some((at, lo, hi)) if *at == c => {
                if p.1 < lo.1 {
                    *lo = p;
                }
                if p.1 > hi.1 {
                    *hi = p;
                }
            }
            _ => {
                if let Some((_, lo, hi)) = bucket.take() {
                    flush(&mut out, lo, hi);
                }
                bucket = Some((c, p, p));
            }
        }
    }
    if let Some((_, lo, hi)) = bucket {
        flush(&mut out, lo, hi);
    }
    out
}

/// How the time axis labels read for a range this long.
fn time_format(span_secs: f64) -> &'static str {
    if span_secs <= 86_400.0 {
        "%H:%M"
    } else if span_secs <= 8.0 * 86_400.0 {
        "%d.%m %H:%M"
    } else {
        "%Y-%m-%d"
    }
}

/// The chart as a PNG (8-bit RGB, `width` x `height`).
pub fn render_png(spec: &ChartSpec<'_>) -> Result<Vec<u8>, ChartError> {
    register()?;
    let (w, h) = (spec.width, spec.height);
    if !(200..=4000).contains(&w) || !(150..=4000).contains(&h) {
        return Err(fail(format!("{w}x{h} is not a chart size")));
    }
    let (from, to) = (seconds(spec.from), seconds(spec.to));
    let to = if to > from { to } else { from + 1.0 };
    let lines: Vec<(&str, Vec<(f64, f64)>)> = spec
        .lines
        .iter()
        .map(|line| {
            let mut points: Vec<(f64, f64)> = line
                .points
                .iter()
                .map(|(t, v)| (seconds(*t), *v))
                .filter(|(t, v)| v.is_finite() && (from..=to).contains(t))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (
                line.name.as_str(),
                downsample(&points, from, to, w as usize),
            )
        })
        .collect();
    let (mut lo, mut hi) = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    } else if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    } else {
        let pad = (hi - lo) * 0.05;
        (lo, hi) = (lo - pad, hi + pad);
    }
    let format = time_format(to - from);
    let label_time = |x: &f64| {
        chrono::DateTime::from_timestamp_millis((x * 1000.0) as i64)
            .map(|t| t.format(format).to_string())
            .unwrap_or_default()
    };
    let label_value = |y: &f64| {
        let span = hi - lo;
        if span >= 100.0 {
            format!("{y:.0}")
        } else if span >= 1.0 {
            format!("{y:.1}")
        } else {
            format!("{y:.3}")
        }
    };

    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.title, (FAMILY, 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(from..to, lo..hi)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(8)
            .x_label_formatter(&label_time)
            .y_label_formatter(&label_value)
            .x_desc(spec.x_label)
            .y_desc(spec.y_label)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(fail)?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            // plotters draws a thick line's steep segments as stray polygons (spikes leave
            // the plot): dense lines are one pixel wide
            let width = if points.len() * 4 <= w as usize { 2 } else { 1 };
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(width),
                ))
                .map_err(fail)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            if points.len() <= MARKERS_UP_TO {
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(fail)?;
            }
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(fail)?;
        }
        root.present().map_err(fail)?;
    }
    encode_png(&rgb, w, h)
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_750_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    fn spec<'a>(lines: &'a [Line], title: &'a str) -> ChartSpec<'a> {
        ChartSpec {
            title,
            x_label: "Время, UTC",
            y_label: "value",
            from: t(0),
            to: t(86_400),
            lines,
            width: WIDTH,
            height: HEIGHT,
        }
    }

    /// The image's size and pixels, decoded back.
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.width, info.height, buf)
    }

    #[test]
    fn a_chart_is_a_png_of_the_asked_size_with_the_line_drawn() {
        let line = Line {
            name: "temp".into(),
            points: (0..1000)
                .map(|i| (t(i * 86), (i as f64 / 50.0).sin() * 10.0))
                .collect(),
        };
        let lines = [line];
        let png = render_png(&spec(&lines, "greenhouse_unit / температура")).unwrap();
        let (w, h, pixels) = decode(&png);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // the line's colour occurs: something was drawn with the first palette colour
        let RGBColor(r, g, b) = COLORS[0];
        let drawn = pixels
            .chunks(3)
            .filter(|p| p[0] == r && p[1] == g && p[2] == b)
            .count();
        assert!(drawn > 500, "{drawn} pixels of the line");
    }

    #[test]
    fn no_points_and_one_point_still_draw() {
        for lines in [
            vec![],
            vec![Line {
                name: "one".into(),
                points: vec![(t(60), 21.5)],
            }],
        ] {
            let png = render_png(&spec(&lines, "t")).unwrap();
            assert_eq!(decode(&png).0, WIDTH);
        }
    }

    #[test]
    fn downsampling_keeps_each_columns_extremes_in_time_order() {
        // 10 columns over 0..100, 1,000 points: a spike in column 3
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                let x = i as f64 / 10.0;
                let y = if i == 345 { 1e6 } else { (i % 7) as f64 };
                (x, y)
            })
            .collect();
        let out = downsample(&points, 0.0, 100.0, 10);
        assert!(out.len() <= 20, "{}", out.len());
        assert!(out.contains(&(34.5, 1e6)), "the spike survives");
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        let lowest = out.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        assert_eq!(lowest, 0.0);
        // few points pass through untouched
        assert_eq!(downsample(&points[..15], 0.0, 100.0, 10), points[..15]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut s = spec(&[], "t");
        s.width = 10;
        assert!(render_png(&s).is_err());
    }
}
