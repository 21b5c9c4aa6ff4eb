//! A latency histogram of bounded size: values in microseconds, kept to
//! 7 significant bits (under 1 % error), whatever how many are recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Significant bits kept of each value.
const BITS: u32 = 7;

/// Counts of latencies.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: BTreeMap<u64, u64>,
    count: u64,
    sum_us: u128,
    max_us: u64,
}

/// Percentiles of a histogram, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest (exact).
    pub max_ms: f64,
    /// Mean (exact).
    pub mean_ms: f64,
}

/// `us` with only its [`BITS`] most significant bits (rounded down).
pub fn quantize(us: u64) -> u64 {
    let width = 64 - us.leading_zeros();
    if width <= BITS {
        return us;
    }
    let drop = width - BITS;
    (us >> drop) << drop
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        *self.buckets.entry(quantize(us)).or_insert(0) += 1;
        self.count += 1;
        self.sum_us += u128::from(us);
        self.max_us = self.max_us.max(us);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The nearest-rank percentile `p` (0..=100), µs (bucket lower bound;
    /// None when empty).
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.count as f64).ceil() as u64;
        let rank = rank.clamp(1, self.count);
        let mut seen = 0;
        for (v, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(*v);
            }
        }
        Some(self.max_us)
    }

    /// The usual percentiles (None when empty).
    pub fn percentiles(&self) -> Option<Percentiles> {
        let ms = |p: f64| self.percentile_us(p).map(|us| us as f64 / 1000.0);
        Some(Percentiles {
            count: self.count,
            p50_ms: ms(50.0)?,
            p90_ms: ms(90.0)?,
            p99_ms: ms(99.0)?,
            p999_ms: ms(99.9)?,
            max_ms: self.max_us as f64 / 1000.0,
            mean_ms: self.sum_us as f64 / self.count as f64 / 1000.0,
        })
    }

    /// Buckets in use (bounded by 64 × 2^7).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizing_keeps_seven_bits() {
        assert_eq!(quantize(0), 0);
        assert_eq!(quantize(127), 127);
        assert_eq!(quantize(128), 128);
        assert_eq!(quantize(129), 128);
        assert_eq!(quantize(1001), 1000);
        for v in [300u64, 12_345, 987_654_321] {
            let q = quantize(v);
            assert!(q <= v && (v - q) as f64 / v as f64 <= 1.0 / 64.0, "{v} {q}");
        }
    }

    #[test]
    fn percentiles_of_a_known_series() {
        let mut h = Histogram::default();
        assert_eq!(h.percentiles(), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p = h.percentiles().expect("percentiles");
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 0.5).abs() <= 0.5 * 0.01 + 1e-9, "{p:?}");
        assert!((p.p99_ms - 0.99).abs() <= 0.99 * 0.01 + 1e-9, "{p:?}");
        assert!((p.p999_ms - 0.999).abs() <= 0.999 * 0.01 + 1e-9, "{p:?}");
        assert_eq!(p.max_ms, 1.0);
        assert!((p.mean_ms - 0.5005).abs() < 1e-9);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut h = Histogram::default();
        for i in 0..200_000u64 {
            h.record(Duration::from_micros(i * 37 % 5_000_000));
        }
        assert!(h.buckets() < 64 * 128, "{}", h.buckets());
        assert_eq!(h.count(), 200_000);
    }
}
