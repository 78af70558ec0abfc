//! The data of the benchmark charts: one [`ConfigPoint`] per measured configuration, the clean
//! form the charts draw from ([`Measured`]), the Pareto front of memory against throughput, and the
//! keys (which schedules and recompute policies are present, in legend order), and text
//! measuring for layout.
//!
//! Invariant: a chart never sees a non-finite or negative number. A point whose throughput is not
//! a finite number ≥ 0 becomes `None` (the charts say so rather than drawing it); its spread is
//! clamped so that `0 ≤ lo ≤ throughput ≤ hi`, a non-finite end of the spread falling back to the
//! throughput itself.

use pipesched_charts::plotters::style::{RGBColor, TextStyle};

use super::marks::schedule_colour;
use crate::ranking::Standing;

/// One benchmarked configuration: a schedule run under a recompute policy, and what it measured.
///
/// The charts draw no NaN or infinity: a configuration whose throughput is NaN, infinite or
/// negative keeps its place (an `n/a` row, a note under the scatter) but gets no bar or marker; a
/// spread end that is not finite is taken as the throughput itself, and a spread that does not
/// contain the throughput is clamped to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigPoint {
    /// What the charts call it (`zb-h1 / full`).
    pub label: String,
    /// The schedule (`zb-h1`); the charts colour by it.
    pub schedule: String,
    /// The recompute policy (`none`, `full`, `every:2`, `sqrt`); the charts shape or hatch by it.
    pub recompute: String,
    /// Samples per second (the median step).
    pub throughput: f64,
    /// Low end of the spread of throughput (the slowest step, or the lower quartile).
    pub throughput_lo: f64,
    /// High end of the spread of throughput (the fastest step, or the upper quartile).
    pub throughput_hi: f64,
    /// Peak live bytes, the maximum over ranks.
    pub peak_bytes: u64,
    /// Best, tied or neither, by the rule of [`crate::ranking`]; the charts mark it.
    pub standing: Standing,
}

/// A point's numbers, made safe to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measured {
    /// Samples per second, finite and ≥ 0.
    pub throughput: f64,
    /// Low end of the spread, `0 ≤ lo ≤ throughput`.
    pub lo: f64,
    /// High end of the spread, `throughput ≤ hi`, finite.
    pub hi: f64,
    /// Peak live bytes.
    pub bytes: u64,
}

impl Measured {
    /// The drawable numbers of `point`, or `None` when its throughput is NaN, infinite or negative.
    pub fn of(point: &ConfigPoint) -> Option<Measured> {
        let t = point.throughput;
        if !t.is_finite() || t < 0.0 {
            return None;
        }
        let lo = if point.throughput_lo.is_finite() { point.throughput_lo.clamp(0.0, t) } else { t };
        let hi = if point.throughput_hi.is_finite() { point.throughput_hi.max(t) } else { t };
        Some(Measured { throughput: t, lo, hi, bytes: point.peak_bytes })
    }
}

/// The indices of the points on the Pareto front of (memory, throughput), ordered by memory, then
/// throughput, then index. A point is on the front when no other point dominates it, that is
/// uses no more memory and reaches no less throughput, and is strictly better in one of the two.
/// So of two points with equal memory only the faster is on the front, of two with equal
/// throughput only the smaller, and points equal in both stand or fall together. `None` entries
/// (points not drawn) are never on the front and never dominate.
pub(crate) fn pareto_front(points: &[Option<Measured>]) -> Vec<usize> {
    let dominates = |a: &Measured, b: &Measured| {
        a.bytes <= b.bytes && a.throughput >= b.throughput && (a.bytes < b.bytes || a.throughput > b.throughput)
    };
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let Some(p) = &points[i] else { return false };
            !points.iter().flatten().any(|q| dominates(q, p))
        })
        .collect();
    front.sort_by(|&i, &j| {
        let (a, b) = (points[i].map(key), points[j].map(key));
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal).then(i.cmp(&j))
    });
    front
}

/// The sort key of a point along the front.
fn key(m: Measured) -> (u64, f64) {
    (m.bytes, m.throughput)
}

