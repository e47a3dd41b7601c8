//! State stores: key-value, window and session, in memory, each backed by a changelog.
//!
//! Contract of every store ([`StateStore`]):
//! - Writes mark keys dirty; [`StateStore::drain_changes`] hands the current value (or a
//!   deletion) of each dirty key to the task at commit, which writes them to the store's
//!   compacted changelog `<app>-<store>-changelog`, partition = task partition. Several writes
//!   of one key within a commit interval become one changelog record.
//! - [`StateStore::apply_change`] replays a changelog record on restore; it must rebuild any
//!   secondary index, so a restored store is indistinguishable from the one that wrote it.
//! - Stores are per task and single-threaded (`Rc<RefCell<..>>`).
//! - Where a store keeps its entries is its [`Storage`]: in memory (the default), or on local
//!   disk with the memory as a bounded cache in front ([`disk`], [`cache`]), chosen per store
//!   ([`crate::StreamsBuilder::store_storage`]) or per application
//!   ([`crate::StreamsConfig::storage`]). Changelog and checkpoint semantics are the same.

mod cache;
mod disk;
mod keyvalue;
mod map;
mod session;
mod window;

pub use keyvalue::KeyValueStore;
pub use session::SessionStore;
pub use window::WindowStore;

use std::any::Any;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Where a store keeps its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// In a hash map in memory: fastest, and state must fit in memory.
    #[default]
    Memory,
    /// In a file per store and task under the state directory, with about `cache_bytes` of
    /// memory per store and task in front of it: half for decoded entries (every entry written
    /// since the last commit stays until the commit writes it out), half for the file's pages.
    /// Key-value and window stores (windowed aggregations, their combiners, stream–stream join
    /// buffers); session stores stay in memory (an application-wide choice skips them, a
    /// per-store choice of one is an error).
    Disk { cache_bytes: usize },
}

impl Storage {
    /// The default cache of a disk store: 64 MiB per store and task.
    pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

    /// On disk with the default cache.
    pub fn disk() -> Self {
        Self::Disk {
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Receives a store's changes: encoded key, and encoded value or `None` for a deletion.
pub type ChangeEmit<'a> = dyn FnMut(&[u8], Option<&[u8]>) + 'a;

/// What the task needs of a store, whatever its key and value types.
pub trait StateStore {
    fn name(&self) -> &str;
    /// Hands every dirty key's encoded current value (`None`: deleted) to `emit`, and forgets it.
    ///
    /// # Errors
    ///
    /// A message when a dirty key or value cannot be encoded with the store's serdes; the commit
    /// then fails with `EngineError::Store` naming the store.
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String>;
    /// Replays one changelog record.
    ///
    /// # Errors
    ///
    /// A message when `key` or `value` do not decode with the store's serdes; the restore then
    /// fails with `EngineError::Store` naming the store and offset.
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// Marks an encoded key dirty so the next commit rewrites its current value.
    ///
    /// # Errors
    ///
    /// A message when `key` does not decode with the store's key serde.
    fn mark_dirty_encoded(&mut self, key: &[u8]) -> Result<(), String>;
    /// Every entry, encoded as in the changelog (for local checkpoints).
    ///
    /// # Errors
    ///
    /// A message when an entry cannot be encoded with the store's serdes; the checkpoint then
    /// fails with `EngineError::Store`.
    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String>;
    /// Moves the entries to a file at `path` (removed when the store drops if `scratch`), the
    /// memory keeping a cache of about `cache_bytes`. Returns the changelog offset the file
    /// already holds (a checkpoint at or before `committed`) or `None` when it starts empty;
    /// the restore replays the changelog from there. `None` overall: this kind of store is
    /// kept in memory only.
    fn open_disk(
        &mut self,
        _path: &Path,
        _cache_bytes: usize,
        _committed: u64,
        _scratch: bool,
    ) -> Option<Result<Option<u64>, String>> {
        None
    }
    /// Records the store as of changelog `offset` in its own file: `Ok(true)`. `Ok(false)`:
    /// it has none, and the checkpoint is a file written from [`snapshot`](Self::snapshot).
    ///
    /// # Errors
    ///
    /// A message when the store's file cannot be written.
    fn persist(&mut self, _offset: u64) -> Result<bool, String> {
        Ok(false)
    }
    /// Whether the store holds more in memory than it is allowed until the next commit writes
    /// it out: the worker then commits before its interval is up (a disk store's cache full
    /// of entries written since the last commit).
    fn wants_commit(&self) -> bool {
        false
    }
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One task's instance of a store: typed for the operators, dynamic for the task.
#[derive(Clone)]
pub struct StoreHandle {
    typed: Rc<dyn Any>,
    pub(crate) dynamic: Rc<RefCell<dyn StateStore>>,
    /// The storage chosen for this store by name; `None`: the application's default.
    pub(crate) storage: Option<Storage>,
}

impl StoreHandle {
    pub(crate) fn new<T: StateStore + 'static>(store: T) -> Self {
        let rc = Rc::new(RefCell::new(store));
        Self {
            typed: rc.clone(),
            dynamic: rc,
            storage: None,
        }
    }

    pub(crate) fn typed<T: 'static>(&self) -> Option<Rc<RefCell<T>>> {
        Rc::downcast::<RefCell<T>>(self.typed.clone()).ok()
    }

    /// Runs `f` on the store if it is a `T` (an interactive query's typed read); `None` when
    /// it is another kind or type.
    pub fn with<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.typed::<T>().map(|s| f(&s.borrow()))
    }
}
