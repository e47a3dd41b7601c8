//! Producer state of one partition: idempotence, open transactions, and how both survive a
//! restart.
//!
//! Contract:
//! - Per producer id the partition keeps the epoch, the next expected sequence, the
//!   (base sequence, base offset) of the last [`REMEMBERED_BATCHES`] batches, and the first
//!   offset of its open transaction here, if any; [`check`] decides whether a batch is
//!   appended, answered as a duplicate, or refused.
//! - The last stable offset of the partition is the smallest first offset of an open
//!   transaction ([`PartitionProducers::first_unstable`]), or the high watermark when none is open.
//! - The state is loaded before the partition's first producer batch after a start (eagerly at
//!   open for partitions that have seen transactions, since their last stable offset depends on
//!   it), so a producer retrying a batch that was stored but never acknowledged before a crash
//!   gets its original offset instead of a second copy, and a transaction left open by a crash
//!   stays open (unreadable to `read_committed`) until the coordinator ends it. Loading = the
//!   partition's snapshot file (if it is still consistent with the log), then the batch headers
//!   (and markers) of the log after the offset it covers; without a usable snapshot, the whole
//!   partition.
//! - Snapshots (`producer-state.snapshot` in the partition's directory, written to a `.tmp` file
//!   and renamed) are written periodically by the log's background thread and on close. A
//!   snapshot is an optimisation only; losing it costs a longer scan. It is ignored when it
//!   claims to cover offsets the log no longer has (a tail lost under `interval`/`os`
//!   durability) or when the newest batch it remembers for a producer is not in the log at
//!   that offset.

use crate::batch::{self, BatchHeader};
use crate::error::{LogError, ProducerErrorKind, Result};
use crate::partition::Partition;
use crate::txn::index::AbortedTxn;
use crate::txn::marker::{self, Outcome};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Batches remembered per producer for duplicate detection (Kafka keeps five too: the most a
/// producer may have in flight per partition).
pub const REMEMBERED_BATCHES: usize = 5;
const SNAPSHOT_FILE: &str = "producer-state.snapshot";
const SNAPSHOT_MAGIC_V1: &str = "runnel-producer-state 1";
const SNAPSHOT_MAGIC: &str = "runnel-producer-state 2";

#[derive(Debug, Clone, PartialEq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub next_sequence: i32,
    /// (base sequence, base offset) of recent batches, oldest first.
    pub recent: VecDeque<(i32, u64)>,
    /// First offset of this producer's open transaction in this partition.
    pub open_txn: Option<u64>,
}

/// The producers of one partition.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    /// False until [`PartitionProducers::ensure_loaded`] has rebuilt the state from disk.
    loaded: bool,
    /// Changed since the last snapshot.
    dirty: bool,
    pub producers: HashMap<i64, ProducerEntry>,
}

/// What to do with one batch of an idempotent or transactional producer.
#[derive(Debug, PartialEq)]
pub enum Check {
    Append,
    Duplicate(u64),
    Reject(ProducerErrorKind),
}

