//! Kafka RecordBatch v2, byte for byte: encoding, validation and decoding.
//!
//! A batch is a 61-byte header followed by `records_count` varint-framed records. The CRC-32C
//! covers everything from `attributes` to the end, so the log can assign offsets by patching
//! `base_offset` (bytes 0..8) without recomputing it — the property that lets a fetch, in process
//! or over the wire, be a plain copy of segment bytes.
//!
//! Invariants kept here: [`validate`] accepts a batch only if its length field, magic and CRC
//! agree with its bytes; [`records`] never reads past the batch and reports malformed records as
//! errors, never panics.
//!
//! Compressed batches (Kafka's gzip, snappy, lz4, zstd; see [`crate::compression`]) are stored
//! as produced. [`decompressed`] turns one into the same batch uncompressed (a new buffer with
//! a valid CRC; an uncompressed batch comes back as itself, zero-copy), which is what
//! [`records`] and the record runs read; [`for_each_record`] takes only uncompressed batches.
//! [`BatchBuilder::with_compression`] writes compressed ones.

use crate::compression::{Compression, CompressionType};
use crate::error::{LogError, Result};
use crate::types::{Header, Record};
use bytes::Bytes;

pub const MAGIC: i8 = 2;
pub const HEADER_LEN: usize = 61;
/// Bytes of `base_offset` + `batch_length`: the part of the header not counted by `batch_length`.
pub const LOG_OVERHEAD: usize = 12;

const BATCH_LENGTH: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// The fixed header of a batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta.max(0) as u64
    }
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
    /// Written by a transactional producer (data or marker): readers with `read_committed`
    /// check such batches against the partition's aborted transactions.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
    /// The codec of the records section (an error for ids 5-7, which are not codecs).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidBatch`] for codec ids 5-7.
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_attributes(self.attributes)
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads only `base_offset` and the total size from the first 12 bytes, as a scan of a segment
/// does to step from batch to batch. `None` if fewer than 12 bytes are given.
pub fn peek_frame(b: &[u8]) -> Option<(i64, i64)> {
    if b.len() < LOG_OVERHEAD {
        return None;
    }
    let len = i32_at(b, BATCH_LENGTH) as i64;
    Some((i64_at(b, 0), len + LOG_OVERHEAD as i64))
}

/// Parses the header of the batch at the start of `b` without checking the CRC.
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for fewer bytes than a header, a magic other than 2, or a
/// length field out of range.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader> {
    if b.len() < HEADER_LEN {
        return Err(LogError::InvalidBatch(format!(
            "{} bytes is shorter than a batch header ({HEADER_LEN} bytes)",
            b.len()
        )));
    }
    let length = i32_at(b, BATCH_LENGTH);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(LogError::InvalidBatch(format!(
            "batch length {length} is smaller than the header"
        )));
    }
    let magic = b[MAGIC_AT] as i8;
    if magic != MAGIC {
        return Err(LogError::InvalidBatch(format!(
            "magic byte {magic}, expected {MAGIC} (only RecordBatch v2 is supported)"
        )));
    }
    let base_offset = i64_at(b, 0);
    if base_offset < 0 {
        return Err(LogError::InvalidBatch(format!(
            "negative base offset {base_offset}"
        )));
    }
    Ok(BatchHeader {
        base_offset: base_offset as u64,
        size: length as usize + LOG_OVERHEAD,
        attributes: i16_at(b, ATTRIBUTES),
        last_offset_delta: i32_at(b, LAST_OFFSET_DELTA),
        base_timestamp: i64_at(b, BASE_TIMESTAMP),
        max_timestamp: i64_at(b, MAX_TIMESTAMP),
        producer_id: i64_at(b, PRODUCER_ID),
        producer_epoch: i16_at(b, PRODUCER_EPOCH),
        base_sequence: i32_at(b, BASE_SEQUENCE),
        records_count: i32_at(b, RECORDS_COUNT),
    })
}

/// The bytes after the header of the batch `h` at the start of `b`; an error if `b` does not
/// hold all of it.
fn records_section<'a>(b: &'a [u8], h: &BatchHeader) -> Result<&'a [u8]> {
    b.get(HEADER_LEN..h.size).ok_or_else(|| {
        LogError::InvalidBatch(format!(
            "batch of {} bytes is cut short at {} bytes",
            h.size,
            b.len()
        ))
    })
}

