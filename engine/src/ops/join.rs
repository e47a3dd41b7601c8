//! Joins. Every join keeps its own state, so either side may be any stream or table:
//! - stream–table: the table side fills a key-value store; each stream record looks it up
//!   (inner: only when found; left: always).
//! - table–table: both sides in stores; every change on either side emits the joined value
//!   or a tombstone (inner, left, outer).
//! - stream–stream, windowed: records of both sides are buffered in window stores for the join
//!   window plus grace; a record joins every buffered record of the other side within
//!   `[ts - before, ts + after]`. Left and outer results for records that found no partner are
//!   emitted only when their window has closed, as Kafka Streams does.
//!
//! Control messages go downstream from the left input only (both inputs see the same ones).

use super::window::late;
use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec};
use crate::serdes::SerdeRef;
use crate::state::{KeyValueStore, WindowStore};
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

/// Inner, left or outer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Outer,
}

/// Joins two optional sides into an optional result (inner/left/outer decide the options).
pub(crate) type Joiner<K, L, R, VR> =
    Arc<dyn Fn(&K, Option<&L>, Option<&R>) -> Option<VR> + Send + Sync>;

// ---------- stream–table ----------

pub(crate) struct StreamTableJoin<K, L, R, VR> {
    pub node: Arc<str>,
    pub table: Rc<RefCell<KeyValueStore<K, R>>>,
    pub joiner: Joiner<K, L, R, VR>,
    pub out: Out<K, VR>,
}

impl<K: Hash + Eq + Clone + 'static, L, R: 'static, VR: Clone> Operator<K, L>
    for StreamTableJoin<K, L, R, VR>
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, L>>) -> Result<()> {
        let mut table = self.table.borrow_mut();
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            cx.at(&self.node, r.offset);
            if let Some(v) = (self.joiner)(&r.key, Some(&r.value), table.get(&r.key)) {
                let k = r.key.clone();
                out.push(r.with(k, v));
            }
        }
        drop(table);
        self.out.data(cx, out)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}

/// Keeps the latest value per key of a table side.
pub(crate) struct Materialize<K, V> {
    pub store: Rc<RefCell<KeyValueStore<K, V>>>,
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> Operator<K, Option<V>> for Materialize<K, V> {
    fn on_data(&mut self, _: &mut TaskCx, batch: Vec<Rec<K, Option<V>>>) -> Result<()> {
        let mut store = self.store.borrow_mut();
        for r in batch {
            match r.value {
                Some(v) => store.put(r.key, v),
                None => {
                    store.delete(&r.key);
                }
            }
        }
        Ok(())
    }

    /// The stream side forwards the control messages.
    fn forward(&mut self, _: &mut TaskCx, _: Control) -> Result<()> {
        Ok(())
    }
}

// ---------- table–table ----------

/// One side of a table–table join: `LEFT` says which store it updates.
pub(crate) struct TableTableSide<K, L, R, VR, const LEFT: bool> {
    pub node: Arc<str>,
    pub left: Rc<RefCell<KeyValueStore<K, L>>>,
    pub right: Rc<RefCell<KeyValueStore<K, R>>>,
    pub joiner: Joiner<K, L, R, VR>,
    pub out: Out<K, Option<VR>>,
}

impl<K: Hash + Eq + Clone + 'static, L: Clone + 'static, R: Clone + 'static, VR: Clone>
    TableTableSide<K, L, R, VR, true>
{
    fn update(&self, cx: &mut TaskCx, batch: Vec<Rec<K, Option<L>>>) -> Result<()> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            cx.at(&self.node, r.offset);
            let mut left = self.left.borrow_mut();
            match r.value.clone() {
                Some(v) => left.put(r.key.clone(), v),
                None => {
                    left.delete(&r.key);
                }
            }
            let mut right = self.right.borrow_mut();
            let v = (self.joiner)(&r.key, left.get(&r.key), right.get(&r.key));
            out.push(r.derive(r.key.clone(), v));
        }
        self.out.data(cx, out)
    }
}

