//! Produce and InitProducerId: client batches appended as they are, with idempotence.
//!
//! Contract:
//! - Every batch is checked (RecordBatch v2 header here, CRC-32C by the log's append) and
//!   appended byte for byte from the request frame (no copy; the log writes the base offset it
//!   assigns beside the batch). The response is sent once the append is durable per the topic's policy
//!   (under `always`, after the fdatasync covering it), whatever `acks` asked (`acks=0` gets
//!   no response, as in Kafka).
//! - Idempotence: per partition and producer id, the broker remembers the epoch, the next
//!   expected sequence and the last five batches. A retried batch (same epoch and base
//!   sequence as a remembered one) is not appended again and is answered with its original
//!   offset; a gap or an older unremembered sequence gets OUT_OF_ORDER_SEQUENCE_NUMBER; an
//!   older epoch gets INVALID_PRODUCER_EPOCH; a newer epoch must start at sequence 0.
//! - That state survives a restart or a crash: it is rebuilt from a snapshot and the log's
//!   batch headers before a partition's first idempotent batch (see [`super::producer_state`]).
//! - Transactional batches go the same way; the log opens the producer's transaction in the
//!   partition (see `runnel_log::txn`), and the transactional APIs live in [`super::txn`]. A
//!   refused transactional batch leaves its transaction able only to abort, so that an EndTxn
//!   the client sent behind it on the connection cannot commit without it.

use super::blocking;
use crate::codes;
use crate::server::Broker;
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_log::batch;
use runnel_log::{Log, LogError, Partition};
use std::sync::Arc;

/// Appends one partition's records; returns (error code, base offset).
fn append_partition(log: &Log, partition: Arc<Partition>, records: Bytes) -> (i16, i64) {
    let transactional = batch::parse_header(&records)
        .ok()
        .filter(|h| h.is_transactional())
        .map(|h| (h.producer_id, h.producer_epoch));
    let (code, base) = append_checked(log, partition, records);
    if let Some((producer_id, epoch)) = transactional
        && code != codes::NONE
        && code != codes::DUPLICATE_SEQUENCE_NUMBER
    {
        log.transactions().note_refused_batch(producer_id, epoch);
    }
    (code, base)
}

fn append_checked(log: &Log, partition: Arc<Partition>, records: Bytes) -> (i16, i64) {
    let mut batches = Vec::new();
    let mut at = 0;
    // Headers only: the CRC is checked once, by the append.
    while at < records.len() {
        let header = batch::parse_header(&records[at..]).and_then(|h| {
            if records.len() - at < h.size {
                return Err(LogError::InvalidBatch(format!(
                    "batch of {} bytes is cut short at {} bytes",
                    h.size,
                    records.len() - at
                )));
            }
            Ok(h)
        });
        // A topic with its own compression.type stores the batch recompressed (as Kafka).
        let stored = header.and_then(|h| {
            let codec = partition.config().compression_type;
            let b = batch::as_topic_stores(records.slice(at..at + h.size), codec)?;
            at += h.size;
            Ok((batch::parse_header(&b)?, b))
        });
        match stored {
            Ok(checked) => batches.push(checked),
            Err(e) => {
                tracing::debug!(topic = %partition.topic, partition = partition.id, error = %e, "refused batch");
                return (codes::for_log_error(&e), -1);
            }
        }
    }
    if batches.is_empty() {
        return (codes::CORRUPT_MESSAGE, -1);
    }
    // A transactional batch must belong to an open transaction that added this partition.
    if let Some((h, _)) = batches.iter().find(|(h, _)| h.is_transactional()) {
        let tp = runnel_log::TopicPartition::new(&*partition.topic, partition.id);
        if let Err(e) = log
            .transactions()
            .check_produce(h.producer_id, h.producer_epoch, &tp)
        {
            tracing::debug!(topic = %partition.topic, partition = partition.id, error = %e,
                "refused a transactional batch");
            return (codes::for_produce(&e), -1);
        }
    }
    let from_producer = batches.iter().any(|(h, _)| h.producer_id >= 0);
    let batches = batches.into_iter().map(|(_, b)| b).collect();
    let results = if from_producer {
        partition.append_from_producer(batches, true)
    } else {
        partition.append_shared(batches)
    };
    first_result(&partition, results)
}