/// The schedules and recompute policies present in some points, each once, in legend order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// Known schedules in pipeline order (gpipe, 1f1b, interleaved, zb-h1, zb-h2), then others as
    /// they first appear.
    pub schedules: Vec<String>,
    /// `none`, `full`, `every:K` by K, `sqrt`, then others as they first appear.
    pub policies: Vec<String>,
}

/// Schedules the benchmark knows, in the order they are legended and coloured.
const KNOWN_SCHEDULES: [&str; 5] = ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2"];

impl Keys {
    /// The keys of `points`.
    pub fn of(points: &[ConfigPoint]) -> Keys {
        let mut schedules: Vec<String> = Vec::new();
        let mut policies: Vec<String> = Vec::new();
        for p in points {
            if !schedules.contains(&p.schedule) {
                schedules.push(p.schedule.clone());
            }
            if !policies.contains(&p.recompute) {
                policies.push(p.recompute.clone());
            }
        }
        // Stable sorts: unknown names keep their order of appearance after the known ones.
        schedules.sort_by_key(|s| KNOWN_SCHEDULES.iter().position(|k| k == s).unwrap_or(KNOWN_SCHEDULES.len()));
        policies.sort_by_key(|p| policy_rank(p));
        Keys { schedules, policies }
    }

    /// The colour of `schedule`: its own hue if the benchmark knows it, else the next free one.
    pub fn colour(&self, schedule: &str) -> RGBColor {
        let known = KNOWN_SCHEDULES.iter().position(|k| *k == schedule);
        let mut unknown = self.schedules.iter().filter(|s| !KNOWN_SCHEDULES.contains(&s.as_str()));
        schedule_colour(known, unknown.position(|s| s == schedule).unwrap_or(0))
    }

    /// Position of `policy` in the legend (0 when absent).
    pub fn policy(&self, policy: &str) -> usize {
        self.policies.iter().position(|p| p == policy).unwrap_or(0)
    }
}

/// Where a recompute policy sorts: none, full, every:K (by K), sqrt, anything else.
fn policy_rank(policy: &str) -> (u8, u64) {
    match policy {
        "none" => (0, 0),
        "full" => (1, 0),
        "sqrt" => (3, 0),
        _ => match policy.strip_prefix("every:").map(str::parse::<u64>) {
            Some(Ok(k)) => (2, k),
            _ => (4, 0),
        },
    }
}

/// Width and height of `text` in `style`, in pixels (estimated from the font size when the font
/// cannot measure it).
pub(crate) fn text_size(text: &str, style: &TextStyle) -> (u32, u32) {
    let size = style.font.get_size();
    style.font.box_size(text).unwrap_or(((0.6 * size * text.chars().count() as f64) as u32, size as u32))
}

/// `text`, shortened with an ellipsis until it is at most `width` pixels wide in `style`.
pub(crate) fn fit(text: &str, style: &TextStyle, width: u32) -> String {
    if text_size(text, style).0 <= width {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let short: String = chars.iter().collect::<String>() + "…";
        if text_size(&short, style).0 <= width {
            return short;
        }
    }
    "…".to_string()
}

