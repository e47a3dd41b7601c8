//! A store's entries on local disk: an LSM tree ([fjall](https://docs.rs/fjall)) of encoded
//! key → encoded value, the bytes the changelog holds, ordered by key bytes, in one directory
//! per store and task.
//!
//! Why an LSM: a state larger than memory is written in sorted runs, sequentially, and a read
//! of a key the store does not hold is answered by the runs' bloom filters without touching the
//! disk; a B-tree (redb before) turned every new key of a 50,000,000-key job into a random read
//! and write of a page once its file outgrew the page cache.
//!
//! Contract:
//! - The changelog is the truth. Writes are staged in memory and written as one atomic batch
//!   at each task commit, not synced; only [`DiskTable::commit`] with a checkpoint syncs,
//!   recording the changelog offset the table then exactly equals.
//! - Every unsynced commit after a checkpoint first removes the recorded offset, in the same
//!   batch. fjall recovers a prefix of its batches after a crash (its journal is synced before
//!   any memtable is flushed), so a table holds an offset only when it equals the changelog up
//!   to it: after a crash either the checkpoint's batch is the last one recovered (with its
//!   offset), or a later one removed it; after a clean drop that was not a checkpoint the table
//!   has no offset. [`DiskTable::open`] empties a table without an offset; restoring then
//!   replays only the changelog after the offset, and never keeps uncommitted state (what an
//!   exactly-once commit aborted).
//! - Single-threaded, per task, like the stores over it (fjall's own flushes and compactions
//!   run on one background thread per table). A scratch table (no state directory) removes its
//!   directory when dropped.

use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};

/// The keyspace of the entries, and of the table's own record ([`OFFSET`]). One keyspace: fjall
/// keeps a journal until every keyspace written in it is flushed, and a keyspace of one small
/// record never fills a memtable, so its journals piled up (to 512 MiB) and each open
/// replayed them (a restart with 1,500,000 keys took 7.9 s).
const DATA: &str = "data";
/// Written before every entry's key: fjall keeps no empty key, which stores have (the empty
/// string, a window store's closing marker); one byte in front keeps the order of the rest.
const KEY_TAG: u8 = 0;
/// The changelog offset the table equals, present only after a checkpoint; after every entry
/// (its first byte is past [`KEY_TAG`]).
const OFFSET: &[u8] = b"\x01changelog_offset";
/// The journal fjall keeps before it flushes the memtables written in it: its least, so that
/// opening replays little.
const MAX_JOURNAL: u64 = 64 << 20;
/// The longest key a table keeps (fjall's 65,535 bytes, less the tag).
const MAX_KEY: usize = u16::MAX as usize - 1;
/// Staged bytes past which writes are committed before the task commits (a restore's replay).
const STAGE_LIMIT: usize = 64 << 20;
/// The bounds of a table's memtable: a quarter of its cache, so that a store's memory stays
/// near what it is given, but not so small that every commit makes a run on disk.
const MEMTABLE_MIN: usize = 4 << 20;
const MEMTABLE_MAX: usize = 64 << 20;

/// The open database, apart so that dropping it (and its background thread) can come before
/// a scratch table's directory is removed.
struct Open {
    data: Keyspace,
    db: Database,
}

/// See the module documentation.
pub(crate) struct DiskTable {
    open: Option<Open>,
    path: PathBuf,
    scratch: bool,
    staged: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    staged_bytes: usize,
    /// Whether the table records a checkpoint's offset (the next unsynced commit removes it).
    checkpointed: bool,
}

fn err(path: &Path) -> impl Fn(fjall::Error) -> String + '_ {
    move |e| format!("disk store {}: {e}", path.display())
}