impl<K: Hash + Eq + Clone + 'static, L: Clone + 'static, R: Clone + 'static, VR: Clone>
    TableTableSide<K, L, R, VR, false>
{
    fn update(&self, cx: &mut TaskCx, batch: Vec<Rec<K, Option<R>>>) -> Result<()> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            cx.at(&self.node, r.offset);
            let mut right = self.right.borrow_mut();
            match r.value.clone() {
                Some(v) => right.put(r.key.clone(), v),
                None => {
                    right.delete(&r.key);
                }
            }
            let mut left = self.left.borrow_mut();
            let v = (self.joiner)(&r.key, left.get(&r.key), right.get(&r.key));
            out.push(r.derive(r.key.clone(), v));
        }
        self.out.data(cx, out)
    }
}

impl<K: Hash + Eq + Clone + 'static, L: Clone + 'static, R: Clone + 'static, VR: Clone>
    Operator<K, Option<L>> for TableTableSide<K, L, R, VR, true>
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, Option<L>>>) -> Result<()> {
        self.update(cx, batch)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}

impl<K: Hash + Eq + Clone + 'static, L: Clone + 'static, R: Clone + 'static, VR: Clone>
    Operator<K, Option<R>> for TableTableSide<K, L, R, VR, false>
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, Option<R>>>) -> Result<()> {
        self.update(cx, batch)
    }

    /// The left side forwards the control messages.
    fn forward(&mut self, _: &mut TaskCx, _: Control) -> Result<()> {
        Ok(())
    }
}

// ---------- stream–stream ----------

/// Join window: a right record at `tr` joins a left record at `tl` if
/// `tl - before <= tr <= tl + after`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinSpec {
    pub before: i64,
    pub after: i64,
    pub grace: i64,
}

/// A buffered record and whether it found a partner.
pub(crate) type Buffered<V> = Vec<(V, bool)>;

pub(crate) struct StreamStreamState<K, L, R, VR> {
    pub node: Arc<str>,
    pub spec: JoinSpec,
    pub kind: JoinKind,
    pub left: Rc<RefCell<WindowStore<K, Buffered<L>>>>,
    pub right: Rc<RefCell<WindowStore<K, Buffered<R>>>>,
    pub joiner: Joiner<K, L, R, VR>,
    pub left_serdes: (SerdeRef<K>, SerdeRef<L>),
    pub right_serdes: (SerdeRef<K>, SerdeRef<R>),
    pub watermark: i64,
    pub out: Out<K, VR>,
}