/// Parses the header and checks that `b` holds the whole batch and that its CRC matches.
///
/// # Errors
///
/// As [`parse_header`], and [`LogError::InvalidBatch`] for a short batch or a CRC mismatch.
pub fn validate(b: &[u8]) -> Result<BatchHeader> {
    let h = parse_header(b)?;
    records_section(b, &h)?;
    let stored = u32::from_be_bytes(b[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&b[ATTRIBUTES..h.size]);
    if stored != computed {
        return Err(LogError::InvalidBatch(format!(
            "CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    if h.records_count < 0 || h.last_offset_delta < 0 {
        return Err(LogError::InvalidBatch(format!(
            "negative record count {} or last offset delta {}",
            h.records_count, h.last_offset_delta
        )));
    }
    Ok(h)
}

/// Overwrites the base offset of an encoded batch; the CRC does not cover it.
pub fn set_base_offset(b: &mut [u8], base_offset: u64) {
    b[..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
}

// ---- varints (zigzag, as Kafka's ByteUtils) ----

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes of `v` as a varint: one per started group of seven significant bits.
#[inline]
fn varint_len(v: i64) -> usize {
    let bits = 64 - (zigzag(v) | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Most varints of a record are one or two bytes: those are written without a loop.
#[inline]
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut u = zigzag(v);
    if u < 0x80 {
        buf.push(u as u8);
        return;
    }
    if u < 0x4000 {
        buf.extend_from_slice(&[(u as u8) | 0x80, (u >> 7) as u8]);
        return;
    }
    while u >= 0x80 {
        buf.push((u as u8) | 0x80);
        u >>= 7;
    }
    buf.push(u as u8);
}

/// A cursor over a batch's record section that turns every overrun into an error.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Most varints of a record are one to three bytes (attributes, deltas up to a batch of a
    /// million records, lengths under a megabyte): those take no loop.
    #[inline(always)]
    fn varint(&mut self) -> Result<i64> {
        let u = match self.b.get(self.pos..self.pos + 3) {
            Some(&[b0, _, _]) if b0 < 0x80 => {
                self.pos += 1;
                u64::from(b0)
            }
            Some(&[b0, b1, _]) if b1 < 0x80 => {
                self.pos += 2;
                u64::from(b0 & 0x7f) | (u64::from(b1) << 7)
            }
            Some(&[b0, b1, b2]) if b2 < 0x80 => {
                self.pos += 3;
                u64::from(b0 & 0x7f) | (u64::from(b1 & 0x7f) << 7) | (u64::from(b2) << 14)
            }
            _ => return self.long_varint(),
        };
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<i64> {
        let mut u: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or_else(|| self.short("varint"))?;
            self.pos += 1;
            u |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(((u >> 1) as i64) ^ -((u & 1) as i64));
            }
        }
        Err(LogError::InvalidBatch(format!(
            "varint longer than 10 bytes at byte {}",
            self.pos
        )))
    }

    #[inline(always)]
    fn take(&mut self, n: usize, what: &str) -> Result<std::ops::Range<usize>> {
        match self.pos.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let r = self.pos..end;
                self.pos = end;
                Ok(r)
            }
            None => Err(self.short(what)),
        }
    }

    /// A length-prefixed field where -1 means null.
    #[inline(always)]
    fn nullable(&mut self, what: &str) -> Result<Option<std::ops::Range<usize>>> {
        match self.varint()? {
            n if n >= 0 => self.take(n as usize, what).map(Some),
            -1 => Ok(None),
            n => Err(self.negative(what, n)),
        }
    }

    #[cold]
    #[inline(never)]
    fn negative(&self, what: &str, n: i64) -> LogError {
        LogError::InvalidBatch(format!("negative {what} length {n} at byte {}", self.pos))
    }

    #[cold]
    #[inline(never)]
    fn short(&self, what: &str) -> LogError {
        LogError::InvalidBatch(format!(
            "record data ends inside a {what} at byte {}",
            self.pos
        ))
    }
}

/// Where one record's parts lie in its batch (byte ranges from the batch's first byte), as
/// [`for_each_record`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<std::ops::Range<usize>>,
    pub value: Option<std::ops::Range<usize>>,
    /// The encoded headers (each a varint-framed UTF-8 key and a nullable value), checked.
    pub headers: std::ops::Range<usize>,
    pub header_count: usize,
}

/// Decodes the records of one validated batch: `batch` must hold exactly one whole batch; the
/// returned keys and values are zero-copy slices of it.
/// A compressed batch is decompressed first (the slices are then of the decompressed copy).
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a malformed record or a payload that does not decompress.
pub fn records(batch: &Bytes) -> Result<Vec<Record>> {
    let batch = &decompressed(batch)?;
    // Capacity is bounded by the bytes present, not by the (untrusted) count field.
    let count = parse_header(batch)?.records_count.max(0) as usize;
    let mut out = Vec::with_capacity(count.min(batch.len() / 7));
    for_each_record(batch, |r| {
        out.push(Record {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(|k| batch.slice(k)),
            value: r.value.map(|v| batch.slice(v)),
            headers: headers_of(batch, r.headers, r.header_count),
        })
    })?;
    Ok(out)
}

/// Walks the records of one uncompressed batch (as [`records`] takes it, after
/// [`decompressed`]), handing each one's place to `f`, in order. Every length, header key and
/// record frame is checked before `f` sees the record; a malformed record is an error and `f`
/// has then seen only the records before it.
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a compressed batch or a malformed record.
pub fn for_each_record(batch: &[u8], mut f: impl FnMut(RecordSpan)) -> Result<()> {
    let h = parse_header(batch)?;
    if h.attributes & COMPRESSION_MASK != 0 {
        // A bug of the caller, not bad data: record places are only meaningful in plain bytes.
        return Err(LogError::InvalidBatch(format!(
            "a {} batch must be decompressed before its records are walked",
            h.compression()?
        )));
    }
    let log_append_time = h.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0;
    let body = &batch[..h.size.min(batch.len())];
    let mut r = Reader {
        b: body,
        pos: HEADER_LEN,
    };
    for _ in 0..h.records_count {
        let len = r.varint()?;
        if len < 0 {
            return Err(LogError::InvalidBatch(format!(
                "negative record length {len}"
            )));
        }
        let end = r
            .pos
            .checked_add(len as usize)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| r.short("record"))?;
        r.take(1, "record attributes")?;
        let ts_delta = r.varint()?;
        let offset_delta = r.varint()?;
        let key = r.nullable("key")?;
        let value = r.nullable("value")?;
        let header_count = r.varint()?.max(0) as usize;
        let headers_start = r.pos;
        for _ in 0..header_count {
            let klen = r.varint()?;
            if klen < 0 {
                return Err(LogError::InvalidBatch("null header key".into()));
            }
            let k = r.take(klen as usize, "header key")?;
            std::str::from_utf8(&body[k])
                .map_err(|_| LogError::InvalidBatch("header key is not UTF-8".into()))?;
            r.nullable("header value")?;
        }
        if r.pos != end {
            return Err(LogError::InvalidBatch(format!(
                "record length says it ends at byte {end} but its fields end at {}",
                r.pos
            )));
        }
        f(RecordSpan {
            offset: h.base_offset + offset_delta as u64,
            timestamp: if log_append_time {
                h.max_timestamp
            } else {
                h.base_timestamp + ts_delta
            },
            key,
            value,
            headers: headers_start..r.pos,
            header_count,
        });
    }
    Ok(())
}

