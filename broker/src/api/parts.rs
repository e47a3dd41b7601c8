//! A response encoded in parts, so that a Fetch answer's record batches go to the socket
//! straight from the segment files (`sendfile`), never read into the broker's memory.
//!
//! Contract: the parts, written one after the other (a [`Part::File`] as the bytes of its file
//! range), are exactly the bytes kafka-protocol's encoder writes into one buffer when each
//! partition's records are the bytes of its range. The encoder needs a `Bytes` of the right
//! length for each partition's records: [`FileRecords`] hands out a *placeholder* (a slice of
//! read-only address space that is never read), and the writer, recognising a placeholder's
//! address and length in a slice the encoder writes, emits the file range as a part of its own
//! instead of copying. Ranges below [`FILE_PART_MIN_LEN`] are read into memory and copied as any
//! other bytes. Message encoders only append (seeking back is done by record-batch encoders,
//! not used here), so `seek` and `range` work within the part being written and panic outside it.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use runnel_log::FileRange;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Ranges shorter than this are read and copied into the response rather than sent as a part
/// of their own (the threshold the earlier in-memory path used for sharing; not measured for
/// `sendfile`).
const FILE_PART_MIN_LEN: usize = 1024;

/// Address space reserved for placeholders, enough for any one Fetch answer clients ask for
/// (Kafka's `fetch.max.bytes` is 50 MiB by default); an answer that needs more reads the rest
/// into memory.
const PLACEHOLDER_SPACE: usize = 1 << 30;

/// One part of a response.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    Bytes(Bytes),
    /// Record batches sent from their segment file.
    File(FileRange),
}

impl Part {
    pub(crate) fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::File(r) => r.len as usize,
        }
    }
}

