//! Idempotent-producer state per partition, and how it survives a broker restart.
//!
//! Contract:
//! - Per partition and producer id the broker keeps the epoch, the next expected sequence and
//!   the (base sequence, base offset) of the last [`REMEMBERED_BATCHES`] batches; [`check`]
//!   decides whether a batch is appended, answered as a duplicate, or refused.
//! - The state of a partition is loaded on the first idempotent batch after the broker starts,
//!   so a producer retrying a batch that was stored but never acknowledged before a crash (a
//!   SIGKILL between the append and the answer) gets its original offset instead of a second
//!   copy. Loading = the partition's snapshot file (if it is still consistent with the log),
//!   then the batch headers of the log after the offset it covers; without a usable snapshot,
//!   the headers of the whole partition. Only headers are read, but each batch is read from
//!   the segment (CRC-checked), so a partition without a snapshot costs a scan of its data.
//! - Snapshots (`producer-state.snapshot` in the partition's directory, written to a `.tmp`
//!   file and renamed) are written by [`ProducerStates::save`]: periodically by the server and
//!   on shutdown. A snapshot is an optimisation only; losing it costs a longer scan. It is
//!   ignored when it claims to cover offsets the log no longer has (a tail lost under
//!   `interval`/`os` durability) or when the newest batch it remembers for a producer is not
//!   in the log at that offset.

use crate::codes;
use parking_lot::Mutex;
use runnel_log::batch::{self, BatchHeader};
use runnel_log::{LogError, Partition};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

/// Batches remembered per producer for duplicate detection (Kafka keeps five too: the most a
/// producer may have in flight per partition).
pub(crate) const REMEMBERED_BATCHES: usize = 5;
const SNAPSHOT_FILE: &str = "producer-state.snapshot";
const SNAPSHOT_MAGIC: &str = "runnel-producer-state 1";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    pub next_sequence: i32,
    /// (base sequence, base offset) of recent batches, oldest first.
    pub recent: VecDeque<(i32, u64)>,
}

/// The producers of one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionProducers {
    /// False until [`PartitionProducers::ensure_loaded`] has rebuilt the state from disk.
    loaded: bool,
    /// Changed since the last snapshot.
    dirty: bool,
    pub producers: HashMap<i64, ProducerEntry>,
}

pub(crate) type SharedPartitionProducers = Arc<Mutex<PartitionProducers>>;

/// Idempotent-producer state of every partition, and the producer id allocator.
pub(crate) struct ProducerStates {
    partitions: Mutex<HashMap<(String, u32), SharedPartitionProducers>>,
    pub next_id: AtomicI64,
}

impl Default for ProducerStates {
    fn default() -> Self {
        // Ids start from the clock so that a restarted broker does not hand out an id that a
        // producer of the previous run still uses.
        Self {
            partitions: Mutex::default(),
            next_id: AtomicI64::new(runnel_log::types::now_ms() << 8),
        }
    }
}

