//! Transactions, with Kafka's semantics and on-disk format.
//!
//! - A transactional producer has a `transactional.id`; [`coordinator::TransactionCoordinator`]
//!   maps it to a producer id and an epoch, bumped on every re-initialisation, which fences the
//!   older instance (its appends and its transaction calls fail). The coordinator keeps its
//!   state in the compacted internal topic `__transaction_state`.
//! - A transaction's records are written in place, in transactional batches
//!   ([`crate::batch::BatchBuilder::finish_transactional`]); commit and abort are control
//!   batches ([`marker`]) the coordinator writes into every partition the transaction touched.
//! - Per partition ([`producer_state`]) the log tracks each producer's open transaction; the
//!   last stable offset (LSO) is the first offset of the oldest open transaction, or the high
//!   watermark. Aborted transactions are listed in a per-segment index ([`index`]).
//! - Readers choose an [`IsolationLevel`]: `read_committed` reads below the LSO only and drops
//!   the batches of aborted transactions ([`AbortedFilter`]); `read_uncommitted` reads below
//!   the high watermark and sees everything but control batches.
//! - Offsets committed inside a transaction (`TxnOffsetCommit`) are written to
//!   `__consumer_offsets` as part of it and become the group's committed offsets at its commit.

pub mod coordinator;
pub mod index;
pub mod marker;
pub(crate) mod partition;
pub(crate) mod producer;
pub mod producer_state;
pub mod state_log;

use crate::batch::BatchHeader;
use bytes::Bytes;
use index::AbortedTxn;

/// Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything below the high watermark, including open and aborted transactions' records.
    ReadUncommitted,
    /// Only committed data: reads stop at the last stable offset and skip aborted transactions.
    #[default]
    ReadCommitted,
}

/// Which batches a `read_committed` reader keeps, given the aborted transactions overlapping
/// what it reads (Kafka's consumer algorithm): walking batches in offset order, a producer
/// enters the aborted set when a batch reaches the first offset of one of its aborted
/// transactions, and leaves it at its abort marker; its transactional batches in between are
/// dropped. Control batches are never records to a reader.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// Sorted by first offset; `next` is the first not yet reached.
    aborted: Vec<AbortedTxn>,
    next: usize,
    active: Vec<i64>,
}

impl AbortedFilter {
    pub fn new(mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|a| a.first_offset);
        Self {
            aborted,
            next: 0,
            active: Vec::new(),
        }
    }

    /// Whether the records of batch `b` (header `h`) are visible to a `read_committed` reader.
    pub fn keeps(&mut self, h: &BatchHeader, b: &Bytes) -> bool {
        if h.producer_id < 0 || self.aborted.is_empty() {
            return !h.is_control();
        }
        while let Some(a) = self.aborted.get(self.next) {
            if a.first_offset > h.last_offset() {
                break;
            }
            if !self.active.contains(&a.producer_id) {
                self.active.push(a.producer_id);
            }
            self.next += 1;
        }
        let active = self.active.iter().position(|p| *p == h.producer_id);
        if h.is_control() {
            let is_abort = matches!(
                marker::decode(b),
                Ok(Some(m)) if m.outcome == marker::Outcome::Abort
            );
            if let (Some(i), true) = (active, is_abort) {
                self.active.swap_remove(i);
            }
            return false;
        }
        !(h.is_transactional() && active.is_some())
    }
}
