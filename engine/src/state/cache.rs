//! The memory in front of a store's file: a [`MapStore`] used as a bounded cache and write
//! buffer over a [`DiskTable`], shared by the key-value and window stores on disk.
//!
//! Contract:
//! - Every write stays in the map, dirty, until the commit ([`Cached::drain`]) hands it to the
//!   changelog and stages it in the file (under the file's key for the changelog key, which a
//!   store may lay out differently, e.g. ordered by window start); then clean entries are
//!   evicted down to the cache's budget. Dirty entries are never evicted.
//! - The budget is `cache_bytes / 2` of decoded entries, each estimated at the mean encoded size
//!   of the last commit's changes plus [`ENTRY_OVERHEAD`] (the other half is the file's page
//!   cache, see `Storage::Disk`). [`Cached::over_budget`] says when dirty entries alone pass
//!   it, so the worker commits early.
//! - A read of the file that fails is recorded ([`Cached::failed`]): the store answers it as
//!   absent and the next commit fails (the task then restarts from its last commit), so no
//!   output built on it is committed.

use super::ChangeEmit;
use super::disk::DiskTable;
use super::map::MapStore;
use std::borrow::Cow;
use std::hash::Hash;
use std::path::Path;

/// Memory an entry costs beyond its encoded bytes: the table's slot, hashes, allocations (a
/// SQL row of one key column and a two-value accumulator costs about 300 bytes in all).
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// See the module documentation.
pub(crate) struct Cached {
    pub table: DiskTable,
    cache_bytes: usize,
    /// Mean encoded bytes of an entry, as last written (the cache's size estimate).
    entry_bytes: usize,
    /// The first failed read since the last commit.
    failed: Option<String>,
}

impl Cached {
    /// Opens the file at `path` as [`DiskTable::open`] does, with half of `cache_bytes` as its
    /// page cache; returns the changelog offset it holds.
    ///
    /// # Errors
    ///
    /// As [`DiskTable::open`].
    pub fn open(
        path: &Path,
        cache_bytes: usize,
        committed: u64,
        scratch: bool,
    ) -> Result<(Self, Option<u64>), String> {
        let (table, offset) = DiskTable::open(path, cache_bytes / 2, committed, scratch)?;
        let cached = Self {
            table,
            cache_bytes,
            entry_bytes: ENTRY_OVERHEAD,
            failed: None,
        };
        Ok((cached, offset))
    }

    /// Entries the cache may hold: half the budget over the estimated size of one.
    fn cache_entries(&self) -> usize {
        self.cache_bytes / 2 / self.entry_bytes.max(1)
    }

    /// Whether `entries` in memory pass the budget (then dirty ones alone may: commit early).
    pub fn over_budget(&self, entries: usize) -> bool {
        entries > self.cache_entries()
    }

    /// Records a failed read of `store`'s file (the first one fails the next commit).
    pub fn failed(&mut self, store: &str, e: String) {
        tracing::error!(store = %store, error = %e, "a disk store read failed; the next commit fails");
        self.failed.get_or_insert(e);
    }

    /// The commit: hands `inner`'s dirty entries to `emit` and to the file (each changelog key
    /// laid out by `file_key`), commits the file, then evicts clean entries down to the budget,
    /// telling `evicted` of each.
    ///
    /// # Errors
    ///
    /// A failed read since the last commit, an entry that does not encode, or the file's error.
    pub fn drain<SK: Hash + Eq + Clone, V>(
        &mut self,
        inner: &mut MapStore<SK, V>,
        emit: &mut ChangeEmit<'_>,
        file_key: &dyn Fn(&[u8]) -> Cow<'_, [u8]>,
        evicted: &mut dyn FnMut(&SK),
    ) -> Result<(), String> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let (mut bytes, mut count, mut failed) = (0usize, 0usize, None);
        let table = &mut self.table;
        inner.drain_changes(&mut |k, v| {
            emit(k, v);
            bytes += k.len() + v.map_or(0, <[u8]>::len);
            count += 1;
            if let Err(e) = table.stage(&file_key(k), v) {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.table.commit(None)?;
        if let Some(mean) = bytes.checked_div(count) {
            self.entry_bytes = mean + ENTRY_OVERHEAD;
        }
        let keep = self.cache_entries();
        if inner.map.len() > keep {
            // Down to three quarters, so that eviction runs every few commits, not each one.
            inner.evict_clean(keep / 4 * 3, evicted);
        }
        Ok(())
    }
}
