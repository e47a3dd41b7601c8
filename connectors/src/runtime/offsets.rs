//! Source offsets in the compacted internal topic `__connect_offsets`: key
//! `["<connector>", <source partition>]`, value the source offset (JSON), a tombstone for an
//! offset reset, as Kafka Connect stores them (its topic is named by `offset.storage.topic`,
//! `connect-offsets` in its examples). The worker reads the topic once at start and keeps the
//! latest per key.

use crate::error::Result;
use crate::runtime::internal;
use runnel_log::{LogProducer, ProducerRecord, SharedLogClient};
use serde_json::Value;
use std::collections::BTreeMap;

pub const OFFSETS_TOPIC: &str = "__connect_offsets";

/// (connector, partition as JSON text) → offset.
pub type Offsets = BTreeMap<(String, String), Value>;

/// Every connector's latest source offsets, read from the topic (created if missing) up to its
/// last stable offset.
///
/// # Errors
/// When the log fails to create or read the topic ([`crate::ConnectError::Log`]).
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub async fn load(client: &SharedLogClient) -> Result<Offsets> {
    let mut offsets = Offsets::new();
    internal::read(client, OFFSETS_TOPIC, |key, value| {
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

/// Appends `connector`'s offsets per source partition, a tombstone for a `None` offset; the
/// caller flushes the producer afterwards.
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
    connector: &str,
    offsets: &[(&Value, Option<&Value>)],
) -> Result<()> {
    for (partition, offset) in offsets {
        let key = serde_json::to_vec(&(connector, partition)).expect("JSON values serialize");
        let value = offset.map(|o| serde_json::to_vec(o).expect("JSON values serialize"));
        producer
            .send(ProducerRecord {
                topic: OFFSETS_TOPIC,
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
