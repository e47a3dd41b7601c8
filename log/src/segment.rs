//! One segment of a partition: `<base_offset:020>.log` plus its `.index` and `.timeindex`.
//!
//! Contract: the `.log` file is a sequence of whole, CRC-valid RecordBatch v2 batches with
//! increasing offsets, starting at or after `base_offset`; `size` is the byte length of that
//! sequence. Bytes are added only at `size` with positional writes, so readers holding the file
//! handle may read any range below `readable_len()` while an append is under way. A segment never
//! shrinks except through [`Segment::recover`], which truncates a torn or corrupt tail.

use crate::batch::{self, BatchHeader};
use crate::clock::Clock;
use crate::error::{LogError, Result};
use crate::index::{INDEX_INTERVAL_BYTES, OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::txn::index::TxnIndex;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads `len` bytes at `position` into a new buffer, without first zeroing it: the read
/// buffers of a fetch are megabytes each, and the kernel overwrites every byte anyway.
pub(crate) fn read_new_buffer(file: &File, position: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf = Vec::<u8>::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is writable for `len - filled` bytes (capacity `len`), and pread
        // writes at most that many into it.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                len - filled,
                (position + filled as u64) as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialized the next `n` bytes.
            n => unsafe { buf.set_len(filled + n as usize) },
        }
    }
    Ok(buf)
}

pub fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    dir: PathBuf,
    file: Arc<File>,
    /// Bytes written (appends are serialized by the partition's writer lock).
    size: u64,
    /// Bytes readers may see: everything under `always` once synced, else once written.
    readable: Arc<AtomicU64>,
    /// One past the last offset stored here.
    pub next_offset: u64,
    /// Largest record timestamp, `i64::MIN` while empty.
    pub max_timestamp: i64,
    /// When data was last written here (ms since the epoch; the file's mtime after a restart):
    /// retention counts from the later of this and `max_timestamp`, so that records with old
    /// event times (a replay, a backfill) are kept `retention.ms` after they were written.
    pub last_write_ms: i64,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// When this segment was created or opened, on the log's clock (`segment.ms` ages it).
    pub created_ms: i64,
    clock: Clock,
    /// The transactions aborted by markers in this segment.
    pub(crate) txn_index: TxnIndex,
}

/// What a read needs from a segment, taken under the partition's read lock and used after it.
#[derive(Debug, Clone)]
pub struct ReadHandle {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub start_position: u64,
    pub readable_len: u64,
    /// Where the next segment starts, if there is one (filled in by the partition).
    pub next_base_offset: Option<u64>,
}

/// Outcome of a scan that validates batches one by one.
struct ScanEnd {
    valid_len: u64,
    error: Option<(u64, u64, String)>,
}

