//! Fetch and ListOffsets.
//!
//! Contract:
//! - Fetch answers with whole batches exactly as stored in the segment files (no decoding, no
//!   re-encoding), sent from the files with `sendfile` (see [`super::parts`]); the first batch
//!   may start before the fetch offset, as in Kafka, and clients skip the records before it.
//!   As in Kafka, the broker checks batch headers, not CRCs, on this path: clients check
//!   those. Only data below the high watermark is served (under `always`, only what has been
//!   fsynced).
//! - Long poll: while fewer than `min_bytes` are available and `max_wait_ms` has not passed,
//!   the request waits on the partitions' wakers (no polling loop) and reads again when an
//!   append becomes visible.
//! - `read_committed` (isolation level 1): reads stop at the last stable offset and the
//!   answer lists the aborted transactions overlapping the records returned, for the client
//!   to skip (Kafka's protocol); `read_uncommitted` reads to the high watermark.
//! - ListOffsets: -1 latest (the last stable offset under `read_committed`), -2 earliest, -3 (v7+) the first record with the largest timestamp,
//!   else the first record at or after the timestamp, answered with that record's timestamp;
//!   offset -1 when there is none.
//! - Fetch sessions (KIP-227) from v7 on, as [`super::fetch_session`] says: full or incremental
//!   requests, and incremental answers that hold only partitions with news.

use super::fetch_session::{Plan, Requested};
use super::parts::FileRecords;
use super::{blocking, str_bytes};
use crate::codes;
use crate::server::Broker;
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId,
    TopicName,
};
use runnel_log::{IsolationLevel, Partition, TopicPartition};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct Wanted {
    index: i32,
    partition: Result<Arc<Partition>, i16>,
    offset: i64,
    max_bytes: usize,
}

/// The answer, with the file ranges its records are to be sent from.
pub(crate) async fn fetch(
    b: &Broker,
    r: FetchRequest,
    version: i16,
) -> (FetchResponse, FileRecords) {
    let requested: Vec<Requested> = r
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.into_iter().map(move |p| Requested {
                topic: name.clone(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            })
        })
        .collect();
    // Before v7 there are no sessions: every request is a full one.
    let (session_id, epoch) = if version >= 7 {
        (r.session_id, r.session_epoch)
    } else {
        (0, -1)
    };
    let forgotten = r
        .forgotten_topics_data
        .into_iter()
        .flat_map(|t| {
            let name = t.topic.0.to_string();
            t.partitions.into_iter().map(move |p| (name.clone(), p))
        })
        .collect();
    let plan = match b
        .fetch_sessions
        .plan(session_id, epoch, requested, forgotten)
    {
        Ok(plan) => plan,
        Err(code) => {
            tracing::debug!(session_id, epoch, code, "fetch session refused");
            let response = FetchResponse::default()
                .with_error_code(code)
                .with_session_id(0);
            return (response, FileRecords::default());
        }
    };
    if plan.incremental {
        b.metrics.fetch_incremental.fetch_add(1, Ordering::Relaxed);
    } else if plan.session_id != 0 {
        b.metrics
            .fetch_sessions_opened
            .fetch_add(1, Ordering::Relaxed);
    }
    let mut topics: Vec<(TopicName, Vec<Wanted>)> = Vec::new();
    for ((name, index), p) in &plan.partitions {
        let wanted = Wanted {
            index: *index,
            partition: u32::try_from(*index)
                .map_err(|_| codes::UNKNOWN_TOPIC_OR_PARTITION)
                .and_then(|id| {
                    b.log
                        .partition(&TopicPartition::new(name, id))
                        .map_err(|e| codes::for_log_error(&e))
                }),
            offset: p.fetch_offset,
            max_bytes: p.max_bytes.max(0) as usize,
        };
        match topics.last_mut().filter(|(t, _)| t.0.as_str() == name) {
            Some((_, parts)) => parts.push(wanted),
            None => topics.push((TopicName(str_bytes(name.clone())), vec![wanted])),
        }
    }
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
    let isolation = if r.isolation_level == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    loop {
        let t = topics.clone();
        let (responses, files, bytes, errors) =
            match blocking(move || read_all(&t, max_bytes, isolation)).await {
                Ok(x) => x,
                Err(_) => (Vec::new(), FileRecords::default(), 0, true),
            };
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || errors || now >= deadline {
            let responses = if plan.session_id == 0 {
                responses
            } else {
                only_news(b, &plan, responses)
            };
            let response = FetchResponse::default()
                .with_session_id(plan.session_id)
                .with_responses(responses);
            return (response, files);
        }
        let _ = tokio::time::timeout(deadline - now, waker.notified()).await;
    }
}

/// Records what this answer tells the session's client; for an incremental answer, keeps
/// only the partitions with news.
fn only_news(
    b: &Broker,
    plan: &Plan,
    responses: Vec<FetchableTopicResponse>,
) -> Vec<FetchableTopicResponse> {
    responses
        .into_iter()
        .filter_map(|mut t| {
            let name = t.topic.0.to_string();
            t.partitions.retain(|p| {
                let news = p.error_code != 0 || p.records.as_ref().is_some_and(|r| !r.is_empty());
                let keep = b.fetch_sessions.answered(
                    plan.session_id,
                    &(name.clone(), p.partition_index),
                    p.high_watermark,
                    p.log_start_offset,
                    news,
                );
                keep || !plan.incremental
            });
            (!t.partitions.is_empty() || !plan.incremental).then_some(t)
        })
        .collect()
}

