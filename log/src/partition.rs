//! One partition: an ordered list of segments, the last one active.
//!
//! Contract:
//! - Offsets are dense from the first append and never reused: an append gets
//!   `[log_end, log_end + n)`; only recovery may cut an unacknowledged torn tail.
//! - Appends are serialized by `writer`; reads never wait for an append's disk I/O longer than
//!   the few instructions of updating segment metadata.
//! - A record is visible to readers (below the high watermark) once it is acknowledged: under
//!   [`Durability::Always`] after the `fdatasync` that covers it, otherwise once written.
//! - Group commit: under `always`, concurrent appenders share syncs. The first appender that
//!   finds no sync running becomes the leader, syncs everything written so far, and wakes the
//!   others whose data that sync covered.
//! - When a segment is rolled it is synced and its indexes written, whatever the policy, so only
//!   the active segment can have a torn tail after a crash.
//! - Storage errors never turn into acknowledgements and never leave gaps: a failed write fails
//!   the rest of its burst (and is cut from the file); a failed sync is never retried (its data
//!   may be gone from the page cache while a second `fsync` succeeds), the partition instead goes
//!   back to what the last successful sync covered, as recovery after a crash would, and every
//!   append waiting on the lost data fails. Reads of stored data go on; appends resume as soon
//!   as writes succeed again (space freed), without a restart.

use crate::batch;
use crate::clock::Clock;
use crate::config::{CleanupPolicy, Durability, TopicConfig};
use crate::error::{LogError, Result};
use crate::fault;
use crate::segment::{self, ReadHandle, Segment};
use crate::stats::{IoCounters, IoSnapshot};
use crate::txn::IsolationLevel;
use crate::txn::producer_state::{self, PartitionProducers};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
/// The log start offset that DeleteRecords moved into a segment (decimal text), so that a
/// restart does not make its records readable again.
const LOG_START_FILE: &str = "log-start-offset";
/// Bytes per read when a whole range of batches is scanned (compaction, offset loading).
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// What a read returns: whole batches (as bytes or as where they lie in a segment file), with
/// the partition's offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    /// Zero or more whole batches; the first may start before the requested offset.
    pub batches: T,
    /// Offset after the last batch returned (the requested offset when nothing was returned).
    pub next_offset: u64,
    pub high_watermark: u64,
    /// Where `read_committed` reads stop: the first offset of the oldest open transaction, or
    /// the high watermark.
    pub last_stable_offset: u64,
    pub log_start_offset: u64,
}

/// Bytes returned by [`Partition::read`]: whole batches, as stored, CRCs checked.
pub type FetchResult = Fetched<Bytes>;

/// Whole batches as a byte range of one segment file ([`Partition::locate`]), for a sender
/// that copies them from the file without reading them (the broker's Fetch, by `sendfile`).
/// The file handle stays valid when the segment is deleted or replaced meanwhile, and the range
/// lies below the segment's readable length, which only grows.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    /// The file's path, for errors.
    pub path: PathBuf,
    pub position: u64,
    pub len: u64,
}

impl FileRange {
    /// The range's bytes, read from the file (for ranges too small to be worth sending apart).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file when the read fails.
    pub fn read(&self) -> Result<Bytes> {
        crate::segment::read_new_buffer(&self.file, self.position, self.len as usize)
            .map(Bytes::from)
            .map_err(|e| LogError::io(&self.path, e))
    }
}

/// Sizes and offsets of a partition, for `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    pub size_bytes: u64,
    pub segments: usize,
}

/// What the last append wrote, for the group-commit leader.
struct Written {
    end_offset: u64,
    file: Arc<File>,
    path: PathBuf,
    readable: Arc<AtomicU64>,
    base_offset: u64,
    len: u64,
}

#[derive(Default)]
struct SyncState {
    latest: Option<Written>,
    synced_offset: u64,
    syncing: bool,
    /// (segment base offset, bytes) known durable: the active segment's prefix that the last
    /// successful sync covered. A failed sync takes the partition back here.
    durable: (u64, u64),
    /// Bumped when the partition goes back to `durable`: an append written in an earlier
    /// generation and not yet synced was lost, and its waiter fails with `lost`.
    generation: u64,
    lost: String,
    /// (generation ended, offsets below which its data survived) of the last resets.
    resets: std::collections::VecDeque<(u64, u64)>,
}