impl Segment {
    /// A new, empty segment file at `base_offset`; `clock` ages it and stamps its writes.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the file cannot be created (it exists already, or the disk refuses).
    pub fn create(dir: &Path, base_offset: u64, clock: &Clock) -> Result<Self> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        Ok(Self::with_file(dir, base_offset, file, clock.clone()))
    }

    fn with_file(dir: &Path, base_offset: u64, file: File, clock: Clock) -> Self {
        Self {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size: 0,
            readable: Arc::new(AtomicU64::new(0)),
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            last_write_ms: clock.now_ms(),
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            created_ms: clock.now_ms(),
            clock,
            txn_index: TxnIndex::empty(dir, base_offset),
        }
    }

    /// Opens an existing segment. With `trust_indexes` (a closed segment, or a clean shutdown)
    /// the indexes come from disk when they are consistent and only the bytes after the last
    /// index entry are validated; otherwise the whole file is scanned and the indexes rebuilt.
    /// A bad tail is cut only with `truncate_bad_tail` (the active segment after a crash); in a
    /// closed segment the bytes stay, so reads reach them and fail with an error instead of
    /// silently skipping offsets. Returns the segment and the number of bytes found bad.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the file cannot be opened, read or cut; bad data is not an error here
    /// (see above).
    pub fn recover(
        dir: &Path,
        base_offset: u64,
        trust_indexes: bool,
        truncate_bad_tail: bool,
        clock: &Clock,
    ) -> Result<(Self, u64)> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let meta = file.metadata().map_err(|e| LogError::io(&path, e))?;
        let len = meta.len();
        let written = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        let mut seg = Self::with_file(dir, base_offset, file, clock.clone());
        if let Some(ms) = written {
            seg.last_write_ms = ms;
        }
        let loaded = trust_indexes
            .then(|| OffsetIndex::load(&seg.index_path(), len))
            .flatten()
            .filter(|idx| seg.index_matches_log(idx));
        let start = match loaded {
            Some(idx) if !idx.is_empty() => {
                let last = idx.last().expect("non-empty");
                let max_rel = last.relative_offset;
                seg.time_index =
                    TimeIndex::load(&seg.time_index_path(), u32::MAX).unwrap_or_default();
                seg.max_timestamp = seg.time_index.max_timestamp().unwrap_or(i64::MIN);
                seg.index = idx;
                seg.next_offset = base_offset + max_rel as u64;
                last.position as u64
            }
            _ => 0,
        };
        let end = seg.scan_and_index(start, len)?;
        let bad = len - end.valid_len;
        if let Some((offset, position, reason)) = &end.error {
            tracing::warn!(
                segment = %path.display(), offset, position, reason = %reason,
                bad_bytes = bad, truncating = truncate_bad_tail, "corrupt or torn data in segment"
            );
        }
        let kept = if truncate_bad_tail && bad > 0 {
            seg.file
                .set_len(end.valid_len)
                .map_err(|e| LogError::io(&path, e))?;
            seg.file.sync_all().map_err(|e| LogError::io(&path, e))?;
            end.valid_len
        } else {
            len
        };
        seg.size = kept;
        seg.readable.store(kept, Ordering::Release);
        seg.txn_index = TxnIndex::open(dir, base_offset, seg.next_offset)?;
        Ok((seg, bad))
    }

    /// Whether sampled index entries point at batch headers with the offsets they claim. Files
    /// that are merely well-formed (increasing, in bounds) but wrong are caught here, at the
    /// cost of three small reads.
    fn index_matches_log(&self, idx: &OffsetIndex) -> bool {
        idx.samples().all(|e| {
            let mut frame = [0u8; batch::LOG_OVERHEAD];
            self.file
                .read_exact_at(&mut frame, e.position as u64)
                .is_ok()
                && batch::peek_frame(&frame).is_some_and(|(base, _)| {
                    base == (self.base_offset + e.relative_offset as u64) as i64
                })
        })
    }

    /// Validates batches from `start` to `len`, extending the indexes; stops at the first
    /// batch that is torn, fails its CRC, or goes backwards in offsets.
    fn scan_and_index(&mut self, start: u64, len: u64) -> Result<ScanEnd> {
        let path = self.log_path();
        let mut pos = start;
        let mut frame = [0u8; batch::LOG_OVERHEAD];
        let mut buf = Vec::new();
        while pos < len {
            let bad = |offset: u64, reason: String| ScanEnd {
                valid_len: pos,
                error: Some((offset, pos, reason)),
            };
            if len - pos < batch::LOG_OVERHEAD as u64 {
                return Ok(bad(self.next_offset, "torn batch header".into()));
            }
            self.file
                .read_exact_at(&mut frame, pos)
                .map_err(|e| LogError::io(&path, e))?;
            let (base, size) = batch::peek_frame(&frame).expect("12 bytes");
            if size < batch::HEADER_LEN as i64 || size as u64 > len - pos {
                return Ok(bad(
                    base.max(0) as u64,
                    format!("torn batch of {size} bytes"),
                ));
            }
            buf.resize(size as usize, 0);
            self.file
                .read_exact_at(&mut buf, pos)
                .map_err(|e| LogError::io(&path, e))?;
            let h = match batch::validate(&buf) {
                Ok(h) => h,
                Err(e) => return Ok(bad(base.max(0) as u64, e.to_string())),
            };
            if h.base_offset < self.next_offset {
                let reason = format!(
                    "offset goes backwards (expected at least {})",
                    self.next_offset
                );
                return Ok(bad(h.base_offset, reason));
            }
            self.note_batch(&h, pos);
            pos += size as u64;
        }
        Ok(ScanEnd {
            valid_len: pos,
            error: None,
        })
    }

    /// Updates offsets, timestamps and indexes for a batch stored at `position`.
    fn note_batch(&mut self, h: &BatchHeader, position: u64) {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.index.push(OffsetEntry {
                relative_offset: rel,
                position: position as u32,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size as u64;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.time_index.maybe_push(TimeEntry {
                timestamp: h.max_timestamp,
                relative_offset: (h.last_offset() - self.base_offset) as u32,
            });
        }
        self.next_offset = h.next_offset();
    }

    /// The segment's age for retention: the later of its newest record and its last write.
    pub fn retention_time(&self) -> i64 {
        self.max_timestamp.max(self.last_write_ms)
    }

    /// Writes one batch whose base offset is already set. The caller holds the writer lock;
    /// the bytes are not yet visible to readers (see [`Segment::publish`]).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file when the write fails; the caller cuts what it left.
    pub fn append(&mut self, bytes: &[u8], h: &BatchHeader) -> Result<u64> {
        let position = self.size;
        self.last_write_ms = self.clock.now_ms();
        crate::fault::write_all_at(&self.file, bytes, position, || self.log_path())
            .map_err(|e| LogError::io(self.log_path(), e))?;
        self.size += bytes.len() as u64;
        self.note_batch(h, position);
        Ok(self.size)
    }

    /// [`append`](Self::append) of a batch whose first 8 bytes (the base offset) are stale:
    /// `h.base_offset` is written in their place, the rest as it is.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    pub fn append_with_base(&mut self, bytes: &[u8], h: &BatchHeader) -> Result<u64> {
        let position = self.size;
        self.last_write_ms = self.clock.now_ms();
        let io = |e| LogError::io(self.log_path(), e);
        let path = || self.log_path();
        crate::fault::write_all_at(&self.file, &h.base_offset.to_be_bytes(), position, path)
            .map_err(io)?;
        crate::fault::write_all_at(&self.file, &bytes[8..], position + 8, path).map_err(io)?;
        self.size += bytes.len() as u64;
        self.note_batch(h, position);
        Ok(self.size)
    }

    /// Makes the first `len` bytes visible to readers.
    pub fn publish(&self, len: u64) {
        self.readable.fetch_max(len, Ordering::AcqRel);
    }

    pub fn readable_cell(&self) -> Arc<AtomicU64> {
        self.readable.clone()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Where to start reading for `offset` (the indexed batch at or before it).
    pub fn read_handle(&self, offset: u64) -> ReadHandle {
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        ReadHandle {
            file: self.file.clone(),
            path: self.log_path(),
            start_position: self.index.lookup(rel) as u64,
            readable_len: self.readable.load(Ordering::Acquire),
            next_base_offset: None,
        }
    }

    /// Relative offset to start from when looking for the first record at or after `ts`.
    pub fn time_lookup(&self, ts: i64) -> u64 {
        self.base_offset + self.time_index.lookup(ts) as u64
    }

    /// Makes what was written to the segment file durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file; what the sync was to cover must be treated as lost.
    pub fn sync(&self) -> Result<()> {
        crate::fault::sync_data(&self.file, || self.log_path())
            .map_err(|e| LogError::io(self.log_path(), e))?;
        self.txn_index.sync()
    }

    /// Cuts the file to its first `len` bytes (what a failed write or a failed sync left
    /// beyond them), and forgets them: the caller reopens the segment when `len` is below
    /// what it holds.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the file cannot be truncated.
    pub fn cut(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| LogError::io(self.log_path(), e))?;
        self.size = self.size.min(len);
        Ok(())
    }

    /// Persists the indexes (on roll and on clean close).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when an index file cannot be written (the next open rebuilds it).
    pub fn write_indexes(&self) -> Result<()> {
        self.index.write(&self.index_path())?;
        self.time_index.write(&self.time_index_path())
    }

    pub fn log_path(&self) -> PathBuf {
        log_path(&self.dir, self.base_offset)
    }
    fn index_path(&self) -> PathBuf {
        self.dir.join(format!("{:020}.index", self.base_offset))
    }
    fn time_index_path(&self) -> PathBuf {
        self.dir.join(format!("{:020}.timeindex", self.base_offset))
    }

    /// Removes the segment's files. Readers that still hold the file handle keep reading.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] for a file that exists but cannot be removed.
    pub fn delete_files(&self) -> Result<()> {
        remove_if_exists(&self.log_path())?;
        self.txn_index.delete()?;
        self.delete_index_files()
    }

    /// Removes the index files only (before the log file is replaced by a compacted one).
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] for a file that exists but cannot be removed.
    pub fn delete_index_files(&self) -> Result<()> {
        remove_if_exists(&self.index_path())?;
        remove_if_exists(&self.time_index_path())
    }

    /// Base offsets of the segments in a partition directory, ascending.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the directory cannot be read.
    pub fn list(dir: &Path) -> Result<Vec<u64>> {
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|s| s.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }
}

