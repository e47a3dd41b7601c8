//! Log compaction (`cleanup.policy = compact`): keep only the latest record of each key.
//!
//! Contract: compaction rewrites closed segments only, one at a time, keeping each retained
//! record's offset (so offsets are never renumbered; batches get gaps). A record survives if it
//! is the latest for its key anywhere in the partition (active segment included); a tombstone
//! (null value) survives until its timestamp is older than `delete.retention.ms`, so consumers
//! that lag less than that still see the delete. The rewritten file replaces the old one by an
//! atomic rename ([`Partition::swap_cleaned`]); readers with the old file keep a consistent view.
//! A partition is cleaned again only after a new segment was closed (as Kafka waits for dirty
//! data), so an expired tombstone goes at the first run after the next roll. A compressed
//! batch that loses records is rewritten with the same codec.
//!
//! Transactions: only segments below the last stable offset are cleaned (an open transaction's
//! records are undecided); records of aborted transactions are dropped and never count as the
//! latest of their key; transaction markers are kept, and a rewritten transactional batch keeps
//! its producer id, epoch and flags.

use crate::batch::{self, BatchBuilder};
use crate::error::{LogError, Result};
use crate::partition::Partition;
use crate::txn::AbortedFilter;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Write;
use std::ops::ControlFlow;

/// Compacts every closed segment of `p` that has something to drop. Returns the number of
/// records removed.
///
/// # Errors
///
/// [`LogError::Io`] / [`LogError::Corrupt`] reading a segment or writing its compacted copy;
/// the segment is then left as it was.
pub fn compact(p: &Partition, now_ms: i64) -> Result<u64> {
    let bases = p.segment_bases();
    let active_base = *bases.last().expect("a partition has an active segment");
    if bases.len() < 2 || p.mark_compacted(active_base) {
        return Ok(0);
    }
    let stable = p.last_stable_offset();
    let latest = latest_offsets(p, stable)?;
    let tombstone_deadline = now_ms.saturating_sub(p.config().delete_retention_ms as i64);
    let mut removed = 0;
    for w in bases.windows(2).filter(|w| w[1] <= stable) {
        let aborted = AbortedFilter::new(p.aborted_transactions(w[0], w[1]));
        removed += compact_segment(p, (w[0], w[1]), &latest, aborted, tombstone_deadline)?;
    }
    Ok(removed)
}

/// Key → offset of its latest committed record, below the last stable offset.
fn latest_offsets(p: &Partition, stable: u64) -> Result<HashMap<Bytes, u64>> {
    let mut latest = HashMap::new();
    let mut committed = AbortedFilter::new(p.aborted_transactions(p.log_start_offset(), stable));
    p.scan_batches(p.log_start_offset(), stable, |b| {
        if !committed.keeps(&batch::parse_header(b)?, b) {
            return Ok(ControlFlow::Continue(()));
        }
        for r in batch::records(b)? {
            if let Some(k) = r.key {
                latest.insert(k, r.offset);
            }
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(latest)
}

fn compact_segment(
    p: &Partition,
    (base, end): (u64, u64),
    latest: &HashMap<Bytes, u64>,
    mut committed: AbortedFilter,
    tombstone_deadline: i64,
) -> Result<u64> {
    let cleaned_path = p.dir().join(format!("{base:020}.log.cleaned"));
    let mut out = Vec::new();
    let mut removed = 0u64;
    p.scan_batches(base, end, |b| {
        let h = batch::parse_header(b)?;
        let visible = committed.keeps(&h, b);
        if h.is_control() {
            out.extend_from_slice(b);
            return Ok(ControlFlow::Continue(()));
        }
        let recs = batch::records(b)?;
        if !visible {
            removed += recs.len() as u64;
            return Ok(ControlFlow::Continue(()));
        }
        let keep: Vec<_> = recs
            .iter()
            .filter(|r| {
                let is_latest = r.key.as_ref().and_then(|k| latest.get(k)) == Some(&r.offset);
                let expired_tombstone = r.value.is_none() && r.timestamp < tombstone_deadline;
                is_latest && !expired_tombstone
            })
            .collect();
        removed += (recs.len() - keep.len()) as u64;
        if keep.len() == recs.len() {
            out.extend_from_slice(b);
        } else if !keep.is_empty() {
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
            out.extend_from_slice(&bytes);
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    if removed == 0 {
        return Ok(0);
    }
    let mut f = std::fs::File::create(&cleaned_path).map_err(|e| LogError::io(&cleaned_path, e))?;
    f.write_all(&out)
        .and_then(|()| f.sync_all())
        .map_err(|e| LogError::io(&cleaned_path, e))?;
    p.swap_cleaned(base, &cleaned_path)?;
    tracing::info!(topic = %p.topic, partition = p.id, segment = base, removed, "compacted segment");
    Ok(removed)
}