/// How far compaction has cleaned a partition (Kafka's cleaner checkpoint, kept in memory:
/// after a restart the first compaction treats the whole log as dirty, which costs passes and
/// changes no result).
#[derive(Debug)]
pub(crate) struct CleanerCheckpoint {
    /// Records below this offset hold each key at most once.
    pub first_dirty: u64,
    /// The active segment's base offset when compaction last ran.
    pub at_active_base: u64,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub id: u32,
    dir: PathBuf,
    config: TopicConfig,
    clock: Clock,
    pub(crate) segments: RwLock<Vec<Segment>>,
    writer: Mutex<()>,
    high_watermark: AtomicU64,
    log_start: AtomicU64,
    sync_state: Mutex<SyncState>,
    synced: Condvar,
    dirty: AtomicBool,
    last_flush: Mutex<Instant>,
    /// Set when the topic is deleted: handles still held by producers or consumers fail
    /// instead of writing to or reading from unlinked files.
    deleted: AtomicBool,
    /// Where compaction stands; locked for a whole compaction of this partition, so two
    /// cleaners (the background one and [`crate::Log::run_cleaner`]) never overlap.
    pub(crate) cleaner: Mutex<CleanerCheckpoint>,
    wakers: Mutex<Vec<Weak<Notify>>>,
    /// Idempotent and transactional producers' state ([`crate::txn::producer_state`]); held
    /// across a producer's append so that its checks and the append are one step.
    pub(crate) producers: Mutex<PartitionProducers>,
    /// First offset of the oldest open transaction, `u64::MAX` when none is open.
    pub(crate) first_unstable: AtomicU64,
    /// Whether a transactional batch was ever appended here (aborted-index lookups skip
    /// partitions that never saw one).
    pub(crate) seen_transactions: AtomicBool,
    /// The producer state describes batches that a reset to the durable prefix removed: it is
    /// rebuilt from the log before its next use.
    pub(crate) producers_stale: AtomicBool,
    /// A reset to the durable prefix is still owed (its truncation failed): the next append
    /// does it first.
    reset_owed: AtomicBool,
    /// Records and bytes appended and read, for monitoring.
    io: IoCounters,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.id)
    }
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl Partition {
    /// Opens (creating if needed) the partition directory and recovers its segments; `clock`
    /// ages its segments (`segment.ms`) and dates its writes for retention.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the directory or a segment cannot be created or read; a corrupt
    /// tail of the last segment is cut (logged), corrupt data in a closed one is kept and fails
    /// reads that reach it.
    pub fn open(
        data_dir: &Path,
        topic: Arc<str>,
        id: u32,
        config: TopicConfig,
        clock: Clock,
    ) -> Result<Self> {
        let dir = partition_dir(data_dir, &topic, id);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        remove_leftovers(&dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        let bases = Segment::list(&dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let is_tail = i + 1 == bases.len();
            let (seg, bad) = Segment::recover(&dir, base, !is_tail || clean, is_tail, &clock)?;
            if bad > 0 && !is_tail {
                tracing::error!(topic = %topic, partition = id, segment = base,
                    "closed segment has corrupt data; reads will stop there with an error");
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, &clock)?);
        }
        if clean {
            std::fs::remove_file(&marker).map_err(|e| LogError::io(&marker, e))?;
        }
        let end = segments.last().expect("one segment").next_offset;
        let (active_base, active_len) = {
            let active = segments.last().expect("one segment");
            (active.base_offset, active.size())
        };
        let start = segments[0].base_offset.max(
            std::fs::read_to_string(dir.join(LOG_START_FILE))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .min(end),
        );
        for s in &segments {
            s.publish(s.size());
        }
        let seen_transactions = producer_state::has_seen_transactions(&dir);
        let partition = Self {
            topic,
            id,
            dir,
            config,
            clock,
            io: IoCounters::default(),
            segments: RwLock::new(segments),
            writer: Mutex::new(()),
            high_watermark: AtomicU64::new(end),
            log_start: AtomicU64::new(start),
            sync_state: Mutex::new(SyncState {
                synced_offset: end,
                durable: (active_base, active_len),
                ..Default::default()
            }),
            synced: Condvar::new(),
            dirty: AtomicBool::new(false),
            last_flush: Mutex::new(Instant::now()),
            cleaner: Mutex::new(CleanerCheckpoint {
                first_dirty: 0,
                at_active_base: u64::MAX,
            }),
            deleted: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            producers: Mutex::new(PartitionProducers::default()),
            first_unstable: AtomicU64::new(u64::MAX),
            seen_transactions: AtomicBool::new(seen_transactions),
            producers_stale: AtomicBool::new(false),
            reset_owed: AtomicBool::new(false),
        };
        if seen_transactions {
            // Its last stable offset depends on the transactions a crash may have left open.
            partition.load_producer_state()?;
        }
        Ok(partition)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Next offset readers will see (exclusive end of the visible log).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Appends one encoded batch (base offset ignored and assigned here). Returns its base
    /// offset once the batch is durable per the topic's policy. Blocking: call from a blocking
    /// context (`spawn_blocking` or a plain thread).
    ///
    /// # Errors
    ///
    /// - [`LogError::InvalidBatch`] / [`LogError::RecordTooLarge`] for a batch that fails
    ///   validation (bad CRC or header, above `max.message.bytes`): refused alone.
    /// - [`LogError::Storage`] when the disk refused the write or its sync (full, I/O error):
    ///   nothing it was to cover counts as written; the partition goes back to its durable prefix.
    /// - [`LogError::UnknownTopic`] when the topic was deleted under this handle.
    pub fn append(&self, bytes: Vec<u8>) -> Result<u64> {
        self.append_many(vec![bytes])
            .pop()
            .expect("one result per batch")
    }

    /// Appends several batches in order, in one burst under the writer lock and, under
    /// `always`, covered by one sync. Returns one result per batch: a batch that fails
    /// validation is refused alone; a failed sync fails every batch it was to cover.
    ///
    /// # Errors
    ///
    /// One result per batch:
    /// - [`LogError::InvalidBatch`] / [`LogError::RecordTooLarge`] for a batch that fails
    ///   validation (bad CRC or header, above `max.message.bytes`): refused alone.
    /// - [`LogError::Storage`] when the disk refused the write or its sync (full, I/O error):
    ///   nothing it was to cover counts as written; the partition goes back to its durable prefix.
    /// - [`LogError::UnknownTopic`] when the topic was deleted under this handle.
    pub fn append_many(&self, batches: Vec<Vec<u8>>) -> Vec<Result<u64>> {
        self.append_checked(batches, true, &mut |_, _| {})
    }

    /// [`append_many`](Self::append_many) for batches this process has just encoded with
    /// [`BatchBuilder`](batch::BatchBuilder): their CRC is not computed a second time.
    pub(crate) fn append_built(&self, batches: Vec<Vec<u8>>) -> Vec<Result<u64>> {
        self.append_checked(batches, false, &mut |_, _| {})
    }

    /// [`append_many`](Self::append_many) for batches held in shared buffers (a network
    /// frame): they are written without first being copied into an owned, patchable vector;
    /// the assigned base offset is written beside them.
    ///
    /// # Errors
    ///
    /// One result per batch, as [`append_many`](Self::append_many).
    pub fn append_shared(&self, batches: Vec<Bytes>) -> Vec<Result<u64>> {
        self.append_checked(batches, true, &mut |_, _| {})
    }

    /// Appends checked batches; `on_written` sees each batch's header (with its assigned base
    /// offset) and the segment it went to, under the writer lock, before any of them becomes
    /// visible to readers: producer state and the last stable offset are updated there.
    pub(crate) fn append_checked<B: BatchBytes>(
        &self,
        batches: Vec<B>,
        verify_crc: bool,
        on_written: &mut dyn FnMut(&mut Segment, &batch::BatchHeader),
    ) -> Vec<Result<u64>> {
        if self.deleted.load(Ordering::Acquire) {
            return batches.iter().map(|_| Err(self.gone())).collect();
        }
        let mut results = Vec::with_capacity(batches.len());
        let mut end = None;
        let generation;
        {
            let _w = self.writer.lock();
            let mut segs = self.segments.write();
            if let Err(e) = self.reset_to_durable(&mut segs) {
                let reason = e.to_string();
                return batches
                    .iter()
                    .map(|_| Err(self.storage_error(reason.clone())))
                    .collect();
            }
            // After a failed write the rest of the burst fails with it: stored records stay a
            // gapless prefix of what was handed over.
            let mut failed: Option<String> = None;
            for bytes in batches {
                if let Some(reason) = &failed {
                    results.push(Err(self.storage_error(reason.clone())));
                    continue;
                }
                let r = self.check_batch(bytes.as_ref(), verify_crc).and_then(|h| {
                    let (base, end) = self.write_batch(&mut segs, bytes, h).map_err(|e| {
                        failed = Some(e.to_string());
                        self.storage_error(e.to_string())
                    })?;
                    let written = batch::BatchHeader {
                        base_offset: base,
                        ..h
                    };
                    on_written(segs.last_mut().expect("active segment"), &written);
                    self.io.appended(
                        u64::from(h.last_offset_delta.max(0) as u32) + 1,
                        h.size as u64,
                    );
                    Ok((base, end))
                });
                results.push(r.map(|(base, batch_end)| {
                    end = Some(batch_end);
                    base
                }));
            }
            if failed.is_some() {
                self.cut_unwritten(&mut segs);
            }
            let mut st = self.sync_state.lock();
            generation = st.generation;
            if let Some(end) = end {
                let active = segs.last().expect("active segment");
                if self.config.durability == Durability::Always {
                    st.latest = Some(Written {
                        end_offset: end,
                        file: active.file(),
                        path: active.log_path(),
                        readable: active.readable_cell(),
                        base_offset: active.base_offset,
                        len: active.size(),
                    });
                } else {
                    active.publish(active.size());
                    self.high_watermark.store(end, Ordering::Release);
                    self.dirty.store(true, Ordering::Release);
                }
            }
        }
        let Some(end) = end else { return results };
        if self.config.durability != Durability::Always {
            self.wake_readers();
            return results;
        }
        if let Err(e) = self.wait_synced(end, generation) {
            let reason = match e {
                LogError::Storage { reason, .. } => reason,
                e => e.to_string(),
            };
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(self.storage_error(reason.clone()));
            }
        }
        results
    }

    /// The checks every appended batch passes: well-formed, CRC intact, dense offsets,
    /// within `max.message.bytes`, keyed on a compacted topic.
    fn check_batch(&self, bytes: &[u8], verify_crc: bool) -> Result<batch::BatchHeader> {
        let h = if verify_crc {
            batch::validate(bytes)?
        } else {
            batch::parse_header(bytes)?
        };
        if h.size != bytes.len() {
            return Err(LogError::InvalidBatch(format!(
                "append takes exactly one batch: {} bytes given, the batch is {} bytes",
                bytes.len(),
                h.size
            )));
        }
        if bytes.len() > self.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: bytes.len(),
                max: self.config.max_message_bytes,
            });
        }
        if h.records_count != h.last_offset_delta + 1 {
            return Err(LogError::InvalidBatch(format!(
                "{} records but last offset delta {}: produced batches have dense offsets",
                h.records_count, h.last_offset_delta
            )));
        }
        if self.config.cleanup_policy == CleanupPolicy::Compact {
            let recs = batch::records(&Bytes::copy_from_slice(bytes))?;
            if recs.iter().any(|r| r.key.is_none()) {
                return Err(LogError::InvalidBatch(format!(
                    "topic {:?} is compacted: every record needs a key",
                    &*self.topic
                )));
            }
        }
        Ok(h)
    }

    /// Assigns offsets and writes one checked batch to the active segment (rolling first if
    /// needed). Returns (base offset, end offset). The caller holds the writer lock.
    fn write_batch<B: BatchBytes>(
        &self,
        segs: &mut Vec<Segment>,
        bytes: B,
        h: batch::BatchHeader,
    ) -> Result<(u64, u64)> {
        self.maybe_roll(segs, bytes.as_ref().len() as u64)?;
        let active = segs.last_mut().expect("active segment");
        let base = active.next_offset;
        bytes.write_to(
            active,
            &batch::BatchHeader {
                base_offset: base,
                ..h
            },
        )?;
        Ok((base, active.next_offset))
    }

    /// Group commit: returns once `end` is covered by an `fdatasync`, leading one if none runs.
    /// `generation` is the one the data was written in: if the partition went back to its
    /// durable prefix since (a failed sync), the data is acknowledged only if that prefix kept it.
    fn wait_synced(&self, end: u64, generation: u64) -> Result<()> {
        let mut st = self.sync_state.lock();
        loop {
            if st.generation != generation {
                let kept = st.resets.iter().find(|r| r.0 == generation).map(|r| r.1);
                return match kept {
                    Some(kept) if end <= kept => Ok(()),
                    _ => Err(self.storage_error(st.lost.clone())),
                };
            }
            if st.synced_offset >= end {
                return Ok(());
            }
            if st.syncing {
                self.synced.wait(&mut st);
                continue;
            }
            let Some(w) = st.latest.take() else {
                // Covered by a roll, which syncs the segment it closes.
                return Ok(());
            };
            st.syncing = true;
            drop(st);
            let result = fault::sync_data(&w.file, || w.path.clone());
            st = self.sync_state.lock();
            st.syncing = false;
            match result {
                Ok(()) => {
                    w.readable.fetch_max(w.len, Ordering::AcqRel);
                    st.synced_offset = st.synced_offset.max(w.end_offset);
                    st.durable = st.durable.max((w.base_offset, w.len));
                    self.high_watermark
                        .fetch_max(w.end_offset, Ordering::AcqRel);
                    self.synced.notify_all();
                    self.wake_readers();
                }
                Err(e) => {
                    let reason = format!("fsync of {} failed: {e}", w.path.display());
                    drop(st);
                    self.lose_unsynced(&reason);
                    self.reset_to_durable_now();
                    return Err(self.storage_error(reason));
                }
            }
        }
    }

    /// After a failed sync: what it was to cover is lost (its pages may be gone from the cache
    /// while a later `fsync` succeeds), so nothing is ever synced or acknowledged on its behalf.
    /// Waiters on it fail with `reason`; the partition owes a reset to its durable prefix.
    fn lose_unsynced(&self, reason: &str) {
        tracing::error!(topic = %self.topic, partition = self.id, reason,
            "sync failed; going back to the last synced data");
        let mut st = self.sync_state.lock();
        let kept = st.synced_offset;
        let ended = st.generation;
        st.resets.push_back((ended, kept));
        if st.resets.len() > 16 {
            st.resets.pop_front();
        }
        st.generation += 1;
        st.lost = format!("{reason}; nothing after offset {kept} was acknowledged");
        st.latest = None;
        self.reset_owed.store(true, Ordering::Release);
        self.synced.notify_all();
    }

    /// [`reset_to_durable`](Self::reset_to_durable) taking the locks; a failure leaves the
    /// reset owed to the next append.
    fn reset_to_durable_now(&self) {
        let _w = self.writer.lock();
        let mut segs = self.segments.write();
        if let Err(e) = self.reset_to_durable(&mut segs) {
            tracing::error!(topic = %self.topic, partition = self.id, error = %e,
                "cannot go back to the last synced data yet; the next append tries again");
        }
    }

    /// Takes the partition back to what the last successful sync covered, as recovery after a
    /// crash would: the active segment is cut there and reopened (indexes rebuilt), the high
    /// watermark follows, and the producer state is rebuilt before its next use. The caller
    /// holds the writer lock. No-op unless a reset is owed.
    fn reset_to_durable(&self, segs: &mut [Segment]) -> Result<()> {
        if !self.reset_owed.load(Ordering::Acquire) {
            return Ok(());
        }
        let (durable_base, durable_len) = self.sync_state.lock().durable;
        let active = segs.last_mut().expect("active segment");
        let keep = if active.base_offset == durable_base {
            durable_len
        } else {
            0
        };
        let base = active.base_offset;
        active.cut(keep)?;
        let (reopened, _) = Segment::recover(&self.dir, base, false, true, &self.clock)?;
        let end = reopened.next_offset;
        let len = reopened.size();
        *active = reopened;
        {
            let mut st = self.sync_state.lock();
            st.synced_offset = end;
            st.latest = None;
            st.durable = (base, len);
            self.high_watermark.store(end, Ordering::Release);
        }
        self.dirty.store(false, Ordering::Release);
        self.producers_stale.store(true, Ordering::Release);
        self.reset_owed.store(false, Ordering::Release);
        tracing::warn!(topic = %self.topic, partition = self.id, end,
            "partition is back at its last synced data; appends resume from there");
        self.wake_readers();
        Ok(())
    }

    /// Cuts what a failed write left beyond the active segment's end (best effort: if that
    /// fails too, the next write overwrites it, and recovery would cut a leftover as a torn tail).
    fn cut_unwritten(&self, segs: &mut [Segment]) {
        let active = segs.last_mut().expect("active segment");
        if let Err(e) = active.cut(active.size()) {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e,
                "cannot cut a failed write's bytes; the next write replaces them");
        }
    }

    /// The error of an append that storage refused (`reason` names the file and the cause).
    fn storage_error(&self, reason: String) -> LogError {
        LogError::Storage {
            topic: self.topic.to_string(),
            partition: self.id,
            reason,
        }
    }

    /// Rolls the active segment when the next `incoming` bytes would overflow it or it is too old.
    fn maybe_roll(&self, segs: &mut Vec<Segment>, incoming: u64) -> Result<()> {
        let active = segs.last().expect("active segment");
        let full = active.size() + incoming > self.config.segment_bytes;
        let age_ms = self.clock.now_ms().saturating_sub(active.created_ms);
        let old = age_ms >= i64::try_from(self.config.segment_ms).unwrap_or(i64::MAX);
        if active.is_empty() || !(full || old) {
            return Ok(());
        }
        self.roll(segs)
    }

    /// Closes the active segment (sync, indexes, publish) and opens a new one at the log end.
    fn roll(&self, segs: &mut Vec<Segment>) -> Result<()> {
        let active = segs.last().expect("active segment");
        if let Err(e) = active.sync() {
            self.lose_unsynced(&e.to_string());
            self.reset_to_durable(segs)?;
            return Err(e);
        }
        active.write_indexes()?;
        active.publish(active.size());
        let end = active.next_offset;
        {
            let mut st = self.sync_state.lock();
            st.synced_offset = st.synced_offset.max(end);
            st.latest = None;
            self.high_watermark.fetch_max(end, Ordering::AcqRel);
            self.synced.notify_all();
        }
        tracing::debug!(topic = %self.topic, partition = self.id, base = end, "rolled segment");
        segs.push(Segment::create(&self.dir, end, &self.clock)?);
        let mut st = self.sync_state.lock();
        st.durable = st.durable.max((end, 0));
        Ok(())
    }

    /// Syncs the active segment if anything was written since the last flush
    /// ([`Durability::Interval`]); called by the background flusher.
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] when the sync failed: the writes since the last sync count as
    /// lost, and the partition is put back to its durable prefix.
    pub fn flush_if_due(&self) -> Result<()> {
        let mut last = self.last_flush.lock();
        if last.elapsed() < Duration::from_millis(self.config.flush_interval_ms) {
            return Ok(());
        }
        self.sync_dirty(&mut last)
    }

    /// Makes everything appended so far durable before returning, whatever the topic's
    /// policy: for a writer that needs one record synced on a topic otherwise flushed on an
    /// interval (the transaction coordinator's records of transactions over `always` topics).
    /// Blocking.
    pub(crate) fn sync_now(&self) -> Result<()> {
        if self.config.durability == Durability::Always {
            return Ok(()); // its appends returned after their sync
        }
        let mut last = self.last_flush.lock();
        self.sync_dirty(&mut last)
    }

    /// Syncs the active segment if it was written since the last sync. The caller holds the
    /// flush lock through the sync, so that a concurrent caller that finds nothing dirty
    /// returns only once the sync that took the flag has covered its writes. (A segment
    /// rolled meanwhile was synced by the roll.)
    fn sync_dirty(&self, last: &mut Instant) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let (file, path, covers) = {
                let segs = self.segments.read();
                let active = segs.last().expect("active segment");
                (
                    active.file(),
                    active.log_path(),
                    (active.base_offset, active.size()),
                )
            };
            if let Err(e) = fault::sync_data(&file, || path.clone()) {
                // Never retried: what it was to cover is treated as lost, acknowledged or not.
                let reason = format!("fsync of {} failed: {e}", path.display());
                self.lose_unsynced(&reason);
                self.reset_to_durable_now();
                return Err(self.storage_error(reason));
            }
            let mut st = self.sync_state.lock();
            st.durable = st.durable.max(covers);
        }
        *last = Instant::now();
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to about `max_bytes`
    /// (at least one batch), checking their CRCs. Blocking.
    ///
    /// # Errors
    ///
    /// - [`LogError::OffsetOutOfRange`] for an offset below the log start or past the end.
    /// - [`LogError::Corrupt`] for a batch that fails its checks, naming the segment and
    ///   position.
    /// - [`LogError::Io`] when the segment cannot be read.
    /// - [`LogError::UnknownTopic`] when the topic was deleted under this handle.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<FetchResult> {
        self.read_isolated(offset, max_bytes, IsolationLevel::ReadUncommitted)
    }

    /// [`read`](Self::read) up to the bound `isolation` sets: the high watermark, or the last
    /// stable offset for `read_committed` (whose reader also drops aborted transactions' batches:
    /// [`Partition::aborted_transactions`]). Blocking.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn read_isolated(
        &self,
        offset: u64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<FetchResult> {
        let fetched = self.read_uncounted(offset, max_bytes, isolation)?;
        self.io.read(
            fetched.next_offset.saturating_sub(offset),
            fetched.batches.len() as u64,
        );
        Ok(fetched)
    }

    /// [`read`](Self::read) for a lookup rather than a consumer (the record at an offset a
    /// timestamp search found): left out of [`io_stats`](Self::io_stats).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn peek(&self, offset: u64, max_bytes: usize) -> Result<FetchResult> {
        self.read_uncounted(offset, max_bytes, IsolationLevel::ReadUncommitted)
    }

    /// [`read_isolated`](Self::read_isolated) for the log's own scans, which are not reads
    /// by clients and are left out of [`io_stats`](Self::io_stats).
    fn read_uncounted(
        &self,
        offset: u64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<FetchResult> {
        let found = self.find_batches(offset, isolation, |handle, hw| {
            let (bytes, next) = segment::read_batches(handle, offset, hw, max_bytes)?;
            Ok(next.map(|next| (Bytes::from(bytes), next)))
        })?;
        Ok(Fetched {
            batches: found.batches.unwrap_or_default(),
            next_offset: found.next_offset,
            high_watermark: found.high_watermark,
            last_stable_offset: found.last_stable_offset,
            log_start_offset: found.log_start_offset,
        })
    }

    /// Where the batches [`Partition::read`] would return lie, without reading them: only
    /// their headers are read and checked, not their CRCs (the reader checks those, as Kafka's
    /// consumers do with `check.crcs`). `None` when there is nothing at `offset`. Blocking.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), except that a bad CRC is left for the reader to find.
    pub fn locate(
        &self,
        offset: u64,
        max_bytes: usize,
        isolation: IsolationLevel,
    ) -> Result<Fetched<Option<FileRange>>> {
        let located = self.find_batches(offset, isolation, |handle, hw| {
            let span = segment::locate_batches(handle, offset, hw, max_bytes)?;
            Ok(span.next_offset.map(|next| {
                let range = FileRange {
                    file: handle.file.clone(),
                    path: handle.path.clone(),
                    position: span.position,
                    len: span.len,
                };
                (range, next)
            }))
        })?;
        let bytes = located.batches.as_ref().map_or(0, |r| r.len);
        self.io
            .read(located.next_offset.saturating_sub(offset), bytes);
        Ok(located)
    }

    /// Records and bytes appended to and read from this partition since it was opened
    /// (the log's own scans, for compaction and recovery, are not counted as reads).
    pub fn io_stats(&self) -> IoSnapshot {
        self.io.snapshot()
    }

    /// Runs `in_segment` (batches of one segment below the high watermark, and the offset
    /// after them) on the segment holding `offset`, and on later ones only while a segment
    /// holds nothing at or after `offset` (compaction leaves gaps).
    fn find_batches<T>(
        &self,
        offset: u64,
        isolation: IsolationLevel,
        in_segment: impl Fn(
            &ReadHandle,
            u64,
        ) -> std::result::Result<Option<(T, u64)>, segment::CorruptAt>,
    ) -> Result<Fetched<Option<T>>> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(self.gone());
        }
        // The high watermark first: a transaction's first offset is published before the
        // high watermark passes it, so the unstable offset read after it is never too late.
        let hw = self.high_watermark();
        let lso = self.first_unstable.load(Ordering::Acquire).min(hw);
        let start = self.log_start_offset();
        let mut found = Fetched {
            batches: None,
            next_offset: offset,
            high_watermark: hw,
            last_stable_offset: lso,
            log_start_offset: start,
        };
        let bound = match isolation {
            IsolationLevel::ReadCommitted => lso,
            IsolationLevel::ReadUncommitted => hw,
        };
        if offset < start || offset > hw {
            return Err(self.out_of_range(offset, start, hw));
        }
        if offset >= bound {
            return Ok(found);
        }
        let mut from = offset;
        while let Some(handle) = self.handle_for(from) {
            let batches = in_segment(&handle, bound).map_err(|c| LogError::Corrupt {
                topic: self.topic.to_string(),
                partition: self.id,
                segment: handle.path.clone(),
                offset: c.offset,
                position: c.position,
                reason: c.reason,
            })?;
            if let Some((batches, next)) = batches {
                found.batches = Some(batches);
                found.next_offset = next;
                return Ok(found);
            }
            match handle.next_base_offset {
                Some(base) => from = base,
                None => break,
            }
        }
        Ok(found)
    }

    /// A read handle for the segment holding `offset`, positioned by its index.
    fn handle_for(&self, offset: u64) -> Option<ReadHandle> {
        let segs = self.segments.read();
        let i = segs
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)?;
        let mut handle = segs[i].read_handle(offset);
        handle.next_base_offset = segs.get(i + 1).map(|s| s.base_offset);
        Some(handle)
    }

    /// The largest record timestamp in the partition, or `None` when it holds no records.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.segments
            .read()
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .filter(|&t| t > i64::MIN)
    }

    /// The first offset whose record timestamp is ≥ `ts`, or `None` if every record is older.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), and [`LogError::InvalidBatch`] for a batch whose records
    /// cannot be decoded.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let from = {
            let segs = self.segments.read();
            match segs.iter().find(|s| s.max_timestamp >= ts) {
                Some(s) => s.time_lookup(ts).max(self.log_start_offset()),
                None => return Ok(None),
            }
        };
        self.scan_batches(from, u64::MAX, |b| {
            if batch::parse_header(b)?.max_timestamp < ts {
                return Ok(ControlFlow::Continue(()));
            }
            let found = batch::records(b)?
                .into_iter()
                .find(|r| r.offset >= from && r.timestamp >= ts);
            Ok(found.map_or(ControlFlow::Continue(()), |r| ControlFlow::Break(r.offset)))
        })
    }

    /// Calls `f` with each visible batch whose base offset is in `[from, until)`, in order,
    /// until it breaks with a value (returned) or the batches run out (`None`). The first batch
    /// may start before `from`. Blocking.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), and the first error `f` returns.
    pub fn scan_batches<T>(
        &self,
        from: u64,
        until: u64,
        mut f: impl FnMut(&Bytes) -> Result<ControlFlow<T>>,
    ) -> Result<Option<T>> {
        let mut offset = from;
        while offset < self.high_watermark().min(until) {
            let fetch =
                self.read_uncounted(offset, SCAN_CHUNK_BYTES, IsolationLevel::ReadUncommitted)?;
            if fetch.batches.is_empty() {
                break;
            }
            for b in batch::split_batches(&fetch.batches) {
                if batch::parse_header(&b)?.base_offset >= until {
                    return Ok(None);
                }
                if let ControlFlow::Break(found) = f(&b)? {
                    return Ok(Some(found));
                }
            }
            offset = fetch.next_offset;
        }
        Ok(None)
    }

    /// Registers a consumer's waker, notified after every append becomes visible.
    pub fn register_waker(&self, waker: &Arc<Notify>) {
        let mut w = self.wakers.lock();
        w.retain(|x| x.strong_count() > 0);
        if !w
            .iter()
            .any(|x| std::ptr::eq(x.as_ptr(), Arc::as_ptr(waker)))
        {
            w.push(Arc::downgrade(waker));
        }
    }

    fn wake_readers(&self) {
        for w in self.wakers.lock().iter() {
            if let Some(n) = w.upgrade() {
                n.notify_one();
            }
        }
    }

    pub fn stats(&self) -> PartitionStats {
        let segs = self.segments.read();
        PartitionStats {
            partition: self.id,
            start_offset: self.log_start_offset(),
            end_offset: self.high_watermark(),
            size_bytes: segs.iter().map(|s| s.size()).sum(),
            segments: segs.len(),
        }
    }

    /// Deletes closed segments past `retention.ms` (by their largest timestamp) or beyond
    /// `retention.bytes`, oldest first. An active segment whose data has all expired is rolled
    /// first so it can go too. Returns how many segments were deleted.
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] when rolling the active segment fails its sync, [`LogError::Io`]
    /// when a segment's files cannot be removed (the segments before it are already gone).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = &self.config;
        if cfg.cleanup_policy != CleanupPolicy::Delete
            || (cfg.retention_ms.is_none() && cfg.retention_bytes.is_none())
        {
            return Ok(0);
        }
        let expired = |s: &Segment| {
            cfg.retention_ms
                .is_some_and(|r| !s.is_empty() && s.retention_time() < now_ms - r as i64)
        };
        let _w = self.writer.lock();
        let mut segs = self.segments.write();
        if expired(segs.last().expect("active segment")) {
            self.roll(&mut segs)?;
        }
        let mut total: u64 = segs.iter().map(|s| s.size()).sum();
        let mut deleted = 0;
        while segs.len() > 1 {
            let first = &segs[0];
            let over_size = cfg
                .retention_bytes
                .is_some_and(|max| total - first.size() >= max && total > max);
            if !(expired(first) || over_size) {
                break;
            }
            let gone = segs.remove(0);
            total -= gone.size();
            self.log_start
                .fetch_max(segs[0].base_offset, Ordering::AcqRel);
            gone.delete_files()?;
            deleted += 1;
            tracing::info!(topic = %self.topic, partition = self.id, segment = gone.base_offset, "retention deleted segment");
        }
        Ok(deleted)
    }

    /// Moves the log start offset forward to `offset` (Kafka's DeleteRecords): records below it
    /// are no longer readable, and segments wholly below it are deleted. The new start is kept
    /// in a file of the partition, so a restart does not bring the records back. An offset at or
    /// below the start changes nothing; one past the high watermark is `OffsetOutOfRange`.
    /// Returns the log start offset after the call. Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] past the high watermark; [`LogError::Io`] when the start
    /// file or a segment's files cannot be written or removed.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64> {
        let _w = self.writer.lock();
        let (start, hw) = (self.log_start_offset(), self.high_watermark());
        if offset > hw {
            return Err(self.out_of_range(offset, start, hw));
        }
        if offset <= start {
            return Ok(start);
        }
        crate::index::write_file(
            &self.dir.join(LOG_START_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.log_start.store(offset, Ordering::Release);
        let mut segs = self.segments.write();
        while segs.len() > 1 && segs[1].base_offset <= offset {
            let gone = segs.remove(0);
            gone.delete_files()?;
            tracing::info!(topic = %self.topic, partition = self.id, segment = gone.base_offset, "DeleteRecords deleted segment");
        }
        Ok(offset)
    }

    /// Marks the partition deleted; later appends and reads fail with `UnknownTopic`. The
    /// writer lock makes an append in progress finish before the files go.
    pub(crate) fn mark_deleted(&self) {
        let _w = self.writer.lock();
        self.deleted.store(true, Ordering::Release);
    }

    fn out_of_range(&self, offset: u64, start: u64, end: u64) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.topic.to_string(),
            partition: self.id,
            offset,
            start,
            end,
        }
    }

    fn gone(&self) -> LogError {
        LogError::UnknownTopic(self.topic.to_string())
    }

    /// Base offsets of all segments, oldest first; the last is the active one.
    pub(crate) fn segment_bases(&self) -> Vec<u64> {
        self.segments.read().iter().map(|s| s.base_offset).collect()
    }

    /// Replaces a closed segment with `cleaned` (a file of the same base offset's records,
    /// fewer of them). Indexes are removed before the rename so a crash in between leaves no
    /// stale index: recovery rebuilds it.
    pub(crate) fn swap_cleaned(&self, base: u64, cleaned: &Path) -> Result<()> {
        let _w = self.writer.lock();
        let mut segs = self.segments.write();
        let Some(i) = segs[..segs.len() - 1]
            .iter()
            .position(|s| s.base_offset == base)
        else {
            std::fs::remove_file(cleaned).map_err(|e| LogError::io(cleaned, e))?;
            return Ok(());
        };
        segs[i].delete_index_files()?;
        let target = segment::log_path(&self.dir, base);
        std::fs::rename(cleaned, &target).map_err(|e| LogError::io(&target, e))?;
        let (seg, _) = Segment::recover(&self.dir, base, false, false, &self.clock)?;
        seg.write_indexes()?;
        seg.publish(seg.size());
        segs[i] = seg;
        Ok(())
    }

    /// Writes the active segment's indexes, syncs it, and leaves the clean-shutdown marker so the
    /// next open trusts the indexes instead of scanning the tail.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the sync, the indexes or the marker cannot be written; the next
    /// open then scans the tail as after a crash, losing nothing.
    pub fn close(&self) -> Result<()> {
        // Before the writer lock: producer appends take the producer state's lock first.
        self.save_producer_state();
        let _w = self.writer.lock();
        let segs = self.segments.read();
        let active = segs.last().expect("active segment");
        active.sync()?;
        active.write_indexes()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_MARKER);
        std::fs::write(&marker, b"").map_err(|e| LogError::io(&marker, e))
    }
}

/// A batch to append: owned bytes are patched with their base offset and written at once;
/// shared bytes cannot be patched, so the base offset is written beside them.
pub trait BatchBytes: AsRef<[u8]> {
    fn write_to(self, segment: &mut Segment, h: &batch::BatchHeader) -> Result<u64>;
}

impl BatchBytes for Vec<u8> {
    fn write_to(mut self, segment: &mut Segment, h: &batch::BatchHeader) -> Result<u64> {
        batch::set_base_offset(&mut self, h.base_offset);
        segment.append(&self, h)
    }
}

impl BatchBytes for Bytes {
    fn write_to(self, segment: &mut Segment, h: &batch::BatchHeader) -> Result<u64> {
        segment.append_with_base(&self, h)
    }
}

/// Removes temporary files a crash may have left (`*.cleaned`, `*.tmp`).
fn remove_leftovers(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("cleaned") | Some("tmp")) {
            std::fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
    }
    Ok(())
}
