//! The OVER window operator: each input row with window functions over its frame, per
//! partition key (planned in [`crate::plan::OverStep`]).
//!
//! Its input is keyed by the partition key (through a repartition topic); each value holds the
//! row, then the window functions' arguments, and over an upsert stream the input key and a
//! [`Change`]. Two contracts, after the input:
//!
//! - **Over a stream** (append-only, `ORDER BY` its event time first): as Flink, a row waits
//!   until the watermark passes its time; then the partition's released rows are taken in
//!   window order and each emits one output row, keyed by the partition key (an append
//!   stream). A row older than the watermark when it arrives is late: dropped and counted
//!   like other late records. The partition keeps only what later frames reach: the last `n`
//!   rows of `ROWS n PRECEDING`, the rows within the range of `RANGE v PRECEDING`, and for
//!   frames from the partition's start the accumulator states alone (and, with
//!   `ROW_NUMBER()`, the count of released rows).
//! - **Over an upsert stream** (the result of a `GROUP BY` without a window): the partition's
//!   current rows are kept in window order — `ORDER BY` values, then the input key. An
//!   insert, replace or delete re-emits the rows whose frame changed (for `ROWS n
//!   PRECEDING`: the changed row and the `n` after it; for frames from the partition's start
//!   or with `ROW_NUMBER()`: every row after it), keyed by their input key, and a tombstone
//!   for a deleted input key. The watermark plays no part. The output's final table equals
//!   the batch query over the input's final table (ties in window order aside, which SQL
//!   leaves open).
//!
//! A batch's changes to a partition are applied together, then its changed rows computed
//! once. The state is an [`OverStore`], changelogged like every store.
//!
//! A row whose partition value changes (`PARTITION BY` an aggregate of the input) leaves its
//! old partition without a tombstone and is emitted by the task of its new one: when it moves
//! between tasks, the output holds the writes of two tasks for its key, in the order the
//! tasks wrote them. Partitioning by the input's group columns, as usual, never moves a row.

mod frame;
mod store;

use crate::accumulator::AccumulatorFns;
use crate::changes::Change;
use crate::plan::Frame;
use crate::row::{Row, RowCodec};
use datafusion::common::ScalarValue;
pub(crate) use frame::Order;
use frame::{Entry, affected, evaluate};
use runnel_engine::error::Result;
use runnel_engine::operator::late;
use runnel_engine::operator::{OpRef, Out, TaskCx, op};
use runnel_engine::record::{Control, Rec};
use runnel_engine::serdes::SerdeRef;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
pub(crate) use store::OverStore;

type Stream<V> = runnel_engine::dsl::KStream<Row, V>;

/// What a window needs to compute its columns.
pub(crate) struct OverSpec {
    pub order: Arc<Order>,
    pub frame: Frame,
    /// The window columns: `Some(i)` the i-th aggregate of `fns`, `None` `ROW_NUMBER()`.
    pub columns: Vec<Option<usize>>,
    /// Sliding (retracting) accumulators for a bounded frame, plain ones otherwise.
    pub fns: AccumulatorFns,
    /// Columns of the input row, and arguments after them.
    pub row_len: usize,
    pub args_len: usize,
    pub upsert: bool,
}

/// A record's value for the window operator: the row, the arguments, and over an upsert
/// stream the input key and the change.
pub(crate) fn pack(row: Row, args: Row, change: Option<(Row, Change)>) -> Row {
    let mut values = row.0;
    values.extend(args.0);
    if let Some((key, change)) = change {
        values.extend(key.0);
        values.push(change.value());
    }
    Row(values)
}

/// The window operator over `keyed` (see the module documentation), its state in `store`.
pub(crate) fn operator(
    keyed: Stream<Row>,
    spec: Arc<OverSpec>,
    store: &str,
) -> Stream<Option<Row>> {
    let (name, order) = (store.to_string(), spec.order.clone());
    let upsert = spec.upsert;
    keyed.with_store_operator(
        "SQL-OVER",
        (store, "over window"),
        move || OverStore::new(name.clone(), order.clone()),
        move |node, store, out| -> OpRef<Row, Row> {
            op(OverOp {
                node,
                spec: spec.clone(),
                store,
                codec: Arc::new(RowCodec),
                watermark: i64::MIN,
                out,
            })
        },
        upsert,
    )
}

struct OverOp {
    node: Arc<str>,
    spec: Arc<OverSpec>,
    store: Rc<RefCell<OverStore>>,
    /// For late records.
    codec: SerdeRef<Row>,
    watermark: i64,
    out: Out<Row, Option<Row>>,
}

/// Changes to one partition of an upsert stream within a batch.
#[derive(Default)]
struct Touched {
    /// `(order values, input key)` of every row inserted or removed.
    changed: Vec<(Row, Row)>,
    /// The last change per input key.
    last: HashMap<Row, Change>,
    time: i64,
}

fn with_columns(row: &Row, columns: Vec<ScalarValue>) -> Row {
    let mut values = row.0.clone();
    values.extend(columns);
    Row(values)
}

impl OverOp {
    /// Over a stream: holds the rows until the watermark passes them.
    fn hold(&mut self, cx: &mut TaskCx, batch: Vec<Rec<Row, Row>>) -> Result<()> {
        let spec = &self.spec;
        let mut store = self.store.borrow_mut();
        for r in batch {
            cx.at(&self.node, r.offset);
            if r.timestamp < self.watermark {
                late(cx, &self.node, &r, &self.codec, &self.codec);
                continue;
            }
            let mut values = r.value.0;
            let args = Row(values.split_off(spec.row_len));
            store.hold(&r.key, r.timestamp, Row(values), args);
        }
        Ok(())
    }