/// The headers [`for_each_record`] checked, one by one: `(key, value)` borrowed from `buf`.
pub fn header_fields(
    buf: &[u8],
    headers: std::ops::Range<usize>,
    count: usize,
) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
    let mut r = Reader {
        b: &buf[..headers.end],
        pos: headers.start,
    };
    (0..count).map_while(move |_| {
        let k = r.nullable("header key").ok()??;
        let v = r.nullable("header value").ok()?;
        let key = std::str::from_utf8(&r.b[k]).ok()?;
        Some((key, v.map(|v| &r.b[v])))
    })
}

/// The checked headers at `headers` as owned [`Header`]s (values are zero-copy slices).
pub fn headers_of(buf: &Bytes, headers: std::ops::Range<usize>, count: usize) -> Vec<Header> {
    if count == 0 {
        return Vec::new();
    }
    header_fields(buf, headers, count)
        .map(|(k, v)| Header {
            key: k.to_string(),
            value: v.map(|v| buf.slice_ref(v)),
        })
        .collect()
}

/// True if the batch at the start of `b` has a compressed records section.
pub fn is_compressed(b: &[u8]) -> bool {
    b.len() > ATTRIBUTES + 1 && i16_at(b, ATTRIBUTES) & COMPRESSION_MASK != 0
}

