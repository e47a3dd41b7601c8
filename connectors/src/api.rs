//! The connector API: the two traits every connector implements and what they exchange.
//!
//! A [`Source`] turns an external system into records, each tagged with a source partition and
//! a source offset (JSON, as in Kafka Connect); the worker writes the records, flushes, and only
//! then stores the offsets, so a restart resumes after the last durable record. A [`Sink`]
//! takes records read from topics; the worker commits the consumer group's offsets only after
//! [`Sink::flush`] returned, so nothing acknowledged is lost.

#[cfg(doc)]
use crate::error::ConnectError;
use crate::error::Result;
use async_trait::async_trait;
use runnel_log::{ConsumerRecord, RecordRun, TopicPartition};

/// What one [`Source::poll`] returns: runs of records, in order.
pub type SourceBatch = Vec<SourceRun>;

/// Records of one source partition into one topic, with where to resume after the last of
/// them. Keys and values are spans of one shared buffer, so a file source hands on the block it
/// read without copying a line, and the worker encodes a run straight into log batches.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRun {
    /// Empty (and no records): nothing to send, only the offset to store (a CSV header line).
    pub topic: String,
    /// e.g. `{"filename": "/var/log/app.log"}`.
    pub partition: serde_json::Value,
    /// e.g. `{"position": 4096}`: where to resume after the run's last record.
    pub offset: serde_json::Value,
    /// Set when the run's records could not be converted: they go to the dead-letter topic
    /// (a source makes a run of the one bad record, so the offset names it).
    pub error: Option<String>,
    /// The values are plain strings (text lines), not JSON: converters treat them as text.
    pub text: bool,
    data: bytes::BytesMut,
    spans: Vec<Span>,
}

/// Where one record's key and value are in its run's buffer (`u32::MAX` start: absent).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    key: (u32, u32),
    value: (u32, u32),
}

const ABSENT: (u32, u32) = (u32::MAX, 0);

impl SourceRun {
    /// A run of no record: stores `offset` for `partition`.
    pub fn marker(partition: serde_json::Value, offset: serde_json::Value) -> Self {
        Self::new(String::new(), partition, offset)
    }

    /// An empty run to `topic`; records are added with [`push`](Self::push) or
    /// [`with_values`](Self::with_values).
    pub fn new(topic: String, partition: serde_json::Value, offset: serde_json::Value) -> Self {
        Self {
            topic,
            partition,
            offset,
            error: None,
            text: false,
            data: bytes::BytesMut::new(),
            spans: Vec::new(),
        }
    }

    /// Records without key whose values are `ranges` of `data` (a block read from a file,
    /// split off with `BytesMut::split_to`, which copies nothing).
    ///
    /// # Panics
    /// If a range is outside `data`, `data` is 4 GiB or more, or records were pushed before.
    pub fn with_values(
        mut self,
        data: bytes::BytesMut,
        ranges: impl IntoIterator<Item = std::ops::Range<usize>>,
    ) -> Self {
        assert!(
            self.spans.is_empty() && data.len() < u32::MAX as usize,
            "a run takes one buffer of less than 4 GiB"
        );
        self.spans = ranges
            .into_iter()
            .map(|r| {
                assert!(
                    r.start <= r.end && r.end <= data.len(),
                    "span inside the data"
                );
                Span {
                    key: ABSENT,
                    value: (r.start as u32, r.end as u32),
                }
            })
            .collect();
        self.data = data;
        self
    }

    /// Appends a record, copying its key and value (for sources that build their records).
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let data = &mut self.data;
        let mut put = |f: Option<&[u8]>| match f {
            Some(b) => {
                let start = data.len() as u32;
                data.extend_from_slice(b);
                (start, data.len() as u32)
            }
            None => ABSENT,
        };
        let span = Span {
            key: put(key),
            value: put(value),
        };
        self.spans.push(span);
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether some record has a key.
    pub fn has_keys(&self) -> bool {
        self.spans.iter().any(|s| s.key != ABSENT)
    }

    /// The records' (key, value), in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = (Option<&[u8]>, Option<&[u8]>)> {
        let field =
            |(s, e): (u32, u32)| (s != u32::MAX).then(|| &self.data[s as usize..e as usize]);
        self.spans
            .iter()
            .map(move |s| (field(s.key), field(s.value)))
    }
}

