//! The log as the engine and the connectors reach it: three small object-safe traits.
//!
//! [`LogClient`] (topics, offsets, and a factory for the other two and for group members),
//! [`LogProducer`] (send, flush, transactions) and [`LogConsumer`] (assign or subscribe,
//! seek, poll, commit). The embedded [`Log`]
//! implements them here; `runnel-broker`'s network client implements them over Kafka's wire
//! protocol, so the same engine and connector code runs against a remote broker (`--bootstrap`).
//!
//! Contract, whichever side implements it:
//! - `LogProducer::send` only queues; a failure of a queued record is reported by the next
//!   [`LogProducer::flush`], which returns once everything sent before it is durable (per the
//!   topic's durability policy) or has failed. "Flush, then commit" is therefore the
//!   at-least-once commit path of both the engine and the connectors.
//! - `LogConsumer::poll` returns records in offset order per partition; positions start at the
//!   group's committed offset, else per `auto_offset_reset`.
//! - Offsets are Kafka's: a committed offset is the next offset to read.
//!
//! Errors are [`LogError`]s either way; a remote implementation reports the broker's error
//! codes as the variants they name (unknown topic, group and transaction errors) and network
//! failures as [`LogError::Remote`] / [`LogError::Io`].
//!
//! Cancel safety, for every async method: a dropped call either happened or did not, as a
//! whole, except where a method says otherwise (`send_all` and `send_batch` may have queued a
//! prefix); queries (offsets, counts) are always cancel safe.

