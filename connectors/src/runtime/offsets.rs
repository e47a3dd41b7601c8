//! Source offsets in the compacted internal topic named by Kafka Connect's worker property
//! `offset.storage.topic` (`connect-offsets` by default, the name of Kafka Connect's
//! examples): key `["<connector>", <source partition>]`, value the source offset (JSON), a
//! tombstone for an offset reset, as Kafka Connect stores them. The worker reads the topic once
//! at start and keeps the latest per key.
//!
//! Runnel named the topic `__connect_offsets` before: [`open`] copies that topic's latest
//! offsets into the configured one once, when the configured one is empty, so a data directory
//! (or broker) of an older Runnel keeps its sources' positions. The old topic is left as it
//! was (an older Runnel started again reads what it had).

use crate::error::Result;
use crate::runtime::internal;
use runnel_log::{LogProducer, ProducerConfig, ProducerRecord, SharedLogClient};
use serde_json::Value;
use std::collections::BTreeMap;

/// `offset.storage.topic` when the worker file names none.
pub const OFFSETS_TOPIC: &str = "connect-offsets";

/// Where Runnel kept source offsets before it took Kafka Connect's name.
const LEGACY_TOPIC: &str = "__connect_offsets";

/// (connector, partition as JSON text) → offset.
pub type Offsets = BTreeMap<(String, String), Value>;

/// Every connector's latest source offsets in `topic` (created if missing), after copying
/// those of `__connect_offsets` into it when it is empty and that topic is not.
///
/// # Errors
/// When the log fails to create, read or write a topic ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Not cancel safe: dropped part way through the copy, `topic` holds some of the old offsets
/// and is not empty any more, so the rest are not copied. Each copied record is a position
/// the source had reached, so the sources that lack theirs read their input again.
pub async fn open(client: &SharedLogClient, topic: &str) -> Result<Offsets> {
    let offsets = load(client, topic).await?;
    let fresh = offsets.is_empty() && internal::end_offset(client, topic).await? == 0;
    if topic == LEGACY_TOPIC || !fresh || client.partition_count(LEGACY_TOPIC).await?.is_none() {
        return Ok(offsets);
    }
    let old = load(client, LEGACY_TOPIC).await?;
    if old.is_empty() {
        return Ok(offsets);
    }
    let producer = client.producer(ProducerConfig::default());
    for ((connector, partition), offset) in &old {
        // Written by `set` as JSON text.
        let Ok(partition) = serde_json::from_str::<Value>(partition) else {
            continue;
        };
        store(&*producer, topic, connector, &[(&partition, Some(offset))]).await?;
    }
    producer.flush().await?;
    tracing::info!(
        from = LEGACY_TOPIC,
        to = topic,
        offsets = old.len(),
        "copied the source offsets to the offsets topic"
    );
    Ok(old)
}

/// Every connector's latest source offsets, read from `topic` (created if missing) up to its
/// last stable offset.
///
/// # Errors
/// When the log fails to create or read the topic ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub async fn load(client: &SharedLogClient, topic: &str) -> Result<Offsets> {
    let mut offsets = Offsets::new();
    internal::read(client, topic, |key, value| {
        let Ok((name, partition)) = serde_json::from_slice::<(String, Value)>(key) else {
            return;
        };
        let offset = value.and_then(|v| serde_json::from_slice(v).ok());
        set(&mut offsets, &name, &partition, offset);
    })
    .await?;
    Ok(offsets)
}

/// Sets (or with `None` removes) the offset of `connector`'s `partition` in `offsets`.
pub fn set(offsets: &mut Offsets, connector: &str, partition: &Value, offset: Option<Value>) {
    let key = (connector.to_string(), partition.to_string());
    match offset {
        Some(o) => {
            offsets.insert(key, o);
        }
        None => {
            offsets.remove(&key);
        }
    }
}

/// Appends `connector`'s offsets per source partition to `topic`, a tombstone for a `None`
/// offset; the caller flushes the producer afterwards.
///
/// # Errors
/// When the producer refuses a record ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Not cancel safe: dropped part way, some offsets are sent and others not. Each names a
/// position after records already written, so a partial store only means more records read
/// again after a restart, never lost ones.
pub async fn store(
    producer: &dyn LogProducer,
    topic: &str,
    connector: &str,
    offsets: &[(&Value, Option<&Value>)],
) -> Result<()> {
    for (partition, offset) in offsets {
        let key = serde_json::to_vec(&(connector, partition)).expect("JSON values serialize");
        let value = offset.map(|o| serde_json::to_vec(o).expect("JSON values serialize"));
        producer
            .send(ProducerRecord {
                topic,
                partition: None,
                key: Some(&key),
                value: value.as_deref(),
                headers: &[],
                timestamp: None,
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::Log;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test]
    async fn offsets_of_the_old_topic_are_copied_once_into_an_empty_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let client: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
        let producer = client.producer(ProducerConfig::default());
        let (p, old) = (json!({"file": "a"}), json!({"position": 10}));
        internal::ensure(&client, LEGACY_TOPIC).await.unwrap();
        store(&*producer, LEGACY_TOPIC, "in", &[(&p, Some(&old))])
            .await
            .unwrap();
        producer.flush().await.unwrap();

        let key = ("in".to_string(), p.to_string());
        let opened = open(&client, OFFSETS_TOPIC).await.unwrap();
        assert_eq!(opened[&key], old);
        assert_eq!(
            load(&client, OFFSETS_TOPIC).await.unwrap()[&key],
            old,
            "stored"
        );
        // Once the new topic moved on, the old one is not read again.
        let new = json!({"position": 20});
        store(&*producer, OFFSETS_TOPIC, "in", &[(&p, Some(&new))])
            .await
            .unwrap();
        producer.flush().await.unwrap();
        assert_eq!(open(&client, OFFSETS_TOPIC).await.unwrap()[&key], new);
        let end = internal::end_offset(&client, OFFSETS_TOPIC).await.unwrap();
        assert_eq!(end, 2, "copied once");
    }
}
