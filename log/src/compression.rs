//! Kafka's record-batch compression codecs: gzip, snappy, lz4 and zstd.
//!
//! In a RecordBatch v2 the 61-byte header stays plain and everything after it (the records) is
//! one compressed stream; the codec is in the low three bits of `attributes`. The formats are
//! the ones Kafka's own clients write and read:
//!
//! - gzip: a gzip stream (several members are read as one, as Java's `GZIPInputStream` does);
//!   written at level 6, the JDK's and librdkafka's default.
//! - snappy: the xerial framing Kafka's Java client writes (a 16-byte header, then blocks of
//!   at most 32 KiB, each a 4-byte big-endian length and a raw snappy block). Raw snappy
//!   without that framing, which librdkafka writes, is read too.
//! - lz4: the LZ4 frame format with independent 64 KiB blocks (Kafka's
//!   `KafkaLZ4BlockOutputStream`; for v2 batches its header checksum is the standard one).
//! - zstd: a zstd frame, written at level 3 (Kafka's default).
//!
//! Contract: [`Compression::decompress`] never panics on bad input and never allocates more
//! than [`MAX_DECOMPRESSED`] bytes (a tiny payload that expands to gigabytes is an error, not
//! an out-of-memory kill); its errors are plain strings that the batch layer wraps with the
//! batch's place. Codec crates: pure Rust for gzip (`flate2` on `miniz_oxide`), snappy (`snap`)
//! and lz4 (`lz4_flex`, which the build already has through Arrow); zstd is the reference C
//! library through the `zstd` crate, also already built for Arrow's IPC, and 5-9x faster than
//! the pure-Rust `ruzstd` (see BENCHMARKS.md).

use crate::error::{LogError, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The largest records section a compressed batch may expand to.
pub const MAX_DECOMPRESSED: usize = 1 << 30;

/// The codec of one batch: Kafka's `compression.type` of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The codecs with their Kafka names, in attribute-id order.
pub const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

impl Compression {
    /// The codec id in a batch's `attributes` (bits 0-2).
    pub fn id(self) -> i16 {
        self as i16
    }

    /// The codec of a batch with these `attributes`; ids 5-7 are not codecs.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidBatch`] naming the id for 5-7.
    pub fn from_attributes(attributes: i16) -> Result<Self> {
        CODECS
            .get((attributes & 0x07) as usize)
            .copied()
            .ok_or_else(|| {
                LogError::InvalidBatch(format!(
                    "unknown compression codec id {} in the batch attributes",
                    attributes & 0x07
                ))
            })
    }

    /// Kafka's name: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Appends `input`, compressed, to `out`. `None` copies it.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and the encoders fail only on their writer's errors.
        const INFALLIBLE: &str = "compressing into memory";
        match self {
            Self::None => out.extend_from_slice(input),
            Self::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
                e.write_all(input).expect(INFALLIBLE);
                e.finish().expect(INFALLIBLE);
            }
            Self::Snappy => xerial_snappy(input, out),
            Self::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                e.write_all(input).expect(INFALLIBLE);
                e.finish().expect(INFALLIBLE);
            }
            Self::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, 3).expect(INFALLIBLE);
                e.write_all(input).expect(INFALLIBLE);
                e.finish().expect(INFALLIBLE);
            }
        }
    }

    /// Appends the decompressed `input` to `out`; a payload that does not decode, or decodes
    /// to more than [`MAX_DECOMPRESSED`] bytes, is an error saying why.
    ///
    /// # Errors
    ///
    /// A message naming the codec and the cause; `out` keeps what it held before the call.
    pub fn decompress(self, input: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
        self.decompress_at_most(input, out, MAX_DECOMPRESSED)
    }

    fn decompress_at_most(
        self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> std::result::Result<(), String> {
        match self {
            Self::None if input.len() > limit => Err(too_large(limit)),
            Self::None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Self::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), out, limit),
            Self::Snappy => unsnappy(input, out, limit),
            Self::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), out, limit),
            Self::Zstd => unzstd(input, out, limit),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self> {
        CODECS
            .into_iter()
            .find(|c| c.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                LogError::InvalidConfig(format!(
                    "compression {s:?} is not one of none, gzip, snappy, lz4, zstd"
                ))
            })
    }
}

