//! Fault injection: the hook every write and sync of a segment file passes through, so that
//! tests can fail them (disk full, I/O errors, short writes, failed `fsync`) at chosen or random
//! points and check what the log then stores and acknowledges.
//!
//! Contract:
//! - An injector [`install`]ed for a directory sees each write and each sync of a segment file
//!   under that directory just before it happens, and decides its outcome; the operation is
//!   otherwise the real one on the real file. Uninstalled when the returned guard drops.
//! - With no injector installed (production) the cost is one atomic load per operation.
//! - A failed sync is reported as such even though the data may have reached the disk, as
//!   with a real failed `fsync`: the log must treat it as lost either way.

use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Decides the outcome of the log's file operations under one directory.
pub trait FaultInjector: Send + Sync {
    /// Before `len` bytes are written to `path`: `Ok(len)` lets the write happen, `Ok(n)` with
    /// `n < len` writes the first `n` bytes and then fails with `ENOSPC` (a short write), `Err`
    /// fails it with nothing written.
    fn before_write(&self, path: &Path, len: usize) -> io::Result<usize>;

    /// Before `path` is synced: `Err` fails the sync.
    fn before_sync(&self, path: &Path) -> io::Result<()>;
}

type Installed = (PathBuf, Arc<dyn FaultInjector>);

static INJECTORS: RwLock<Vec<Installed>> = RwLock::new(Vec::new());
/// How many are installed: the fast path reads only this.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Routes the log's writes and syncs of files under `dir` through `injector` until the guard
/// is dropped.
#[must_use = "the injector is removed when the guard drops"]
pub fn install(dir: &Path, injector: Arc<dyn FaultInjector>) -> InstalledGuard {
    let dir = dir.to_path_buf();
    INJECTORS.write().push((dir.clone(), injector));
    COUNT.fetch_add(1, Ordering::AcqRel);
    InstalledGuard { dir }
}

/// Removes its injector when dropped.
pub struct InstalledGuard {
    dir: PathBuf,
}

impl Drop for InstalledGuard {
    fn drop(&mut self) {
        let mut all = INJECTORS.write();
        if let Some(i) = all.iter().position(|(d, _)| *d == self.dir) {
            all.remove(i);
            COUNT.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The injector for the file `path()` names (computed only when some injector is installed).
fn injector_for(path: impl FnOnce() -> PathBuf) -> Option<(PathBuf, Arc<dyn FaultInjector>)> {
    if COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    let path = path();
    let found = INJECTORS
        .read()
        .iter()
        .find(|(dir, _)| path.starts_with(dir))
        .map(|(_, i)| i.clone());
    found.map(|i| (path, i))
}

/// `ENOSPC`, as the kernel reports a full disk.
pub fn disk_full() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// `file.write_all_at(bytes, position)`, through the injector of the file `path()` if any.
pub(crate) fn write_all_at(
    file: &File,
    bytes: &[u8],
    position: u64,
    path: impl FnOnce() -> PathBuf,
) -> io::Result<()> {
    if let Some((path, injector)) = injector_for(path) {
        let allowed = injector.before_write(&path, bytes.len())?;
        if allowed < bytes.len() {
            file.write_all_at(&bytes[..allowed], position)?;
            return Err(disk_full());
        }
    }
    file.write_all_at(bytes, position)
}

/// `file.sync_data()`, through the injector of the file `path()` if any.
pub(crate) fn sync_data(file: &File, path: impl FnOnce() -> PathBuf) -> io::Result<()> {
    if let Some((path, injector)) = injector_for(path) {
        injector.before_sync(&path)?;
    }
    let started = std::time::Instant::now();
    let synced = file.sync_data();
    crate::stats::FSYNC_LATENCY.observe(started.elapsed());
    synced
}
