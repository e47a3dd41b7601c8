//! Aggregates over an upsert stream (the result of another `GROUP BY`, a table that changes).
//!
//! Contract: [`Changes`] reads the upsert stream keyed by its upstream key and keeps the last
//! row per key in a changelogged store, so that after a restart it still knows what each key
//! held. For each record it emits the row being replaced as a retraction, then the new row as an
//! addition; a delete only retracts. Each emitted row carries one trailing boolean column,
//! `true` for a retraction. The group's aggregates then apply additions with
//! `update_batch` and retractions with `retract_batch` of DataFusion's retractable ("sliding")
//! accumulators, and count the group's rows: a group left with none is deleted (a tombstone).

use super::row::Row;
use crate::ops::processor::{Processor, ProcessorContext};
use crate::record::Rec;
use crate::state::KeyValueStore;
use datafusion::common::ScalarValue;

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