impl DiskTable {
    /// Opens (or creates) the table in the directory `path` with about `cache_bytes` of memory
    /// for its write buffer and block cache. Returns the changelog offset it holds when that
    /// is a checkpoint at or before `committed`; otherwise the table is emptied and `None`
    /// returned (the changelog restores it from the start).
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or read, naming it.
    pub fn open(
        path: &Path,
        cache_bytes: usize,
        committed: u64,
        scratch: bool,
    ) -> Result<(Self, Option<u64>), String> {
        let e = err(path);
        let memtable = (cache_bytes / 4).clamp(MEMTABLE_MIN, MEMTABLE_MAX) as u64;
        let db = Database::builder(path)
            .cache_size(cache_bytes.saturating_sub(memtable as usize).max(1 << 20) as u64)
            .worker_threads(1)
            .max_journaling_size(MAX_JOURNAL)
            .temporary(scratch)
            .open()
            .map_err(&e)?;
        // Filters and indexes pinned at every level: a read of an absent key (every new key
        // of an aggregate) must not wait for the disk to learn that it is absent.
        let options = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                .filter_block_pinning_policy(PinningPolicy::all(true))
                .filter_block_partitioning_policy(PartitioningPolicy::all(false))
                .index_block_pinning_policy(PinningPolicy::all(true))
                .index_block_partitioning_policy(PartitioningPolicy::all(false))
        };
        let data = db.keyspace(DATA, options).map_err(&e)?;
        let recorded = data
            .get(OFFSET)
            .map_err(&e)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_be_bytes);
        let offset = recorded.filter(|&o| o <= committed);
        if offset.is_none() {
            data.clear().map_err(&e)?;
        }
        let t = Self {
            open: Some(Open { data, db }),
            path: path.to_path_buf(),
            scratch,
            staged: Vec::new(),
            staged_bytes: 0,
            checkpointed: offset.is_some(),
        };
        Ok((t, offset))
    }

    fn open_db(&self) -> &Open {
        self.open.as_ref().expect("open until dropped")
    }

    /// About how many entries the table holds as of the last commit: overwritten and removed
    /// entries count until compaction drops them (Kafka Streams' `approximateNumEntries` of a
    /// RocksDB store is the same kind of estimate).
    pub fn len(&self) -> u64 {
        let recorded = u64::from(self.checkpointed);
        (self.open_db().data.approximate_len() as u64).saturating_sub(recorded)
    }

    /// Stages a write (`None`: delete); committed by the next [`commit`](Self::commit), or
    /// now when the staged writes pass [`STAGE_LIMIT`].
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub fn stage(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if key.len() > MAX_KEY {
            return Err(format!(
                "disk store {}: a key of {} bytes; keys on disk are at most {MAX_KEY} bytes (keep this store in memory)",
                self.path.display(),
                key.len()
            ));
        }
        self.staged_bytes += key.len() + value.map_or(0, <[u8]>::len) + 48;
        self.staged.push((tagged(key), value.map(<[u8]>::to_vec)));
        if self.staged_bytes >= STAGE_LIMIT {
            self.commit(None)?;
        }
        Ok(())
    }

    /// The committed value of `key` (staged writes are committed first).
    ///
    /// # Errors
    ///
    /// When the table cannot be read, naming it.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.commit_staged()?;
        self.get_committed(key)
    }

    /// Commits the staged writes, if any, so that reads of the committed entries see them.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub fn commit_staged(&mut self) -> Result<(), String> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.commit(None)
    }

    /// The committed entries from `from` on, in key order, while `f` returns `Ok(true)`.
    ///
    /// # Errors
    ///
    /// When the table cannot be read, or `f` fails.
    pub fn scan_from(
        &self,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, String>,
    ) -> Result<(), String> {
        let e = err(&self.path);
        for entry in self.open_db().data.range(tagged(from)..) {
            let (k, v) = entry.into_inner().map_err(&e)?;
            if k.first() != Some(&KEY_TAG) || !f(&k[1..], &v)? {
                break;
            }
        }
        Ok(())
    }

    /// The value of `key` as of the last commit.
    ///
    /// # Errors
    ///
    /// When the table cannot be read, naming it.
    pub fn get_committed(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if key.len() > MAX_KEY {
            return Ok(None);
        }
        let v = (self.open_db().data.get(tagged(key))).map_err(err(&self.path))?;
        Ok(v.map(|v| v.to_vec()))
    }

    /// Commits the staged writes: without a sync and without an offset when `checkpoint` is
    /// `None`; synced and recording the changelog offset otherwise.
    ///
    /// # Errors
    ///
    /// When the table cannot be written, naming it.
    pub fn commit(&mut self, checkpoint: Option<u64>) -> Result<(), String> {
        let e = err(&self.path);
        // A key staged twice is written once (a batch's writes share one sequence number, so
        // two of a key would not say which is last); sorted, the memtable takes them in order.
        // Stable, so the last write of a key stays last among its equals.
        self.staged.sort_by(|a, b| a.0.cmp(&b.0));
        self.staged.reverse();
        self.staged.dedup_by(|later, kept| later.0 == kept.0);
        let open = self.open.as_ref().expect("open until dropped");
        let mut batch = open.db.batch();
        for (k, v) in self.staged.drain(..).rev() {
            match v {
                Some(v) => batch.insert(&open.data, k, v),
                None => batch.remove(&open.data, k),
            }
        }
        match checkpoint {
            Some(o) => batch.insert(&open.data, OFFSET, o.to_be_bytes()),
            None if self.checkpointed => batch.remove(&open.data, OFFSET),
            None => {}
        }
        batch.commit().map_err(&e)?;
        if checkpoint.is_some() {
            open.db.persist(PersistMode::SyncAll).map_err(&e)?;
        }
        self.checkpointed = checkpoint.is_some();
        self.staged_bytes = 0;
        Ok(())
    }

    /// Every committed entry, in key order.
    ///
    /// # Errors
    ///
    /// When the table cannot be read, or `f` fails.
    pub fn for_each(
        &self,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        self.scan_from(&[], &mut |k, v| f(k, v).map(|()| true))
    }
}

