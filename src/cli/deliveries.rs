//! Tracks the delivery futures of records sent through a [`Producer`] without awaiting them one
//! by one: they wait in a bounded queue, the oldest is awaited only when the queue is full, and
//! [`Deliveries::finish`] closes the producer and settles the rest. Every failed delivery is
//! counted and the first error kept, so no lost record goes unreported.
//!
//! Records are numbered in the order they were pushed or reserved (from the number the tracker
//! starts at: the input's line number for `produce`); a caller sending built batches reserves
//! a run of numbers and pushes one delivery per batch, with the numbers of its first and last
//! record (a batch holds one partition's records). Per partition the tracker keeps the last record
//! stored and the first one not stored; since a producer leaves no gap in a partition, every
//! record of that partition before the first failure is stored and none after it is, so the
//! failure report can say where to resume.
//!
//! [`CountedDeliveries`] gives the same report for a producer that tells only how many records
//! each partition stored (Runnel's network producer): it picks each record's partition itself
//! and remembers the numbers sent to each, and since a partition's stored records are a prefix
//! of those sent to it, the count says which were stored.

use runnel_log::partitioner::partition_for_key;
use runnel_log::{DeliveryFuture, LogError, LogProducer, Producer, TopicPartition};
use std::collections::{BTreeMap, VecDeque};

/// Deliveries pending beyond this many are awaited before more are queued.
const MAX_PENDING: usize = 100_000;

#[derive(Debug)]
pub struct Deliveries {
    pending: VecDeque<Pending>,
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

/// The delivery of one record, or of a batch: the records of one partition numbered between
/// `first` and `last` (not every number between them need be in the batch).
#[derive(Debug)]
struct Pending {
    first: u64,
    last: u64,
    records: u64,
    delivery: DeliveryFuture,
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

    /// Queues the delivery of the next record, first awaiting the oldest ones while too many
    /// are pending.
    pub async fn push(&mut self, delivery: DeliveryFuture) {
        let number = self.reserve(1);
        self.push_batch(number, number, 1, delivery).await;
    }

    /// Numbers the next `n` records; returns the first number.
    pub fn reserve(&mut self, n: u64) -> u64 {
        let first = self.next_number;
        self.next_number += n;
        first
    }

    /// Queues the delivery of a batch of one partition: `records` of the reserved numbers from
    /// `first` to `last`, `delivery` being its last record's. Awaits the oldest pending first
    /// while too many are.
    pub async fn push_batch(
        &mut self,
        first: u64,
        last: u64,
        records: u64,
        delivery: DeliveryFuture,
    ) {
        while self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.settle(oldest).await;
            }
        }
        self.pending.push_back(Pending {
            first,
            last,
            records,
            delivery,
        });
    }

    async fn settle(&mut self, pending: Pending) {
        match pending.delivery.wait().await {
            Ok(meta) => {
                self.stored += pending.records;
                let p = self.partitions.entry(meta.partition).or_default();
                p.last_stored = p.last_stored.max(Some(pending.last));
            }
            Err(e) => {
                self.failed += pending.records;
                if let LogError::Delivery { partition, .. } = &e {
                    let p = self.partitions.entry(*partition).or_default();
                    let first = pending.first;
                    p.first_failed = Some(p.first_failed.map_or(first, |f| f.min(first)));
                }
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Closes the producer (sending everything queued) and settles every pending delivery.
    pub async fn finish(mut self, producer: &Producer) -> Outcome {
        let closed = producer.close().await;
        while let Some(pending) = self.pending.pop_front() {
            self.settle(pending).await;
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

/// Keyless records go to one partition for this many records, then to the next (as the
/// producers' sticky partitioning does per batch).
const STICKY_RECORDS: u64 = 10_000;

/// See the module documentation.
pub struct CountedDeliveries {
    topic: String,
    partitions: u32,
    next_number: u64,
    sent: BTreeMap<u32, Sent>,
}

/// One partition's records not yet known to be stored, by number.
#[derive(Default)]
struct Sent {
    pending: VecDeque<u64>,
    /// Records known stored (dropped from `pending`).
    stored: u64,
    last_stored: Option<u64>,
}

impl CountedDeliveries {
    /// A tracker for `topic` of `partitions` partitions whose first record has number `first`.
    pub fn starting_at(topic: &str, partitions: u32, first: u64) -> Self {
        Self {
            topic: topic.to_string(),
            partitions: partitions.max(1),
            next_number: first,
            sent: BTreeMap::new(),
        }
    }

    /// The partition for the next record: the given one, the key's (the producers'
    /// partitioner), or the sticky one for a keyless record.
    pub fn partition_for(&self, partition: Option<u32>, key: Option<&[u8]>) -> u32 {
        match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, self.partitions),
            (None, None) => {
                ((self.next_number / STICKY_RECORDS) % u64::from(self.partitions)) as u32
            }
        }
    }

    /// The next record went to `partition`.
    pub fn note_sent(&mut self, partition: u32) {
        self.sent
            .entry(partition)
            .or_default()
            .pending
            .push_back(self.next_number);
        self.next_number += 1;
    }

    /// Drops the numbers `producer` says are stored, so that memory follows what is in flight.
    pub fn prune(&mut self, producer: &dyn LogProducer) {
        let Some(stored) = producer.stored_per_partition() else {
            return;
        };
        for (p, sent) in &mut self.sent {
            let n = stored
                .get(&TopicPartition::new(&*self.topic, *p))
                .copied()
                .unwrap_or(0);
            while sent.stored < n {
                let Some(number) = sent.pending.pop_front() else {
                    break;
                };
                sent.last_stored = Some(number);
                sent.stored += 1;
            }
        }
    }

    /// Flushes the producer and says, per partition, what was stored.
    pub async fn finish(mut self, producer: &dyn LogProducer) -> Outcome {
        let flushed = producer.flush().await;
        let counted = producer.stored_per_partition().is_some();
        self.prune(producer);
        let mut outcome = Outcome {
            stored: 0,
            failed: 0,
            first_error: flushed.err(),
            partitions: BTreeMap::new(),
        };
        for (p, sent) in self.sent {
            let not_stored = sent.pending.len() as u64;
            let (stored, failed) = match (&outcome.first_error, counted) {
                (None, _) => (sent.stored + not_stored, 0),
                (Some(_), true) => (sent.stored, not_stored),
                // Which records failed is unknown: count them all as not stored.
                (Some(_), false) => (0, sent.stored + not_stored),
            };
            outcome.stored += stored;
            outcome.failed += failed;
            if counted {
                let first_failed = (failed > 0)
                    .then(|| sent.pending.front().copied())
                    .flatten();
                let last_stored = match failed {
                    0 => sent.pending.back().copied().or(sent.last_stored),
                    _ => sent.last_stored,
                };
                outcome.partitions.insert(
                    p,
                    Progress {
                        last_stored,
                        first_failed,
                    },
                );
            }
        }
        outcome
    }
}
