//! Live statistics of a running [`App`](crate::App): per task what it read and wrote (in all
//! and per operator), what it set aside as late or dead, its watermark and the entries in its
//! stores; per application the commits and their latency, and the restore's progress (live:
//! workers add to it while they restore, before their first commit).
//!
//! Contract: each worker thread publishes its tasks' figures right after each commit (one
//! short lock per commit, nothing per record), so readers (`runnel server`'s `/metrics` and
//! console) see every task as of its worker's last commit, and reading costs the workers
//! nothing. Counters only grow while the application runs; a task that moved to another
//! process (a later scale-out) keeps its last figures here.

use crate::operator::TaskMetrics;
use parking_lot::Mutex;
use runnel_log::stats::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one task has done, as of its worker's last commit.
#[derive(Debug, Clone, Default)]
pub struct TaskStats {
    pub metrics: TaskMetrics,
    /// The task's watermark (event time, ms); `None` before its first one.
    pub watermark: Option<i64>,
    /// Entries in the task's state stores.
    pub store_entries: u64,
    /// Per operator, in topology order.
    pub operators: Vec<OperatorStats>,
}

/// What one operator of a task has received and emitted (see
/// [`OperatorCounts`](crate::operator::OperatorCounts)).
#[derive(Debug, Clone)]
pub struct OperatorStats {
    /// The node's name, as the topology's description prints it.
    pub name: Arc<str>,
    pub records_in: u64,
    pub records_out: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AppStats {
    tasks: Mutex<BTreeMap<String, TaskStats>>,
    commits: AtomicU64,
    /// Changelog records the workers set out to restore, and those restored so far.
    restore_planned: AtomicU64,
    restore_done: AtomicU64,
    /// How long each commit took: flush of outputs, offsets (or the transaction's commit).
    pub commit_latency: Histogram,
}

impl AppStats {
    /// Every task's figures, by task name (`<sub-topology>_<partition>`).
    pub fn tasks(&self) -> BTreeMap<String, TaskStats> {
        self.tasks.lock().clone()
    }

    /// Restore progress: `(changelog records restored, records to restore)` over every store
    /// of every worker, both growing as workers start (a local checkpoint leaves less).
    pub fn restore_progress(&self) -> (u64, u64) {
        (
            self.restore_done.load(Ordering::Relaxed),
            self.restore_planned.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn restore_planned(&self, records: u64) {
        self.restore_planned.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn restored(&self, records: u64) {
        self.restore_done.fetch_add(records, Ordering::Relaxed);
    }

    /// Commits done by all workers.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(crate) fn committed(
        &self,
        took: Duration,
        tasks: impl Iterator<Item = (String, TaskStats)>,
    ) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_latency.observe(took);
        let mut all = self.tasks.lock();
        for (name, s) in tasks {
            all.insert(name, s);
        }
    }
}
