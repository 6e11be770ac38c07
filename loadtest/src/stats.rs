//! Latency and outcome bookkeeping: an HDR histogram of latencies (microseconds, 3 significant
//! digits) and counts by status, merged into a JSON summary.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug)]
pub struct Stats {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (connection refused, reset, timeout).
    pub errors: u64,
    /// Requests not sent because too many were already in flight (the target is far behind).
    pub dropped: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            errors: 0,
            dropped: 0,
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    pub dropped: u64,
    pub seconds: f64,
    pub achieved_rps: f64,
    pub latency_ms: Percentiles,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    /// An answer with `status`, `latency` after the request was due.
    pub fn record(&mut self, status: u16, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        let us = (latency.as_micros() as u64).clamp(1, self.latency_us.high());
        self.latency_us.record(us).expect("clamped into range");
    }

    pub fn merge(&mut self, other: &Stats) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.errors += other.errors;
        self.dropped += other.dropped;
    }

    pub fn summary(&self, elapsed: Duration) -> Summary {
        let answered: u64 = self.statuses.values().sum();
        let ok = self
            .statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            sent: answered + self.errors,
            ok,
            statuses: self.statuses.clone(),
            errors: self.errors,
            dropped: self.dropped,
            seconds: elapsed.as_secs_f64(),
            achieved_rps: answered as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_ms: Percentiles {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: self.latency_us.max() as f64 / 1000.0,
                mean: self.latency_us.mean() / 1000.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts_from_known_latencies() {
        let mut a = Stats::default();
        for ms in 1..=100u64 {
            a.record(200, Duration::from_millis(ms));
        }
        let mut b = Stats::default();
        b.record(503, Duration::from_millis(500));
        b.errors = 2;
        b.dropped = 1;
        a.merge(&b);
        let s = a.summary(Duration::from_secs(2));
        assert_eq!(s.ok, 100);
        assert_eq!(s.statuses[&503], 1);
        assert_eq!((s.sent, s.errors, s.dropped), (103, 2, 1));
        assert_eq!(s.achieved_rps, 50.5);
        assert!((s.latency_ms.p50 - 51.0).abs() < 0.1, "{:?}", s.latency_ms);
        assert!((s.latency_ms.p99 - 100.0).abs() < 0.1, "{:?}", s.latency_ms);
        assert!((s.latency_ms.max - 500.0).abs() < 0.5, "{:?}", s.latency_ms);
    }
}
