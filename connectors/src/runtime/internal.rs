//! The worker's internal topics (source offsets, connector configurations, statuses): each one
//! partition and compacted, so the latest value per key is what counts and a tombstone (a null
//! value) deletes a key. A worker alone reads each of them once, from the start, when it starts;
//! after that it only writes them, being their one writer. The workers of a group share the
//! config and status topics: each [`tail`]s them, as every one of them writes them.

use crate::error::Result;
use runnel_log::{
    CleanupPolicy, ConsumerConfig, LogConsumer, OffsetReset, SharedLogClient, TopicConfig,
    TopicPartition,
};
use std::time::Duration;

/// Creates `topic` (one partition, compacted) if missing, then hands every keyed record of it
/// to `each` as (key, value), in order, up to its last stable offset: records of a transaction
/// still open (an exactly-once source that died) are not committed, and the read does not wait
/// for that transaction to end.
///
/// # Errors
/// When the log fails to create or read the topic ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: it only reads (the topic, once created, stays).
pub async fn read(
    client: &SharedLogClient,
    topic: &str,
    mut each: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    ensure(client, topic).await?;
    let tp = TopicPartition::new(topic, 0);
    let end = end_offset(client, topic).await?;
    let mut consumer = reader(client, &tp)?;
    while consumer.position(&tp).unwrap_or(0) < end {
        poll(&mut *consumer, &mut each).await?;
    }
    consumer.close().await?;
    Ok(())
}

/// Creates `topic` (one partition, compacted) if missing.
///
/// # Errors
/// When the log fails to create it ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: the topic, once created, stays.
pub async fn ensure(client: &SharedLogClient, topic: &str) -> Result<()> {
    let cfg = TopicConfig {
        partitions: 1,
        cleanup_policy: CleanupPolicy::Compact,
        ..Default::default()
    };
    client.ensure_topic(topic, &cfg).await?;
    Ok(())
}

/// The offset after `topic`'s last stable record: what a reader has seen all of once its
/// position reaches it.
///
/// # Errors
/// When the log cannot say ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub async fn end_offset(client: &SharedLogClient, topic: &str) -> Result<u64> {
    let tp = TopicPartition::new(topic, 0);
    Ok(client.stable_offsets(std::slice::from_ref(&tp)).await?[0])
}

/// Hands every keyed record of `topic` (which [`ensure`] created) to `each`, from the start and
/// for ever, then its position after each poll to `at`. A failed poll is logged and retried
/// after a second (the broker may be back); it returns only when `at` has no receiver left.
///
/// # Errors
/// When the log refuses the reader ([`crate::ConnectError::Log`]).
pub async fn tail(
    client: SharedLogClient,
    topic: String,
    mut each: impl FnMut(&[u8], Option<&[u8]>) + Send,
    at: tokio::sync::watch::Sender<u64>,
) -> Result<()> {
    let tp = TopicPartition::new(&topic, 0);
    let mut consumer = reader(&client, &tp)?;
    while !at.is_closed() {
        if let Err(e) = poll(&mut *consumer, &mut each).await {
            tracing::warn!(topic = %topic, error = %e, "reading a shared topic failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        at.send_replace(consumer.position(&tp).unwrap_or(0));
    }
    Ok(())
}

fn reader(client: &SharedLogClient, tp: &TopicPartition) -> Result<Box<dyn LogConsumer>> {
    let mut consumer = client.consumer(ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        ..Default::default()
    });
    consumer.assign(vec![tp.clone()])?;
    Ok(consumer)
}

async fn poll(
    consumer: &mut dyn LogConsumer,
    each: &mut impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    for r in consumer.poll(Duration::from_millis(200)).await? {
        if let Some(key) = r.record.key.as_deref() {
            each(key, r.record.value.as_deref());
        }
    }
    Ok(())
}
