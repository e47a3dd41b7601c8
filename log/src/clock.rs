//! The log's clock: where time-based behaviour reads "now".
//!
//! Segment ageing (`segment.ms`), time retention (`retention.ms`), compaction's tombstone
//! deadline (`delete.retention.ms`) and transaction timeouts (`transaction.timeout.ms`) all ask
//! this clock, never the system clock directly, so a test can open a log on a
//! [`Clock::manual`] clock and move time forward with [`Clock::advance`] instead of sleeping
//! through a deadline. [`Clock::system`] (the default) reads the wall clock (`CLOCK_REALTIME`,
//! milliseconds since the Unix epoch, the unit of record timestamps).
//!
//! Timestamps the log stamps on records (a producer's `CreateTime`, a marker's time) and the
//! ages recovered from segment files' modification times stay on the wall clock: they are
//! data, read back by other processes, not deadlines of this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of "now" in milliseconds since the Unix epoch; clones share one time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a manual time, moved only by [`Clock::advance`].
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock standing at `start_ms` until advanced.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => crate::types::now_ms(),
            Some(t) => t.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward by `by`.
    ///
    /// # Panics
    ///
    /// On the system clock, which cannot be moved: that is a bug in the caller.
    pub fn advance(&self, by: Duration) {
        let t = self
            .manual
            .as_ref()
            .expect("only a manual clock can be advanced");
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        t.fetch_add(by, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        shared.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let before = crate::types::now_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000, "{before} {now}");
    }
}
