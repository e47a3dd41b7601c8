//! Tracks the delivery futures of records sent through a [`Producer`] without awaiting them one
//! by one: they wait in a bounded queue, the oldest is awaited only when the queue is full, and
//! [`Deliveries::finish`] closes the producer and settles the rest. Every failed delivery is
//! counted and the first error kept, so no lost record goes unreported.
//!
//! Records are numbered in the order they were pushed (from the number the tracker starts at:
//! the input's line number for `produce`). Per partition the tracker keeps the last record
//! stored and the first one not stored; since a producer leaves no gap in a partition, every
//! record of that partition before the first failure is stored and none after it is, so the
//! failure report can say where to resume.

use runnel_log::{DeliveryFuture, LogError, Producer};
use std::collections::{BTreeMap, VecDeque};

/// Deliveries pending beyond this many are awaited before more are queued.
const MAX_PENDING: usize = 100_000;

#[derive(Debug)]
pub struct Deliveries {
    pending: VecDeque<(u64, DeliveryFuture)>,
    next_number: u64,
    stored: u64,
    failed: u64,
    first_error: Option<LogError>,
    partitions: BTreeMap<u32, Progress>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self::starting_at(1)
    }
}

/// One partition's records, by number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub last_stored: Option<u64>,
    pub first_failed: Option<u64>,
}

/// What happened to the records once the producer was closed.
#[derive(Debug)]
pub struct Outcome {
    pub stored: u64,
    pub failed: u64,
    pub first_error: Option<LogError>,
    /// Per partition that records were sent to.
    pub partitions: BTreeMap<u32, Progress>,
}

impl Outcome {
    /// An error naming how many records were lost and why, if any were.
    pub fn into_result(self) -> anyhow::Result<u64> {
        match self.first_error {
            None => Ok(self.stored),
            Some(e) => Err(anyhow::anyhow!(
                "could not store {} of {}: {e}",
                self.failed,
                super::output::count(self.failed + self.stored, "record")
            )),
        }
    }

    /// The first record number not stored, in any partition.
    pub fn first_not_stored(&self) -> Option<u64> {
        self.partitions
            .values()
            .filter_map(|p| p.first_failed)
            .min()
    }

    /// The first record number not stored, when every partition's records from there on
    /// failed and none before it did: re-sending from it repeats and skips nothing.
    pub fn resume_from(&self) -> Option<u64> {
        let first = self.first_not_stored()?;
        let stored_after = self
            .partitions
            .values()
            .any(|p| p.last_stored.is_some_and(|l| l > first));
        (!stored_after).then_some(first)
    }
}

impl Deliveries {
    /// A tracker whose first record has number `first`.
    pub fn starting_at(first: u64) -> Self {
        Self {
            pending: VecDeque::new(),
            next_number: first,
            stored: 0,
            failed: 0,
            first_error: None,
            partitions: BTreeMap::new(),
        }
    }

    /// Queues a delivery, first awaiting the oldest ones while too many are pending.
    pub async fn push(&mut self, delivery: DeliveryFuture) {
        while self.pending.len() >= MAX_PENDING {
            if let Some((number, oldest)) = self.pending.pop_front() {
                self.settle(number, oldest).await;
            }
        }
        self.pending.push_back((self.next_number, delivery));
        self.next_number += 1;
    }

    async fn settle(&mut self, number: u64, delivery: DeliveryFuture) {
        match delivery.wait().await {
            Ok(meta) => {
                self.stored += 1;
                let p = self.partitions.entry(meta.partition).or_default();
                p.last_stored = p.last_stored.max(Some(number));
            }
            Err(e) => {
                self.failed += 1;
                if let LogError::Delivery { partition, .. } = &e {
                    let p = self.partitions.entry(*partition).or_default();
                    p.first_failed = Some(p.first_failed.map_or(number, |f| f.min(number)));
                }
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Closes the producer (sending everything queued) and settles every pending delivery.
    pub async fn finish(mut self, producer: &Producer) -> Outcome {
        let closed = producer.close().await;
        while let Some((number, d)) = self.pending.pop_front() {
            self.settle(number, d).await;
        }
        if let (Err(e), None) = (closed, &self.first_error) {
            self.first_error = Some(e);
        }
        Outcome {
            stored: self.stored,
            failed: self.failed,
            first_error: self.first_error,
            partitions: self.partitions,
        }
    }
}
