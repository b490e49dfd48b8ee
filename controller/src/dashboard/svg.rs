//! Geometry of the inline SVG drawings: trend sparklines, trial timelines and latency
//! histograms. Only numbers and labels are computed here; the markup is in the templates,
//! which escape every label.

use atropos_injector::Observation;

use super::format;
use crate::store::query::{Counts, LatencyBucket, TrendPoint};

/// A point of a drawing with a class and a tooltip.
#[derive(Debug, Clone)]
pub struct Dot {
    /// Centre, x.
    pub x: f64,
    /// Centre, y.
    pub y: f64,
    /// CSS class (`pass`, `fail`, `error`, `running`).
    pub class: &'static str,
    /// Tooltip.
    pub title: String,
}

/// The pass-rate trend of an experiment's recent runs.
#[derive(Debug, Clone)]
pub struct Sparkline {
    /// Width in px.
    pub width: f64,
    /// Height in px.
    pub height: f64,
    /// The polyline's points (`x,y x,y ...`).
    pub points: String,
    /// One dot per run.
    pub dots: Vec<Dot>,
}

fn verdict_class(counts: &Counts, status: &str) -> &'static str {
    match counts.state().as_str() {
        "fail" => "fail",
        "error" => "error",
        "pass" => "pass",
        _ if status == "running" => "running",
        _ => "none",
    }
}

/// The sparkline of `trend` (oldest first).
pub fn sparkline(trend: &[TrendPoint]) -> Sparkline {
    let (width, height, pad) = (140.0, 30.0, 4.0);
    #[expect(clippy::cast_precision_loss, reason = "at most a few dozen points")]
    let step = (width - 2.0 * pad) / (trend.len().saturating_sub(1).max(1)) as f64;
    // The scale starts at the worst rate shown (floored to 10%, at most 80%), so that a
    // drop from 98% to 90% is visible.
    let floor = trend
        .iter()
        .filter_map(|p| p.counts.pass_rate())
        .fold(0.8_f64, f64::min);
    let floor = (floor * 10.0).floor() / 10.0;
    let dots: Vec<Dot> = trend
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let rate = (p.counts.pass_rate().unwrap_or(0.0) - floor) / (1.0 - floor);
            #[expect(clippy::cast_precision_loss, reason = "at most a few dozen points")]
            let x = pad + step * i as f64;
            Dot {
                x,
                y: pad + (1.0 - rate) * (height - 2.0 * pad),
                class: verdict_class(&p.counts, &p.status),
                title: format!(
                    "{}: {} passed of {} ({})",
                    format::time(p.started_at),
                    p.counts.pass,
                    p.counts.total(),
                    p.status
                ),
            }
        })
        .collect();
    let points = dots
        .iter()
        .map(|d| format!("{:.1},{:.1}", d.x, d.y))
        .collect::<Vec<_>>()
        .join(" ");
    Sparkline {
        width,
        height,
        points,
        dots,
    }
}

/// A horizontal bar of a timeline.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Left edge.
    pub x: f64,
    /// Width.
    pub w: f64,
    /// The phase name.
    pub label: String,
    /// Whether the label fits inside.
    pub show_label: bool,
    /// CSS class.
    pub class: String,
    /// Tooltip.
    pub title: String,
}

/// A vertical mark of a timeline with its label.
#[derive(Debug, Clone)]
pub struct Mark {
    /// Position.
    pub x: f64,
    /// Where the planned moment was (injections: delivered − latency).
    pub planned_x: f64,
    /// The label.
    pub label: String,
    /// `start` or `end`: the label's text-anchor, so it stays inside the drawing.
    pub anchor: &'static str,
    /// Where the label is anchored: beside the mark, on the side it extends to.
    pub label_x: f64,
    /// Tooltip.
    pub title: String,
}

/// A tick of a time axis.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Position.
    pub x: f64,
    /// The time.
    pub label: String,
    /// The label's text-anchor.
    pub anchor: &'static str,
}

/// A trial drawn on a time axis: phases as bars, injections and the exit as marks.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Width in px.
    pub width: f64,
    /// Height in px.
    pub height: f64,
    /// Phase bars (`start`, then each phase entered), and the time after the exit.
    pub bars: Vec<Bar>,
    /// Signals sent by the fault.
    pub injections: Vec<Mark>,
    /// The signal atropos used to stop the target, if any.
    pub stop: Option<Mark>,
    /// The exit of the main process.
    pub exit: Option<Mark>,
    /// Time axis.
    pub ticks: Vec<Tick>,
}