/// A record a sink could not write (bad data, not a failing system): `index` into the batch
/// given to [`Sink::put`]. The worker sends it to the dead-letter topic or fails the task.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// A connector that brings records in. The worker calls [`start`](Source::start) once, then
/// [`poll`](Source::poll) in a loop.
///
/// # Cancel safety
/// The worker may drop either future at any `.await` (the connector deleted, restarted or
/// paused for a restart, the worker stopping) and then drops the source: it is never polled
/// again. A new instance starts from the offsets stored, which follow only records already
/// written, so records a cancelled poll had read are read again, never lost. An
/// implementation need not keep its own state consistent across a cancellation, only release
/// what it holds when dropped.
#[async_trait]
pub trait Source: Send {
    /// Restores the position from the last stored offset of each source partition.
    ///
    /// # Errors
    /// When the stored offsets cannot be used (a [`ConnectError::Record`] naming them) or the
    /// external system cannot be reached ([`ConnectError::Io`], [`ConnectError::Database`]):
    /// the task fails and the worker restarts it with backoff.
    async fn start(&mut self, offsets: &[(serde_json::Value, serde_json::Value)]) -> Result<()>;
    /// The next records, or none when there is nothing new (the worker waits and asks again).
    ///
    /// # Errors
    /// When the external system fails ([`ConnectError::Io`], [`ConnectError::Database`]): the
    /// task fails and restarts with backoff. A record that cannot be read is not an error but
    /// a run with its [`SourceRun::error`] set.
    async fn poll(&mut self) -> Result<SourceBatch>;
}

/// A connector that takes records out. The worker calls
/// [`stored_offsets`](Sink::stored_offsets) once, then [`put`](Sink::put) (or
/// [`put_runs`](Sink::put_runs)) and [`flush`](Sink::flush) in a loop, committing the consumed
/// offsets after each flush.
///
/// # Cancel safety
/// The worker may drop any of these futures at an `.await` (the connector deleted or
/// restarted, the worker stopping) and then drops the sink: it is never called again. Nothing
/// put since the last commit counts as written: a new instance is given those records again.
/// A sink that writes in place (a file) cuts back what a cancelled put left when it opens
/// again (see [`Sink::stored_offsets`] and the file sink).
#[async_trait]
pub trait Sink: Send {
    /// Topics to read (Kafka Connect's `topics`).
    fn topics(&self) -> Vec<String>;
    /// Writes the records; returns those it could not write for what they hold (an error is
    /// for the system: the task fails and restarts).
    ///
    /// # Errors
    /// When the external system fails ([`ConnectError::Io`], [`ConnectError::Database`]):
    /// nothing of this put is committed, and the task restarts with backoff.
    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>>;
    /// [`Sink::put`] of records as read, in the runs the log read them in, when no converter
    /// or transform changes them. A sink that can write records in place overrides it, and
    /// saves making a [`ConsumerRecord`] (reference counts, a copy of the coordinates) per
    /// record; [`Rejected::index`] counts the records of all the runs, in order. By default
    /// the records are made and put.
    ///
    /// # Errors
    /// As [`Sink::put`].
    async fn put_runs(&mut self, runs: &[RecordRun]) -> Result<Vec<Rejected>> {
        let records: Vec<ConsumerRecord> = runs
            .iter()
            .flat_map(RecordRun::to_consumer_records)
            .collect();
        self.put(&records).await
    }
    /// Makes everything put so far durable, unless [`Sink::durable_offsets`] says otherwise.
    ///
    /// # Errors
    /// When the data cannot be made durable (a failed sync, a full disk, a failed commit):
    /// the consumed offsets are not committed, and the task restarts with backoff.
    async fn flush(&mut self) -> Result<()>;
    /// For sinks that hold records beyond `flush` (a Parquet file is durable only once its
    /// footer is written): the next offsets to read per partition that are durable now, which
    /// the worker commits instead of everything put. `None`: everything flushed is durable.
    fn durable_offsets(&mut self) -> Option<Vec<(TopicPartition, u64)>> {
        None
    }
    /// For sinks that keep the consumed offsets with the data (exactly-once): the next offset
    /// to read per partition, as stored, which the worker resumes from instead of the consumer
    /// group's. `None`: the sink keeps none (the default), so it cannot run exactly-once.
    /// Called once, before the first `put`: a sink may first bring its data back to what it
    /// stored (the file sink cuts its file back to the committed length).
    ///
    /// # Errors
    /// When the stored offsets cannot be read, or the data cannot be brought back to them.
    async fn stored_offsets(&mut self) -> Result<Option<Vec<(TopicPartition, u64)>>> {
        Ok(None)
    }
}

/// A connector instance of either kind.
pub enum Connector {
    Source(Box<dyn Source>),
    Sink(Box<dyn Sink>),
}

impl Connector {
    pub fn kind(&self) -> Kind {
        match self {
            Connector::Source(_) => Kind::Source,
            Connector::Sink(_) => Kind::Sink,
        }
    }
}

/// Which way a connector moves records; `"source"` / `"sink"` in Kafka Connect's REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Source,
    Sink,
}
