//! A partition's side of idempotence and transactions: appends by producers with an id,
//! markers, the last stable offset and the aborted transactions readers skip.
//!
//! Contract:
//! - [`Partition::append_from_producer`] checks each batch against the producer state
//!   (epoch fencing, sequences, duplicates) and appends the ones to append in one burst, with
//!   the state's lock held across, so a check and its append are one step.
//! - A transactional batch opens its producer's transaction here at its offset; the first
//!   offset of the oldest open transaction bounds `read_committed` reads. That bound is
//!   published before the high watermark passes the batch.
//! - [`Partition::write_marker`] ends the producer's transaction; an abort's entry goes into
//!   the aborted index of the marker's segment before the marker becomes visible.

use crate::batch::{self, BatchHeader};
use crate::error::{LogError, ProducerErrorKind, Result};
use crate::partition::{BatchBytes, Partition};
use crate::segment::Segment;
use crate::txn::index::{self, AbortedTxn};
use crate::txn::marker::{self, Outcome};
use crate::txn::producer_state::{self, Check, PartitionProducers, check, remember};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Offsets of batches earlier in the same request are not known before the append.
const IN_REQUEST: u64 = u64::MAX;

impl Partition {
    /// Appends batches that carry a producer id (idempotent or transactional), in order.
    /// Returns one result per batch: its base offset, or for a retried batch the offset it
    /// was first stored at. A batch refused by the producer checks (fenced epoch, sequence
    /// gap) fails the request's batches with [`LogError::Producer`], and none is appended.
    /// Blocking.
    ///
    /// # Errors
    ///
    /// One result per batch: [`LogError::Producer`] (`InvalidProducerEpoch`, `OutOfOrderSequence`)
    /// from the producer checks; otherwise as [`Partition::append_many`].
    pub fn append_from_producer<B: BatchBytes>(
        &self,
        batches: Vec<B>,
        verify_crc: bool,
    ) -> Vec<Result<u64>> {
        let headers: Vec<BatchHeader> = match batches
            .iter()
            .map(|b| batch::parse_header(b.as_ref()))
            .collect::<Result<_>>()
        {
            Ok(h) => h,
            Err(e) => return fail_all(batches.len(), e),
        };
        let mut state = self.producers.lock();
        if let Err(e) = self.ensure_producers_loaded(&mut state) {
            return fail_all(batches.len(), e);
        }
        if headers.iter().any(|h| h.is_transactional())
            && !self.seen_transactions.load(Ordering::Acquire)
        {
            if let Err(e) = producer_state::mark_seen_transactions(self.dir()) {
                return fail_all(batches.len(), e);
            }
            self.seen_transactions.store(true, Ordering::Release);
        }
        // The producers as they will be once the request's earlier batches are appended, so
        // that several batches of one producer are each checked against the one before.
        let mut view = HashMap::new();
        let mut results: Vec<Option<Result<u64>>> = Vec::with_capacity(batches.len());
        let mut to_append = Vec::new();
        for (h, b) in headers.iter().zip(batches) {
            if let Some(e) = state.producers.get(&h.producer_id) {
                view.entry(h.producer_id).or_insert_with(|| e.clone());
            }
            match check(&view, h) {
                Check::Append => {
                    remember(&mut view, h, IN_REQUEST);
                    to_append.push(b);
                    results.push(None);
                }
                Check::Duplicate(IN_REQUEST) => results.push(None),
                Check::Duplicate(offset) => {
                    tracing::debug!(
                        producer_id = h.producer_id,
                        sequence = h.base_sequence,
                        "dropped duplicate batch"
                    );
                    results.push(Some(Ok(offset)));
                }
                Check::Reject(kind) => {
                    tracing::debug!(producer_id = h.producer_id, sequence = h.base_sequence,
                        %kind, "refused batch");
                    let e = || LogError::Producer {
                        topic: self.topic.to_string(),
                        partition: self.id,
                        producer_id: h.producer_id,
                        kind,
                    };
                    return headers.iter().map(|_| Err(e())).collect();
                }
            }
        }
        let appended = self.append_checked(to_append, verify_crc, &mut |_, h| {
            state.remember(h, h.base_offset);
            if h.is_transactional() {
                self.publish_first_unstable(&state);
            }
        });
        let mut appended = appended.into_iter();
        let mut first = None;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            let r = match r {
                Some(r) => r,
                // A batch appended now, or a repeat within the request (answered with the
                // request's first offset).
                None => match appended.next() {
                    Some(r) => r,
                    None => first.ok_or_else(|| LogError::InvalidBatch("empty request".into())),
                },
            };
            if let Ok(o) = r {
                first.get_or_insert(o);
            }
            out.push(r);
        }
        out
    }

    /// Ends `producer_id`'s transaction here with a marker (written by the transaction
    /// coordinator). A marker for a producer without an open transaction is written all the
    /// same (the coordinator may repeat one after a crash). Refused for an epoch older than
    /// the partition has seen. Returns the marker's offset once durable. Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::Producer`] with `InvalidProducerEpoch` for an epoch older than the partition has seen;
    /// the storage errors of [`Partition::append`].
    pub fn write_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        outcome: Outcome,
        coordinator_epoch: i32,
    ) -> Result<u64> {
        let mut state = self.producers.lock();
        self.ensure_producers_loaded(&mut state)?;
        if state
            .producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch > epoch)
        {
            return Err(LogError::Producer {
                topic: self.topic.to_string(),
                partition: self.id,
                producer_id,
                kind: ProducerErrorKind::InvalidProducerEpoch,
            });
        }
        let bytes = marker::encode(producer_id, epoch, outcome, coordinator_epoch);
        let mut index_error = None;
        let r = self
            .append_checked(vec![bytes], false, &mut |segment: &mut Segment, h| {
                if let Some(aborted) = state.end_txn(h, outcome)
                    && let Err(e) = segment.txn_index.append(aborted)
                {
                    index_error = Some(e);
                }
                self.publish_first_unstable(&state);
            })
            .pop()
            .expect("one result per batch");
        if let Some(e) = index_error {
            // The marker is stored; the next load of the producer state re-adds the entry.
            tracing::error!(topic = %self.topic, partition = self.id, error = %e,
                "cannot write the aborted-transaction index");
        }
        r
    }

    /// The first offset `read_committed` readers may not read yet: the oldest open
    /// transaction's first offset, or the high watermark.
    pub fn last_stable_offset(&self) -> u64 {
        let hw = self.high_watermark();
        self.first_unstable.load(Ordering::Acquire).min(hw)
    }

    /// The aborted transactions that overlap reads of `[from, until)`, for a `read_committed`
    /// reader of those offsets (Fetch's `aborted_transactions`). Empty for a partition that
    /// never saw a transaction.
    pub fn aborted_transactions(&self, from: u64, until: u64) -> Vec<AbortedTxn> {
        if !self.seen_transactions.load(Ordering::Acquire) {
            return Vec::new();
        }
        let segs = self.segments.read();
        let mut out = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            // Markers at or after `from` lie in the segment holding `from` or later ones.
            let next_base = segs.get(i + 1).map_or(u64::MAX, |n| n.base_offset);
            if next_base <= from || s.txn_index.is_empty() {
                continue;
            }
            out.extend(index::overlapping(s.txn_index.entries(), from, until).copied());
        }
        out
    }

    /// The transactions open in this partition: (producer id, epoch) of each producer with
    /// one. Empty for a partition whose producer state is not loaded (it has seen none).
    pub(crate) fn open_transactions(&self) -> Vec<(i64, i16)> {
        let state = self.producers.lock();
        state
            .producers
            .iter()
            .filter(|(_, e)| e.open_txn.is_some())
            .map(|(&id, e)| (id, e.epoch))
            .collect()
    }

    /// Loads the producer state now (at open, for a partition that has seen transactions).
    pub(crate) fn load_producer_state(&self) -> Result<()> {
        let mut state = self.producers.lock();
        self.ensure_producers_loaded(&mut state)
    }

    /// Writes the producer-state snapshot if it changed. Blocking.
    pub fn save_producer_state(&self) {
        let mut state = self.producers.lock();
        self.drop_stale_producers(&mut state);
        // Under the lock no producer append is under way, so every producer batch below the
        // high watermark is in the state.
        let covers = self.high_watermark();
        if let Err(e) = state.save(self.dir(), covers) {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e,
                "cannot write the producer-state snapshot");
        }
    }

    fn ensure_producers_loaded(&self, state: &mut PartitionProducers) -> Result<()> {
        self.drop_stale_producers(state);
        if state.is_loaded() {
            return Ok(());
        }
        let aborted = state.ensure_loaded(self)?;
        if !aborted.is_empty() {
            // Markers found by the scan whose index entries a crash may have lost.
            let mut segs = self.segments.write();
            for a in aborted {
                let i = segs
                    .partition_point(|s| s.base_offset <= a.last_offset)
                    .saturating_sub(1);
                segs[i].txn_index.append(a)?;
            }
        }
        self.publish_first_unstable(state);
        Ok(())
    }

    /// Forgets a state that describes batches a reset to the durable prefix removed; it is
    /// rebuilt from the log (and a snapshot that covers no more than the log) when next used.
    fn drop_stale_producers(&self, state: &mut PartitionProducers) {
        if self.producers_stale.swap(false, Ordering::AcqRel) {
            *state = PartitionProducers::default();
        }
    }

    fn publish_first_unstable(&self, state: &PartitionProducers) {
        self.first_unstable.store(
            state.first_unstable().unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }
}

fn fail_all(n: usize, e: LogError) -> Vec<Result<u64>> {
    let reason = e.to_string();
    let mut out = vec![Err(e)];
    out.extend((1..n).map(|_| Err(LogError::InvalidBatch(reason.clone()))));
    out
}
