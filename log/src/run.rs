//! Record runs: the records of one partition from one read, left in the record batches they
//! were stored in.
//!
//! Why: a [`ConsumerRecord`] per record costs a topic `Arc` and two `Bytes` reference counts
//! (atomic, and shared between the thread that reads and the one that processes), plus moves of
//! a 120-byte struct; a stream processor reading millions of records a second spends more on
//! that than on the records. A [`RecordRun`] holds one buffer and, per record, only where its
//! parts lie in it; [`RecordRef`] borrows them.
//!
//! Contract: the records of a run are in offset order, all of one topic partition, and every
//! one of them was checked when the run was made (frame lengths, header keys UTF-8), so reading
//! them back cannot fail. Control batches are left out, as consumers never see them.
//!
//! Compressed batches are decompressed when the run is made: the run's buffer is then a new
//! one holding every batch of the read uncompressed (a read without compressed batches keeps
//! its buffer, zero-copy). A payload that does not decompress, or a malformed record, fails
//! the whole run with [`LogError::UnreadableBatch`], naming topic, partition and offset.

use crate::batch::{self, RecordSpan};
use crate::error::{LogError, Result};
use crate::txn::AbortedFilter;
use crate::types::{ConsumerRecord, Header, Record};
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// The records of one topic partition, as read.
#[derive(Debug, Clone)]
pub struct RecordRun {
    pub topic: Arc<str>,
    pub partition: u32,
    /// Every record's key, value and headers lie in here.
    buf: Bytes,
    records: Vec<Place>,
}

/// One record of a run: its coordinates and where its parts lie in the run's buffer.
#[derive(Debug, Clone)]
struct Place {
    offset: u64,
    timestamp: i64,
    key: Option<Range<u32>>,
    value: Option<Range<u32>>,
    headers: Range<u32>,
    header_count: u32,
}

/// A record of a run, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    buf: &'a Bytes,
    headers: (u32, u32),
    header_count: u32,
}

impl<'a> RecordRef<'a> {
    pub fn has_headers(&self) -> bool {
        self.header_count > 0
    }

    /// Each header's key and value, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + use<'a> {
        let (start, end) = self.headers;
        batch::header_fields(
            self.buf,
            start as usize..end as usize,
            self.header_count as usize,
        )
    }

    /// The value of the first header named `key` (`Some(None)` for a header without value).
    pub fn header(&self, key: &str) -> Option<Option<&'a [u8]>> {
        if self.header_count == 0 {
            return None;
        }
        self.headers().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The headers as owned values (no allocation when there are none).
    pub fn owned_headers(&self) -> Vec<Header> {
        let (start, end) = self.headers;
        batch::headers_of(
            self.buf,
            start as usize..end as usize,
            self.header_count as usize,
        )
    }

    /// The record as an owned [`Record`]; key, value and header values stay zero-copy slices.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(|k| self.buf.slice_ref(k)),
            value: self.value.map(|v| self.buf.slice_ref(v)),
            headers: self.owned_headers(),
        }
    }
}

fn span(r: Range<usize>, base: usize) -> Range<u32> {
    // `RecordRun::push_batches` refuses buffers whose positions do not fit.
    (r.start + base) as u32..(r.end + base) as u32
}