impl PartitionProducers {
    /// Rebuilds the state from the snapshot and the log on first use; returns the aborted
    /// transactions whose markers the scan met (the caller makes sure its index has them).
    /// Blocking.
    pub(crate) fn ensure_loaded(&mut self, partition: &Partition) -> Result<Vec<AbortedTxn>> {
        if self.loaded {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let (mut producers, from) = match read_snapshot(partition) {
            Some((covers, producers)) => (producers, covers),
            None => (HashMap::new(), partition.log_start_offset()),
        };
        let from = from.max(partition.log_start_offset());
        let mut scanned = 0u64;
        let mut aborted = Vec::new();
        partition.scan_batches(from, u64::MAX, |b| {
            let h = batch::parse_header(b)?;
            scanned += 1;
            if h.base_offset < from || h.producer_id < 0 {
                return Ok(ControlFlow::<()>::Continue(()));
            }
            if h.is_control() {
                if let Some(m) = marker::decode(b)? {
                    aborted.extend(end_txn(&mut producers, &h, m.outcome, from));
                }
            } else {
                remember(&mut producers, &h, h.base_offset);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        tracing::debug!(topic = %partition.topic, partition = partition.id, from, scanned,
            producers = producers.len(), elapsed = ?started.elapsed(), "producer state loaded");
        self.producers = producers;
        self.loaded = true;
        self.dirty = true;
        Ok(aborted)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn remember(&mut self, h: &BatchHeader, base_offset: u64) {
        remember(&mut self.producers, h, base_offset);
        self.dirty = true;
    }

    /// Applies a marker at `offset` (the header's base offset); returns the aborted
    /// transaction it ends, if it aborts one that has data here.
    pub fn end_txn(&mut self, h: &BatchHeader, outcome: Outcome) -> Option<AbortedTxn> {
        self.dirty = true;
        end_txn(&mut self.producers, h, outcome, 0)
    }

    /// The smallest first offset of an open transaction, if any is open.
    pub fn first_unstable(&self) -> Option<u64> {
        self.producers.values().filter_map(|e| e.open_txn).min()
    }

    /// Writes a snapshot covering everything below `covers` if the state changed since the
    /// last one. The caller holds the state's lock, so no producer append is under way.
    pub(crate) fn save(&mut self, dir: &Path, covers: u64) -> std::io::Result<()> {
        if !self.loaded || !self.dirty {
            return Ok(());
        }
        write_snapshot(dir, covers, &self.producers)?;
        self.dirty = false;
        Ok(())
    }
}

pub fn check(producers: &HashMap<i64, ProducerEntry>, h: &BatchHeader) -> Check {
    let Some(e) = producers.get(&h.producer_id) else {
        // A producer unknown here (new, or last seen before what the log still holds) starts
        // wherever it is.
        return Check::Append;
    };
    if h.producer_epoch < e.epoch {
        return Check::Reject(ProducerErrorKind::InvalidProducerEpoch);
    }
    if h.base_sequence < 0 {
        // Written for the producer by a coordinator (transactional offsets): no sequence.
        return Check::Append;
    }
    if h.producer_epoch > e.epoch {
        return if h.base_sequence == 0 {
            Check::Append
        } else {
            Check::Reject(ProducerErrorKind::OutOfOrderSequence)
        };
    }
    if let Some(&(_, offset)) = e.recent.iter().find(|(s, _)| *s == h.base_sequence) {
        return Check::Duplicate(offset);
    }
    if h.base_sequence == e.next_sequence {
        Check::Append
    } else {
        Check::Reject(ProducerErrorKind::OutOfOrderSequence)
    }
}

pub fn remember(producers: &mut HashMap<i64, ProducerEntry>, h: &BatchHeader, offset: u64) {
    let e = entry(producers, h);
    if h.base_sequence >= 0 {
        e.next_sequence = next_sequence(h.base_sequence, h.records_count);
        if e.recent.len() == REMEMBERED_BATCHES {
            e.recent.pop_front();
        }
        e.recent.push_back((h.base_sequence, offset));
    }
    if h.is_transactional() && e.open_txn.is_none() {
        e.open_txn = Some(offset);
    }
}

/// The entry of `h`'s producer, reset when `h` carries a newer epoch.
fn entry<'a>(
    producers: &'a mut HashMap<i64, ProducerEntry>,
    h: &BatchHeader,
) -> &'a mut ProducerEntry {
    let e = producers.entry(h.producer_id).or_insert(ProducerEntry {
        epoch: h.producer_epoch,
        next_sequence: 0,
        recent: VecDeque::new(),
        open_txn: None,
    });
    if h.producer_epoch > e.epoch {
        e.epoch = h.producer_epoch;
        e.recent.clear();
        e.next_sequence = 0;
    }
    e
}

/// Ends `h.producer_id`'s open transaction at the marker `h`; an abort of a transaction whose
/// first offset is at or after `known_from` is returned for the aborted index.
fn end_txn(
    producers: &mut HashMap<i64, ProducerEntry>,
    h: &BatchHeader,
    outcome: Outcome,
    known_from: u64,
) -> Option<AbortedTxn> {
    let e = entry(producers, h);
    let first = e.open_txn.take()?;
    let lso = producers
        .values()
        .filter_map(|e| e.open_txn)
        .min()
        .unwrap_or(h.base_offset)
        .min(first);
    (outcome == Outcome::Abort && first >= known_from).then_some(AbortedTxn {
        producer_id: h.producer_id,
        first_offset: first,
        last_offset: h.base_offset,
        last_stable_offset: lso,
    })
}

/// The sequence after a batch of `count` records starting at `seq`: sequences wrap from
/// `i32::MAX` to 0, as in Kafka. Shared by the log's checks and the producers' batches.
pub fn next_sequence(seq: i32, count: i32) -> i32 {
    ((i64::from(seq) + i64::from(count.max(0))) % (i64::from(i32::MAX) + 1)) as i32
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

fn encode_snapshot(covers: u64, producers: &HashMap<i64, ProducerEntry>) -> String {
    let mut s = format!("{SNAPSHOT_MAGIC}\ncovers {covers}\n");
    for (pid, e) in producers {
        let open = e.open_txn.map_or(-1, |o| o as i64);
        let _ = write!(s, "{pid} {} {} {open}", e.epoch, e.next_sequence);
        for (seq, offset) in &e.recent {
            let _ = write!(s, " {seq}:{offset}");
        }
        s.push('\n');
    }
    s
}

fn decode_snapshot(text: &str) -> Option<(u64, HashMap<i64, ProducerEntry>)> {
    let mut lines = text.lines();
    // Version 1 (before transactions) has no open-transaction field.
    let with_txn = match lines.next()? {
        SNAPSHOT_MAGIC => true,
        SNAPSHOT_MAGIC_V1 => false,
        _ => return None,
    };
    let covers = lines.next()?.strip_prefix("covers ")?.parse().ok()?;
    let mut producers = HashMap::new();
    for line in lines {
        let mut f = line.split(' ');
        let pid = f.next()?.parse().ok()?;
        let epoch = f.next()?.parse().ok()?;
        let next_sequence = f.next()?.parse().ok()?;
        let open_txn = if with_txn {
            let o: i64 = f.next()?.parse().ok()?;
            u64::try_from(o).ok()
        } else {
            None
        };
        let recent = f
            .map(|p| {
                let (seq, off) = p.split_once(':')?;
                Some((seq.parse().ok()?, off.parse().ok()?))
            })
            .collect::<Option<VecDeque<_>>>()?;
        producers.insert(
            pid,
            ProducerEntry {
                epoch,
                next_sequence,
                recent,
                open_txn,
            },
        );
    }
    Some((covers, producers))
}

fn write_snapshot(
    dir: &Path,
    covers: u64,
    producers: &HashMap<i64, ProducerEntry>,
) -> std::io::Result<()> {
    let path = snapshot_path(dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, encode_snapshot(covers, producers))?;
    std::fs::rename(&tmp, &path)
}

/// The snapshot of `partition`, if there is one and it agrees with the log.
fn read_snapshot(partition: &Partition) -> Option<(u64, HashMap<i64, ProducerEntry>)> {
    let path = snapshot_path(partition.dir());
    let text = std::fs::read_to_string(&path).ok()?;
    let why_not = |reason: &str| {
        tracing::info!(topic = %partition.topic, partition = partition.id, reason,
            "producer-state snapshot not used; scanning the whole partition");
    };
    let Some((covers, producers)) = decode_snapshot(&text) else {
        why_not("unreadable");
        return None;
    };
    if covers > partition.high_watermark() {
        why_not("it covers offsets the log no longer has");
        return None;
    }
    for (pid, e) in &producers {
        let Some(&(seq, offset)) = e.recent.back() else {
            continue;
        };
        if offset < partition.log_start_offset() {
            continue;
        }
        let found = partition
            .peek(offset, 1)
            .ok()
            .and_then(|f| batch::split_batches(&f.batches).next())
            .and_then(|b| batch::parse_header(&b).ok());
        let agrees = found.is_some_and(|h| {
            h.base_offset == offset
                && h.producer_id == *pid
                && h.producer_epoch == e.epoch
                && h.base_sequence == seq
        });
        if !agrees {
            why_not("a batch it remembers is not in the log");
            return None;
        }
    }
    Some((covers, producers))
}

/// Whether the partition in `dir` should load its producer state at open: it has seen
/// transactions (a marker file written before the first transactional append).
pub(crate) fn has_seen_transactions(dir: &Path) -> bool {
    dir.join(TRANSACTIONAL_MARKER_FILE).exists()
}

/// Records that the partition has seen transactions, before the first transactional append.
pub(crate) fn mark_seen_transactions(dir: &Path) -> Result<()> {
    let path = dir.join(TRANSACTIONAL_MARKER_FILE);
    std::fs::write(&path, b"").map_err(|e| LogError::io(&path, e))
}

const TRANSACTIONAL_MARKER_FILE: &str = "transactional";

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            size: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut s = HashMap::new();
        let first = header(7, 0, 0, 10);
        assert_eq!(check(&s, &first), Check::Append);
        remember(&mut s, &first, 100);
        // A retry of the same batch is a duplicate answered with its offset.
        assert_eq!(check(&s, &first), Check::Duplicate(100));
        // A gap is out of order; the next sequence appends.
        assert_eq!(
            check(&s, &header(7, 0, 11, 1)),
            Check::Reject(ProducerErrorKind::OutOfOrderSequence)
        );
        assert_eq!(check(&s, &header(7, 0, 10, 5)), Check::Append);
        remember(&mut s, &header(7, 0, 10, 5), 110);
        // An old epoch is fenced; a new epoch must start at 0.
        assert_eq!(
            check(&s, &header(7, -1, 15, 1)),
            Check::Reject(ProducerErrorKind::InvalidProducerEpoch)
        );
        assert_eq!(
            check(&s, &header(7, 1, 15, 1)),
            Check::Reject(ProducerErrorKind::OutOfOrderSequence)
        );
        assert_eq!(check(&s, &header(7, 1, 0, 1)), Check::Append);
        // Only the last five batches are remembered.
        for i in 0..6 {
            remember(&mut s, &header(7, 0, 15 + i, 1), 200 + i as u64);
        }
        assert_eq!(
            check(&s, &header(7, 0, 15, 1)),
            Check::Reject(ProducerErrorKind::OutOfOrderSequence)
        );
        assert_eq!(check(&s, &header(7, 0, 20, 1)), Check::Duplicate(205));
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_the_marker() {
        let mut st = PartitionProducers::default();
        let txn = |pid, seq, offset| BatchHeader {
            attributes: 0x10,
            base_offset: offset,
            ..header(pid, 0, seq, 2)
        };
        st.remember(&txn(1, 0, 10), 10);
        st.remember(&txn(2, 0, 12), 12);
        st.remember(&txn(1, 2, 14), 14);
        assert_eq!(st.first_unstable(), Some(10));
        let marker = |pid, offset| BatchHeader {
            attributes: 0x30,
            base_offset: offset,
            ..header(pid, 0, -1, 1)
        };
        assert_eq!(st.end_txn(&marker(1, 16), Outcome::Commit), None);
        assert_eq!(st.first_unstable(), Some(12));
        let aborted = st.end_txn(&marker(2, 17), Outcome::Abort).unwrap();
        assert_eq!(
            (
                aborted.producer_id,
                aborted.first_offset,
                aborted.last_offset
            ),
            (2, 12, 17)
        );
        assert_eq!(st.first_unstable(), None);
        // A marker for a producer without an open transaction changes nothing.
        assert_eq!(st.end_txn(&marker(2, 18), Outcome::Abort), None);
    }

    #[test]
    fn snapshot_text_round_trips() {
        let mut s = HashMap::new();
        remember(&mut s, &header(7, 2, 0, 10), 100);
        remember(&mut s, &header(7, 2, 10, 3), 110);
        remember(
            &mut s,
            &BatchHeader {
                attributes: 0x10,
                ..header(9, 0, 40, 1)
            },
            120,
        );
        let (covers, back) = decode_snapshot(&encode_snapshot(121, &s)).unwrap();
        assert_eq!(covers, 121);
        assert_eq!(back, s);
        assert_eq!(back[&9].open_txn, Some(120));
        // Version 1 snapshots still load.
        let (_, v1) = decode_snapshot("runnel-producer-state 1\ncovers 5\n7 0 3 0:2\n").unwrap();
        assert_eq!(v1[&7].open_txn, None);
        assert!(decode_snapshot("runnel-producer-state 2\ncovers 5\n7 x 1\n").is_none());
        assert!(decode_snapshot("something else\n").is_none());
    }
}
