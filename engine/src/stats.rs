//! Live statistics of a running [`App`](crate::App): per task what it read and wrote (in all
//! and per operator), what it set aside as late or dead, its watermark and the entries in its
//! stores; per application the commits and their latency, and the restore's progress (live:
//! workers add to it while they restore, before their first commit).
//!
//! Contract: each worker thread publishes its tasks' figures right after each commit (one
//! short lock per commit, nothing per record), so readers (`runnel server`'s `/metrics` and
//! console) see every task as of its worker's last commit, and reading costs the workers
//! nothing. Counters only grow while the application runs, across rebalances (a task's
//! figures of an earlier generation are carried into the next); a task that moved to another
//! instance keeps its last figures here. [`AppStats::assignment`] says which tasks this
//! instance holds now.

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

/// The tasks this instance holds in its group's current generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i32,
    /// Instances in the generation.
    pub instances: u32,
    /// The instance's slot (names its transactional ids under exactly-once).
    pub slot: u32,
    /// Task names (`<sub-topology>_<partition>`), sorted.
    pub tasks: Vec<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AppStats {
    tasks: Mutex<BTreeMap<String, TaskStats>>,
    /// Every task's figures when the current generation started, which its workers' figures
    /// (counted from zero) add to.
    carried: Mutex<BTreeMap<String, TaskStats>>,
    assignment: Mutex<Option<Assignment>>,
    /// The generation whose workers all restored their stores and process, and how long
    /// that took from the assignment.
    processing: Mutex<Option<(i32, Duration)>>,
    /// The generation whose standby replicas checkpointed all their tasks had committed, and
    /// how many tasks they copy.
    standby: Mutex<Option<(i32, usize)>>,
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

    /// The tasks this instance holds now; `None` before it first joined its group.
    pub fn assignment(&self) -> Option<Assignment> {
        self.assignment.lock().clone()
    }

    pub(crate) fn assigned(&self, assignment: Assignment) {
        *self.carried.lock() = self.tasks.lock().clone();
        *self.assignment.lock() = Some(assignment);
    }

    /// `(generation, time from assignment to processing)` once every worker of the current
    /// generation restored its stores (the time a failover or a scale-out costs); `None`
    /// before.
    pub fn processing(&self) -> Option<(i32, Duration)> {
        *self.processing.lock()
    }

    pub(crate) fn processing_from(&self, generation: i32, took: Duration) {
        *self.processing.lock() = Some((generation, took));
    }

    /// `(generation, standby tasks)` once this instance's standby replicas have checkpointed
    /// everything their active tasks committed in that generation (a failover to here then
    /// replays only what was committed after); `None` before, or without standbys.
    pub fn standby_checkpointed(&self) -> Option<(i32, usize)> {
        *self.standby.lock()
    }

    pub(crate) fn standby_caught_up(&self, generation: i32, tasks: usize) {
        *self.standby.lock() = Some((generation, tasks));
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
        let carried = self.carried.lock();
        let mut all = self.tasks.lock();
        for (name, mut s) in tasks {
            if let Some(before) = carried.get(&name) {
                crate::runtime::add_metrics(&mut s.metrics, &before.metrics);
                for (op, old) in s.operators.iter_mut().zip(&before.operators) {
                    op.records_in += old.records_in;
                    op.records_out += old.records_out;
                }
            }
            all.insert(name, s);
        }
    }
}