/// Where the whole batches a read returns lie in a segment file: `len` bytes from `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub position: u64,
    pub len: u64,
    /// The offset after the last batch of the span; `None` when the span is empty.
    pub next_offset: Option<u64>,
}

/// Finds the whole batches of `handle` that start in `[start_position, readable_len)` and lie
/// at or after `offset`, up to about `max_bytes` (always at least one batch), stopping before a
/// batch whose base offset is ≥ `stop_offset`. Only batch headers are read and checked (magic,
/// size, within the segment), not CRCs: this is what the broker sends from the file as it is,
/// and what [`read_batches`] reads and checks. Batches before a bad header are returned; the
/// error comes when the bad batch is the first one, so it names exactly where reading stops.
///
/// # Errors
///
/// A [`CorruptAt`] naming the position and the cause when the first batch at `offset` has
/// a bad header or cannot be read (the partition makes it a [`LogError::Corrupt`]).
pub fn locate_batches(
    handle: &ReadHandle,
    offset: u64,
    stop_offset: u64,
    max_bytes: usize,
) -> std::result::Result<BatchSpan, CorruptAt> {
    let mut pos = handle.start_position;
    let mut span = BatchSpan {
        position: pos,
        len: 0,
        next_offset: None,
    };
    while pos < handle.readable_len && (span.len as usize) < max_bytes {
        match next_batch(handle, pos, offset, stop_offset) {
            Ok(Step::Skip(size)) => {
                pos += size;
                span.position = pos;
            }
            Ok(Step::Take(size, next_offset)) => {
                if span.len > 0 && span.len as usize + size as usize > max_bytes {
                    break;
                }
                pos += size;
                span.len += size;
                span.next_offset = Some(next_offset);
            }
            Ok(Step::Stop) => break,
            Err((off, reason)) if span.len == 0 => {
                return Err(CorruptAt {
                    position: pos,
                    offset: off.unwrap_or(offset),
                    reason,
                });
            }
            Err(_) => break,
        }
    }
    Ok(span)
}