/// A topic's `compression.type`: `producer` keeps each batch as its producer compressed it;
/// a codec (or `uncompressed`) makes the log store every batch that way, recompressing the
/// ones produced otherwise, as Kafka's broker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    #[default]
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    /// The codec a batch produced with `produced` is stored with.
    pub fn stored(self, produced: Compression) -> Compression {
        match self {
            Self::Producer => produced,
            Self::Uncompressed => Compression::None,
            Self::Gzip => Compression::Gzip,
            Self::Snappy => Compression::Snappy,
            Self::Lz4 => Compression::Lz4,
            Self::Zstd => Compression::Zstd,
        }
    }

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Uncompressed => "uncompressed",
            other => other.stored(Compression::None).name(),
        }
    }
}

impl std::fmt::Display for CompressionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CompressionType {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "producer" => Ok(Self::Producer),
            "uncompressed" | "none" => Ok(Self::Uncompressed),
            other => match other.parse::<Compression>() {
                Ok(Compression::Gzip) => Ok(Self::Gzip),
                Ok(Compression::Snappy) => Ok(Self::Snappy),
                Ok(Compression::Lz4) => Ok(Self::Lz4),
                Ok(Compression::Zstd) => Ok(Self::Zstd),
                _ => Err(LogError::InvalidConfig(format!(
                    "compression.type {s:?} is not one of producer, uncompressed, gzip, snappy, lz4, zstd"
                ))),
            },
        }
    }
}

/// Reads `r` to its end into `out`, refusing to add more than `limit` bytes.
fn read_bounded(r: impl Read, out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    let start = out.len();
    r.take(limit as u64 + 1)
        .read_to_end(out)
        .map_err(|e| e.to_string())?;
    if out.len() - start > limit {
        out.truncate(start);
        return Err(too_large(limit));
    }
    Ok(())
}

thread_local! {
    /// This thread's zstd decompression context, reused: a context made per batch allocated
    /// (and page-faulted) its window of up to megabytes for every batch.
    static ZSTD_CONTEXT: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// Appends the zstd frames of `input`, decompressed, to `out`, straight into its spare
/// capacity (neither zeroed first nor copied from a stream's buffer).
fn unzstd(input: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    use zstd::zstd_safe::{InBuffer, OutBuffer, ResetDirective, get_error_name};
    if input.is_empty() {
        return Ok(());
    }
    let start = out.len();
    let result = ZSTD_CONTEXT.with_borrow_mut(|ctx| {
        // A frame an earlier call left unfinished (an error) must not run into this one.
        ctx.reset(ResetDirective::SessionOnly)
            .map_err(|c| get_error_name(c).to_string())?;
        let mut input = InBuffer::around(input);
        loop {
            if out.len() == out.capacity() {
                // Kafka's batches are about a megabyte and JSON compresses about 4x.
                out.reserve((input.src.len() * 4).clamp(64 << 10, 16 << 20));
            }
            let mut output = OutBuffer::around_pos(out, out.len());
            let hint = ctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|c| get_error_name(c).to_string())?;
            let room_left = output.pos() < output.capacity();
            let input_done = input.pos() == input.src.len();
            match (hint, input_done) {
                (0, true) => break,
                (_, true) if room_left => {
                    return Err("the payload ends inside a zstd frame".to_string());
                }
                _ if out.len() - start > limit => return Err(too_large(limit)),
                _ => {}
            }
        }
        Ok(())
    });
    if result.is_ok() && out.len() - start > limit {
        out.truncate(start);
        return Err(too_large(limit));
    }
    result.inspect_err(|_| out.truncate(start))
}

