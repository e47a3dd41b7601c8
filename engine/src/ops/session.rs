//! Session window aggregation: per key, events closer than `gap` form one session; a new event
//! may merge several sessions (aggregates combined with the merger). A session `[start, end]`
//! (first and last event time, as in Kafka Streams) closes when the watermark reaches
//! `end + gap + grace`; an event that could only join closed sessions is late.

use super::aggregate::AggFns;
use super::window::{EmitStrategy, late};
use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec, Window, Windowed};
use crate::serdes::SerdeRef;
use crate::state::SessionStore;
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) struct SessionAggregate<K, V, A> {
    pub node: Arc<str>,
    pub gap: i64,
    pub grace: i64,
    pub emit: EmitStrategy,
    pub fns: AggFns<K, V, A>,
    pub store: Rc<RefCell<SessionStore<K, A>>>,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    pub watermark: i64,
    pub out: Out<Windowed<K>, Option<A>>,
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> SessionAggregate<K, V, A> {
    fn closed(&self, end: i64) -> bool {
        end.saturating_add(self.gap).saturating_add(self.grace) <= self.watermark
    }

    fn add_batch(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let mut updates = Vec::new();
        let mut store = self.store.borrow_mut();
        for r in batch {
            cx.at(&self.node, r.offset);
            let ts = r.timestamp;
            if self.closed(ts) {
                late(cx, &self.node, &r, &self.key_serde, &self.value_serde);
                continue;
            }
            let (mut start, mut end) = (ts, ts);
            let mut parts = Vec::new();
            for (s, e) in store.overlapping(&r.key, ts - self.gap, ts + self.gap) {
                if self.closed(e) {
                    continue;
                }
                start = start.min(s);
                end = end.max(e);
                if let Some(a) = store.remove(&r.key, s, e) {
                    parts.push(a);
                }
                if self.emit == EmitStrategy::OnWindowUpdate {
                    let key = Windowed {
                        key: r.key.clone(),
                        window: Window { start: s, end: e },
                    };
                    updates.push(r.derive(key, None));
                }
            }
            let merged = self.fns.merge_all(&r.key, parts).map_err(|e| cx.fail(e))?;
            let acc = merged.unwrap_or_else(|| (self.fns.init)());
            let acc = (self.fns.add)(&r.key, &r.value, acc).map_err(|e| cx.fail(e))?;
            if self.emit == EmitStrategy::OnWindowUpdate {
                let key = Windowed {
                    key: r.key.clone(),
                    window: Window { start, end },
                };
                updates.push(r.derive(key, Some(acc.clone())));
            }
            store.put(r.key.clone(), start, end, acc);
        }
        drop(store);
        self.out.data(cx, updates)
    }

    fn close_windows(&mut self, cx: &mut TaskCx) -> Result<()> {
        let mut emitted = Vec::new();
        let mut store = self.store.borrow_mut();
        while let Some(end) = store.first_end() {
            if !self.closed(end) {
                break;
            }
            for (key, start) in store.ending_at(end) {
                let value = store.remove(&key, start, end);
                if self.emit == EmitStrategy::OnWindowClose {
                    emitted.push(Rec {
                        key: Windowed {
                            key,
                            window: Window { start, end },
                        },
                        value,
                        timestamp: end,
                        headers: Vec::new(),
                        offset: cx.offset,
                    });
                }
            }
        }
        drop(store);
        self.out.data(cx, emitted)
    }
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> Operator<K, V>
    for SessionAggregate<K, V, A>
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        self.add_batch(cx, batch)
    }

    fn on_watermark(&mut self, cx: &mut TaskCx, w: i64) -> Result<()> {
        if super::rises(&mut self.watermark, w) {
            self.close_windows(cx)?;
        }
        self.out.control(cx, Control::Watermark(w))
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}