/// `key` as the table keeps it, after [`KEY_TAG`].
fn tagged(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(KEY_TAG);
    k.extend_from_slice(key);
    k
}

impl Drop for DiskTable {
    fn drop(&mut self) {
        // A scratch table's database removes its own directory as it closes.
        drop(self.open.take());
        if self.scratch
            && let Some(dir) = self.path.parent()
        {
            // The scratch directory goes with its last table.
            let _ = std::fs::remove_dir(dir);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_reopening_and_later_unsynced_commits_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.lsm");
        let (mut t, off) = DiskTable::open(&path, 1 << 20, 0, false).unwrap();
        assert_eq!(off, None);
        t.stage(b"a", Some(b"1")).unwrap();
        t.stage(b"b", Some(b"2")).unwrap();
        t.commit(Some(7)).unwrap();
        drop(t);
        let (mut t, off) = DiskTable::open(&path, 1 << 20, 10, false).unwrap();
        assert_eq!(off, Some(7));
        assert_eq!(t.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(t.len(), 2);
        // An unsynced commit (a task commit between checkpoints) clears the offset: reopened
        // without a checkpoint after it, the file cannot say what it equals and starts empty.
        t.stage(b"a", None).unwrap();
        t.commit(None).unwrap();
        assert_eq!(t.get(b"a").unwrap(), None);
        drop(t);
        let (t, off) = DiskTable::open(&path, 1 << 20, 10, false).unwrap();
        assert_eq!((off, t.len()), (None, 0));
    }

    #[test]
    fn a_checkpoint_past_the_committed_offset_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.lsm");
        let (mut t, _) = DiskTable::open(&path, 1 << 20, 0, false).unwrap();
        t.stage(b"a", Some(b"1")).unwrap();
        t.commit(Some(9)).unwrap();
        drop(t);
        let (mut t, off) = DiskTable::open(&path, 1 << 20, 5, false).unwrap();
        assert_eq!(off, None);
        assert_eq!(t.get(b"a").unwrap(), None);
    }

    #[test]
    fn an_empty_key_is_kept_first_and_an_overlong_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _) = DiskTable::open(&dir.path().join("s.lsm"), 1 << 20, 0, true).unwrap();
        t.stage(b"a", Some(b"1")).unwrap();
        t.stage(b"", Some(b"0")).unwrap();
        let long = vec![b'k'; MAX_KEY + 1];
        let e = t.stage(&long, Some(b"x")).unwrap_err();
        assert!(e.contains("keep this store in memory"), "{e}");
        assert_eq!(t.get(b"").unwrap().as_deref(), Some(&b"0"[..]));
        assert_eq!(t.get(&long).unwrap(), None);
        let mut seen = Vec::new();
        t.for_each(&mut |k, _| {
            seen.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"".to_vec(), b"a".to_vec()]);
    }

    #[test]
    fn the_last_of_two_staged_writes_of_a_key_wins_and_order_is_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _) = DiskTable::open(&dir.path().join("s.lsm"), 1 << 20, 0, true).unwrap();
        t.stage(b"b", Some(b"1")).unwrap();
        t.stage(b"a", Some(b"x")).unwrap();
        t.stage(b"b", Some(b"2")).unwrap();
        t.commit(None).unwrap();
        let mut seen = Vec::new();
        t.for_each(&mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"x".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
    }
}