/// The aborted transactions a `read_committed` client needs for the records of `[from, until)`.
fn aborted_transactions(partition: &Partition, from: u64, until: u64) -> Vec<AbortedTransaction> {
    partition
        .aborted_transactions(from, until)
        .into_iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_first_offset(a.first_offset as i64)
        })
        .collect()
}

/// One pass over the wanted partitions: (responses, the file ranges of their records, bytes
/// returned, any partition failed).
fn read_all(
    topics: &[(TopicName, Vec<Wanted>)],
    max_bytes: usize,
    isolation: IsolationLevel,
) -> (Vec<FetchableTopicResponse>, FileRecords, usize, bool) {
    let mut files = FileRecords::default();
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
                    let with_offsets = |d: PartitionData, hw: u64, lso: u64, start: u64| {
                        d.with_high_watermark(hw as i64)
                            .with_last_stable_offset(lso as i64)
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
                            partition.last_stable_offset(),
                            partition.log_start_offset(),
                        )
                        .with_records(Some(Bytes::new()));
                    }
                    let offset = w.offset as u64;
                    let located = partition.locate(offset, limit, isolation).and_then(|f| {
                        let records = match &f.batches {
                            Some(range) => files.records(range.clone())?,
                            None => Bytes::new(),
                        };
                        Ok((records, f))
                    });
                    match located {
                        Ok((records, f)) => {
                            total += records.len();
                            budget = budget.saturating_sub(records.len());
                            let aborted = (isolation == IsolationLevel::ReadCommitted)
                                .then(|| aborted_transactions(partition, offset, f.next_offset));
                            with_offsets(
                                base,
                                f.high_watermark,
                                f.last_stable_offset,
                                f.log_start_offset,
                            )
                            .with_records(Some(records))
                            .with_aborted_transactions(aborted)
                        }
                        Err(e) => {
                            errors = true;
                            with_offsets(
                                base,
                                partition.high_watermark(),
                                partition.last_stable_offset(),
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
    (responses, files, total, errors)
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// ListOffsets v7+ (KIP-734): the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;

/// (offset, timestamp) for a timestamp lookup: the first record at or after `ts`, or, for
/// [`MAX_TIMESTAMP`], the first record with the partition's largest timestamp; (-1, -1) when
/// there is none. Blocking.
fn lookup(part: &Partition, ts: i64) -> Result<(i64, i64), runnel_log::LogError> {
    let ts = if ts == MAX_TIMESTAMP {
        match part.max_timestamp() {
            Some(max) => max,
            None => return Ok((-1, -1)),
        }
    } else {
        ts
    };
    let Some(offset) = part.offset_for_timestamp(ts)? else {
        return Ok((-1, -1));
    };
    // Kafka answers with the found record's own timestamp.
    let fetched = part.peek(offset, 1)?;
    for b in runnel_log::batch::split_batches(&fetched.batches) {
        if let Some(r) = runnel_log::batch::records(&b)?
            .into_iter()
            .find(|r| r.offset == offset)
        {
            return Ok((offset as i64, r.timestamp));
        }
    }
    Ok((offset as i64, -1))
}

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
                    LATEST if r.isolation_level == 1 => Ok((part.last_stable_offset() as i64, -1)),
                    LATEST => Ok((part.high_watermark() as i64, -1)),
                    EARLIEST => Ok((part.log_start_offset() as i64, -1)),
                    ts => blocking(move || lookup(&part, ts))
                        .await
                        .map_err(|_| runnel_log::LogError::Closed)
                        .and_then(|r| r),
                },
                Err(e) => Err(e),
            };
            partitions.push(match result {
                // No record at or after the timestamp: Kafka answers offset -1.
                // The leader epoch exists from v4 on; the codec refuses it below.
                Ok((offset, timestamp)) => base
                    .with_offset(offset)
                    .with_timestamp(timestamp)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Broker, BrokerConfig};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use runnel_log::batch::BatchBuilder;
    use runnel_log::{Log, TopicConfig};

    /// Timestamps 1000, 5000, 3000 in one batch, then 7000, 7000, 2000 in another.
    async fn setup() -> (tempfile::TempDir, Arc<Broker>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let part = log.partition(&TopicPartition::new("t", 0)).unwrap();
        for stamps in [[1000, 5000, 3000], [7000, 7000, 2000]] {
            let mut b = BatchBuilder::new(256);
            for ts in stamps {
                b.push(ts, None, Some(b"v"), &[]);
            }
            part.append(b.finish()).unwrap();
        }
        let config = BrokerConfig {
            listeners: vec![crate::Listener::plaintext("127.0.0.1:0")],
            ..Default::default()
        };
        (dir, Broker::bind(log, config).await.unwrap())
    }

    async fn ask(b: &Broker, ts: i64, version: i16) -> (i64, i64) {
        let req = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts),
                ]),
        ]);
        let resp = list_offsets(b, req, version).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn list_offsets_by_timestamp_and_max_timestamp() {
        let (_dir, b) = setup().await;
        // -3: the first record with the largest timestamp, with that timestamp.
        assert_eq!(ask(&b, MAX_TIMESTAMP, 7).await, (3, 7000));
        // The first record at or after a timestamp, with its own timestamp.
        assert_eq!(ask(&b, 2500, 7).await, (1, 5000));
        assert_eq!(ask(&b, 5001, 5).await, (3, 7000));
        assert_eq!(ask(&b, 0, 1).await, (0, 1000));
        assert_eq!(ask(&b, 7001, 7).await, (-1, -1));
        assert_eq!(ask(&b, LATEST, 7).await, (6, -1));
        assert_eq!(ask(&b, EARLIEST, 7).await, (0, -1));
    }
}
