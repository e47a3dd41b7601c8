//! What flows between operators: typed records in batches, and control messages.
//!
//! Every edge of a topology carries batches of [`Rec`]s and [`Control`] messages: a
//! watermark, a commit barrier, or the end of a bounded input. Operators of one task are
//! chained by direct calls, one hook per kind of message (a task is single-threaded); tasks
//! meet through topics.

use runnel_log::Header;

/// A record inside a topology: typed key and value, event time, headers, and the source offset
/// it derives from (for error messages and the Processor API's metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct Rec<K, V> {
    pub key: K,
    pub value: V,
    /// Event time, milliseconds since the epoch.
    pub timestamp: i64,
    pub headers: Vec<Header>,
    /// Offset of the input record this one derives from in its source partition.
    pub offset: u64,
}

impl<K, V> Rec<K, V> {
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Self {
            key,
            value,
            timestamp,
            headers: Vec::new(),
            offset: 0,
        }
    }

    /// The same coordinates and headers with another key and value.
    pub fn with<K2, V2>(self, key: K2, value: V2) -> Rec<K2, V2> {
        Rec {
            key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
            offset: self.offset,
        }
    }

    pub(crate) fn derive<K2, V2>(&self, key: K2, value: V2) -> Rec<K2, V2> {
        Rec {
            key,
            value,
            timestamp: self.timestamp,
            headers: self.headers.clone(),
            offset: self.offset,
        }
    }
}

/// A control message: what an edge carries besides records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// No record with an event time at or below this will arrive any more (except late ones).
    Watermark(i64),
    /// A commit is about to happen: flush anything buffered.
    Barrier,
    /// The bounded input is over; the final watermark has been sent.
    End,
}

/// A window: `[start, end)` in event-time milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// The key of a windowed aggregation's result.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Windowed<K> {
    pub key: K,
    pub window: Window,
}
