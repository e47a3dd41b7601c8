//! A response encoded in parts, so that a Fetch answer's record batches go to the socket from
//! the buffers the segment files were read into, instead of being copied into the response
//! first (a copy of every byte a consumer reads).
//!
//! Contract: the parts, written one after the other, are exactly the bytes kafka-protocol's
//! encoder writes into one buffer. A slice the encoder writes that *is* one of the `shared`
//! buffers (same memory, same length) becomes a part of its own by reference; everything else
//! is copied into the part being written. Message encoders only append (seeking back is done by
//! record-batch encoders, not used here), so `seek` and `range` work within the part being
//! written and panic outside it.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use std::ops::Range;

/// Slices shorter than this are copied without looking for them among the shared buffers.
const SHARED_MIN_LEN: usize = 1024;

pub(crate) struct PartsWriter {
    parts: Vec<Bytes>,
    current: BytesMut,
    before_current: usize,
    shared: Vec<Bytes>,
}

impl PartsWriter {
    pub(crate) fn new(capacity: usize, shared: Vec<Bytes>) -> Self {
        Self {
            parts: Vec::new(),
            current: BytesMut::with_capacity(capacity),
            before_current: 0,
            shared,
        }
    }

    pub(crate) fn into_parts(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.parts.push(self.current.freeze());
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
        let shared = (src.len() >= SHARED_MIN_LEN)
            .then(|| {
                self.shared
                    .iter()
                    .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            })
            .flatten();
        match shared.cloned() {
            Some(part) => {
                if !self.current.is_empty() {
                    self.before_current += self.current.len();
                    self.parts.push(self.current.split().freeze());
                }
                self.before_current += part.len();
                self.parts.push(part);
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

    /// The parts of a Fetch response, joined, are the bytes of the one-buffer encoding, and
    /// the records were not copied.
    #[test]
    fn parts_join_to_the_single_buffer_encoding() {
        let records: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 5000])).collect();
        let small = Bytes::from(vec![9u8; 10]);
        let partitions = records
            .iter()
            .chain([&small])
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions),
        ]);
        for version in [4, 11, 12] {
            let mut one = BytesMut::new();
            response.encode(&mut one, version).unwrap();
            let mut w = PartsWriter::new(64, records.clone());
            response.encode(&mut w, version).unwrap();
            let parts = w.into_parts();
            assert_eq!(parts.concat(), one.to_vec(), "v{version}");
            for r in &records {
                assert!(parts.iter().any(|p| p.as_ptr() == r.as_ptr()), "v{version}");
            }
        }
    }
}
