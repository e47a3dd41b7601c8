//! Sparse offset and time indexes of one segment.
//!
//! Both live in memory while the segment is open and are written to `.index` / `.timeindex`
//! when the segment is rolled or the log is closed cleanly — not on every append, which would
//! cost a syscall per 4 KiB. After a crash the tail segment's indexes are rebuilt by the recovery
//! scan; a closed segment's files are checked on open ([`OffsetIndex::load`] refuses entries
//! that are not increasing or point past the segment) and rebuilt when they fail.
//!
//! Entry formats are Kafka's: offset index = (relative offset u32, position u32), big-endian;
//! time index = (timestamp i64, relative offset u32).

use crate::error::{LogError, Result};
use std::path::Path;

/// About one index entry per this many bytes of log.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Offset → file position of the batch that starts at (or before) that offset.
#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, e: OffsetEntry) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|l| l.relative_offset < e.relative_offset)
        );
        self.entries.push(e);
    }

    /// Position of the last indexed batch whose base offset is ≤ `relative_offset`, or 0.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].position
        }
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// The first, middle and last entries: what a load checks against the log file.
    pub fn samples(&self) -> impl Iterator<Item = OffsetEntry> + '_ {
        let n = self.entries.len();
        [0, n / 2, n.saturating_sub(1)]
            .into_iter()
            .filter(move |&i| i < n)
            .map(|i| self.entries[i])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the index to `path` (through a temporary file and a rename, so a crash leaves the old
    /// one or the new one).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(self.entries.len() * 8);
        for e in &self.entries {
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        write_file(path, &buf)
    }

    /// Loads an index file, or `None` if it is missing or inconsistent with a segment of
    /// `segment_len` bytes (then the caller rebuilds it).
    pub fn load(path: &Path, segment_len: u64) -> Option<Self> {
        let buf = std::fs::read(path).ok()?;
        if buf.len() % 8 != 0 {
            return None;
        }
        let mut idx = Self::default();
        for c in buf.chunks_exact(8) {
            let e = OffsetEntry {
                relative_offset: u32::from_be_bytes(c[..4].try_into().ok()?),
                position: u32::from_be_bytes(c[4..].try_into().ok()?),
            };
            let increasing = idx
                .last()
                .is_none_or(|l| l.relative_offset < e.relative_offset && l.position < e.position);
            if !increasing || e.position as u64 >= segment_len {
                return None;
            }
            idx.entries.push(e);
        }
        Some(idx)
    }
}

/// Max timestamp so far → offset, to find the first offset at or after a timestamp.
#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records `e` if its timestamp is larger than every earlier one (the index is monotonic).
    pub fn maybe_push(&mut self, e: TimeEntry) {
        if self
            .entries
            .last()
            .is_none_or(|l| e.timestamp > l.timestamp)
        {
            self.entries.push(e);
        }
    }

    /// Relative offset from which to scan for the first record with timestamp ≥ `ts`.
    pub fn lookup(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].relative_offset
        }
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// Writes the index to `path`, as the offset index does.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(self.entries.len() * 12);
        for e in &self.entries {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        write_file(path, &buf)
    }

    /// Loads a time index, or `None` if missing, torn, or not increasing.
    pub fn load(path: &Path, max_relative_offset: u32) -> Option<Self> {
        let buf = std::fs::read(path).ok()?;
        if buf.len() % 12 != 0 {
            return None;
        }
        let mut idx = Self::default();
        for c in buf.chunks_exact(12) {
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(c[..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(c[8..].try_into().ok()?),
            };
            let increasing = idx.entries.last().is_none_or(|l| l.timestamp < e.timestamp);
            if !increasing || e.relative_offset > max_relative_offset {
                return None;
            }
            idx.entries.push(e);
        }
        Some(idx)
    }
}

/// Writes via a temporary file and rename, so a crash leaves the old or the new file, never half.
/// The temporary name is short and random: `<name>.tmp` could exceed the 255-byte file-name
/// limit for the longest topic names, and two writers in one directory must not share it.
pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(".{:016x}.tmp", rand::random::<u64>()));
    std::fs::write(&tmp, data).map_err(|e| LogError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LogError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let mut i = OffsetIndex::default();
        i.push(OffsetEntry {
            relative_offset: 10,
            position: 4100,
        });
        i.push(OffsetEntry {
            relative_offset: 20,
            position: 8200,
        });
        assert_eq!(i.lookup(5), 0);
        assert_eq!(i.lookup(10), 4100);
        assert_eq!(i.lookup(19), 4100);
        assert_eq!(i.lookup(1000), 8200);
    }

    #[test]
    fn bad_index_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.index");
        std::fs::write(&p, [0u8, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 10]).unwrap();
        assert!(
            OffsetIndex::load(&p, 100).is_none(),
            "decreasing offsets accepted"
        );
        std::fs::write(&p, [0u8, 0, 0, 5, 0, 0, 1, 0]).unwrap();
        assert!(
            OffsetIndex::load(&p, 100).is_none(),
            "position past the end accepted"
        );
        assert_eq!(OffsetIndex::load(&p, 1000).unwrap().len(), 1);
    }
}