/// One batch (base offset 0) holding `records`' timestamps, keys, values and headers.
fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut b = batch::BatchBuilder::new(1024);
    for r in records {
        b.push(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    b.finish()
}

/// `batches` with every compressed batch decompressed: the same buffer if none is.
fn plain(topic: &str, partition: u32, batches: Bytes) -> Result<Bytes> {
    if !batch::split_batches(&batches).any(|b| batch::is_compressed(&b)) {
        return Ok(batches);
    }
    let mut out = Vec::with_capacity(batches.len() * 4);
    for b in batch::split_batches(&batches) {
        batch::decompress_into(&b, &mut out).map_err(|e| unreadable(topic, partition, &b, e))?;
    }
    Ok(Bytes::from(out))
}

/// `e`, an error reading the batch `b` of `topic` `partition`, as the error naming that place.
#[cold]
fn unreadable(topic: &str, partition: u32, b: &[u8], e: LogError) -> LogError {
    // A header that does not parse has no offset to name.
    let (offset, next) =
        batch::parse_header(b).map_or((0, 0), |h| (h.base_offset, h.next_offset()));
    LogError::UnreadableBatch {
        topic: topic.to_string(),
        partition,
        offset,
        next,
        reason: match e {
            LogError::InvalidBatch(reason) => reason,
            other => other.to_string(),
        },
    }
}

impl RecordRun {
    /// An empty run of `topic` partition `partition`.
    pub fn new(topic: Arc<str>, partition: u32) -> Self {
        Self {
            topic,
            partition,
            buf: Bytes::new(),
            records: Vec::new(),
        }
    }

    /// The records at `from` and after in `batches` (consecutive whole batches, CRCs already
    /// checked by the reader), control batches left out.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidBatch`] for a batch whose records cannot be decoded or decompressed.
    pub fn from_batches(
        topic: Arc<str>,
        partition: u32,
        batches: Bytes,
        from: u64,
    ) -> Result<Self> {
        Self::from_batches_filtered(topic, partition, batches, from, None)
    }

    /// [`from_batches`](Self::from_batches) for a `read_committed` reader: the batches of
    /// aborted transactions are left out too (`aborted` lists the aborted transactions that
    /// overlap `batches`: [`crate::Partition::aborted_transactions`]).
    ///
    /// # Errors
    ///
    /// As [`from_batches`](Self::from_batches).
    pub fn from_committed_batches(
        topic: Arc<str>,
        partition: u32,
        batches: Bytes,
        from: u64,
        aborted: Vec<crate::txn::index::AbortedTxn>,
    ) -> Result<Self> {
        let mut filter = AbortedFilter::new(aborted);
        Self::from_batches_filtered(topic, partition, batches, from, Some(&mut filter))
    }

    fn from_batches_filtered(
        topic: Arc<str>,
        partition: u32,
        batches: Bytes,
        from: u64,
        mut aborted: Option<&mut AbortedFilter>,
    ) -> Result<Self> {
        let batches = plain(&topic, partition, batches)?;
        if batches.len() > u32::MAX as usize {
            return Err(LogError::InvalidBatch(format!(
                "a read of {} bytes is larger than a record run can hold (4 GiB)",
                batches.len()
            )));
        }
        let mut run = Self::new(topic, partition);
        let mut count = 0usize;
        for b in batch::split_batches(&batches) {
            count += batch::parse_header(&b)?.records_count.max(0) as usize;
        }
        // Bounded by the bytes present (a record takes at least 7), not only by the counts.
        run.records.reserve(count.min(batches.len() / 7));
        let mut at = 0usize;
        for b in batch::split_batches(&batches) {
            let base = at;
            at += b.len();
            let h = batch::parse_header(&b)?;
            let keep = match aborted.as_deref_mut() {
                Some(filter) => filter.keeps(&h, &b),
                None => !h.is_control(),
            };
            if !keep {
                continue;
            }
            let records = &mut run.records;
            let walked = batch::for_each_record(&b, |r: RecordSpan| {
                if r.offset >= from {
                    records.push(Place {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key.map(|k| span(k, base)),
                        value: r.value.map(|v| span(v, base)),
                        headers: span(r.headers, base),
                        header_count: r.header_count as u32,
                    });
                }
            });
            walked.map_err(|e| unreadable(&run.topic, partition, &b, e))?;
        }
        run.buf = batches;
        Ok(run)
    }

    /// A run holding copies of `records` (for a source of records that are not in batches).
    pub fn from_records(topic: Arc<str>, partition: u32, records: &[Record]) -> Self {
        let bytes = Bytes::from(encode_batch(records));
        let mut run =
            Self::from_batches(topic, partition, bytes, 0).expect("a batch just encoded decodes");
        for (place, r) in run.records.iter_mut().zip(records) {
            place.offset = r.offset;
        }
        run
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        let p = self.records.get(i)?;
        let part = |r: &Range<u32>| &self.buf[r.start as usize..r.end as usize];
        Some(RecordRef {
            offset: p.offset,
            timestamp: p.timestamp,
            key: p.key.as_ref().map(part),
            value: p.value.as_ref().map(part),
            buf: &self.buf,
            headers: (p.headers.start, p.headers.end),
            header_count: p.header_count,
        })
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = RecordRef<'_>> + ExactSizeIterator {
        (0..self.records.len()).map(|i| self.get(i).expect("in range"))
    }

    /// The records that have headers (cheaper than filtering [`RecordRun::iter`]: the others
    /// are skipped without being looked at).
    pub fn with_headers(&self) -> impl Iterator<Item = RecordRef<'_>> {
        (0..self.records.len())
            .filter(|&i| self.records[i].header_count > 0)
            .map(|i| self.get(i).expect("in range"))
    }

    pub fn last(&self) -> Option<RecordRef<'_>> {
        self.get(self.records.len().checked_sub(1)?)
    }

    /// The records as [`ConsumerRecord`]s (zero-copy slices of the run's buffer).
    pub fn to_consumer_records(&self) -> impl Iterator<Item = ConsumerRecord> + '_ {
        self.iter().map(|r| ConsumerRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            record: r.to_record(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::{CODECS, Compression};
    use proptest::prelude::*;

    type TestRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn record(i: usize, (ts, k, v, h): &TestRecord) -> Record {
        Record {
            offset: 100 + i as u64 * 3,
            timestamp: *ts,
            key: k.clone().map(Bytes::from),
            value: v.clone().map(Bytes::from),
            headers: h
                .iter()
                .map(|(k, v)| Header {
                    key: k.clone(),
                    value: v.clone().map(Bytes::from),
                })
                .collect(),
        }
    }

    fn encode(records: &[Record], base_offset: u64, codec: Compression) -> Vec<u8> {
        let mut v = batch::compressed(&encode_batch(records), codec).unwrap();
        batch::set_base_offset(&mut v, base_offset);
        v
    }

    proptest! {
        /// A run of batches gives back each record as `batch::records` decodes it, from the
        /// requested offset on, whichever batch it is in.
        #[test]
        fn a_run_reads_back_what_the_batches_hold(
            recs in prop::collection::vec(
                (0i64..1 << 42,
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                 prop::collection::vec(("[a-z.]{0,8}", prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..3)),
                1..40),
            split in 0usize..40,
            from in 0u64..50,
            codecs in (0usize..5, 0usize..5),
        ) {
            let codecs = (CODECS[codecs.0], CODECS[codecs.1]);
            let split = split.min(recs.len());
            let (a, b) = recs.split_at(split);
            let first: Vec<Record> = a.iter().enumerate().map(|(i, r)| record(i, r)).collect();
            let second: Vec<Record> = b.iter().enumerate().map(|(i, r)| record(i, r)).collect();
            let mut buf = Vec::new();
            if !first.is_empty() {
                buf.extend(encode(&first, 0, codecs.0));
            }
            if !second.is_empty() {
                buf.extend(encode(&second, split as u64, codecs.1));
            }
            let buf = Bytes::from(buf);
            let mut want = Vec::new();
            for b in batch::split_batches(&buf) {
                want.extend(batch::records(&b).unwrap().into_iter().filter(|r| r.offset >= from));
            }
            let run = RecordRun::from_batches(Arc::from("t"), 3, buf.clone(), from).unwrap();
            prop_assert_eq!(run.len(), want.len());
            for (got, want) in run.iter().zip(&want) {
                prop_assert_eq!(&got.to_record(), want);
                prop_assert_eq!(got.has_headers(), !want.headers.is_empty());
                for h in &want.headers {
                    let first = want.headers.iter().find(|x| x.key == h.key).unwrap();
                    prop_assert_eq!(got.header(&h.key), Some(first.value.as_deref()));
                }
            }
            let consumer: Vec<ConsumerRecord> = run.to_consumer_records().collect();
            prop_assert!(consumer.iter().all(|c| c.partition == 3 && &*c.topic == "t"));
        }
    }

    /// A compressed batch whose payload does not decompress (CRC fixed up) fails the run
    /// with an error naming topic, partition and the batch's offsets.
    #[test]
    fn an_undecompressable_batch_is_named() {
        let recs: Vec<Record> = (0..5)
            .map(|i| record(i, &(7, None, Some(vec![b'x'; 300]), vec![])))
            .collect();
        let mut good = encode(&recs, 0, Compression::Lz4);
        let mut bad = encode(&recs, 5, Compression::Lz4);
        bad[batch::HEADER_LEN + 8..].fill(0xee);
        // The CRC (bytes 17..21, over attributes on) fixed up, so only the codec can notice.
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        batch::validate(&bad).unwrap();
        good.extend(bad);
        let err = RecordRun::from_batches(Arc::from("rides"), 2, Bytes::from(good), 0).unwrap_err();
        let LogError::UnreadableBatch {
            topic,
            partition,
            offset,
            next,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (topic.as_str(), *partition, *offset, *next),
            ("rides", 2, 5, 10)
        );
        assert!(
            err.to_string().contains("lz4 payload does not decompress"),
            "{err}"
        );
    }

    #[test]
    fn a_run_of_copied_records_keeps_their_offsets() {
        let recs: Vec<Record> = (0..3)
            .map(|i| record(i, &(7, None, Some(vec![i as u8]), vec![("x".into(), None)])))
            .collect();
        let run = RecordRun::from_records(Arc::from("t"), 0, &recs);
        let back: Vec<Record> = run.iter().map(|r| r.to_record()).collect();
        assert_eq!(back, recs);
        assert_eq!(run.last().unwrap().offset, 106);
    }
}
