//! Latency histograms (microseconds). Client processes send theirs whole, as (value, count)
//! pairs, so percentiles are computed over every sample, never averaged.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    pub(crate) fn new() -> Self {
        // 1 µs to 10 min, 3 significant digits.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable()))
    }

    pub(crate) fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub(crate) fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// Milliseconds at quantile `q` (0..=1).
    pub(crate) fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub(crate) fn summary(&self) -> Value {
        json!({
            "samples": self.len(),
            "p50_ms": round3(self.ms(0.5)),
            "p99_ms": round3(self.ms(0.99)),
            "p999_ms": round3(self.ms(0.999)),
            "max_ms": round3(if self.0.is_empty() { 0.0 } else { self.0.max() as f64 / 1000.0 }),
        })
    }

    /// The histogram as text: `value:count` pairs of its non-empty buckets.
    pub(crate) fn encode(&self) -> String {
        let pairs: Vec<String> = self
            .0
            .iter_recorded()
            .map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.join(",")
    }

    pub(crate) fn decode(text: &str) -> Self {
        let mut h = Self::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            if let Some((v, c)) = pair.split_once(':')
                && let (Ok(v), Ok(c)) = (v.parse::<u64>(), c.parse::<u64>())
            {
                let _ = h.0.record_n(v.max(1), c);
            }
        }
        h
    }
}

/// Bounds that are constants and valid.
fn unreachable() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|_| std::process::abort())
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