use crate::batch::BatchBuilder;
use crate::config::TopicConfig;
use crate::consumer::{Consumer, ConsumerConfig, blocking};
use crate::error::{LogError, Result};
use crate::log::Log;
use crate::membership::{EmbeddedMember, GroupMember, GroupMetadata};
use crate::producer::{Producer, ProducerConfig, ProducerRecord};
use crate::run::RecordRun;
use crate::types::{ConsumerRecord, TopicPartition};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Topics and offsets, plus factories for producers and consumers.
#[async_trait]
pub trait LogClient: Send + Sync {
    /// Creates `name` with `config` unless it exists; returns its partition count either way.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidTopicName`] / [`LogError::InvalidConfig`] for a name or config the
    /// log refuses; the storage errors of creating it.
    async fn ensure_topic(&self, name: &str, config: &TopicConfig) -> Result<u32>;
    /// The partition count of `topic`, or `None` if it does not exist.
    async fn partition_count(&self, topic: &str) -> Result<Option<u32>>;
    /// The end offset (high watermark) of each partition, in the order asked.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownTopic`] / [`LogError::UnknownPartition`] for a partition that does
    /// not exist (the same for `stable_offsets`, `start_offsets` and `committed_offsets`).
    async fn end_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>>;
    /// Where `read_committed` readers of each partition stop now: the first offset of the
    /// oldest open transaction, or the end offset when none is open. A reader that wants
    /// "everything committed so far" reads to these, not to the end offsets, which an open
    /// transaction would keep it from reaching.
    async fn stable_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>> {
        self.end_offsets(partitions).await
    }
    /// The log start offset of each partition (the records below it were deleted by
    /// retention), in the order asked.
    async fn start_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>>;
    /// The offsets `group` committed for these partitions, in the order asked.
    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<u64>>>;
    /// Commits offsets (the next offsets to read) of `group.group_id` as `group`'s member,
    /// or outside group management when it names none.
    ///
    /// # Errors
    ///
    /// [`LogError::Group`]: `UnknownMember` / `IllegalGeneration` for a member of an older
    /// generation (or none while the group has members), `RebalanceInProgress` while the
    /// group hands out a new generation; nothing is committed then.
    async fn commit_offsets(
        &self,
        group: &GroupMetadata,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<()>;
    fn producer(&self, config: ProducerConfig) -> Box<dyn LogProducer>;
    fn consumer(&self, config: ConsumerConfig) -> Box<dyn LogConsumer>;
    /// A member of the group `config.group_id` that takes its assignment from its own
    /// leader (see [`crate::membership`]); the consumer settings of membership apply
    /// (`client_id`, session, rebalance and heartbeat timing).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `group_id`.
    fn group_member(&self, config: ConsumerConfig) -> Result<Box<dyn GroupMember>>;
    /// A short description for logs: "embedded log at DIR" or "broker at HOST:PORT".
    fn describe(&self) -> String;
}

/// Sends records; see the module documentation for when errors surface.
#[async_trait]
pub trait LogProducer: Send + Sync {
    /// Queues a record. Waits only while the producer's buffer is full.
    ///
    /// # Errors
    ///
    /// Unknown topic or partition; a closed producer; a transactional producer outside an
    /// open transaction; an earlier failed batch to the same partition (see the module doc).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped while waiting for buffer space, nothing was queued.
    async fn send(&self, record: ProducerRecord<'_>) -> Result<()>;
    /// Queues records in order; the same as `send` for each, in one call (one await for the
    /// lot, so a caller with many records pays the async machinery once).
    ///
    /// # Errors
    ///
    /// As `send`, for the first record refused.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped, a prefix of the records may have been queued.
    async fn send_all(&self, records: &[ProducerRecord<'_>]) -> Result<()> {
        for r in records {
            self.send(*r).await?;
        }
        Ok(())
    }
    /// Queues `batch`, records the caller encoded for `topic`, to `partition`, or with `None`
    /// where the producer puts records with neither key nor partition. The embedded producer
    /// appends it as it is; this default decodes it and sends its records.
    ///
    /// # Errors
    ///
    /// As `send`; [`LogError::InvalidBatch`] when the default's decoding of `batch` fails.
    ///
    /// # Cancel safety
    ///
    /// As `send_all`'s.
    async fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: BatchBuilder,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = bytes::Bytes::from(batch.finish());
        let records = crate::batch::records(&bytes)?;
        let records: Vec<ProducerRecord<'_>> = records
            .iter()
            .map(|r| ProducerRecord {
                topic,
                partition,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: &r.headers,
                timestamp: Some(r.timestamp),
            })
            .collect();
        self.send_all(&records).await
    }
    /// Waits until every record sent before this call is durable; returns the first failure.
    ///
    /// # Errors
    ///
    /// [`LogError::Delivery`] (or the broker's error) for the first record since the last
    /// flush that was not stored.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped flush stops waiting; the records are still sent and a failure
    /// is reported by the next flush.
    async fn flush(&self) -> Result<()>;

    /// Records stored so far per partition, for a producer that counts them (`None` when it
    /// does not). With the producer's no-gap rule a partition's count says which of the
    /// records sent to it were stored: the first that many.
    fn stored_per_partition(&self) -> Option<HashMap<TopicPartition, u64>> {
        None
    }
    /// Whether a partition refused a batch for good (its later batches fail too).
    fn has_failed(&self) -> bool {
        false
    }

    /// Registers the producer's `transactional_id` (fencing older instances with the same id
    /// and aborting what they left open). The other transaction calls follow Kafka's producer:
    /// begin, send, [`send_offsets_to_transaction`](Self::send_offsets_to_transaction), commit
    /// or abort. A producer made without a `transactional_id` refuses them.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `transactional_id` (every transaction call);
    /// [`LogError::Transaction`] with Kafka's kinds: `ProducerFenced` when a newer instance
    /// took the id, `InvalidTxnState` for a call out of order, `TransactionAbortable` after a
    /// failed send (abort, then go on), `InvalidTransactionTimeout`.
    async fn init_transactions(&self) -> Result<()> {
        Err(no_transactions())
    }
    fn begin_transaction(&self) -> Result<()> {
        Err(no_transactions())
    }
    /// Offsets (the next offsets to read) of `group`, committed with the open transaction.
    /// When `group` names a member, the group checks its generation as for a plain commit,
    /// so that a member fenced by a rebalance cannot commit (Kafka's `exactly_once_v2`).
    async fn send_offsets_to_transaction(
        &self,
        _offsets: &[(TopicPartition, u64)],
        _group: &GroupMetadata,
    ) -> Result<()> {
        Err(no_transactions())
    }
    /// Flushes, then commits the open transaction: its records and offsets become visible to
    /// `read_committed` readers together.
    async fn commit_transaction(&self) -> Result<()> {
        Err(no_transactions())
    }
    async fn abort_transaction(&self) -> Result<()> {
        Err(no_transactions())
    }
}

fn no_transactions() -> LogError {
    LogError::InvalidConfig(
        "this producer has no transactional_id, so it cannot run transactions".into(),
    )
}

/// Reads records, by manual assignment or as a group member.
#[async_trait]
pub trait LogConsumer: Send {
    fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()>;
    fn subscribe(&mut self, topics: &[&str]) -> Result<()>;
    fn assignment(&self) -> Vec<TopicPartition>;
    fn position(&self, tp: &TopicPartition) -> Option<u64>;
    fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()>;
    fn seek_to_beginning(&mut self);
    /// Waits up to `timeout` for records, one [`RecordRun`] per partition that had some.
    ///
    /// # Errors
    ///
    /// No committed offset under `auto_offset_reset = none`; a position out of range; the
    /// group refusing this member; a corrupt or unreadable batch.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: positions move only with the records returned, so a dropped poll loses
    /// nothing (both implementations).
    async fn poll_runs(&mut self, timeout: Duration) -> Result<Vec<RecordRun>>;
    /// As [`LogConsumer::poll_runs`], one [`ConsumerRecord`] per record.
    async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let runs = self.poll_runs(timeout).await?;
        Ok(runs
            .iter()
            .flat_map(RecordRun::to_consumer_records)
            .collect())
    }
    /// Commits explicit offsets (the next offset to read) in the consumer's group.
    ///
    /// # Errors
    ///
    /// No `group_id`; the group refusing a member that is no longer in its generation.
    async fn commit_offsets(&mut self, offsets: Vec<(TopicPartition, u64)>) -> Result<()>;
    /// Leaves the group (committing first under auto-commit).
    async fn close(self: Box<Self>) -> Result<()>;
}

#[async_trait]
impl LogClient for Log {
    async fn ensure_topic(&self, name: &str, config: &TopicConfig) -> Result<u32> {
        match self.topic(name) {
            Ok(t) => Ok(t.partition_count()),
            Err(LogError::UnknownTopic(_)) => match self.create_topic(name, config.clone()) {
                Ok(t) => Ok(t.partition_count()),
                // Someone else created it between the two calls.
                Err(LogError::TopicExists(_)) => Ok(self.topic(name)?.partition_count()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<u32>> {
        match self.topic(topic) {
            Ok(t) => Ok(Some(t.partition_count())),
            Err(LogError::UnknownTopic(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn end_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>> {
        partitions
            .iter()
            .map(|tp| Ok(self.partition(tp)?.high_watermark()))
            .collect()
    }

    async fn start_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>> {
        partitions
            .iter()
            .map(|tp| Ok(self.partition(tp)?.log_start_offset()))
            .collect()
    }

    async fn stable_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<u64>> {
        partitions
            .iter()
            .map(|tp| Ok(self.partition(tp)?.last_stable_offset()))
            .collect()
    }

    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<u64>>> {
        Ok(partitions
            .iter()
            .map(|tp| self.groups().committed(group, tp).map(|c| c.offset))
            .collect())
    }

    async fn commit_offsets(
        &self,
        group: &GroupMetadata,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<()> {
        let (log, group) = (self.clone(), group.clone());
        let offsets: Vec<_> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), *o, String::new()))
            .collect();
        blocking(move || {
            log.groups()
                .commit_offsets(&group.group_id, group.member(), &offsets)
        })
        .await
    }

    fn producer(&self, config: ProducerConfig) -> Box<dyn LogProducer> {
        Box::new(Producer::new(self.clone(), config))
    }

    fn group_member(&self, config: ConsumerConfig) -> Result<Box<dyn GroupMember>> {
        Ok(Box::new(EmbeddedMember::new(self.clone(), config)?))
    }

    fn consumer(&self, config: ConsumerConfig) -> Box<dyn LogConsumer> {
        Box::new(Consumer::new(self.clone(), config))
    }

    fn describe(&self) -> String {
        format!("embedded log at {}", self.dir().display())
    }
}

#[async_trait]
impl LogProducer for Producer {
    async fn send(&self, record: ProducerRecord<'_>) -> Result<()> {
        // The delivery future is not needed: flush reports the batch's outcome.
        drop(Producer::send(self, record).await?);
        Ok(())
    }

    async fn send_all(&self, records: &[ProducerRecord<'_>]) -> Result<()> {
        Producer::send_all(self, records).await
    }

    async fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: BatchBuilder,
    ) -> Result<()> {
        Producer::send_batch(self, topic, partition, batch)
            .await
            .map(drop)
    }

    async fn flush(&self) -> Result<()> {
        Producer::flush(self).await
    }

    fn has_failed(&self) -> bool {
        Producer::has_failed(self)
    }

    async fn init_transactions(&self) -> Result<()> {
        Producer::init_transactions(self).await
    }
    fn begin_transaction(&self) -> Result<()> {
        Producer::begin_transaction(self)
    }
    async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, u64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        Producer::send_offsets_to_transaction(self, offsets, group).await
    }
    async fn commit_transaction(&self) -> Result<()> {
        Producer::commit_transaction(self).await
    }
    async fn abort_transaction(&self) -> Result<()> {
        Producer::abort_transaction(self).await
    }
}

#[async_trait]
impl LogConsumer for Consumer {
    fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        Consumer::assign(self, partitions)
    }
    fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        Consumer::subscribe(self, topics)
    }
    fn assignment(&self) -> Vec<TopicPartition> {
        Consumer::assignment(self)
    }
    fn position(&self, tp: &TopicPartition) -> Option<u64> {
        Consumer::position(self, tp)
    }
    fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        Consumer::seek(self, tp, offset)
    }
    fn seek_to_beginning(&mut self) {
        Consumer::seek_to_beginning(self)
    }
    async fn poll_runs(&mut self, timeout: Duration) -> Result<Vec<RecordRun>> {
        Consumer::poll_runs(self, timeout).await
    }
    async fn commit_offsets(&mut self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        Consumer::commit_offsets(self, offsets).await
    }
    async fn close(self: Box<Self>) -> Result<()> {
        Consumer::close(*self).await
    }
}

/// A shared handle to whichever log a component runs against.
pub type SharedLogClient = Arc<dyn LogClient>;

/// Exercises the traits' contract on `log`: topics, produce, end offsets, consume in order per
/// partition, commit, committed offsets, and errors for unknown topics and partitions. The
/// tests of every implementation (the embedded log here, the broker's network client) run it,
/// so they are held to the same behaviour. With the `test-util` feature.
///
/// # Panics
///
/// On the first departure from the contract, saying which.
///
/// # Cancel safety
///
/// Not meant to be cancelled: dropped midway, it leaves its topics half written.
#[cfg(any(test, feature = "test-util"))]
pub async fn check_conformance(log: SharedLogClient, durability: crate::config::Durability) {
    use crate::consumer::OffsetReset;
    let cfg = TopicConfig {
        partitions: 2,
        durability,
        ..Default::default()
    };
    assert_eq!(log.partition_count("t").await.unwrap(), None);
    assert_eq!(log.ensure_topic("t", &cfg).await.unwrap(), 2);
    assert_eq!(log.ensure_topic("t", &cfg).await.unwrap(), 2);
    let producer = log.producer(ProducerConfig::default());
    for i in 0..10u8 {
        producer
            .send(ProducerRecord::new("t", &[i]).partition(u32::from(i % 2)))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
    assert_eq!(log.end_offsets(&tps).await.unwrap(), vec![5, 5]);
    let mut consumer = log.consumer(ConsumerConfig {
        group_id: Some("g".into()),
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        ..Default::default()
    });
    consumer.assign(tps.to_vec()).unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(consumer.poll(Duration::from_secs(1)).await.unwrap());
    }
    let p0: Vec<u8> = got
        .iter()
        .filter(|r| r.partition == 0)
        .map(|r| r.record.value.as_ref().unwrap()[0])
        .collect();
    assert_eq!(p0, vec![0, 2, 4, 6, 8]);
    consumer
        .commit_offsets(vec![(tps[0].clone(), 5)])
        .await
        .unwrap();
    assert_eq!(
        log.committed_offsets("g", &tps).await.unwrap(),
        vec![Some(5), None]
    );
    consumer.close().await.unwrap();
    assert!(
        producer
            .send(ProducerRecord::new("nope", b"x"))
            .await
            .is_err()
    );
    assert!(
        producer
            .send(ProducerRecord::new("t", b"x").partition(7))
            .await
            .is_err()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn embedded_log_through_the_traits() {
        let dir = tempfile::tempdir().unwrap();
        let log: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
        check_conformance(log, crate::config::Durability::Interval).await;
    }
}