/// The batch at the start of `batch` with its records section decompressed: `batch` itself
/// (zero-copy) when it is not compressed, else a new buffer (see [`decompress_into`]).
///
/// # Errors
///
/// As [`decompress_into`].
pub fn decompressed(batch: &Bytes) -> Result<Bytes> {
    if !is_compressed(batch) {
        return Ok(batch.clone());
    }
    let mut out = Vec::new();
    decompress_into(batch, &mut out)?;
    Ok(Bytes::from(out))
}

/// Appends the batch at the start of `batch` to `out` with its records section
/// decompressed: the same header (codec bits cleared, length and CRC recomputed) and the
/// plain records; an uncompressed batch is copied. The error for a payload that does not
/// decompress says which codec and why; the caller adds the place. `out` is left as it was
/// on error.
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a bad header, an unknown codec, or a payload that does not
/// decode (or decodes past the size limit).
pub fn decompress_into(batch: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let h = parse_header(batch)?;
    let codec = h.compression()?;
    let payload = records_section(batch, &h)?;
    let start = out.len();
    out.reserve(HEADER_LEN + payload.len() * if codec == Compression::None { 1 } else { 4 });
    out.extend_from_slice(&batch[..HEADER_LEN]);
    if let Err(reason) = codec.decompress(payload, out) {
        out.truncate(start);
        return Err(LogError::InvalidBatch(format!(
            "its {codec} payload does not decompress: {reason}"
        )));
    }
    if codec != Compression::None {
        let plain = &mut out[start..];
        let attributes = h.attributes & !COMPRESSION_MASK;
        plain[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        seal(plain);
    }
    Ok(())
}

/// The uncompressed, whole batch `batch` with its records section compressed by `codec`
/// (a copy of it for [`Compression::None`]): header fields kept, length and CRC recomputed.
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a bad header or a batch already compressed.
pub fn compressed(batch: &[u8], codec: Compression) -> Result<Vec<u8>> {
    let h = parse_header(batch)?;
    if h.attributes & COMPRESSION_MASK != 0 {
        return Err(LogError::InvalidBatch(format!(
            "the batch is already {}-compressed",
            h.compression()?
        )));
    }
    let records = records_section(batch, &h)?;
    let mut out = Vec::with_capacity(h.size);
    out.extend_from_slice(&batch[..HEADER_LEN]);
    codec.compress(records, &mut out);
    let attributes = (h.attributes & !COMPRESSION_MASK) | codec.id();
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    seal(&mut out);
    Ok(out)
}

/// The whole batch `b` as a topic with `compression.type` `topic` stores it: `b` itself when
/// that is `producer` or `b`'s codec already; else, once its CRC is checked (the append would
/// only check the new one), decompressed and compressed with the topic's codec, as Kafka's
/// broker does. Header fields (producer id, sequence, timestamps) are kept.
///
/// # Errors
///
/// [`LogError::InvalidBatch`] for a bad header, a CRC mismatch (checked before
/// recompressing) or a payload that does not decompress.
pub fn as_topic_stores(b: Bytes, topic: CompressionType) -> Result<Bytes> {
    let produced = parse_header(&b)?.compression()?;
    let codec = topic.stored(produced);
    if codec == produced {
        return Ok(b);
    }
    validate(&b)?;
    compressed(&decompressed(&b)?, codec).map(Bytes::from)
}

/// Writes the length field of the batch that is exactly `b`.
fn set_length(b: &mut [u8]) {
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes the length field and the CRC of the batch that is exactly `b` (after its header
/// fields were changed). Its length must fit an i32: batches are built under `batch.size`,
/// and decompressed ones under 1 GiB.
pub fn seal(b: &mut [u8]) {
    set_length(b);
    let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a buffer of consecutive whole batches into one `Bytes` per batch (zero-copy).
/// Trailing bytes that do not make a whole batch are ignored.
pub fn split_batches(buf: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let (_, size) = peek_frame(&buf[pos..])?;
        let size = usize::try_from(size).ok()?;
        if size < HEADER_LEN || pos + size > buf.len() {
            return None;
        }
        let b = buf.slice(pos..pos + size);
        pos += size;
        Some(b)
    })
}

/// Encodes records into one batch. Offsets are relative (0, 1, ...) and the base offset is 0
/// until the log assigns the real one with [`set_base_offset`].
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    /// Offset delta of the next record; usually `count`, but compaction keeps original deltas.
    next_delta: i32,
    last_delta: i32,
    /// The codec [`finish`](Self::finish) compresses the records with.
    compression: Compression,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            base_timestamp: i64::MIN,
            max_timestamp: i64::MIN,
            count: 0,
            next_delta: 0,
            last_delta: -1,
            compression: Compression::None,
        }
    }

    /// The same builder, finishing into a batch compressed with `codec`. Records are
    /// encoded plain as they come and compressed once, when the batch is finished (so
    /// [`size_bytes`](Self::size_bytes) counts uncompressed bytes, as `batch.size` does here).
    pub fn with_compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn len(&self) -> usize {
        self.count as usize
    }
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record with these fields adds to a batch, for size-based batching decisions.
    pub fn estimate(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
        let h: usize = headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10)
            .sum();
        key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()) + h + 21
    }

    /// Appends a record with the next offset delta.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let delta = self.next_delta;
        self.push_with_delta(delta, timestamp, key, value, headers);
    }

    /// Appends a record with an explicit offset delta, strictly greater than the previous one
    /// (compaction keeps the original offsets, leaving gaps).
    pub fn push_with_delta(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        debug_assert!(
            offset_delta > self.last_delta,
            "offset deltas must increase"
        );
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - self.base_timestamp;
        let nullable_len = |f: Option<&[u8]>| match f {
            Some(b) => varint_len(b.len() as i64) + b.len(),
            None => 1,
        };
        let mut body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta as i64)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(headers.len() as i64);
        for h in headers {
            body += varint_len(h.key.len() as i64) + h.key.len() + nullable_len(h.value.as_deref());
        }
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varint(buf, body as i64);
        buf.push(0);
        put_varint(buf, ts_delta);
        put_varint(buf, offset_delta as i64);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as i64);
        for h in headers {
            put_varint(buf, h.key.len() as i64);
            buf.extend_from_slice(h.key.as_bytes());
            put_nullable(buf, h.value.as_deref());
        }
        self.count += 1;
        self.last_delta = offset_delta;
        self.next_delta = offset_delta + 1;
    }

    /// Finishes the batch: fills the header and the CRC. Producer id, epoch and sequence are
    /// -1 (no idempotence); see [`finish_idempotent`](Self::finish_idempotent).
    pub fn finish(self) -> Vec<u8> {
        let last = self.last_delta;
        self.finish_as(last, -1, -1, -1, 0)
    }

    /// Like [`finish`](Self::finish), for an idempotent producer: the batch carries its
    /// producer id, epoch and base sequence (covered by the CRC, so they are set here rather
    /// than patched afterwards at the cost of a second CRC pass).
    pub fn finish_idempotent(self, producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
        let last = self.last_delta;
        self.finish_as(last, producer_id, epoch, base_sequence, 0)
    }

    /// A batch cut from the batch `h` describes (compaction): the same offset range,
    /// producer id, epoch, base sequence and transactional flag.
    pub fn finish_like(self, h: &BatchHeader) -> Vec<u8> {
        let flags = h.attributes & (TRANSACTIONAL_FLAG | CONTROL_FLAG);
        let (pid, epoch, seq) = (h.producer_id, h.producer_epoch, h.base_sequence);
        self.finish_as(h.last_offset_delta, pid, epoch, seq, flags)
    }

    /// Like [`finish_idempotent`](Self::finish_idempotent), for a transactional producer:
    /// the batch is marked transactional, so it stays invisible to `read_committed` readers
    /// until its transaction's commit marker, and is skipped by them if the transaction aborts.
    pub fn finish_transactional(self, producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
        let last = self.last_delta;
        self.finish_as(last, producer_id, epoch, base_sequence, TRANSACTIONAL_FLAG)
    }

    /// A control batch (a transaction marker: see [`crate::txn::marker`]) of the records
    /// pushed, for `producer_id` at `epoch`: transactional and control, no sequence.
    pub fn finish_control(self, producer_id: i64, epoch: i16) -> Vec<u8> {
        let last = self.last_delta;
        self.finish_as(
            last,
            producer_id,
            epoch,
            -1,
            TRANSACTIONAL_FLAG | CONTROL_FLAG,
        )
    }

    fn finish_as(
        mut self,
        last_offset_delta: i32,
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        attributes: i16,
    ) -> Vec<u8> {
        let b = &mut self.buf;
        let (base_ts, max_ts) = if self.count == 0 {
            (-1, -1)
        } else {
            (self.base_timestamp, self.max_timestamp)
        };
        b[..8].copy_from_slice(&0i64.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b[MAGIC_AT] = MAGIC as u8;
        b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&last_offset_delta.max(0).to_be_bytes());
        b[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_ts.to_be_bytes());
        b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_be_bytes());
        b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
        b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
        b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&self.count.to_be_bytes());
        if self.compression == Compression::None {
            seal(b);
            return self.buf;
        }
        // `compressed` computes the CRC, over the compressed bytes.
        set_length(b);
        compressed(&self.buf, self.compression).expect("a batch just built is whole and plain")
    }
}

