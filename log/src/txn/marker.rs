//! Transaction markers: the control records that end a transaction in a partition.
//!
//! Kafka's format, so that any Kafka client reading the partition understands them: a control
//! batch (attributes transactional + control, the producer's id and epoch, sequence -1) holding
//! one record whose key is `version: i16 = 0, type: i16` (0 abort, 1 commit) and whose value is
//! `version: i16 = 0, coordinator_epoch: i32`.

use crate::batch::{self, BatchBuilder, BatchHeader};
use crate::error::{LogError, Result};
use bytes::Bytes;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Commit,
    Abort,
}

/// A decoded transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub outcome: Outcome,
    pub coordinator_epoch: i32,
}

/// The control batch that ends `producer_id`'s transaction (at `epoch`) as `outcome`.
pub fn encode(producer_id: i64, epoch: i16, outcome: Outcome, coordinator_epoch: i32) -> Vec<u8> {
    let kind: i16 = match outcome {
        Outcome::Abort => 0,
        Outcome::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::new(64);
    b.push(crate::types::now_ms(), Some(&key), Some(&value), &[]);
    b.finish_control(producer_id, epoch)
}

/// The marker in a control batch, or `None` when the control batch holds another kind of
/// control record (Kafka has others, such as leader-change records, which readers skip).
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a control record whose key or value is malformed.
pub fn decode(control_batch: &Bytes) -> Result<Option<Marker>> {
    let h: BatchHeader = batch::parse_header(control_batch)?;
    debug_assert!(h.is_control());
    let Some(r) = batch::records(control_batch)?.into_iter().next() else {
        return Ok(None);
    };
    let key = r.key.as_deref().unwrap_or_default();
    if key.len() < 4 {
        return Err(LogError::InvalidBatch(format!(
            "control record at offset {} has a key of {} bytes, expected 4",
            r.offset,
            key.len()
        )));
    }
    let outcome = match i16::from_be_bytes([key[2], key[3]]) {
        0 => Outcome::Abort,
        1 => Outcome::Commit,
        _ => return Ok(None),
    };
    let value = r.value.as_deref().unwrap_or_default();
    let coordinator_epoch = match value.get(2..6) {
        Some(v) => i32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        None => -1,
    };
    Ok(Some(Marker {
        outcome,
        coordinator_epoch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_as_kafka_control_batches() {
        for outcome in [Outcome::Commit, Outcome::Abort] {
            let bytes = Bytes::from(encode(42, 3, outcome, 7));
            let h = batch::validate(&bytes).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.attributes, 0x30);
            assert_eq!(
                decode(&bytes).unwrap(),
                Some(Marker {
                    outcome,
                    coordinator_epoch: 7
                })
            );
        }
    }
}
