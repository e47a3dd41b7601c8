//! A store's entries on local disk: one redb file of encoded key → encoded value, the bytes the
//! changelog holds, ordered by key bytes.
//!
//! Contract:
//! - The changelog is the truth. Writes are staged in memory and committed with
//!   `Durability::None` (no sync) at each task commit; only [`DiskTable::checkpoint`] syncs,
//!   recording the changelog offset the file is then exactly equal to.
//! - Every unsynced commit first removes the recorded offset, in the same transaction. So a file
//!   holds an offset only when it equals the changelog up to it: after a crash redb rolls back
//!   to the last synced commit (a checkpoint, with its offset); after a clean drop that was not
//!   a checkpoint, the file has no offset and [`DiskTable::open`] starts it empty. Restoring
//!   then replays only the changelog after the offset, and never keeps uncommitted state (what
//!   an exactly-once commit aborted).
//! - Single-threaded, per task, like the stores over it. A scratch table (no state directory)
//!   removes its file when dropped.

use redb::{
    Builder, Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use std::path::{Path, PathBuf};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The changelog offset the file equals, present only after a checkpoint.
const OFFSET: &str = "changelog_offset";
/// Staged bytes past which writes are committed before the task commits (a restore's replay).
const STAGE_LIMIT: usize = 64 << 20;

/// See the module documentation.
pub(crate) struct DiskTable {
    db: Database,
    path: PathBuf,
    scratch: bool,
    /// A snapshot for reads, taken again after each commit (so it never pins old pages long).
    reader: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    staged: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    staged_bytes: usize,
    len: u64,
}

fn err(path: &Path) -> impl Fn(redb::Error) -> String + '_ {
    move |e| format!("disk store {}: {e}", path.display())
}

impl DiskTable {
    /// Opens (or creates) the file at `path` with a page cache of `cache_bytes`. Returns the
    /// changelog offset it holds when that is a checkpoint at or before `committed`; otherwise
    /// the file is emptied and `None` returned (the changelog restores it from the start).
    ///
    /// # Errors
    ///
    /// When the directory or file cannot be created or read, naming the file.
    pub fn open(
        path: &Path,
        cache_bytes: usize,
        committed: u64,
        scratch: bool,
    ) -> Result<(Self, Option<u64>), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let e = err(path);
        let open = || {
            Builder::new()
                .set_cache_size(cache_bytes.max(1 << 20))
                .create(path)
                .map_err(|x| e(x.into()))
        };
        let db = open()?;
        let offset = Self::recorded_offset(&db).map_err(&e)?;
        let (db, offset) = match offset {
            Some(o) if o <= committed => (db, Some(o)),
            _ => {
                drop(db);
                if let Err(x) = std::fs::remove_file(path)
                    && x.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(format!("cannot remove {}: {x}", path.display()));
                }
                (open()?, None)
            }
        };
        let mut t = Self {
            db,
            path: path.to_path_buf(),
            scratch,
            reader: None,
            staged: Vec::new(),
            staged_bytes: 0,
            len: 0,
        };
        t.commit(None)?;
        Ok((t, offset))
    }

    fn recorded_offset(db: &Database) -> Result<Option<u64>, redb::Error> {
        let txn = db.begin_read()?;
        match txn.open_table(META) {
            Ok(t) => Ok(t.get(OFFSET)?.map(|v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(x) => Err(x.into()),
        }
    }

    /// The entries as of the last commit (staged writes not counted).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Stages a write (`None`: delete); committed by the next [`commit`](Self::commit), or
    /// now when the staged writes pass [`STAGE_LIMIT`].
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub fn stage(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        self.staged_bytes += key.len() + value.map_or(0, <[u8]>::len) + 48;
        self.staged.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        if self.staged_bytes >= STAGE_LIMIT {
            self.commit(None)?;
        }
        Ok(())
    }

    /// The committed value of `key` (staged writes are committed first).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, naming it.
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
    /// When the file cannot be read, or `f` fails.
    pub fn scan_from(
        &self,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<bool, String>,
    ) -> Result<(), String> {
        let e = err(&self.path);
        let reader = self.reader.as_ref().expect("a reader after every commit");
        for entry in reader.range(from..).map_err(|x| e(x.into()))? {
            let (k, v) = entry.map_err(|x| e(x.into()))?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// The value of `key` as of the last commit.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, naming it.
    pub fn get_committed(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let reader = self.reader.as_ref().expect("a reader after every commit");
        let v = reader.get(key).map_err(|x| err(&self.path)(x.into()))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    /// Commits the staged writes: without a sync and without an offset when `checkpoint` is
    /// `None`; synced and recording the changelog offset otherwise.
    ///
    /// # Errors
    ///
    /// When the file cannot be written, naming it.
    pub fn commit(&mut self, checkpoint: Option<u64>) -> Result<(), String> {
        let e = err(&self.path);
        // Sorted, each B-tree page is written once per commit rather than once per key; stable,
        // so the last write of a key staged twice wins.
        self.staged.sort_by(|a, b| a.0.cmp(&b.0));
        self.reader = None;
        let mut txn = self.db.begin_write().map_err(|x| e(x.into()))?;
        let durability = match checkpoint {
            Some(_) => Durability::Immediate,
            None => Durability::None,
        };
        txn.set_durability(durability).map_err(|x| e(x.into()))?;
        txn.set_quick_repair(checkpoint.is_some());
        {
            let mut data = txn.open_table(DATA).map_err(|x| e(x.into()))?;
            for (k, v) in self.staged.drain(..) {
                match v {
                    Some(v) => data.insert(&k[..], &v[..]).map(|_| ()),
                    None => data.remove(&k[..]).map(|_| ()),
                }
                .map_err(|x| e(x.into()))?;
            }
            self.len = data.len().map_err(|x| e(x.into()))?;
            let mut meta = txn.open_table(META).map_err(|x| e(x.into()))?;
            match checkpoint {
                Some(o) => meta.insert(OFFSET, o).map(|_| ()),
                None => meta.remove(OFFSET).map(|_| ()),
            }
            .map_err(|x| e(x.into()))?;
        }
        txn.commit().map_err(|x| e(x.into()))?;
        self.staged_bytes = 0;
        let read = self.db.begin_read().map_err(|x| e(x.into()))?;
        self.reader = Some(read.open_table(DATA).map_err(|x| e(x.into()))?);
        Ok(())
    }

    /// Every committed entry, in key order.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or `f` fails.
    pub fn for_each(
        &self,
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        self.scan_from(&[], &mut |k, v| f(k, v).map(|()| true))
    }
}

impl Drop for DiskTable {
    fn drop(&mut self) {
        if self.scratch {
            // Unlinking an open file is fine on Unix; the space is freed when redb closes it.
            let _ = std::fs::remove_file(&self.path);
            // The scratch directory goes with its last file.
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_reopening_and_later_unsynced_commits_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
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
        let path = dir.path().join("s.redb");
        let (mut t, _) = DiskTable::open(&path, 1 << 20, 0, false).unwrap();
        t.stage(b"a", Some(b"1")).unwrap();
        t.commit(Some(9)).unwrap();
        drop(t);
        let (mut t, off) = DiskTable::open(&path, 1 << 20, 5, false).unwrap();
        assert_eq!(off, None);
        assert_eq!(t.get(b"a").unwrap(), None);
    }

    #[test]
    fn the_last_of_two_staged_writes_of_a_key_wins_and_order_is_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _) = DiskTable::open(&dir.path().join("s.redb"), 1 << 20, 0, true).unwrap();
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