impl<K, L, R, VR> StreamStreamState<K, L, R, VR>
where
    K: Hash + Eq + Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
    VR: Clone,
{
    fn left_closed(&self, ts: i64) -> bool {
        ts.saturating_add(self.spec.after)
            .saturating_add(self.spec.grace)
            <= self.watermark
    }
    fn right_closed(&self, ts: i64) -> bool {
        ts.saturating_add(self.spec.before)
            .saturating_add(self.spec.grace)
            <= self.watermark
    }

    fn on_left(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, L>>) -> Result<()> {
        let mut out = Vec::new();
        for r in batch {
            cx.at(&self.node, r.offset);
            if self.left_closed(r.timestamp) {
                late(cx, &self.node, &r, &self.left_serdes.0, &self.left_serdes.1);
                continue;
            }
            let (from, to) = (
                r.timestamp - self.spec.before,
                r.timestamp + self.spec.after,
            );
            let mut matched = false;
            let mut right = self.right.borrow_mut();
            let stamps: Vec<i64> = right
                .fetch(&r.key, from, to)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            for ts in stamps {
                let mut entries = right.remove(&r.key, ts).unwrap_or_default();
                for (rv, rmatched) in entries.iter_mut() {
                    if let Some(v) = (self.joiner)(&r.key, Some(&r.value), Some(rv)) {
                        let mut o = r.derive(r.key.clone(), v);
                        o.timestamp = o.timestamp.max(ts);
                        out.push(o);
                    }
                    *rmatched = true;
                    matched = true;
                }
                right.put(r.key.clone(), ts, entries);
            }
            drop(right);
            let mut left = self.left.borrow_mut();
            let mut entries = left.remove(&r.key, r.timestamp).unwrap_or_default();
            entries.push((r.value, matched));
            left.put(r.key, r.timestamp, entries);
        }
        self.out.data(cx, out)
    }

    fn on_right(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, R>>) -> Result<()> {
        let mut out = Vec::new();
        for r in batch {
            cx.at(&self.node, r.offset);
            if self.right_closed(r.timestamp) {
                late(
                    cx,
                    &self.node,
                    &r,
                    &self.right_serdes.0,
                    &self.right_serdes.1,
                );
                continue;
            }
            let (from, to) = (
                r.timestamp - self.spec.after,
                r.timestamp + self.spec.before,
            );
            let mut matched = false;
            let mut left = self.left.borrow_mut();
            for ts in left
                .fetch(&r.key, from, to)
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
            {
                let mut entries = left.remove(&r.key, ts).unwrap_or_default();
                for (lv, lmatched) in entries.iter_mut() {
                    if let Some(v) = (self.joiner)(&r.key, Some(lv), Some(&r.value)) {
                        let mut o = r.derive(r.key.clone(), v);
                        o.timestamp = o.timestamp.max(ts);
                        out.push(o);
                    }
                    *lmatched = true;
                    matched = true;
                }
                left.put(r.key.clone(), ts, entries);
            }
            drop(left);
            let mut right = self.right.borrow_mut();
            let mut entries = right.remove(&r.key, r.timestamp).unwrap_or_default();
            entries.push((r.value, matched));
            right.put(r.key, r.timestamp, entries);
        }
        self.out.data(cx, out)
    }

    /// Expires buffered records whose window closed, emitting unmatched ones for left/outer.
    fn expire(&mut self, cx: &mut TaskCx) -> Result<()> {
        let mut out = Vec::new();
        let emit_left = self.kind != JoinKind::Inner;
        let emit_right = self.kind == JoinKind::Outer;
        loop {
            let mut left = self.left.borrow_mut();
            let Some(ts) = left.first_start().filter(|t| self.left_closed(*t)) else {
                break;
            };
            for k in left.keys_at(ts) {
                for (v, matched) in left.remove(&k, ts).unwrap_or_default() {
                    if emit_left
                        && !matched
                        && let Some(o) = (self.joiner)(&k, Some(&v), None)
                    {
                        out.push(Rec::new(k.clone(), o, ts));
                    }
                }
            }
        }
        loop {
            let mut right = self.right.borrow_mut();
            let Some(ts) = right.first_start().filter(|t| self.right_closed(*t)) else {
                break;
            };
            for k in right.keys_at(ts) {
                for (v, matched) in right.remove(&k, ts).unwrap_or_default() {
                    if emit_right
                        && !matched
                        && let Some(o) = (self.joiner)(&k, None, Some(&v))
                    {
                        out.push(Rec::new(k.clone(), o, ts));
                    }
                }
            }
        }
        out.sort_by_key(|r| r.timestamp);
        self.out.data(cx, out)
    }
}

/// The left or right input of a stream–stream join, sharing one state.
pub(crate) struct StreamStreamInput<K, L, R, VR, const LEFT: bool> {
    pub state: Rc<RefCell<StreamStreamState<K, L, R, VR>>>,
}

impl<K, L, R, VR> Operator<K, L> for StreamStreamInput<K, L, R, VR, true>
where
    K: Hash + Eq + Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
    VR: Clone,
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, L>>) -> Result<()> {
        self.state.borrow_mut().on_left(cx, batch)
    }

    fn on_watermark(&mut self, cx: &mut TaskCx, w: i64) -> Result<()> {
        let mut s = self.state.borrow_mut();
        if super::rises(&mut s.watermark, w) {
            s.expire(cx)?;
        }
        s.out.control(cx, Control::Watermark(w))
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.state.borrow().out.control(cx, control)
    }
}

impl<K, L, R, VR> Operator<K, R> for StreamStreamInput<K, L, R, VR, false>
where
    K: Hash + Eq + Clone + 'static,
    L: Clone + 'static,
    R: Clone + 'static,
    VR: Clone,
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, R>>) -> Result<()> {
        self.state.borrow_mut().on_right(cx, batch)
    }

    /// The left side forwards the control messages.
    fn forward(&mut self, _: &mut TaskCx, _: Control) -> Result<()> {
        Ok(())
    }
}
