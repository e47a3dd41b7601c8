//! Local checkpoints: a store's entries as of a committed changelog offset, in a file, so a
//! restart replays only the changelog after that offset instead of all of it.
//!
//! File `<state_dir>/<application.id>/<task>/<store>.checkpoint`: magic `RNLCKPT1`, the
//! changelog offset (u64), the entry count (u64), the entries (u32 length + key bytes, u32
//! length + value bytes, encoded as in the changelog), and a CRC-32C of everything before it.
//! Written to a temporary file, synced and renamed, so a crash leaves the old file or the new
//! one; a file that fails its checks is ignored (the changelog alone restores the store).
//!
//! A store kept on disk ([`Storage::Disk`]) is its own checkpoint: its directory
//! `<state_dir>/<application.id>/<task>/<store>.lsm` records the changelog offset it equals
//! when synced (see `state::disk`), and no `.checkpoint` file is written for it.

use crate::error::{EngineError, Result};
use crate::state::{StateStore, Storage, StoreHandle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"RNLCKPT1";

pub(crate) fn path(state_dir: &Path, app: &str, task: &str, store: &str) -> PathBuf {
    state_dir
        .join(app)
        .join(task)
        .join(format!("{store}.checkpoint"))
}

/// The tasks of `app` with a checkpoint directory under `state_dir` (none when it is absent).
pub(crate) fn tasks(state_dir: &Path, app: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(app)) else {
        return Vec::new();
    };
    let mut tasks: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    tasks.sort();
    tasks
}

/// Readies `handle`'s store for its changelog's replay: opens its disk file when it is kept on
/// disk (by its own choice, else by `default`), or loads its checkpoint file (only when the
/// changelog `has_records`). Returns the changelog offset to replay from.
///
/// # Errors
///
/// `EngineError::Config` when a store chosen by name for disk cannot be kept there;
/// `EngineError::Store` when its file or checkpoint cannot be read.
pub(crate) fn open(
    state_dir: Option<&Path>,
    app: &str,
    task: &str,
    handle: &StoreHandle,
    default: Storage,
    committed: u64,
    has_records: bool,
) -> Result<u64> {
    let mut s = handle.dynamic.borrow_mut();
    let name = s.name().to_string();
    if let Storage::Disk { cache_bytes } = handle.storage.unwrap_or(default) {
        // Without a state directory the file is scratch: this process's, removed with the store.
        let (file, scratch) = match state_dir {
            Some(d) => (d.join(app).join(task).join(format!("{name}.lsm")), false),
            None => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!("runnel-disk-{}", std::process::id()));
                (dir.join(format!("{app}-{task}-{name}-{n}.lsm")), true)
            }
        };
        match s.open_disk(&file, cache_bytes, committed, scratch) {
            Some(opened) => {
                let from = opened.map_err(|reason| EngineError::Store {
                    store: name.clone(),
                    reason,
                })?;
                tracing::debug!(store = %name, file = %file.display(), checkpoint = ?from, "store on disk");
                return Ok(from.unwrap_or(0));
            }
            None if handle.storage.is_some() => {
                return Err(EngineError::Config(format!(
                    "store {name:?} is chosen to be kept on disk, but session stores cannot be yet; keep it in memory"
                )));
            }
            // The application's default: this kind of store stays in memory.
            None => {}
        }
    }
    match state_dir {
        Some(d) if has_records => {
            Ok(load(&path(d, app, task, &name), &mut *s, committed)?.unwrap_or(0))
        }
        _ => Ok(0),
    }
}

/// Writes `store`'s entries as of changelog `offset` (a store on disk syncs its own file).
pub(crate) fn write(file: &Path, offset: u64, store: &mut dyn StateStore) -> Result<()> {
    let persisted = store.persist(offset).map_err(|reason| EngineError::Store {
        store: store.name().into(),
        reason,
    })?;
    if persisted {
        return Ok(());
    }
    let io = |e| EngineError::Io {
        path: file.to_path_buf(),
        source: e,
    };
    let mut buf = Vec::with_capacity(64 + store.len() * 32);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&offset.to_be_bytes());
    buf.extend_from_slice(&0u64.to_be_bytes());
    let mut count = 0u64;
    store
        .snapshot(&mut |k, v| {
            for part in [k, v] {
                buf.extend_from_slice(&(part.len() as u32).to_be_bytes());
                buf.extend_from_slice(part);
            }
            count += 1;
        })
        .map_err(|reason| EngineError::Store {
            store: store.name().into(),
            reason,
        })?;
    buf[16..24].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = file.with_extension("checkpoint.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_data().map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

/// Loads a checkpoint into `store`; returns its changelog offset, or `None` (nothing loaded)
/// when there is no valid file or it is past `committed` (it would hold uncommitted state).
pub(crate) fn load(file: &Path, store: &mut dyn StateStore, committed: u64) -> Result<Option<u64>> {
    let Ok(buf) = std::fs::read(file) else {
        return Ok(None);
    };
    let valid = buf.len() >= 28
        && &buf[..8] == MAGIC
        && crc32c::crc32c(&buf[..buf.len() - 4]).to_be_bytes() == buf[buf.len() - 4..];
    if !valid {
        tracing::warn!(file = %file.display(), "ignoring a damaged local checkpoint; restoring from the changelog");
        return Ok(None);
    }
    let u64_at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let (offset, count) = (u64_at(8), u64_at(16));
    if offset > committed {
        return Ok(None);
    }
    let body = &buf[24..buf.len() - 4];
    let mut at = 0;
    let take = |at: &mut usize| -> Option<&[u8]> {
        let len = u32::from_be_bytes(body.get(*at..*at + 4)?.try_into().ok()?) as usize;
        let part = body.get(*at + 4..*at + 4 + len)?;
        *at += 4 + len;
        Some(part)
    };
    for _ in 0..count {
        let (Some(k), Some(v)) = (take(&mut at), take(&mut at)) else {
            return Err(EngineError::Store {
                store: store.name().into(),
                reason: format!("checkpoint {} ends early", file.display()),
            });
        };
        store
            .apply_change(k, Some(v))
            .map_err(|reason| EngineError::Store {
                store: store.name().into(),
                reason,
            })?;
    }
    Ok(Some(offset))
}
