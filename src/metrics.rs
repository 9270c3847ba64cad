//! Lock-free latency histograms: written by the tasks on the hot path (one atomic add per
//! sample), read by the API. Fixed buckets, so memory never grows with traffic.

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
}
