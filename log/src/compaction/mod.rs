//! Log compaction (`cleanup.policy = compact`): keep only the latest record of each key.
//!
//! Contract: compaction rewrites closed segments only, one at a time, keeping each retained
//! record's offset (so offsets are never renumbered; batches get gaps). It works as Kafka's
//! cleaner: a pass reads the dirty part of the log (from the partition's
//! [`CleanerCheckpoint`] to the last stable offset, active segment included) into a
//! [`KeyOffsetMap`] of bounded size, then drops every record of a closed segment that a later
//! record of the map supersedes; when the map fills before the end, the next pass goes on
//! from where it stopped, so memory stays within `dedupe_buffer_bytes` however many keys the
//! log holds. Records below the checkpoint hold each key once. A tombstone (null value)
//! survives until its timestamp is older than `delete.retention.ms`, so consumers that lag
//! less than that still see the delete; keyless records are dropped. The rewritten file
//! replaces the old one by an atomic rename ([`Partition::swap_cleaned`]); readers with the
//! old file keep a consistent view. A partition is cleaned again only once a new segment was
//! closed (as Kafka waits for dirty data), so an expired tombstone goes at the first run after
//! the next roll. A compressed batch that loses records is rewritten with the same codec.
//!
//! Transactions: only segments below the last stable offset are cleaned (an open transaction's
//! records are undecided); records of aborted transactions are dropped and never count as the
//! latest of their key; transaction markers are kept, and a rewritten transactional batch keeps
//! its producer id, epoch and flags.

mod offset_map;

use crate::batch::{self, BatchBuilder};
use crate::error::{LogError, Result};
use crate::partition::Partition;
use crate::txn::AbortedFilter;
use bytes::Bytes;
use offset_map::KeyOffsetMap;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;

/// Compacts every closed segment of `p` that has something to drop, in as many passes as its
/// dirty keys need with maps of at most `dedupe_buffer_bytes`; gives up between segments once
/// `stopping` says so (the log is closing). Returns the number of records removed.
///
/// # Errors
///
/// [`LogError::Io`] / [`LogError::Corrupt`] reading a segment or writing its compacted copy;
/// the segment is then left as it was.
pub fn compact(
    p: &Partition,
    now_ms: i64,
    dedupe_buffer_bytes: usize,
    stopping: &dyn Fn() -> bool,
) -> Result<u64> {
    let mut checkpoint = p.cleaner.lock();
    let bases = p.segment_bases();
    let active_base = *bases.last().expect("a partition has an active segment");
    let stable = p.last_stable_offset();
    let cleanable_end = active_base.min(stable);
    let start = checkpoint.first_dirty.max(p.log_start_offset());
    if bases.len() < 2 || (start >= cleanable_end && checkpoint.at_active_base == active_base) {
        return Ok(0);
    }
    checkpoint.at_active_base = active_base;
    let tombstone_deadline = now_ms.saturating_sub(p.config().delete_retention_ms as i64);
    let mut removed = 0;
    loop {
        let from = checkpoint.first_dirty.max(p.log_start_offset());
        let mut latest = KeyOffsetMap::new(dedupe_buffer_bytes, stable.saturating_sub(from));
        let mapped_to = map_latest_offsets(p, from, stable, &mut latest)?;
        let pass = Pass {
            latest: &latest,
            mapped_to,
            tombstone_deadline,
        };
        for w in bases
            .windows(2)
            .filter(|w| w[1] <= stable && w[0] < mapped_to)
        {
            if stopping() {
                // The checkpoint stays: the next run redoes this pass.
                return Ok(removed);
            }
            let aborted = AbortedFilter::new(p.aborted_transactions(w[0], w[1]));
            removed += compact_segment(p, (w[0], w[1]), &pass, aborted)?;
        }
        checkpoint.first_dirty = mapped_to.min(active_base);
        if mapped_to >= cleanable_end {
            return Ok(removed);
        }
    }
}

/// One pass's rule for what a closed segment keeps.
struct Pass<'a> {
    /// Each key's latest offset in `[first dirty, mapped_to)`.
    latest: &'a KeyOffsetMap,
    mapped_to: u64,
    tombstone_deadline: i64,
}

