//! Records of the internal compacted topic `__transaction_state`, in Kafka's format: key
//! `version: i16 = 0, transactional_id: string`; value (version 0) `producer_id: i64,
//! producer_epoch: i16, transaction_timeout_ms: i32, status: i8, partitions: [topic: string,
//! partition_ids: [i32]], last_update_ms: i64, start_ms: i64`. Strings are an `i16` length and
//! UTF-8 bytes, arrays an `i32` count; all big-endian.

use crate::error::{LogError, Result};
use crate::types::TopicPartition;
use std::collections::{BTreeMap, BTreeSet};

/// The internal topic holding the transaction coordinator's state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    fn code(self) -> i8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
        }
    }

    fn from_code(c: i8) -> Result<Self> {
        Ok(match c {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            o => {
                return Err(LogError::Protocol(format!(
                    "{TRANSACTION_STATE_TOPIC}: unknown transaction status {o}"
                )));
            }
        })
    }

    /// Kafka's name for the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// The partitions written in the open transaction (offsets partitions included).
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    /// When the open transaction started (its first partition), -1 when none is open.
    pub start_ms: i64,
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + transactional_id.len());
    b.extend_from_slice(&0i16.to_be_bytes());
    put_str(&mut b, transactional_id);
    b
}

pub fn encode_value(m: &TxnMetadata) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&m.producer_id.to_be_bytes());
    b.extend_from_slice(&m.epoch.to_be_bytes());
    b.extend_from_slice(&m.timeout_ms.to_be_bytes());
    b.push(m.status.code() as u8);
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in &m.partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    b.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, ids) in by_topic {
        put_str(&mut b, topic);
        b.extend_from_slice(&(ids.len() as i32).to_be_bytes());
        for id in ids {
            b.extend_from_slice(&(id as i32).to_be_bytes());
        }
    }
    b.extend_from_slice(&m.last_update_ms.to_be_bytes());
    b.extend_from_slice(&m.start_ms.to_be_bytes());
    b
}

/// The transactional id of a `__transaction_state` record key.
///
/// # Errors
///
/// [`LogError::Protocol`] for a key shorter than its fields.
pub fn decode_key(b: &[u8]) -> Result<String> {
    let mut r = Reader { b, at: 0 };
    r.i16()?;
    r.string()
}

/// A transaction's metadata from a `__transaction_state` record value.
///
/// # Errors
///
/// [`LogError::Protocol`] for a value shorter than its fields or with an unknown status.
pub fn decode_value(b: &[u8]) -> Result<TxnMetadata> {
    let mut r = Reader { b, at: 0 };
    r.i16()?;
    let producer_id = r.i64()?;
    let epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = TxnStatus::from_code(r.take(1)?[0] as i8)?;
    let mut partitions = BTreeSet::new();
    for _ in 0..r.count()? {
        let topic = r.string()?;
        for _ in 0..r.count()? {
            partitions.insert(TopicPartition::new(&topic, r.i32()?.max(0) as u32));
        }
    }
    Ok(TxnMetadata {
        producer_id,
        epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms: r.i64()?,
        start_ms: r.i64()?,
    })
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n).ok_or_else(|| {
            LogError::Protocol(format!(
                "{TRANSACTION_STATE_TOPIC}: record cut short at byte {}",
                self.at
            ))
        })?;
        self.at += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn count(&mut self) -> Result<usize> {
        Ok(self.i32()?.max(0) as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.i16()?.max(0) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| {
            LogError::Protocol(format!("{TRANSACTION_STATE_TOPIC}: a name is not UTF-8"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let m = TxnMetadata {
            producer_id: 99,
            epoch: 4,
            timeout_ms: 60_000,
            status: TxnStatus::PrepareCommit,
            partitions: [
                TopicPartition::new("a", 0),
                TopicPartition::new("a", 3),
                TopicPartition::new("__consumer_offsets", 0),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 1234,
            start_ms: 1000,
        };
        assert_eq!(decode_value(&encode_value(&m)).unwrap(), m);
        assert_eq!(decode_key(&encode_key("payments-1")).unwrap(), "payments-1");
        assert!(decode_value(&encode_value(&m)[..20]).is_err());
    }
}