/// Sends `range` of its file to `socket` with `sendfile(2)`: the kernel copies the page cache
/// into the socket; nothing passes through the broker's memory. A file read that misses the
/// page cache blocks this worker thread on the disk, as Kafka's network threads do.
pub(crate) async fn send_file(socket: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    let end = range.position + range.len;
    let mut at = range.position as libc::off_t;
    while (at as u64) < end {
        socket.writable().await?;
        let left = ((end - at as u64) as usize).min(1 << 30);
        let sent = socket.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (the socket and the `Arc<File>`
            // are borrowed), and `at` is a valid off_t the kernel advances.
            let n = unsafe {
                libc::sendfile(socket.as_raw_fd(), range.file.as_raw_fd(), &mut at, left)
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                // The response's framing promised these bytes: the connection cannot go on.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ends before the range being sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read-only, never-touched address space (no memory behind it): `None` if it cannot be had.
fn placeholder_space() -> Option<&'static [u8]> {
    static SPACE: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *SPACE.get_or_init(|| {
        // SAFETY: a fresh private anonymous mapping; it is never unmapped, so the slice over it
        // lives as long as the process. Its pages read as zeros should anything touch them.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PLACEHOLDER_SPACE,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::warn!(
                "cannot reserve address space for sending fetched records from files; they are read into memory"
            );
            return None;
        }
        // SAFETY: `p` is a readable mapping of PLACEHOLDER_SPACE bytes that is never unmapped.
        Some(unsafe { std::slice::from_raw_parts(p as *const u8, PLACEHOLDER_SPACE) })
    })
}

/// The record bytes of one Fetch answer's partitions, as placeholders for file ranges where
/// the range is large enough, else as bytes read from the file.
#[derive(Default)]
pub(crate) struct FileRecords {
    used: usize,
    ranges: Vec<(Bytes, FileRange)>,
}

impl FileRecords {
    /// The `records` value to put in a partition's answer for `range`.
    pub(crate) fn records(&mut self, range: FileRange) -> runnel_log::Result<Bytes> {
        let len = range.len as usize;
        let space = placeholder_space().filter(|s| self.used + len <= s.len());
        match space {
            Some(space) if len >= FILE_PART_MIN_LEN => {
                let placeholder = Bytes::from_static(&space[self.used..self.used + len]);
                self.used += len;
                self.ranges.push((placeholder.clone(), range));
                Ok(placeholder)
            }
            _ => range.read(),
        }
    }
}

pub(crate) struct PartsWriter {
    parts: Vec<Part>,
    current: BytesMut,
    before_current: usize,
    files: Vec<(Bytes, FileRange)>,
}

impl PartsWriter {
    pub(crate) fn new(capacity: usize, files: FileRecords) -> Self {
        Self {
            parts: Vec::new(),
            current: BytesMut::with_capacity(capacity),
            before_current: 0,
            files: files.ranges,
        }
    }

    pub(crate) fn into_parts(mut self) -> Vec<Part> {
        if !self.current.is_empty() {
            self.parts.push(Part::Bytes(self.current.freeze()));
        }
        self.parts
    }
}

// SAFETY: every method that hands out or advances over uninitialised memory delegates to
// `current`, a `BytesMut`, whose own implementation upholds `BufMut`'s contract.
unsafe impl BufMut for PartsWriter {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `current`'s chunk, as it promises.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let file = (src.len() >= FILE_PART_MIN_LEN)
            .then(|| {
                self.files
                    .iter()
                    .find(|(b, _)| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            })
            .flatten();
        match file {
            Some((_, range)) => {
                if !self.current.is_empty() {
                    self.before_current += self.current.len();
                    self.parts.push(Part::Bytes(self.current.split().freeze()));
                }
                self.before_current += src.len();
                self.parts.push(Part::File(range.clone()));
            }
            None => self.current.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for PartsWriter {
    fn offset(&self) -> usize {
        self.before_current + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        let within = offset
            .checked_sub(self.before_current)
            .expect("message encoders do not seek back into a finished part");
        self.current.resize(within, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let b = self.before_current;
        &mut self.current[r.start - b..r.end - b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::Encodable;
    use std::io::Write;
    use std::sync::Arc;

    /// The parts of a Fetch response, with each file range's bytes in its place, are the bytes
    /// of the one-buffer encoding of the same records; large ranges became file parts.
    #[test]
    fn parts_join_to_the_single_buffer_encoding() {
        let mut file = tempfile::tempfile().unwrap();
        let contents: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&contents).unwrap();
        let file = Arc::new(file);
        // Two large ranges, one small one (read into memory), one empty partition.
        let ranges = [(100u64, 5000u64), (7000, 9000), (17_000, 10)];
        for version in [4, 11, 12] {
            let mut files = FileRecords::default();
            let mut expected = Vec::new();
            let mut placed = Vec::new();
            for (i, &(position, len)) in ranges.iter().enumerate() {
                let range = FileRange {
                    file: file.clone(),
                    path: "test".into(),
                    position,
                    len,
                };
                let bytes = &contents[position as usize..(position + len) as usize];
                expected.push(Bytes::copy_from_slice(bytes));
                placed.push((i, files.records(range).unwrap()));
            }
            expected.push(Bytes::new());
            placed.push((ranges.len(), Bytes::new()));
            let response = |records: Vec<(usize, Bytes)>| {
                let partitions = records
                    .into_iter()
                    .map(|(i, r)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_records(Some(r))
                    })
                    .collect();
                FetchResponse::default().with_responses(vec![
                    FetchableTopicResponse::default().with_partitions(partitions),
                ])
            };
            let mut one = BytesMut::new();
            response(expected.into_iter().enumerate().collect())
                .encode(&mut one, version)
                .unwrap();
            let mut w = PartsWriter::new(64, files);
            response(placed).encode(&mut w, version).unwrap();
            let parts = w.into_parts();
            let files_sent = parts.iter().filter(|p| matches!(p, Part::File(_))).count();
            assert_eq!(files_sent, 2, "v{version}");
            let joined: Vec<u8> = parts
                .iter()
                .flat_map(|p| match p {
                    Part::Bytes(b) => b.to_vec(),
                    Part::File(r) => r.read().unwrap().to_vec(),
                })
                .collect();
            assert_eq!(joined, one.to_vec(), "v{version}");
        }
    }
}