#[cold]
fn too_large(limit: usize) -> String {
    format!("it expands to more than {limit} bytes")
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, then version 1 and compatible version 1 (big-endian i32s).
const XERIAL_HEADER_LEN: usize = 16;
/// The uncompressed size of one xerial block, as `SnappyOutputStream` writes by default.
const XERIAL_BLOCK: usize = 32 * 1024;

fn xerial_snappy(input: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut enc = snap::raw::Encoder::new();
    for chunk in input.chunks(XERIAL_BLOCK) {
        let at = out.len();
        out.resize(at + 4 + snap::raw::max_compress_len(chunk.len()), 0);
        let n = enc
            .compress(chunk, &mut out[at + 4..])
            .expect("the buffer has max_compress_len bytes");
        out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        out.truncate(at + 4 + n);
    }
}

fn unsnappy(input: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    let start = out.len();
    if !input.starts_with(&XERIAL_MAGIC) {
        return unsnappy_block(input, out, start + limit);
    }
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .ok_or("the xerial snappy header is cut short")?;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize)
            .ok_or("a xerial snappy block length is cut short")?;
        let block = rest
            .get(4..4 + len)
            .ok_or("a xerial snappy block is cut short")?;
        unsnappy_block(block, out, start + limit)?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

/// Decodes one raw snappy block onto `out`, which may grow to `max_len` bytes.
fn unsnappy_block(
    block: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
) -> std::result::Result<(), String> {
    let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if out.len() + n > max_len {
        return Err(too_large(max_len));
    }
    let at = out.len();
    out.resize(at + n, 0);
    match snap::raw::Decoder::new().decompress(block, &mut out[at..]) {
        Ok(written) => {
            out.truncate(at + written);
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every codec gives back what it was given, whatever its size (xerial blocks
        /// and lz4's 64 KiB blocks are crossed by the larger inputs).
        #[test]
        fn every_codec_round_trips(
            data in prop::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..100_000),
        ) {
            for c in CODECS {
                let mut packed = Vec::new();
                c.compress(&data, &mut packed);
                let mut back = b"kept".to_vec();
                c.decompress(&packed, &mut back).unwrap();
                prop_assert_eq!(&back[..4], b"kept");
                prop_assert_eq!(&back[4..], &data[..]);
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            for c in CODECS {
                let _ = c.decompress(&data, &mut Vec::new());
            }
        }
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it_is_read() {
        let data = b"librdkafka writes snappy without the xerial framing ".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut out = Vec::new();
        Compression::Snappy.decompress(&raw, &mut out).unwrap();
        assert_eq!(out, data);
    }

    /// A payload that expands past the limit is refused by every codec (1 MiB of zeros
    /// against a 64 KiB limit, so the test stays small; the real limit is 1 GiB).
    #[test]
    fn a_bomb_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        for c in CODECS {
            let mut packed = Vec::new();
            c.compress(&zeros, &mut packed);
            let mut out = b"kept".to_vec();
            let err = c
                .decompress_at_most(&packed, &mut out, 64 << 10)
                .unwrap_err();
            assert!(err.contains("expands to more than"), "{c}: {err}");
            assert!(
                out.len() <= 4 + (64 << 10) + 1,
                "{c} kept {} bytes",
                out.len()
            );
        }
    }

    /// A payload cut short is an error; a zstd payload of two frames (as a client may write)
    /// reads as their concatenation.
    #[test]
    fn a_cut_payload_is_an_error_and_frames_concatenate() {
        let data = b"{\"driver\":17,\"lat\":52.52,\"lon\":13.40} ".repeat(4000);
        for c in CODECS.into_iter().filter(|&c| c != Compression::None) {
            let mut packed = Vec::new();
            c.compress(&data, &mut packed);
            let cut = c.decompress(&packed[..packed.len() / 2], &mut Vec::new());
            assert!(cut.is_err(), "{c} read a payload cut in half");
        }
        let mut two = Vec::new();
        Compression::Zstd.compress(&data[..1000], &mut two);
        Compression::Zstd.compress(&data[1000..], &mut two);
        let mut out = Vec::new();
        Compression::Zstd.decompress(&two, &mut out).unwrap();
        assert!(
            out == data,
            "{} bytes, not the {} written",
            out.len(),
            data.len()
        );
    }

    #[test]
    fn names_parse_back() {
        for c in CODECS {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_attributes(c.id() | 0x08).unwrap(), c);
        }
        assert!(Compression::from_attributes(6).is_err());
        assert_eq!(
            "producer".parse::<CompressionType>().unwrap(),
            CompressionType::Producer
        );
        assert_eq!(
            "zstd"
                .parse::<CompressionType>()
                .unwrap()
                .stored(Compression::Gzip),
            Compression::Zstd
        );
        assert!("brotli".parse::<CompressionType>().is_err());
    }
}
