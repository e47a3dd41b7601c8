//! The worker's internal topics (source offsets, connector configurations, statuses): each one
//! partition and compacted, so the latest value per key is what counts and a tombstone (a null
//! value) deletes a key. A worker reads each of them once, from the start, when it starts; after
//! that it only writes them, being their one writer.

use crate::error::Result;
use runnel_log::{
    CleanupPolicy, ConsumerConfig, OffsetReset, SharedLogClient, TopicConfig, TopicPartition,
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
    let cfg = TopicConfig {
        partitions: 1,
        cleanup_policy: CleanupPolicy::Compact,
        ..Default::default()
    };
    client.ensure_topic(topic, &cfg).await?;
    let tp = TopicPartition::new(topic, 0);
    let end = client.stable_offsets(std::slice::from_ref(&tp)).await?[0];
    let mut consumer = client.consumer(ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        ..Default::default()
    });
    consumer.assign(vec![tp.clone()])?;
    while consumer.position(&tp).unwrap_or(0) < end {
        for r in consumer.poll(Duration::from_millis(200)).await? {
            if let Some(key) = r.record.key.as_deref() {
                each(key, r.record.value.as_deref());
            }
        }
    }
    consumer.close().await?;
    Ok(())
}