fn first_result(partition: &Partition, results: Vec<Result<u64, LogError>>) -> (i16, i64) {
    let mut base = -1;
    for r in results {
        match r {
            Ok(o) if base < 0 => base = o as i64,
            Ok(_) => {}
            Err(e @ (LogError::Storage { .. } | LogError::Io { .. })) => {
                // The disk under this directory fails or is full: an operator must act.
                tracing::error!(topic = %partition.topic, partition = partition.id,
                    dir = %partition.dir().display(), error = %e, "storage refused an append");
                return (codes::for_log_error(&e), -1);
            }
            Err(e) => {
                tracing::warn!(topic = %partition.topic, partition = partition.id, error = %e, "append failed");
                return (codes::for_log_error(&e), -1);
            }
        }
    }
    (codes::NONE, base)
}

pub(crate) async fn produce(b: &Broker, r: ProduceRequest) -> Option<ProduceResponse> {
    let mut pending = Vec::new();
    for t in r.topic_data {
        let topic = t.name.0.to_string();
        for p in t.partition_data {
            let part = u32::try_from(p.index)
                .map_err(|_| LogError::UnknownTopic(topic.clone()))
                .and_then(|id| {
                    b.log
                        .partition(&runnel_log::TopicPartition::new(&topic, id))
                });
            let task = match (part, p.records) {
                (Ok(partition), Some(records)) => {
                    let log = b.log.clone();
                    Ok(blocking(move || append_partition(&log, partition, records)))
                }
                (Ok(_), None) => Err(codes::CORRUPT_MESSAGE),
                (Err(e), _) => Err(codes::for_log_error(&e)),
            };
            // Spawned now so that the partitions of one request append concurrently.
            let task = task.map(tokio::spawn);
            pending.push((t.name.clone(), p.index, task));
        }
    }
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    for (name, index, task) in pending {
        let (code, base) = match task {
            Ok(handle) => match handle.await {
                Ok(Ok(x)) => x,
                _ => (codes::UNKNOWN_SERVER_ERROR, -1),
            },
            Err(code) => (code, -1),
        };
        let part = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(code)
            .with_base_offset(base)
            .with_log_append_time_ms(-1);
        match responses.last_mut().filter(|t| t.name == name) {
            Some(t) => t.partition_responses.push(part),
            None => responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(vec![part]),
            ),
        }
    }
    (r.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Broker, BrokerConfig};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use runnel_log::batch::BatchBuilder;
    use runnel_log::{Log, TopicConfig, TopicPartition};

    fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
        let mut b = BatchBuilder::new(1024);
        for i in 0..count {
            b.push(1, None, Some(format!("v{}", seq + i).as_bytes()), &[]);
        }
        Bytes::from(b.finish_idempotent(pid, epoch, seq))
    }

    async fn send(b: &Broker, batch: Bytes) -> (i16, i64) {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(super::super::str_bytes("t")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let resp = produce(b, req).await.unwrap();
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    async fn start(dir: &std::path::Path) -> (Log, Arc<Broker>) {
        let log = Log::open(dir).unwrap();
        if log.topic("t").is_err() {
            log.create_topic("t", TopicConfig::default()).unwrap();
        }
        let config = BrokerConfig {
            listeners: vec![crate::Listener::plaintext("127.0.0.1:0")],
            ..Default::default()
        };
        (log.clone(), Broker::bind(log, config).await.unwrap())
    }

    fn end(log: &Log) -> u64 {
        log.partition(&TopicPartition::new("t", 0))
            .unwrap()
            .high_watermark()
    }

    /// A batch stored but not acknowledged before the broker went away, retried by its producer
    /// after the restart, is answered with its first offset and not stored again: with no
    /// snapshot (the state comes from the log), with a snapshot older than the batch, and with
    /// a snapshot that no longer matches the log.
    #[tokio::test(flavor = "multi_thread")]
    async fn retried_batches_are_deduplicated_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (log, b) = start(dir.path()).await;
        assert_eq!(send(&b, idempotent_batch(42, 0, 0, 3)).await, (0, 0));
        assert_eq!(send(&b, idempotent_batch(42, 0, 3, 2)).await, (0, 3));
        // Another producer's batches in between.
        assert_eq!(send(&b, idempotent_batch(7, 0, 0, 4)).await, (0, 5));
        drop((b, log));

        // 1. No snapshot: the state is rebuilt from the batch headers.
        let (log, b) = start(dir.path()).await;
        assert_eq!(send(&b, idempotent_batch(42, 0, 3, 2)).await, (0, 3));
        assert_eq!(send(&b, idempotent_batch(42, 0, 0, 3)).await, (0, 0));
        assert_eq!(send(&b, idempotent_batch(7, 0, 0, 4)).await, (0, 5));
        assert_eq!(end(&log), 9, "a retried batch was stored twice");
        // The next sequence continues; a gap is refused.
        assert_eq!(
            send(&b, idempotent_batch(42, 0, 9, 1)).await.0,
            codes::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(send(&b, idempotent_batch(42, 0, 5, 1)).await, (0, 9));
        // 2. A snapshot, then more batches it does not cover.
        b.save_producer_state();
        assert!(dir.path().join("t-0/producer-state.snapshot").exists());
        assert_eq!(send(&b, idempotent_batch(42, 0, 6, 2)).await, (0, 10));
        drop((b, log));
        let (log, b) = start(dir.path()).await;
        assert_eq!(send(&b, idempotent_batch(42, 0, 6, 2)).await, (0, 10));
        assert_eq!(send(&b, idempotent_batch(42, 0, 5, 1)).await, (0, 9));
        assert_eq!(send(&b, idempotent_batch(7, 0, 0, 4)).await, (0, 5));
        assert_eq!(end(&log), 12);
        drop((b, log));
        // 3. A snapshot that claims more than the log holds is not trusted.
        let snapshot = dir.path().join("t-0/producer-state.snapshot");
        std::fs::write(
            &snapshot,
            "runnel-producer-state 1\ncovers 1000\n42 0 500 499:999\n",
        )
        .unwrap();
        let (log, b) = start(dir.path()).await;
        assert_eq!(send(&b, idempotent_batch(42, 0, 6, 2)).await, (0, 10));
        assert_eq!(end(&log), 12);
        drop((b, log));
        // 4. Nor is one whose remembered batch is not where it says.
        std::fs::write(
            &snapshot,
            "runnel-producer-state 1\ncovers 12\n42 0 8 6:3\n",
        )
        .unwrap();
        let (log, b) = start(dir.path()).await;
        assert_eq!(send(&b, idempotent_batch(42, 0, 6, 2)).await, (0, 10));
        assert_eq!(end(&log), 12);
    }

    /// A request with several batches of one producer for a partition (the Rust client sends
    /// what queued up while earlier requests were in flight): each is checked against the one
    /// before it, and retried together they are all duplicates.
    #[tokio::test(flavor = "multi_thread")]
    async fn several_batches_of_one_producer_in_one_request() {
        let dir = tempfile::tempdir().unwrap();
        let (log, b) = start(dir.path()).await;
        let three = [
            idempotent_batch(5, 0, 0, 2),
            idempotent_batch(5, 0, 2, 1),
            idempotent_batch(5, 0, 3, 4),
        ]
        .concat();
        assert_eq!(send(&b, Bytes::from(three.clone())).await, (0, 0));
        assert_eq!(end(&log), 7);
        assert_eq!(send(&b, Bytes::from(three)).await, (0, 0));
        assert_eq!(end(&log), 7);
        // A gap inside a request refuses it.
        let gap = [idempotent_batch(5, 0, 7, 1), idempotent_batch(5, 0, 9, 1)].concat();
        assert_eq!(
            send(&b, Bytes::from(gap)).await.0,
            codes::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(end(&log), 7);
    }
}