fn put_nullable(buf: &mut Vec<u8>, f: Option<&[u8]>) {
    match f {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type TestRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn build(recs: &[TestRecord]) -> Bytes {
        let mut b = BatchBuilder::new(1024);
        for (ts, k, v) in recs {
            b.push(
                *ts,
                k.as_deref(),
                v.as_deref(),
                &[Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"x")),
                }],
            );
        }
        Bytes::from(b.finish())
    }

    #[test]
    fn header_layout_matches_kafka() {
        let b = build(&[(1000, Some(b"k".to_vec()), Some(b"v".to_vec()))]);
        let h = validate(&b).unwrap();
        assert_eq!(h.size, b.len());
        assert_eq!(h.records_count, 1);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.producer_id, -1);
        assert_eq!(b[16], 2, "magic at byte 16");
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let b = build(&[(1, None, Some(b"hello".to_vec()))]);
        let mut v = b.to_vec();
        let last = v.len() - 2;
        v[last] ^= 0x40;
        assert!(validate(&v).is_err());
    }

    #[test]
    fn base_offset_patch_keeps_crc_valid() {
        let mut v = build(&[(1, None, Some(b"a".to_vec()))]).to_vec();
        set_base_offset(&mut v, 77);
        let h = validate(&v).unwrap();
        assert_eq!(h.base_offset, 77);
        assert_eq!(records(&Bytes::from(v)).unwrap()[0].offset, 77);
    }

    /// Each codec's batch validates, keeps its header fields, reads back the same records,
    /// and decompresses into a valid plain batch equal to the one built without a codec.
    #[test]
    fn compressed_batches_read_back() {
        let build_with = |codec| {
            let mut b = BatchBuilder::new(1024).with_compression(codec);
            for i in 0..500u32 {
                let v = format!("{{\"id\":{i},\"region\":\"r{}\"}}", i % 7);
                b.push(
                    1000 + i as i64,
                    Some(&i.to_be_bytes()),
                    Some(v.as_bytes()),
                    &[],
                );
            }
            Bytes::from(b.finish_idempotent(42, 3, 17))
        };
        let plain = build_with(Compression::None);
        for codec in crate::compression::CODECS {
            let b = build_with(codec);
            let h = validate(&b).unwrap();
            assert_eq!(h.compression().unwrap(), codec);
            assert_eq!(
                (h.producer_id, h.base_sequence, h.records_count),
                (42, 17, 500)
            );
            if codec != Compression::None {
                assert!(b.len() < plain.len() / 2, "{codec}: {} bytes", b.len());
            }
            assert_eq!(records(&b).unwrap(), records(&plain).unwrap(), "{codec}");
            let d = decompressed(&b).unwrap();
            assert_eq!(
                validate(&d).unwrap().compression().unwrap(),
                Compression::None
            );
            assert_eq!(d, plain, "{codec}");
            assert_eq!(compressed(&plain, codec).unwrap(), b.to_vec(), "{codec}");
        }
    }

    /// A topic with a codec stores a batch produced with another one recompressed, keeping
    /// its records and producer fields; `producer` keeps it as it is.
    #[test]
    fn a_topic_codec_recompresses() {
        let mut b = BatchBuilder::new(1024).with_compression(Compression::Gzip);
        for i in 0..100u32 {
            b.push(5, None, Some(format!("value {i}").as_bytes()), &[]);
        }
        let gzip = Bytes::from(b.finish_idempotent(7, 0, 3));
        let kept = as_topic_stores(gzip.clone(), CompressionType::Producer).unwrap();
        assert_eq!(kept, gzip);
        let same = as_topic_stores(gzip.clone(), CompressionType::Gzip).unwrap();
        assert_eq!(same, gzip);
        for (topic, codec) in [
            (CompressionType::Zstd, Compression::Zstd),
            (CompressionType::Uncompressed, Compression::None),
        ] {
            let stored = as_topic_stores(gzip.clone(), topic).unwrap();
            let h = validate(&stored).unwrap();
            assert_eq!(
                (h.compression().unwrap(), h.producer_id, h.base_sequence),
                (codec, 7, 3)
            );
            assert_eq!(records(&stored).unwrap(), records(&gzip).unwrap());
        }
        let mut bad = gzip.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(as_topic_stores(Bytes::from(bad), CompressionType::Zstd).is_err());
    }

    /// A payload that does not decompress, with the CRC fixed up so only the codec can
    /// notice, is an error naming the codec, for every codec.
    #[test]
    fn corrupt_payload_is_an_error() {
        for codec in crate::compression::CODECS.into_iter().skip(1) {
            let mut b = BatchBuilder::new(1024).with_compression(codec);
            b.push(1, None, Some(&b"abcdefgh".repeat(100)), &[]);
            let mut v = b.finish();
            for x in &mut v[HEADER_LEN + 4..] {
                *x ^= 0x5a;
            }
            seal(&mut v);
            validate(&v).unwrap();
            let err = records(&Bytes::from(v)).unwrap_err().to_string();
            assert!(err.contains(&format!("{codec} payload")), "{err}");
        }
    }

    proptest! {
        #[test]
        fn roundtrip(recs in prop::collection::vec(
            (0i64..1_000_000_000_000,
             prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
             prop::option::of(prop::collection::vec(any::<u8>(), 0..300))), 1..30)) {
            let b = build(&recs);
            validate(&b).unwrap();
            let out = records(&b).unwrap();
            prop_assert_eq!(out.len(), recs.len());
            for (i, (r, (ts, k, v))) in out.iter().zip(&recs).enumerate() {
                prop_assert_eq!(r.offset, i as u64);
                prop_assert_eq!(r.timestamp, *ts);
                prop_assert_eq!(r.key.as_deref(), k.as_deref());
                prop_assert_eq!(r.value.as_deref(), v.as_deref());
            }
        }

        /// Every i64 is written in `varint_len` bytes and reads back as itself, whatever
        /// follows it (the short forms are read from a three-byte look where there is one).
        #[test]
        fn varints_roundtrip(
            v in prop_oneof![any::<i64>(), -20_000i64..20_000, -2_000_000i64..2_000_000],
            after in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            let len = buf.len();
            buf.extend_from_slice(&after);
            let mut r = Reader { b: &buf, pos: 0 };
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert_eq!(r.pos, len);
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(data);
            let _ = validate(&b);
            let _ = records(&b);
            let _ = split_batches(&b).count();
        }
    }
}
