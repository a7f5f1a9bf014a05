//! Latency summaries.

use std::time::Duration;

pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub ops_per_sec: f64,
    pub count: usize,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort();
        let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50: pick(0.50),
            p99: pick(0.99),
            ops_per_sec: samples.len() as f64 / wall.as_secs_f64(),
            count: samples.len(),
        }
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
