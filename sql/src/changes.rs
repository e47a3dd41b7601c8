//! Aggregates over an upsert stream (the result of another `GROUP BY`, a table that changes).
//!
//! Contract: [`Changes`] reads the upsert stream keyed by its upstream key and keeps the last
//! row per key in a changelogged store, so that after a restart it still knows what each key
//! held. For each record it emits the row being replaced as a retraction, then the new row as an
//! addition, both in one batch; a delete only retracts, and a row replaced by an equal row
//! emits nothing (nothing downstream changes). Each emitted row carries one trailing boolean column,
//! `true` for a retraction. The group's aggregates then apply additions with
//! `update_batch` and retractions with `retract_batch` of DataFusion's retractable ("sliding")
//! accumulators, and count the group's rows: a group left with none is deleted (a tombstone).

use super::row::Row;
use datafusion::common::ScalarValue;
use runnel_engine::record::Rec;
use runnel_engine::state::KeyValueStore;
use runnel_engine::{Processor, ProcessorContext};

/// A record of an upsert stream: its key, and its row or `None` for a delete.
type Changed = Rec<Row, Option<Row>>;

/// Upserts in, retractions and additions out (see the module documentation).
pub(crate) struct Changes {
    pub store: String,
}

/// Appends the retraction flag to a row.
pub(crate) fn flagged(mut row: Row, retract: bool) -> Row {
    row.0.push(ScalarValue::Boolean(Some(retract)));
    row
}

/// Splits the retraction flag off a row [`Changes`] emitted.
pub(crate) fn unflag(mut row: Row) -> (Row, bool) {
    let retract = matches!(row.0.pop(), Some(ScalarValue::Boolean(Some(true))));
    (row, retract)
}

/// What a record of an upsert stream does to its input key's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Add,
    /// The key's row is gone: a tombstone unless the key comes back in the same batch.
    Delete,
    /// The key's row is replaced (the new one follows, maybe in another partition): no
    /// tombstone, or it could overtake the new row written by another task.
    Replace,
}

impl Change {
    pub(crate) fn value(self) -> ScalarValue {
        ScalarValue::Int64(Some(match self {
            Change::Add => 0,
            Change::Delete => 1,
            Change::Replace => 2,
        }))
    }

    pub(crate) fn of(v: &ScalarValue) -> Change {
        match v {
            ScalarValue::Int64(Some(1)) => Change::Delete,
            ScalarValue::Int64(Some(2)) => Change::Replace,
            _ => Change::Add,
        }
    }
}

/// An upsert stream's retractions and additions (see [`Changes`]) as rows and
/// [`Change`]s: a retraction followed by an addition of the same key (as the changes of one
/// upsert are forwarded together) is a replacement.
pub(crate) fn changes_of(batch: Vec<Changed>) -> (Vec<Changed>, Vec<Change>) {
    let flagged: Vec<(Changed, bool)> = batch
        .into_iter()
        .filter_map(|r| {
            let (row, retract) = unflag(r.value.clone()?);
            let key = r.key.clone();
            Some((r.with(key, Some(row)), retract))
        })
        .collect();
    let changes = (0..flagged.len())
        .map(|i| match (&flagged[i], flagged.get(i + 1)) {
            ((_, false), _) => Change::Add,
            ((r, true), Some((next, false))) if next.key == r.key => Change::Replace,
            _ => Change::Delete,
        })
        .collect();
    (flagged.into_iter().map(|(r, _)| r).collect(), changes)
}

impl Processor<Row, Option<Row>, Row, Option<Row>> for Changes {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, Row, Option<Row>>,
        r: Rec<Row, Option<Row>>,
    ) {
        let store = ctx.store::<KeyValueStore<Row, Row>>(&self.store);
        let old = match &r.value {
            Some(new) => {
                let mut s = store.borrow_mut();
                let old = s.get(&r.key).cloned();
                if old.as_ref() == Some(new) {
                    return;
                }
                s.put(r.key.clone(), new.clone());
                old
            }
            None => store.borrow_mut().delete(&r.key),
        };
        let key = r.key.clone();
        if let Some(old) = old {
            ctx.forward(r.clone().with(key.clone(), Some(flagged(old, true))));
        }
        if let Some(new) = r.value.clone() {
            ctx.forward(r.with(key, Some(flagged(new, false))));
        }
    }
}