/// Reads the batches [`locate_batches`] finds, checking each one's CRC. Returns the bytes and
/// the offset after the last batch returned. As there, intact batches before a bad one are
/// returned and the error comes when the bad batch is the first.
///
/// # Errors
///
/// As [`locate_batches`], and a CRC mismatch of the first batch, or a failed read.
pub fn read_batches(
    handle: &ReadHandle,
    offset: u64,
    stop_offset: u64,
    max_bytes: usize,
) -> std::result::Result<(Vec<u8>, Option<u64>), CorruptAt> {
    let span = locate_batches(handle, offset, stop_offset, max_bytes)?;
    let mut out =
        read_new_buffer(&handle.file, span.position, span.len as usize).map_err(|e| CorruptAt {
            position: span.position,
            offset,
            reason: format!("read failed: {e}"),
        })?;
    let mut at = 0;
    let mut next = None;
    while at < out.len() {
        match batch::validate(&out[at..]) {
            Ok(h) => {
                at += h.size;
                next = Some(h.next_offset());
            }
            Err(e) if at == 0 => {
                return Err(CorruptAt {
                    position: span.position,
                    offset: batch::parse_header(&out).map_or(offset, |h| h.base_offset),
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                out.truncate(at);
                break;
            }
        }
    }
    Ok((out, next))
}

enum Step {
    Skip(u64),
    Take(u64, u64),
    Stop,
}

/// Looks at the header of the batch at `pos`: skip it (before `offset`), take it, or stop (at
/// `stop_offset`). A header that cannot be read or does not fit the segment is an error,
/// carrying the batch's offset when the header was readable.
fn next_batch(
    handle: &ReadHandle,
    pos: u64,
    offset: u64,
    stop_offset: u64,
) -> std::result::Result<Step, (Option<u64>, String)> {
    let end = handle.readable_len;
    if end - pos < batch::HEADER_LEN as u64 {
        return Err((None, "batch header cut short".into()));
    }
    let mut header = [0u8; batch::HEADER_LEN];
    handle
        .file
        .read_exact_at(&mut header, pos)
        .map_err(|e| (None, format!("read failed: {e}")))?;
    let h = batch::parse_header(&header).map_err(|e| (None, e.to_string()))?;
    if h.base_offset >= stop_offset {
        return Ok(Step::Stop);
    }
    if pos + h.size as u64 > end {
        return Err((
            Some(h.base_offset),
            "batch runs past the end of the segment".into(),
        ));
    }
    if h.last_offset() < offset {
        return Ok(Step::Skip(h.size as u64));
    }
    Ok(Step::Take(h.size as u64, h.next_offset()))
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(p, e)),
    }
}

/// Where a read found a bad batch; the partition turns it into [`LogError::Corrupt`].
#[derive(Debug)]
pub struct CorruptAt {
    pub position: u64,
    pub offset: u64,
    pub reason: String,
}