    /// Over a stream: releases, in order, the rows the watermark passed.
    fn release(&mut self, cx: &mut TaskCx) -> Result<()> {
        let (spec, w) = (&self.spec, self.watermark);
        let mut store = self.store.borrow_mut();
        let mut emitted = Vec::new();
        for key in store.due_before(w) {
            let new = store.release(&key, w);
            let Some(p) = store.partition(&key) else {
                continue;
            };
            if new.is_empty() {
                continue;
            }
            let first_number = p.released + 1 - new.start as u64;
            let done = evaluate(spec, &p.rows, new.clone(), &p.states, first_number)
                .map_err(|e| cx.fail(e))?;
            for (j, columns) in new.clone().zip(done.columns) {
                let e = &p.rows[j];
                emitted.push(Rec {
                    key: key.clone(),
                    value: Some(with_columns(&e.row, columns)),
                    timestamp: e.time,
                    headers: Vec::new(),
                    offset: cx.offset,
                });
            }
            let len = p.rows.len();
            // What the frames of later rows, which are not older than the watermark, reach.
            // The final watermark says no more about time than the newest row: a later run
            // on more input goes on from there.
            let drop = match spec.frame {
                Frame::Rows(Some(n)) => len.saturating_sub(n),
                Frame::Range(Some(range)) => {
                    let newest = p.rows.last().map_or(w, |e| e.time);
                    let from = w.min(newest).saturating_sub(range);
                    p.rows.partition_point(|e| e.time < from)
                }
                Frame::Rows(None) | Frame::Range(None) => len,
            };
            let released = p.released + new.len() as u64;
            let keep = !spec.frame.bounded() || spec.columns.contains(&None);
            store.settle(&key, drop, released, done.states, keep);
        }
        drop(store);
        self.out.data(cx, emitted)
    }

    /// Over an upsert stream: applies the batch's changes, then re-emits what they changed.
    fn upsert(&mut self, cx: &mut TaskCx, batch: Vec<Rec<Row, Row>>) -> Result<()> {
        let spec = &self.spec;
        let mut store = self.store.borrow_mut();
        let mut touched: Vec<(Row, Touched)> = Vec::new();
        let mut at: HashMap<Row, usize> = HashMap::new();
        let mut offset = cx.offset;
        for r in batch {
            cx.at(&self.node, r.offset);
            offset = r.offset;
            let i = *at.entry(r.key.clone()).or_insert_with(|| {
                touched.push((r.key.clone(), Touched::default()));
                touched.len() - 1
            });
            let t = &mut touched[i].1;
            t.time = t.time.max(r.timestamp);
            let mut values = r.value.0;
            let change = values.pop().as_ref().map_or(Change::Add, Change::of);
            let id = Row(values.split_off(spec.row_len + spec.args_len));
            let args = Row(values.split_off(spec.row_len));
            let row = Row(values);
            match change {
                Change::Add => {
                    let order = spec.order.values(&row);
                    t.changed.push((order.clone(), id.clone()));
                    let e = Entry {
                        order,
                        id: id.clone(),
                        time: r.timestamp,
                        row,
                        args,
                    };
                    // A key added again without its retraction (an input replayed after a
                    // failure) replaces its row: the rows after the old one change too.
                    if let Some(old) = store.insert(&r.key, e) {
                        t.changed.push((old.order, old.id));
                    }
                }
                Change::Delete | Change::Replace => {
                    if let Some(old) = store.remove(&r.key, &id) {
                        t.changed.push((old.order, id.clone()));
                    }
                }
            }
            t.last.insert(id, change);
        }
        let mut emitted = Vec::new();
        for (key, t) in touched {
            let p = store.partition(&key);
            let rows = p.map_or(&[][..], |p| &p.rows[..]);
            for run in affected(spec, rows, &t.changed) {
                let done = evaluate(spec, rows, run.clone(), &[], 1).map_err(|e| cx.fail(e))?;
                for (j, columns) in run.zip(done.columns) {
                    let e = &rows[j];
                    emitted.push(Rec {
                        key: e.id.clone(),
                        value: Some(with_columns(&e.row, columns)),
                        timestamp: t.time,
                        headers: Vec::new(),
                        offset,
                    });
                }
            }
            for (id, change) in t.last {
                if change == Change::Delete && !p.is_some_and(|p| p.contains(&id)) {
                    emitted.push(Rec {
                        key: id,
                        value: None,
                        timestamp: t.time,
                        headers: Vec::new(),
                        offset,
                    });
                }
            }
            store.forget_if_empty(&key);
        }
        drop(store);
        self.out.data(cx, emitted)
    }
}

impl runnel_engine::operator::Operator<Row, Row> for OverOp {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<Row, Row>>) -> Result<()> {
        if self.spec.upsert {
            self.upsert(cx, batch)
        } else {
            self.hold(cx, batch)
        }
    }

    fn on_watermark(&mut self, cx: &mut TaskCx, w: i64) -> Result<()> {
        if runnel_engine::operator::rises(&mut self.watermark, w) && !self.spec.upsert {
            self.release(cx)?;
        }
        self.out.control(cx, Control::Watermark(w))
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}