/// Draws the timeline of one observation.
pub fn timeline(obs: &Observation) -> Timeline {
    let (width, height, left, right) = (1000.0, 84.0, 10.0, 10.0);
    let exit_at = obs.exit.as_ref().map(|e| e.at_ns);
    let end = [
        Some(obs.ended_ns),
        exit_at,
        obs.deliveries.iter().map(|d| d.delivered_ns).max(),
        obs.stop_signal.as_ref().map(|s| s.at_ns),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
    .max(1);
    #[expect(clippy::cast_precision_loss, reason = "drawing coordinates")]
    let x = |t: u64| left + (t.min(end) as f64 / end as f64) * (width - left - right);
    let anchor = |px: f64| if px > width * 0.6 { "end" } else { "start" };
    let label_x = |px: f64| if px > width * 0.6 { px - 7.0 } else { px + 7.0 };

    let mut entered: Vec<(u64, &str, Option<&str>)> = obs
        .phases
        .iter()
        .filter_map(|p| {
            p.entered_ns
                .map(|t| (t, p.name.as_str(), p.evidence.as_deref()))
        })
        .collect();
    entered.sort_by_key(|(t, _, _)| *t);
    let alive_until = exit_at.unwrap_or(end);
    let mut bars = Vec::new();
    let mut starts = vec![(0, "start", None)];
    starts.extend(entered);
    for (i, (t, name, evidence)) in starts.iter().enumerate() {
        let until = starts
            .get(i + 1)
            .map_or(alive_until, |(next, _, _)| *next)
            .min(alive_until);
        if until < *t {
            continue;
        }
        let (x0, x1) = (x(*t), x(until));
        bars.push(Bar {
            x: x0,
            w: (x1 - x0).max(1.0),
            label: (*name).to_owned(),
            #[expect(clippy::cast_precision_loss, reason = "label widths")]
            show_label: (x1 - x0) > 7.0 * name.chars().count() as f64 + 8.0,
            class: if i == 0 {
                "phase-start".to_owned()
            } else {
                format!("phase-{}", (i - 1) % 6)
            },
            title: format!(
                "{name}: {} → {}{}",
                format::ns(*t),
                format::ns(until),
                evidence.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        });
    }
    if let Some(at) = exit_at.filter(|at| *at < end) {
        let (x0, x1) = (x(at), x(end));
        bars.push(Bar {
            x: x0,
            w: (x1 - x0).max(1.0),
            label: "exited".to_owned(),
            show_label: x1 - x0 > 60.0,
            class: "phase-exited".to_owned(),
            title: format!("exited: {} → {}", format::ns(at), format::ns(end)),
        });
    }
    let injections = obs
        .deliveries
        .iter()
        .map(|d| {
            let px = x(d.delivered_ns);
            Mark {
                x: px,
                planned_x: x(d.delivered_ns.saturating_sub(d.latency_ns)),
                label: format!(
                    "{} in {} +{} (latency {})",
                    d.signal,
                    d.phase,
                    format::ns(d.offset_ns),
                    format::ns(d.latency_ns)
                ),
                anchor: anchor(px),
                label_x: label_x(px),
                title: format!(
                    "step {}: {} to {:?} at {}: {}",
                    d.step,
                    d.signal,
                    d.aim,
                    format::ns(d.delivered_ns),
                    d.outcome
                ),
            }
        })
        .collect();
    let stop = obs.stop_signal.as_ref().map(|s| {
        let px = x(s.at_ns);
        Mark {
            x: px,
            planned_x: px,
            label: format!("atropos sent {}", s.signal),
            anchor: anchor(px),
            label_x: px,
            title: format!("{} at {}: {}", s.signal, format::ns(s.at_ns), s.outcome),
        }
    });
    let exit = obs.exit.as_ref().map(|e| {
        let px = x(e.at_ns);
        Mark {
            x: px,
            planned_x: px,
            label: e.to_string(),
            anchor: anchor(px),
            label_x: px,
            title: format!("{e} at {}", format::ns(e.at_ns)),
        }
    });
    let ticks = (0..=4)
        .map(|i| {
            let t = end / 4 * i;
            let px = x(t);
            Tick {
                x: px,
                label: format::ns(t),
                anchor: match i {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                },
            }
        })
        .collect();
    Timeline {
        width,
        height,
        bars,
        injections,
        stop,
        exit,
        ticks,
    }
}

/// A bar of a histogram.
#[derive(Debug, Clone)]
pub struct HistBar {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Trials in the bucket.
    pub count: u64,
    /// The bucket's lower bound.
    pub label: String,
    /// Tooltip.
    pub title: String,
}

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Width in px.
    pub width: f64,
    /// Height in px.
    pub height: f64,
    /// The baseline's y.
    pub base: f64,
    /// One bar per bucket.
    pub bars: Vec<HistBar>,
}

/// Draws `buckets`.
pub fn histogram(buckets: &[LatencyBucket]) -> Histogram {
    let (width, height, top, bottom, left) = (620.0, 180.0, 18.0, 28.0, 8.0);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    #[expect(clippy::cast_precision_loss, reason = "drawing coordinates")]
    let slot = (width - 2.0 * left) / buckets.len().max(1) as f64;
    let base = height - bottom;
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            #[expect(clippy::cast_precision_loss, reason = "drawing coordinates")]
            let h = (base - top) * b.count as f64 / max as f64;
            #[expect(clippy::cast_precision_loss, reason = "drawing coordinates")]
            let x = left + slot * i as f64;
            HistBar {
                x: x + 2.0,
                y: base - h,
                w: (slot - 4.0).max(1.0),
                h,
                count: b.count,
                label: format::ns(b.lo_ns),
                title: format!(
                    "{} trials with latency in [{}, {})",
                    b.count,
                    format::ns(b.lo_ns),
                    format::ns(b.hi_ns)
                ),
            }
        })
        .collect();
    Histogram {
        width,
        height,
        base,
        bars,
    }
}
