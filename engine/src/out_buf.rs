//! The records a task produced since its outputs were last sent.
//!
//! Contract: [`OutBuf::push`] serializes a record once; the runtime hands everything to the
//! producer with [`OutBuf::send`] and the buffer is reused. A record with neither key, partition
//! nor headers (a stateless SQL job's output row) is written straight into a log batch of its
//! topic, which the producer appends as it is: the producer may put such a record in any
//! partition, so no per-record routing is needed, and it is encoded once instead of twice. Every
//! other record is kept in [`OutBuf::bytes`] and sent record by record. Records of a topic reach
//! the producer in the order they were pushed within each of these two kinds; between the kinds
//! the batches go first (a record without key has no order to keep with keyed ones, and a record
//! with headers, where the runtime's origin tags live, always takes the ordered path).

use runnel_log::batch::BatchBuilder;
use runnel_log::{DEFAULT_BATCH_SIZE, Header, LogProducer, ProducerRecord};
use std::ops::Range;
use std::sync::Arc;

/// An output record, its bytes in [`OutBuf::bytes`].
struct OutRecord {
    /// Its topic in [`OutBuf::topics`].
    topic: u32,
    partition: Option<u32>,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    timestamp: i64,
    headers: Vec<Header>,
}

/// Records without key, partition or headers for one topic, already a log batch.
struct UnkeyedBatch {
    /// Its topic in [`OutBuf::topics`].
    topic: u32,
    builder: BatchBuilder,
}

/// Records a task produced since the last send (see the module documentation).
///
/// Topics are kept once, not per record: tasks on different threads write to the same topic
/// `Arc`, and a reference count changed per record would move its cache line between cores.
#[derive(Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    records: Vec<OutRecord>,
    topics: Vec<Arc<str>>,
    /// Closed batches, then at most one open batch per topic (the last of its topic).
    unkeyed: Vec<UnkeyedBatch>,
    /// The value of an unkeyed record, before it is framed into its batch.
    scratch: Vec<u8>,
}

impl OutBuf {
    /// The index of `topic` in `topics`; `last` is the index most likely to be it.
    #[inline]
    fn topic_index(&mut self, topic: &Arc<str>, last: Option<u32>) -> u32 {
        if let Some(i) = last.filter(|&i| Arc::ptr_eq(&self.topics[i as usize], topic)) {
            return i;
        }
        match self.topics.iter().position(|t| t == topic) {
            Some(i) => i as u32,
            None => {
                self.topics.push(topic.clone());
                (self.topics.len() - 1) as u32
            }
        }
    }

    /// The topic of `record`.
    fn topic(&self, record: &OutRecord) -> &Arc<str> {
        &self.topics[record.topic as usize]
    }

    /// Serializes with `write_key` / `write_value` (which append and return `false` for null).
    ///
    /// # Errors
    ///
    /// The error of `write_key` or `write_value`, unchanged; the buffer is then as before the call
    /// (nothing of the record is kept).
    pub fn push(
        &mut self,
        topic: &Arc<str>,
        partition: Option<u32>,
        timestamp: i64,
        headers: Vec<Header>,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<bool, String>,
        write_value: impl FnOnce(&mut Vec<u8>) -> Result<bool, String>,
    ) -> Result<(), String> {
        let mark = self.bytes.len();
        let key = append(&mut self.bytes, mark, write_key)?;
        if key.is_none() && partition.is_none() && headers.is_empty() {
            self.bytes.truncate(mark);
            self.scratch.clear();
            let present = write_value(&mut self.scratch)?;
            let last = self.unkeyed.last().map(|b| b.topic);
            let topic = self.topic_index(topic, last);
            let value = present.then_some(&self.scratch[..]);
            let builder = open_batch(&mut self.unkeyed, topic, value);
            builder.push(timestamp, None, value, &[]);
            return Ok(());
        }
        let value = append(&mut self.bytes, mark, write_value)?;
        let last = self.records.last().map(|r| r.topic);
        let topic = self.topic_index(topic, last);
        self.records.push(OutRecord {
            topic,
            partition,
            key,
            value,
            timestamp,
            headers,
        });
        Ok(())
    }