impl ProducerStates {
    pub fn partition(&self, topic: &str, partition: u32) -> SharedPartitionProducers {
        self.partitions
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Writes a snapshot of every partition whose state changed since its last one. Blocking.
    /// `open` gives the partition handle (`None` when the topic is gone).
    pub fn save(&self, open: impl Fn(&str, u32) -> Option<Arc<Partition>>) {
        let all: Vec<_> = self
            .partitions
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((topic, id), state) in all {
            let Some(partition) = open(&topic, id) else {
                continue;
            };
            let mut st = state.lock();
            if !st.loaded || !st.dirty {
                continue;
            }
            // Under the lock no idempotent append is running, so every batch below the high
            // watermark that carries a producer id is already in the state.
            let covers = partition.high_watermark();
            match write_snapshot(partition.dir(), covers, &st.producers) {
                Ok(()) => st.dirty = false,
                Err(e) => {
                    tracing::warn!(%topic, partition = id, error = %e, "cannot write the producer-state snapshot")
                }
            }
        }
    }
}

impl PartitionProducers {
    /// Rebuilds the state from the snapshot and the log on first use. Blocking.
    pub fn ensure_loaded(&mut self, partition: &Partition) -> Result<(), LogError> {
        if self.loaded {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (mut producers, from) = match read_snapshot(partition) {
            Some((covers, producers)) => (producers, covers),
            None => (HashMap::new(), partition.log_start_offset()),
        };
        let from = from.max(partition.log_start_offset());
        let mut scanned = 0u64;
        partition.scan_batches(from, u64::MAX, |b| {
            let h = batch::parse_header(b)?;
            if h.base_offset >= from && h.producer_id >= 0 && !h.is_control() {
                remember(&mut producers, &h, h.base_offset);
            }
            scanned += 1;
            Ok(ControlFlow::<()>::Continue(()))
        })?;
        tracing::debug!(topic = %partition.topic, partition = partition.id, from, scanned,
            producers = producers.len(), elapsed = ?started.elapsed(), "producer state loaded");
        self.producers = producers;
        self.loaded = true;
        self.dirty = true;
        Ok(())
    }

    pub fn remember(&mut self, h: &BatchHeader, base_offset: u64) {
        remember(&mut self.producers, h, base_offset);
        self.dirty = true;
    }
}

/// What to do with one batch of an idempotent producer.
#[derive(Debug, PartialEq)]
pub(crate) enum Check {
    Append,
    Duplicate(u64),
    Reject(i16),
}

pub(crate) fn check(producers: &HashMap<i64, ProducerEntry>, h: &BatchHeader) -> Check {
    let Some(e) = producers.get(&h.producer_id) else {
        // A producer unknown here (new, or last seen before what the log still holds) starts
        // wherever it is.
        return Check::Append;
    };
    if h.producer_epoch < e.epoch {
        return Check::Reject(codes::INVALID_PRODUCER_EPOCH);
    }
    if h.producer_epoch > e.epoch {
        return if h.base_sequence == 0 {
            Check::Append
        } else {
            Check::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        };
    }
    if let Some(&(_, offset)) = e.recent.iter().find(|(s, _)| *s == h.base_sequence) {
        return Check::Duplicate(offset);
    }
    if h.base_sequence == e.next_sequence {
        Check::Append
    } else {
        Check::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
    }
}

pub(crate) fn remember(producers: &mut HashMap<i64, ProducerEntry>, h: &BatchHeader, offset: u64) {
    let e = producers.entry(h.producer_id).or_insert(ProducerEntry {
        epoch: h.producer_epoch,
        next_sequence: 0,
        recent: VecDeque::new(),
    });
    if h.producer_epoch != e.epoch {
        e.epoch = h.producer_epoch;
        e.recent.clear();
    }
    e.next_sequence = next_sequence(h.base_sequence, h.records_count);
    if e.recent.len() == REMEMBERED_BATCHES {
        e.recent.pop_front();
    }
    e.recent.push_back((h.base_sequence, offset));
}

/// The sequence after a batch of `count` records starting at `seq`: sequences wrap from
/// `i32::MAX` to 0, as in Kafka. Shared by the broker's checks and the client's batches.
pub(crate) fn next_sequence(seq: i32, count: i32) -> i32 {
    ((i64::from(seq) + i64::from(count.max(0))) % (i64::from(i32::MAX) + 1)) as i32
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

fn encode_snapshot(covers: u64, producers: &HashMap<i64, ProducerEntry>) -> String {
    let mut s = format!("{SNAPSHOT_MAGIC}\ncovers {covers}\n");
    for (pid, e) in producers {
        let _ = write!(s, "{pid} {} {}", e.epoch, e.next_sequence);
        for (seq, offset) in &e.recent {
            let _ = write!(s, " {seq}:{offset}");
        }
        s.push('\n');
    }
    s
}

fn decode_snapshot(text: &str) -> Option<(u64, HashMap<i64, ProducerEntry>)> {
    let mut lines = text.lines();
    if lines.next()? != SNAPSHOT_MAGIC {
        return None;
    }
    let covers = lines.next()?.strip_prefix("covers ")?.parse().ok()?;
    let mut producers = HashMap::new();
    for line in lines {
        let mut f = line.split(' ');
        let pid = f.next()?.parse().ok()?;
        let epoch = f.next()?.parse().ok()?;
        let next_sequence = f.next()?.parse().ok()?;
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
            .read(offset, 1)
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
            Check::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(check(&s, &header(7, 0, 10, 5)), Check::Append);
        remember(&mut s, &header(7, 0, 10, 5), 110);
        // An old epoch is fenced; a new epoch must start at 0.
        assert_eq!(
            check(&s, &header(7, -1, 15, 1)),
            Check::Reject(codes::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            check(&s, &header(7, 1, 15, 1)),
            Check::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(check(&s, &header(7, 1, 0, 1)), Check::Append);
        // Only the last five batches are remembered.
        for i in 0..6 {
            remember(&mut s, &header(7, 0, 15 + i, 1), 200 + i as u64);
        }
        assert_eq!(
            check(&s, &header(7, 0, 15, 1)),
            Check::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(check(&s, &header(7, 0, 20, 1)), Check::Duplicate(205));
    }

    #[test]
    fn snapshot_text_round_trips() {
        let mut s = HashMap::new();
        remember(&mut s, &header(7, 2, 0, 10), 100);
        remember(&mut s, &header(7, 2, 10, 3), 110);
        remember(&mut s, &header(9, 0, 40, 1), 120);
        let (covers, back) = decode_snapshot(&encode_snapshot(121, &s)).unwrap();
        assert_eq!(covers, 121);
        assert_eq!(back, s);
        assert!(decode_snapshot("runnel-producer-state 1\ncovers 5\n7 x 1\n").is_none());
        assert!(decode_snapshot("something else\n").is_none());
    }
}
