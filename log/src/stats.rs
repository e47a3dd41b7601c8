//! Counters for monitoring, kept where the work happens and read by whoever exports them
//! (`runnel server`'s `/metrics`).
//!
//! Contract: updating a statistic costs one relaxed atomic add (a histogram: three), so the
//! hot paths keep them always on; reading them is a snapshot of each value on its own, not
//! of all of them at one instant. Per-partition counters live on [`crate::Partition`]
//! ([`crate::Partition::io_stats`]); what has no partition (`fsync` latency) is per process
//! here, as one process owns a data directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: Prometheus' default buckets from 100 µs.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with fixed buckets ([`LATENCY_BOUNDS`]), updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `buckets[i]` counts observations ≤ `LATENCY_BOUNDS[i]` and > the bound before it; the
    /// last one counts those above every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// What a histogram held when read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, in seconds, ascending (without `+Inf`).
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound (Prometheus' `le` buckets).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BOUNDS.len() + 1],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..LATENCY_BOUNDS.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: LATENCY_BOUNDS.to_vec(),
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Every `fsync` (`fdatasync`) of this process's log files: segments, indexes aside.
pub static FSYNC_LATENCY: Histogram = Histogram::new();

/// Records appended to and read from one partition since it was opened.
#[derive(Debug, Default)]
pub struct IoCounters {
    pub(crate) appended_records: AtomicU64,
    pub(crate) appended_bytes: AtomicU64,
    pub(crate) read_records: AtomicU64,
    pub(crate) read_bytes: AtomicU64,
}

/// What an [`IoCounters`] held when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    pub appended_records: u64,
    pub appended_bytes: u64,
    /// Offsets handed to readers (records and the control records among them).
    pub read_records: u64,
    pub read_bytes: u64,
}

impl IoCounters {
    pub(crate) fn appended(&self, records: u64, bytes: u64) {
        self.appended_records.fetch_add(records, Ordering::Relaxed);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, records: u64, bytes: u64) {
        self.read_records.fetch_add(records, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            appended_records: self.appended_records.load(Ordering::Relaxed),
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            read_records: self.read_records.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_and_cumulatively() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50)); // ≤ 100 µs
        h.observe(Duration::from_millis(3)); // ≤ 5 ms
        h.observe(Duration::from_secs(10)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1);
        let five_ms = LATENCY_BOUNDS.iter().position(|&b| b == 0.005).unwrap();
        assert_eq!(s.cumulative[five_ms - 1], 1);
        assert_eq!(s.cumulative[five_ms], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 2, "10 s is only in +Inf");
        assert!((s.sum_seconds - 10.00305).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
