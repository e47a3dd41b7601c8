//! Fetch and ListOffsets.
//!
//! Contract:
//! - Fetch answers with whole batches exactly as stored in the segment files (no decoding, no
//!   re-encoding); the first batch may start before the fetch offset, as in Kafka, and clients
//!   skip the records before it. Only data below the high watermark is served (under
//!   `always`, only what has been fsynced).
//! - Long poll: while fewer than `min_bytes` are available and `max_wait_ms` has not passed,
//!   the request waits on the partitions' wakers (no polling loop) and reads again when an
//!   append becomes visible.
//! - Fetch sessions (KIP-227) are not kept: the response's session id is 0, which tells clients
//!   to send full fetch requests.

use super::blocking;
use crate::codes;
use crate::server::Broker;
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use runnel_log::{Partition, TopicPartition};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct Wanted {
    index: i32,
    partition: Result<Arc<Partition>, i16>,
    offset: i64,
    max_bytes: usize,
}

pub(crate) async fn fetch(b: &Broker, r: FetchRequest) -> FetchResponse {
    let topics: Vec<(TopicName, Vec<Wanted>)> = r
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let parts = t
                .partitions
                .into_iter()
                .map(|p| Wanted {
                    index: p.partition,
                    partition: u32::try_from(p.partition)
                        .map_err(|_| codes::UNKNOWN_TOPIC_OR_PARTITION)
                        .and_then(|id| {
                            b.log
                                .partition(&TopicPartition::new(&name, id))
                                .map_err(|e| codes::for_log_error(&e))
                        }),
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                })
                .collect();
            (t.topic, parts)
        })
        .collect();
    let topics = Arc::new(topics);
    let waker = Arc::new(Notify::new());
    for (_, parts) in topics.iter() {
        for p in parts {
            if let Ok(partition) = &p.partition {
                partition.register_waker(&waker);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let max_bytes = if r.max_bytes > 0 {
        r.max_bytes as usize
    } else {
        usize::MAX
    };
    let min_bytes = r.min_bytes.max(0) as usize;
    loop {
        let t = topics.clone();
        let (responses, bytes, errors) = match blocking(move || read_all(&t, max_bytes)).await {
            Ok(x) => x,
            Err(_) => (Vec::new(), 0, true),
        };
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || errors || now >= deadline {
            return FetchResponse::default().with_responses(responses);
        }
        let _ = tokio::time::timeout(deadline - now, waker.notified()).await;
    }
}

/// One pass over the wanted partitions: (responses, bytes returned, any partition failed).
fn read_all(
    topics: &[(TopicName, Vec<Wanted>)],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut budget = max_bytes;
    let mut total = 0;
    let mut errors = false;
    let responses = topics
        .iter()
        .map(|(name, parts)| {
            let partitions = parts
                .iter()
                .map(|w| {
                    let base = PartitionData::default()
                        .with_partition_index(w.index)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_aborted_transactions(Some(Vec::new()));
                    let partition = match &w.partition {
                        Ok(p) => p,
                        Err(code) => {
                            errors = true;
                            return base.with_error_code(*code).with_high_watermark(-1);
                        }
                    };
                    let with_offsets = |d: PartitionData, hw: u64, start: u64| {
                        d.with_high_watermark(hw as i64)
                            .with_last_stable_offset(hw as i64)
                            .with_log_start_offset(start as i64)
                    };
                    // Kafka returns at least one batch even over the budget, so that a
                    // batch larger than max_bytes cannot stall a consumer; only for the first
                    // partition with data, as there.
                    let limit = if total == 0 {
                        w.max_bytes.max(1)
                    } else {
                        w.max_bytes.min(budget)
                    };
                    if limit == 0 || w.offset < 0 {
                        return with_offsets(
                            base,
                            partition.high_watermark(),
                            partition.log_start_offset(),
                        )
                        .with_records(Some(Bytes::new()));
                    }
                    match partition.read(w.offset as u64, limit) {
                        Ok(f) => {
                            total += f.batches.len();
                            budget = budget.saturating_sub(f.batches.len());
                            with_offsets(base, f.high_watermark, f.log_start_offset)
                                .with_records(Some(f.batches))
                        }
                        Err(e) => {
                            errors = true;
                            with_offsets(
                                base,
                                partition.high_watermark(),
                                partition.log_start_offset(),
                            )
                            .with_error_code(codes::for_log_error(&e))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions)
        })
        .collect();
    (responses, total, errors)
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) async fn list_offsets(
    b: &Broker,
    r: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1);
            let partition = u32::try_from(p.partition_index)
                .map_err(|_| runnel_log::LogError::UnknownTopic(name.clone()))
                .and_then(|id| b.log.partition(&TopicPartition::new(&name, id)));
            let ts = p.timestamp;
            let result = match partition {
                Ok(part) => match ts {
                    LATEST => Ok(Some(part.high_watermark())),
                    EARLIEST => Ok(Some(part.log_start_offset())),
                    ts => blocking(move || part.offset_for_timestamp(ts))
                        .await
                        .map_err(|_| runnel_log::LogError::Closed)
                        .and_then(|r| r),
                },
                Err(e) => Err(e),
            };
            partitions.push(match result {
                // No record at or after the timestamp: Kafka answers offset -1.
                // The leader epoch exists from v4 on; the codec refuses it below.
                Ok(offset) => base
                    .with_offset(offset.map_or(-1, |o| o as i64))
                    .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                Err(e) => base
                    .with_error_code(codes::for_log_error(&e))
                    .with_offset(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