    pub fn push_raw(
        &mut self,
        topic: &Arc<str>,
        partition: Option<u32>,
        timestamp: i64,
        headers: Vec<Header>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        let copy =
            |b: &mut Vec<u8>, d: Option<&[u8]>| Ok(d.map(|d| b.extend_from_slice(d)).is_some());
        let _ = self.push(
            topic,
            partition,
            timestamp,
            headers,
            |b| copy(b, key),
            |b| copy(b, value),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.unkeyed.is_empty()
    }

    /// Hands every record to `producer` (batches first, see the module documentation) and
    /// empties the buffer, keeping its memory.
    ///
    /// # Errors
    ///
    /// The producer's error for the first batch or records it refuses (a `LogError`: a topic that
    /// does not exist, a record too large, a failed producer). Batches not yet handed over are then
    /// dropped; the keyed records stay in the buffer and go again with the next call.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. Dropped while it hands over the batches, it loses those not yet handed
    /// over; dropped while it hands over the keyed records, some may be queued already and are
    /// queued again by the next call (duplicates). The runtime never drops it: it blocks on it.
    pub async fn send(&mut self, producer: &dyn LogProducer) -> runnel_log::Result<()> {
        for b in self.unkeyed.drain(..) {
            let topic = &self.topics[b.topic as usize];
            producer.send_batch(topic, None, b.builder).await?;
        }
        let slice = |range: &Option<Range<usize>>| range.clone().map(|r| &self.bytes[r]);
        let records: Vec<ProducerRecord<'_>> = self
            .records
            .iter()
            .map(|r| ProducerRecord {
                topic: self.topic(r),
                partition: r.partition,
                key: slice(&r.key),
                value: slice(&r.value),
                headers: &r.headers,
                timestamp: Some(r.timestamp),
            })
            .collect();
        producer.send_all(&records).await?;
        drop(records);
        self.bytes.clear();
        self.records.clear();
        self.topics.clear();
        Ok(())
    }

    /// Every record, in the log's terms, as [`send`](Self::send) hands them over: for tests
    /// (of the operators in `runnel-sql` too).
    pub fn into_records(mut self) -> Vec<(Arc<str>, runnel_log::Record)> {
        let mut all = Vec::new();
        for b in std::mem::take(&mut self.unkeyed) {
            let bytes = bytes::Bytes::from(b.builder.finish());
            let topic = &self.topics[b.topic as usize];
            let records = runnel_log::batch::records(&bytes).expect("a batch this buffer built");
            all.extend(records.into_iter().map(|r| (topic.clone(), r)));
        }
        let slice = |range: &Option<Range<usize>>| {
            range
                .clone()
                .map(|r| bytes::Bytes::copy_from_slice(&self.bytes[r]))
        };
        all.extend(self.records.iter().map(|r| {
            let record = runnel_log::Record {
                offset: 0,
                timestamp: r.timestamp,
                key: slice(&r.key),
                value: slice(&r.value),
                headers: r.headers.clone(),
            };
            (self.topic(r).clone(), record)
        }));
        all
    }
}

/// What `write` appends to `bytes`: its range, `None` for null; on an error `bytes` is cut
/// back to `mark`, the start of the record.
fn append(
    bytes: &mut Vec<u8>,
    mark: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<bool, String>,
) -> Result<Option<Range<usize>>, String> {
    let start = bytes.len();
    match write(bytes) {
        Ok(present) => Ok(present.then_some(start..bytes.len())),
        Err(e) => {
            bytes.truncate(mark);
            Err(e)
        }
    }
}

/// The open batch of `topic` with room for `value`, a new one when its last one is full.
#[inline]
fn open_batch<'a>(
    unkeyed: &'a mut Vec<UnkeyedBatch>,
    topic: u32,
    value: Option<&[u8]>,
) -> &'a mut BatchBuilder {
    let size = BatchBuilder::estimate(None, value, &[]);
    let open = unkeyed.iter().rposition(|b| b.topic == topic).filter(|&i| {
        let b = &unkeyed[i].builder;
        b.size_bytes() + size <= DEFAULT_BATCH_SIZE
    });
    let i = match open {
        Some(i) => i,
        None => {
            unkeyed.push(UnkeyedBatch {
                topic,
                builder: BatchBuilder::new(DEFAULT_BATCH_SIZE),
            });
            unkeyed.len() - 1
        }
    };
    &mut unkeyed[i].builder
}
