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

mod keyvalue;
mod map;
mod session;
mod window;

pub use keyvalue::KeyValueStore;
pub use session::SessionStore;
pub use window::WindowStore;

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

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
}

impl StoreHandle {
    pub(crate) fn new<T: StateStore + 'static>(store: T) -> Self {
        let rc = Rc::new(RefCell::new(store));
        Self {
            typed: rc.clone(),
            dynamic: rc,
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
