//! Source offsets in the compacted internal topic `__connect_offsets`: key
//! `["<connector>", <source partition>]`, value the source offset (JSON), as Kafka Connect
//! stores them. The worker reads the topic once at start and keeps the latest per key.

use crate::error::Result;
use runnel_log::{
    CleanupPolicy, ConsumerConfig, OffsetReset, ProducerRecord, SharedLogClient, TopicConfig,
    TopicPartition,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub const OFFSETS_TOPIC: &str = "__connect_offsets";

/// (connector, partition as JSON text) → offset.
pub type Offsets = BTreeMap<(String, String), serde_json::Value>;

/// Every connector's latest source offsets, read from the topic (created if missing) up to its
/// last stable offset.
///
/// # Errors
/// When the log fails to create or read the topic ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: it only reads (the topic, once created, stays).
pub async fn load(client: &SharedLogClient) -> Result<Offsets> {
    let cfg = TopicConfig {
        partitions: 1,
        cleanup_policy: CleanupPolicy::Compact,
        ..Default::default()
    };
    client.ensure_topic(OFFSETS_TOPIC, &cfg).await?;
    let tp = TopicPartition::new(OFFSETS_TOPIC, 0);
    // Offsets written by an open transaction (an exactly-once source that died) are not
    // committed: read what is, without waiting for that transaction to end.
    let end = client.stable_offsets(std::slice::from_ref(&tp)).await?[0];
    let mut consumer = client.consumer(ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        ..Default::default()
    });
    consumer.assign(vec![tp.clone()])?;
    let mut offsets = Offsets::new();
    while consumer.position(&tp).unwrap_or(0) < end {
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let Some(key) = r.record.key.as_deref() else {
                continue;
            };
            let Ok((name, partition)) = serde_json::from_slice::<(String, serde_json::Value)>(key)
            else {
                continue;
            };
            let k = (name, partition.to_string());
            match r.record.value.as_deref().map(serde_json::from_slice) {
                Some(Ok(v)) => {
                    offsets.insert(k, v);
                }
                _ => {
                    offsets.remove(&k);
                }
            }
        }
    }
    consumer.close().await?;
    Ok(offsets)
}

/// Appends offsets; the caller flushes the producer afterwards.
///
/// # Errors
/// When the producer refuses a record ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Not cancel safe: dropped part way, some offsets are sent and others not. Each names a
/// position after records already written, so a partial store only means more records read
/// again after a restart, never lost ones.
pub async fn store(
    producer: &dyn runnel_log::LogProducer,
    connector: &str,
    offsets: &BTreeMap<String, (serde_json::Value, serde_json::Value)>,
) -> Result<()> {
    for (partition, offset) in offsets.values() {
        let key = serde_json::to_vec(&(connector, partition)).expect("JSON values serialize");
        let value = serde_json::to_vec(offset).expect("JSON values serialize");
        producer
            .send(ProducerRecord::new(OFFSETS_TOPIC, &value).key(&key))
            .await?;
    }
    Ok(())
}
