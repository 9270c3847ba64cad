//! Lock-free latency histograms (written by the tasks on the hot path, one atomic add per sample;
//! fixed buckets, so memory never grows with traffic), the server-wide counters of `/metrics`,
//! and the Prometheus text format they are written in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, ms: fine around the few-ms figures that matter for interaction,
/// coarse beyond. A last, unbounded bucket takes the rest.
pub const BOUNDS_MS: [f64; 24] = [
    0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0,
    75.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Counts of durations per bucket of [`BOUNDS_MS`], plus their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// What a histogram held at one moment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub count: u64,
    /// Medians and 95th percentiles are the upper bound of the bucket they fall in, ms.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BOUNDS_MS.partition_point(|&b| b < ms);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sum of every duration recorded, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1_000_000.0
    }

    /// The counts per bucket (the last is the unbounded one).
    pub fn counts(&self) -> [u64; BOUNDS_MS.len() + 1] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn summary(&self) -> Summary {
        let counts = self.counts();
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if count == 0 {
                return None;
            }
            // The smallest bucket holding at least q of the samples.
            let rank = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY));
                }
            }
            None
        };
        Summary {
            count,
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            mean_ms: (count > 0)
                .then(|| self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0 / count as f64),
        }
    }
}

/// Totals of sessions that ended, so the server-wide counters of `/metrics` never go down when a
/// session (and its own counters) goes away.
#[derive(Debug, Default, Clone, Copy)]
pub struct Retired {
    pub frames_in: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub crashes: u64,
    pub blocked_requests: u64,
}

/// Why a new session was refused (a label of `cobrowse_sessions_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    Memory,
    Draining,
    LaunchFailed,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Full,
        Refusal::Memory,
        Refusal::Draining,
        Refusal::LaunchFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Memory => "memory",
            Refusal::Draining => "draining",
            Refusal::LaunchFailed => "launch_failed",
        }
    }
}

/// Server-wide counters and histograms for `/metrics`, shared by the registry, the sessions and
/// the participants' writer tasks. Per-session figures are read from the live sessions when
/// `/metrics` is scraped; these hold what has no session to read it from.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Each participant's lag (age of the newest screen it painted while a newer one exists),
    /// sampled at every link report (once a second per participant).
    pub viewer_lag: Histogram,
    /// A press, key or text input → the first changed frame from Chromium (all sessions).
    pub input_to_frame: Histogram,
    /// Chromium processes launched: for sessions (cold), for the warm pool, as probes, and
    /// relaunches after a crash.
    pub browser_launches: AtomicU64,
    /// Launches that failed.
    pub browser_launch_failures: AtomicU64,
    /// Sessions started with a browser from the warm pool, and with one launched for them.
    pub sessions_warm: AtomicU64,
    pub sessions_cold: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    retired: std::sync::Mutex<Retired>,
}

impl ServerMetrics {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Adds an ended session's totals.
    pub fn retire(&self, totals: Retired) {
        let mut r = crate::lock(&self.retired);
        r.frames_in += totals.frames_in;
        r.frames_sent += totals.frames_sent;
        r.bytes_sent += totals.bytes_sent;
        r.crashes += totals.crashes;
        r.blocked_requests += totals.blocked_requests;
    }

    pub fn retired(&self) -> Retired {
        *crate::lock(&self.retired)
    }
}

/// Writes Prometheus' text exposition format (version 0.0.4).
pub struct Exposition {
    out: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition::new()
    }
}

impl Exposition {
    pub fn new() -> Self {
        Exposition {
            out: String::with_capacity(8192),
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One metric with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One metric with a sample per label set.
    pub fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        use std::fmt::Write;
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A histogram in seconds, one series per label set (`le` buckets are cumulative).
    pub fn histograms<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, &'a Histogram)>,
    ) {
        self.header(name, "histogram", help);
        for (labels, h) in series {
            let counts = h.counts();
            let mut cumulative = 0u64;
            let bucket = format!("{name}_bucket");
            for (i, count) in counts.iter().enumerate() {
                cumulative += count;
                let le = BOUNDS_MS
                    .get(i)
                    .map(|ms| number(ms / 1000.0))
                    .unwrap_or_else(|| "+Inf".to_string());
                let mut with_le = labels.clone();
                with_le.push(("le", &le));
                self.sample(&bucket, &with_le, cumulative as f64);
            }
            self.sample(&format!("{name}_sum"), &labels, h.sum_seconds());
            self.sample(&format!("{name}_count"), &labels, cumulative as f64);
        }
    }
}

/// A sample value as Prometheus reads it.
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

/// A label value with `\\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn empty_has_no_quantiles() {
        let h = Histogram::default();
        assert_eq!(
            h.summary(),
            Summary {
                count: 0,
                p50_ms: None,
                p95_ms: None,
                mean_ms: None
            }
        );
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = Histogram::default();
        // 90 samples of 2.5 ms (bucket ≤ 3), 10 of 45 ms (bucket ≤ 50).
        for _ in 0..90 {
            h.record(ms(2.5));
        }
        for _ in 0..10 {
            h.record(ms(45.0));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, Some(3.0));
        assert_eq!(s.p95_ms, Some(50.0));
        let mean = s.mean_ms.expect("mean");
        assert!((mean - 6.75).abs() < 0.01, "{mean}");
    }

    #[test]
    fn bounds_are_inclusive_and_huge_values_land_last() {
        let h = Histogram::default();
        h.record(ms(1.0));
        h.record(Duration::from_secs(3600));
        let c = h.counts();
        assert_eq!(c[1], 1, "1 ms is in the ≤ 1 ms bucket");
        assert_eq!(c[BOUNDS_MS.len()], 1);
        assert_eq!(h.summary().p95_ms, Some(f64::INFINITY));
    }

    #[test]
    fn exposition_writes_cumulative_buckets_and_escapes_labels() {
        let h = Histogram::default();
        h.record(ms(0.2));
        h.record(ms(2.5));
        h.record(Duration::from_secs(60));
        let mut e = Exposition::new();
        e.histograms(
            "lag_seconds",
            "Lag.",
            [(vec![("session", "a\"b\\c\nd")], &h)],
        );
        e.single("up", "gauge", "Up.", 1.0);
        let text = e.finish();
        let label = r#"session="a\"b\\c\nd""#;
        assert!(text.contains("# TYPE lag_seconds histogram\n"), "{text}");
        assert!(
            text.contains(&format!("lag_seconds_bucket{{{label},le=\"0.0005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lag_seconds_bucket{{{label},le=\"0.003\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lag_seconds_bucket{{{label},le=\"5\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lag_seconds_bucket{{{label},le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lag_seconds_count{{{label}}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lag_seconds_sum{{{label}}} 60.0027")),
            "{text}"
        );
        assert!(text.ends_with("# TYPE up gauge\nup 1\n"), "{text}");
    }

    #[test]
    fn retired_totals_add_up() {
        let m = ServerMetrics::default();
        m.retire(Retired {
            frames_in: 2,
            bytes_sent: 10,
            ..Retired::default()
        });
        m.retire(Retired {
            frames_in: 3,
            crashes: 1,
            ..Retired::default()
        });
        let r = m.retired();
        assert_eq!((r.frames_in, r.bytes_sent, r.crashes), (5, 10, 1));
        m.refused(Refusal::Memory);
        assert_eq!(m.refusals(Refusal::Memory), 1);
        assert_eq!(m.refusals(Refusal::Full), 0);
    }
}
