//! Broker metrics: requests and latency per API, bytes in and out, connections.
//!
//! Counters are atomics updated on every request; [`Metrics::summary`] renders them as text.
//! `runnel broker` logs a summary through `tracing` every `--stats-interval` and prints one to
//! stdout when it stops (SIGINT/SIGTERM). Latency is kept in power-of-two microsecond buckets,
//! so p50/p99 are upper bounds within a factor of two.

use parking_lot::Mutex;
use runnel_log::stats::HistogramSnapshot;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 32;

#[derive(Default, Clone)]
struct ApiStats {
    count: u64,
    errors: u64,
    total_us: u64,
    /// `buckets[i]` counts requests that took less than `2^i` microseconds.
    buckets: [u64; BUCKETS],
}

impl ApiStats {
    fn quantile_us(&self, q: f64) -> u64 {
        let target = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return 1 << i;
            }
        }
        1 << (BUCKETS - 1)
    }
}

/// One API's figures, from [`Metrics::api_snapshots`].
#[derive(Debug, Clone)]
pub struct ApiSnapshot {
    pub api: &'static str,
    pub count: u64,
    pub errors: u64,
    pub latency: HistogramSnapshot,
}

#[derive(Default)]
pub struct Metrics {
    apis: Mutex<BTreeMap<&'static str, ApiStats>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    /// Connections closed because of a malformed frame or request.
    pub connections_malformed: AtomicU64,
    /// Fetch sessions opened (KIP-227), and incremental fetches served in them.
    pub fetch_sessions_opened: AtomicU64,
    pub fetch_incremental: AtomicU64,
}

impl Metrics {
    pub fn record(&self, api: &'static str, took: Duration, failed: bool) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        let mut apis = self.apis.lock();
        let s = apis.entry(api).or_default();
        s.count += 1;
        s.errors += u64::from(failed);
        s.total_us += us;
        s.buckets[bucket] += 1;
    }

    /// Each API's requests, errors and latency so far, in API-name order, for exporters
    /// (`/metrics`). Latency buckets are the power-of-two microsecond ones, as bounds in
    /// seconds.
    pub fn api_snapshots(&self) -> Vec<ApiSnapshot> {
        let bounds: Vec<f64> = (0..BUCKETS).map(|i| (1u64 << i) as f64 / 1e6).collect();
        self.apis
            .lock()
            .iter()
            .map(|(api, s)| {
                let mut running = 0;
                let cumulative = s
                    .buckets
                    .iter()
                    .map(|n| {
                        running += n;
                        running
                    })
                    .collect();
                ApiSnapshot {
                    api,
                    count: s.count,
                    errors: s.errors,
                    latency: HistogramSnapshot {
                        bounds: bounds.clone(),
                        cumulative,
                        count: s.count,
                        sum_seconds: s.total_us as f64 / 1e6,
                    },
                }
            })
            .collect()
    }

    /// Requests served so far for `api` (its Kafka name, e.g. "Produce").
    pub fn requests(&self, api: &str) -> u64 {
        self.apis.lock().get(api).map_or(0, |s| s.count)
    }

    /// A multi-line text summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "connections: {} open, {} total, {} closed as malformed; bytes in {}, out {}",
            self.connections_open.load(Ordering::Relaxed),
            self.connections_total.load(Ordering::Relaxed),
            self.connections_malformed.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "fetch sessions: {} opened, {} incremental fetches",
            self.fetch_sessions_opened.load(Ordering::Relaxed),
            self.fetch_incremental.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>8} {:>10} {:>10} {:>10}",
            "api", "requests", "errors", "mean_us", "p50_us<=", "p99_us<="
        );
        for (api, s) in self.apis.lock().iter() {
            let _ = writeln!(
                out,
                "{:<16} {:>10} {:>8} {:>10} {:>10} {:>10}",
                api,
                s.count,
                s.errors,
                s.total_us / s.count.max(1),
                s.quantile_us(0.5),
                s.quantile_us(0.99)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let m = Metrics::default();
        for _ in 0..99 {
            m.record("Produce", Duration::from_micros(100), false);
        }
        m.record("Produce", Duration::from_millis(50), true);
        let apis = m.apis.lock();
        let s = &apis["Produce"];
        assert_eq!(s.quantile_us(0.5), 128);
        assert_eq!(s.quantile_us(0.99), 128);
        assert_eq!(s.quantile_us(1.0), 65536);
        assert_eq!(s.errors, 1);
        drop(apis);
        assert!(m.summary().contains("Produce"));
        assert_eq!(m.requests("Produce"), 100);
    }
}