/// Configurations shared by the tests of both charts.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::ConfigPoint;
    use crate::ranking::{standings, Spread};
    use std::path::PathBuf;

    /// The first bytes of every PNG file.
    pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// A configuration from its numbers; the spread is ±`spread` of the throughput.
    pub fn config(schedule: &str, recompute: &str, throughput: f64, spread: f64, mib: f64) -> ConfigPoint {
        ConfigPoint {
            label: format!("{schedule} / {recompute}"),
            schedule: schedule.into(),
            recompute: recompute.into(),
            throughput,
            throughput_lo: throughput * (1.0 - spread),
            throughput_hi: throughput * (1.0 + spread),
            peak_bytes: (mib * (1 << 20) as f64) as u64,
            standing: Default::default(),
        }
    }

    /// `points` with their standings set by the ranking rule.
    pub fn ranked(mut points: Vec<ConfigPoint>) -> Vec<ConfigPoint> {
        let spreads: Vec<Spread> =
            points.iter().map(|p| Spread { median: p.throughput, lo: p.throughput_lo, hi: p.throughput_hi }).collect();
        for (p, s) in points.iter_mut().zip(standings(&spreads)) {
            p.standing = s;
        }
        points
    }

    /// Ten configurations like a real benchmark's: five schedules without and with full
    /// recompute, which halves memory and costs a quarter of the throughput; zb-h2 is fastest.
    /// Front: 1f1b/full, zb-h1/full, zb-h2/full, zb-h1/none, zb-h2/none.
    pub fn realistic() -> Vec<ConfigPoint> {
        let base = [
            ("gpipe", 48.0, 40.0),
            ("1f1b", 58.0, 8.0),
            ("interleaved", 66.0, 10.0),
            ("zb-h1", 72.0, 8.2),
            ("zb-h2", 80.0, 14.0),
        ];
        let mut points = Vec::new();
        for (k, &(s, t, mib)) in base.iter().enumerate() {
            points.push(config(s, "none", t, 0.03 + 0.01 * k as f64, mib));
            points.push(config(s, "full", t * 0.75, 0.05, mib / 2.0 + 0.1 * k as f64));
        }
        points
    }

    /// Thirty configurations, five schedules × six policies, many of them close together.
    pub fn crowded() -> Vec<ConfigPoint> {
        let schedules = [
            ("gpipe", 48.0, 40.0),
            ("1f1b", 58.0, 8.0),
            ("interleaved", 66.0, 10.0),
            ("zb-h1", 72.0, 8.2),
            ("zb-h2", 80.0, 14.0),
        ];
        let policies = [
            ("none", 1.0, 1.0),
            ("every:8", 0.95, 0.8),
            ("every:4", 0.9, 0.68),
            ("every:2", 0.84, 0.6),
            ("sqrt", 0.8, 0.55),
            ("full", 0.75, 0.5),
        ];
        let mut points = Vec::new();
        for &(s, t, mib) in &schedules {
            for &(r, tf, mf) in &policies {
                points.push(config(s, r, t * tf, 0.04, mib * mf));
            }
        }
        points
    }

    /// Renders every sample case, odd ones included, in both formats. The charts are kept in
    /// `$PIPESCHED_SAMPLES` when it is set (to look at them):
    /// `PIPESCHED_SAMPLES=/tmp/samples cargo test -p pipesched-bench samples`.
    #[test]
    fn samples() {
        let keep = std::env::var_os("PIPESCHED_SAMPLES").map(PathBuf::from);
        let dir = keep.clone().unwrap_or_else(|| scratch("samples"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut odd = realistic();
        odd[3].throughput = f64::NAN;
        odd[4].throughput_hi = f64::INFINITY;
        odd[6].throughput = 0.0;
        let one = vec![realistic().remove(9)];
        let forty: Vec<ConfigPoint> = crowded().into_iter().chain(realistic()).collect();
        let mut strange = realistic();
        strange[0].label = "gpipe / none, on the older cluster with the slow interconnect".into();
        strange[1] = config("my-schedule", "every:3", 61.0, 0.2, 2.5);
        strange[2] = config("another", "odd", 0.0, 0.0, 0.0);
        let cases = [
            ("realistic", realistic()),
            ("crowded", crowded()),
            ("odd", odd),
            ("one", one),
            ("strange", strange),
            ("forty", forty),
        ];
        for (name, points) in cases {
            let points = ranked(points);
            let title = format!("{name}: {} configurations · p=4 m=8", points.len());
            for ext in ["png", "svg"] {
                let bars = dir.join(format!("{name}-throughput.{ext}"));
                let scatter = dir.join(format!("{name}-tradeoff.{ext}"));
                super::super::render_throughput(&points, &title, &bars).unwrap();
                super::super::render_tradeoff(&points, &title, &scatter).unwrap();
                for file in [bars, scatter] {
                    assert!(file.metadata().unwrap().len() > 0, "{}", file.display());
                }
            }
        }
        if keep.is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// The texts of an SVG chart (plotters writes each on its own line inside `<text>`).
    pub fn svg_texts(svg: &str) -> Vec<&str> {
        let lines: Vec<&str> = svg.lines().collect();
        lines.windows(2).filter(|w| w[0].starts_with("<text")).map(|w| w[1]).collect()
    }

    /// A fresh directory for one test.
    pub fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesched-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bytes: u64, throughput: f64) -> Option<Measured> {
        Some(Measured { throughput, lo: throughput, hi: throughput, bytes })
    }

    #[test]
    fn front_keeps_the_undominated_points_in_memory_order() {
        let points = [at(10, 50.0), at(20, 60.0), at(15, 40.0), at(30, 60.0), at(5, 30.0), at(40, 70.0)];
        // (15, 40) loses to (10, 50); (30, 60) to (20, 60): same throughput, more memory.
        assert_eq!(pareto_front(&points), [4, 0, 1, 5]);
    }

    #[test]
    fn front_ties() {
        // Equal memory: only the faster.
        assert_eq!(pareto_front(&[at(10, 40.0), at(10, 50.0)]), [1]);
        // Equal throughput: only the smaller.
        assert_eq!(pareto_front(&[at(12, 50.0), at(10, 50.0)]), [1]);
        // Equal in both: both, in index order.
        assert_eq!(pareto_front(&[at(10, 50.0), at(5, 20.0), at(10, 50.0)]), [1, 0, 2]);
        // All the same.
        assert_eq!(pareto_front(&[at(7, 1.0); 4]), [0, 1, 2, 3]);
        // Zero throughput: the smaller of two zeros, and zero memory counts.
        assert_eq!(pareto_front(&[at(5, 0.0), at(0, 0.0)]), [1]);
        assert_eq!(pareto_front(&[at(0, 0.0), at(5, 1.0)]), [0, 1]);
    }

    #[test]
    fn front_of_one_none_and_nothing() {
        assert_eq!(pareto_front(&[at(3, 1.0)]), [0]);
        assert_eq!(pareto_front(&[]), Vec::<usize>::new());
        // A point that is not drawn neither stands on the front nor pushes others off it.
        assert_eq!(pareto_front(&[None, at(10, 5.0), None]), [1]);
        assert_eq!(pareto_front(&[None]), Vec::<usize>::new());
    }

    fn point(t: f64, lo: f64, hi: f64) -> ConfigPoint {
        ConfigPoint {
            label: "x".into(),
            schedule: "1f1b".into(),
            recompute: "none".into(),
            throughput: t,
            throughput_lo: lo,
            throughput_hi: hi,
            peak_bytes: 1,
            standing: Default::default(),
        }
    }

    #[test]
    fn measured_clamps_and_skips() {
        let m = |t, lo, hi| Measured::of(&point(t, lo, hi)).map(|m| (m.throughput, m.lo, m.hi));
        assert_eq!(m(50.0, 40.0, 60.0), Some((50.0, 40.0, 60.0)));
        assert_eq!(m(50.0, 55.0, 45.0), Some((50.0, 50.0, 50.0)));
        assert_eq!(m(50.0, f64::NAN, f64::INFINITY), Some((50.0, 50.0, 50.0)));
        assert_eq!(m(5.0, -3.0, 6.0), Some((5.0, 0.0, 6.0)));
        assert_eq!(m(0.0, 0.0, 0.0), Some((0.0, 0.0, 0.0)));
        assert_eq!(m(f64::NAN, 1.0, 2.0), None);
        assert_eq!(m(f64::INFINITY, 1.0, 2.0), None);
        assert_eq!(m(-1.0, 1.0, 2.0), None);
    }

    #[test]
    fn keys_follow_pipeline_and_policy_order() {
        let mut points = Vec::new();
        for (s, r) in
            [("zb-h2", "sqrt"), ("custom", "every:4"), ("gpipe", "full"), ("1f1b", "every:2"), ("zb-h2", "none")]
        {
            points.push(ConfigPoint { schedule: s.into(), recompute: r.into(), ..point(1.0, 1.0, 1.0) });
        }
        points.push(ConfigPoint { recompute: "odd".into(), ..point(1.0, 1.0, 1.0) });
        let keys = Keys::of(&points);
        assert_eq!(keys.schedules, ["gpipe", "1f1b", "zb-h2", "custom"]);
        assert_eq!(keys.policies, ["none", "full", "every:2", "every:4", "sqrt", "odd"]);
        assert_eq!(keys.policy("sqrt"), 4);
    }
}