impl Pass<'_> {
    fn keeps(&self, r: &crate::types::Record) -> bool {
        let Some(k) = &r.key else {
            return false;
        };
        // A key absent from the map has no record in the part of the log this pass read.
        let superseded = self.latest.get(k).is_some_and(|o| o > r.offset);
        // Only below `mapped_to`: beyond it, the tombstone must still supersede the older
        // records of its key when a later pass maps it.
        let expired_tombstone =
            r.value.is_none() && r.timestamp < self.tombstone_deadline && r.offset < self.mapped_to;
        !superseded && !expired_tombstone
    }
}

/// Records in `latest` each key's latest committed record in `[from, until)`, in offset order,
/// until the map is full. Returns the offset it mapped up to: every keyed record below it is
/// in the map.
fn map_latest_offsets(
    p: &Partition,
    from: u64,
    until: u64,
    latest: &mut KeyOffsetMap,
) -> Result<u64> {
    let mut committed = AbortedFilter::new(p.aborted_transactions(from, until));
    let full_at = p.scan_batches(from, until, |b| {
        let h = batch::parse_header(b)?;
        // Markers' keys are not record keys: a record keyed like one is not superseded by it.
        if !committed.keeps(&h, b) || h.is_control() {
            return Ok(ControlFlow::Continue(()));
        }
        for r in batch::records(b)? {
            // A pass after a full map starts within the batch where the last one stopped.
            if r.offset < from || r.offset >= until {
                continue;
            }
            if let Some(k) = r.key
                && !latest.insert(&k, r.offset)
            {
                return Ok(ControlFlow::Break(r.offset));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(full_at.unwrap_or(until))
}

/// Rewrites segment `[base, end)` without the records `latest` supersedes, streaming to a
/// `.cleaned` file begun at the first record to drop (a segment with nothing to drop is left
/// as it is, unread twice and unwritten).
fn compact_segment(
    p: &Partition,
    (base, end): (u64, u64),
    pass: &Pass<'_>,
    mut committed: AbortedFilter,
) -> Result<u64> {
    let cleaned_path = p.dir().join(format!("{base:020}.log.cleaned"));
    let io = |e| LogError::io(&cleaned_path, e);
    let mut out: Option<BufWriter<std::fs::File>> = None;
    let mut removed = 0u64;
    p.scan_batches(base, end, |b| {
        let h = batch::parse_header(b)?;
        let visible = committed.keeps(&h, b);
        let recs = if h.is_control() || !visible {
            Vec::new()
        } else {
            batch::records(b)?
        };
        let keep: Vec<_> = recs.iter().filter(|r| pass.keeps(r)).collect();
        let dropped = if visible || h.is_control() {
            recs.len() - keep.len()
        } else {
            h.records_count.max(0) as usize
        };
        if dropped == 0 {
            if let Some(w) = &mut out {
                w.write_all(b).map_err(io)?;
            }
            return Ok(ControlFlow::Continue(()));
        }
        removed += dropped as u64;
        let w = match &mut out {
            Some(w) => w,
            None => out.insert(start_cleaned(p, &cleaned_path, base, h.base_offset)?),
        };
        if !keep.is_empty() {
            // Kept compressed as it was written (Kafka's cleaner keeps the codec too).
            let mut nb = BatchBuilder::new(b.len()).with_compression(h.compression()?);
            for r in keep {
                let delta = (r.offset - h.base_offset) as i32;
                nb.push_with_delta(
                    delta,
                    r.timestamp,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                );
            }
            let mut bytes = nb.finish_like(&h);
            batch::set_base_offset(&mut bytes, h.base_offset);
            w.write_all(&bytes).map_err(io)?;
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    let Some(w) = out else {
        return Ok(0);
    };
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    p.swap_cleaned(base, &cleaned_path)?;
    tracing::info!(topic = %p.topic, partition = p.id, segment = base, removed, "compacted segment");
    Ok(removed)
}

/// Creates `path` holding segment `base`'s batches before offset `until`, unchanged.
fn start_cleaned(
    p: &Partition,
    path: &std::path::Path,
    base: u64,
    until: u64,
) -> Result<BufWriter<std::fs::File>> {
    let io = |e| LogError::io(path, e);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    p.scan_batches(base, until, |b: &Bytes| {
        w.write_all(b).map_err(io)?;
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(w)
}
