//! The aborted-transactions index of one segment: `<base_offset:020>.txnindex`.
//!
//! Contract:
//! - One entry per abort marker stored in the segment, in Kafka's layout (34 bytes: version
//!   `i16` = 0, producer id `i64`, first offset `i64`, last offset `i64` = the marker's offset,
//!   last stable offset `i64`), in marker order.
//! - An entry is written before its marker is appended, so after a crash the index holds every
//!   marker the log holds (plus, at most, entries for markers torn off the tail: [`TxnIndex::open`]
//!   drops entries at or past the segment's end). The producer-state rebuild after a crash adds
//!   any entry that is missing for a marker it scans ([`TxnIndex::append`] is idempotent).
//! - Read committed readers ask for the entries that overlap what they read
//!   ([`overlapping`]): `last_offset >= from && first_offset < until`.

use crate::error::{LogError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

const ENTRY_LEN: usize = 34;

/// A transaction that was aborted in a partition: its data lies in
/// `[first_offset, last_offset)` among other producers' records; `last_offset` is its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub last_stable_offset: u64,
}

#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    entries: Vec<AbortedTxn>,
}

pub fn txn_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.txnindex"))
}

impl TxnIndex {
    /// The index of a new segment: no aborts yet, no file until the first.
    pub fn empty(dir: &Path, base_offset: u64) -> Self {
        Self {
            path: txn_index_path(dir, base_offset),
            entries: Vec::new(),
        }
    }

    /// Loads the index of the segment at `base_offset`, keeping only entries whose marker is
    /// below `next_offset` (the segment's end after recovery). No file means no aborts.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the file exists but cannot be read or rewritten (a torn last entry,
    /// or entries past `next_offset`, are dropped and the file rewritten without them).
    pub fn open(dir: &Path, base_offset: u64, next_offset: u64) -> Result<Self> {
        let path = txn_index_path(dir, base_offset);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        let mut entries: Vec<AbortedTxn> = bytes
            .chunks_exact(ENTRY_LEN)
            .map(|c| {
                let i64_at = |at: usize| i64::from_be_bytes(c[at..at + 8].try_into().unwrap());
                AbortedTxn {
                    producer_id: i64_at(2),
                    first_offset: i64_at(10).max(0) as u64,
                    last_offset: i64_at(18).max(0) as u64,
                    last_stable_offset: i64_at(26).max(0) as u64,
                }
            })
            .collect();
        let whole = entries.len() * ENTRY_LEN == bytes.len();
        let before = entries.len();
        entries.retain(|e| e.last_offset < next_offset);
        let dropped = before != entries.len();
        let index = Self { path, entries };
        if !whole || dropped {
            index.rewrite()?;
        }
        Ok(index)
    }

    /// Records an aborted transaction (once: an entry for the same marker is not repeated).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file when the entry cannot be written.
    pub fn append(&mut self, e: AbortedTxn) -> Result<()> {
        if self.entries.iter().any(|x| x.last_offset == e.last_offset) {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|err| LogError::io(&self.path, err))?;
        f.write_all(&encode(&e))
            .map_err(|err| LogError::io(&self.path, err))?;
        self.entries.push(e);
        Ok(())
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Syncs the file (when its segment is rolled or closed).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file.
    pub fn sync(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_data())
            .map_err(|e| LogError::io(&self.path, e))
    }

    /// Removes the index file (with its segment).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] for a file that exists but cannot be removed.
    pub fn delete(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(&self.path, e)),
        }
    }

    fn rewrite(&self) -> Result<()> {
        if self.entries.is_empty() {
            return self.delete();
        }
        let bytes: Vec<u8> = self.entries.iter().flat_map(encode).collect();
        let tmp = self.path.with_extension("txnindex.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| LogError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| LogError::io(&self.path, e))
    }
}

fn encode(e: &AbortedTxn) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[2..10].copy_from_slice(&e.producer_id.to_be_bytes());
    b[10..18].copy_from_slice(&(e.first_offset as i64).to_be_bytes());
    b[18..26].copy_from_slice(&(e.last_offset as i64).to_be_bytes());
    b[26..34].copy_from_slice(&(e.last_stable_offset as i64).to_be_bytes());
    b
}

/// The entries of `entries` that overlap reads of `[from, until)`.
pub fn overlapping(
    entries: &[AbortedTxn],
    from: u64,
    until: u64,
) -> impl Iterator<Item = &AbortedTxn> {
    entries
        .iter()
        .filter(move |e| e.last_offset >= from && e.first_offset < until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i64, first: u64, last: u64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        }
    }

    #[test]
    fn entries_survive_reopen_and_torn_markers_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TxnIndex::open(dir.path(), 0, 0).unwrap();
        assert!(idx.is_empty());
        idx.append(entry(7, 3, 10)).unwrap();
        idx.append(entry(8, 5, 20)).unwrap();
        idx.append(entry(8, 5, 20)).unwrap();
        assert_eq!(idx.entries().len(), 2);
        let back = TxnIndex::open(dir.path(), 0, 100).unwrap();
        assert_eq!(back.entries(), &[entry(7, 3, 10), entry(8, 5, 20)]);
        // The segment now ends at 15: the second marker was torn off.
        let cut = TxnIndex::open(dir.path(), 0, 15).unwrap();
        assert_eq!(cut.entries(), &[entry(7, 3, 10)]);
        assert_eq!(
            TxnIndex::open(dir.path(), 0, 100).unwrap().entries().len(),
            1
        );
        let hits: Vec<_> = overlapping(cut.entries(), 10, 11).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(overlapping(cut.entries(), 11, 50).count(), 0);
        assert_eq!(overlapping(cut.entries(), 0, 3).count(), 0);
    }
}
