//! Produce and InitProducerId: client batches appended as they are, with idempotence.
//!
//! Contract:
//! - Every batch is checked (RecordBatch v2 header here, CRC-32C by the log's append) and
//!   appended byte for byte; the log
//!   assigns offsets. The response is sent once the append is durable per the topic's policy
//!   (under `always`, after the fdatasync covering it), whatever `acks` asked (`acks=0` gets
//!   no response, as in Kafka).
//! - Idempotence: per partition and producer id, the broker remembers the epoch, the next
//!   expected sequence and the last five batches. A retried batch (same epoch and base
//!   sequence as a remembered one) is not appended again and is answered with its original
//!   offset; a gap or an older unremembered sequence gets OUT_OF_ORDER_SEQUENCE_NUMBER; an
//!   older epoch gets INVALID_PRODUCER_EPOCH; a newer epoch must start at sequence 0.
//! - Producer state lives in memory. After a broker restart the first batch of a producer is
//!   accepted at any sequence and tracking resumes from it, so a batch that was written but not
//!   acknowledged before a crash and retried after it is stored twice (at-least-once).
//! - Transactions are not supported: InitProducerId with a transactional id is refused with
//!   INVALID_REQUEST.

use super::blocking;
use crate::codes;
use crate::server::Broker;
use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use parking_lot::Mutex;
use runnel_log::batch::{self, BatchHeader};
use runnel_log::{LogError, Partition};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Batches remembered per producer for duplicate detection (Kafka keeps five too).
const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    next_sequence: i32,
    /// (base sequence, base offset) of recent batches.
    recent: VecDeque<(i32, u64)>,
}

type PartitionProducers = Arc<Mutex<HashMap<i64, ProducerEntry>>>;

/// Idempotent-producer state of every partition, and the producer id allocator.
pub(crate) struct ProducerStates {
    partitions: Mutex<HashMap<(String, u32), PartitionProducers>>,
    next_id: AtomicI64,
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
    fn partition(&self, topic: &str, partition: u32) -> PartitionProducers {
        self.partitions
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }
}

/// What to do with one batch of an idempotent producer.
#[derive(Debug, PartialEq)]
enum Check {
    Append,
    Duplicate(u64),
    Reject(i16),
}

fn check(producers: &HashMap<i64, ProducerEntry>, h: &BatchHeader) -> Check {
    let Some(e) = producers.get(&h.producer_id) else {
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

fn remember(producers: &mut HashMap<i64, ProducerEntry>, h: &BatchHeader, base_offset: u64) {
    let e = producers.entry(h.producer_id).or_insert(ProducerEntry {
        epoch: h.producer_epoch,
        next_sequence: 0,
        recent: VecDeque::new(),
    });
    if h.producer_epoch != e.epoch {
        e.epoch = h.producer_epoch;
        e.recent.clear();
    }
    // Sequences wrap from i32::MAX to 0, as in Kafka.
    e.next_sequence = h.base_sequence.wrapping_add(h.records_count).max(0);
    if e.recent.len() == REMEMBERED_BATCHES {
        e.recent.pop_front();
    }
    e.recent.push_back((h.base_sequence, base_offset));
}

/// Appends one partition's records; returns (error code, base offset).
fn append_partition(
    partition: Arc<Partition>,
    producers: Option<PartitionProducers>,
    records: Bytes,
) -> (i16, i64) {
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
        match header {
            Ok(h) => {
                batches.push((h, records.slice(at..at + h.size)));
                at += h.size;
            }
            Err(e) => {
                tracing::debug!(topic = %partition.topic, partition = partition.id, error = %e, "refused batch");
                return (codes::for_log_error(&e), -1);
            }
        }
    }
    if batches.is_empty() {
        return (codes::CORRUPT_MESSAGE, -1);
    }
    let idempotent = batches.iter().any(|(h, _)| h.producer_id >= 0);
    let Some(producers) = producers.filter(|_| idempotent) else {
        let results = partition.append_many(batches.into_iter().map(|(_, b)| b.to_vec()).collect());
        return first_result(&partition, results);
    };
    // Held across the append so that the sequence check and the append are one step.
    let mut state = producers.lock();
    let mut first_offset = None;
    let mut to_append = Vec::new();
    for (h, b) in &batches {
        match check(&state, h) {
            Check::Append => to_append.push((*h, b.to_vec())),
            Check::Duplicate(offset) => {
                tracing::debug!(
                    producer_id = h.producer_id,
                    sequence = h.base_sequence,
                    "dropped duplicate batch"
                );
                first_offset.get_or_insert(offset);
            }
            Check::Reject(code) => {
                tracing::debug!(
                    producer_id = h.producer_id,
                    sequence = h.base_sequence,
                    code,
                    "refused batch sequence"
                );
                return (code, -1);
            }
        }
    }
    if to_append.is_empty() {
        return (codes::NONE, first_offset.map_or(-1, |o| o as i64));
    }
    let headers: Vec<BatchHeader> = to_append.iter().map(|(h, _)| *h).collect();
    let results = partition.append_many(to_append.into_iter().map(|(_, b)| b).collect());
    for (h, r) in headers.iter().zip(&results) {
        if let Ok(offset) = r {
            remember(&mut state, h, *offset);
        }
    }
    drop(state);
    let (code, offset) = first_result(&partition, results);
    (code, first_offset.map_or(offset, |o| o as i64))
}

fn first_result(partition: &Partition, results: Vec<Result<u64, LogError>>) -> (i16, i64) {
    let mut base = -1;
    for r in results {
        match r {
            Ok(o) if base < 0 => base = o as i64,
            Ok(_) => {}
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
                    let producers = Some(b.producers.partition(&topic, partition.id));
                    Ok(blocking(move || {
                        append_partition(partition, producers, records)
                    }))
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

pub(crate) fn init_producer_id(b: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
    if r.transactional_id.is_some() {
        tracing::info!(
            "refused InitProducerId with a transactional id: transactions are not supported"
        );
        return InitProducerIdResponse::default()
            .with_error_code(codes::INVALID_REQUEST)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // A producer re-initialising after a fatal sequence error keeps its id with a new epoch.
    let (id, epoch) =
        if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
            (r.producer_id.0, r.producer_epoch + 1)
        } else {
            (b.producers.next_id.fetch_add(1, Ordering::Relaxed), 0)
        };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
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
}
