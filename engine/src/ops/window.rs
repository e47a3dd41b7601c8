//! Tumbling and hopping window aggregation, computed from panes.
//!
//! A pane is `gcd(size, advance)` long; each record updates exactly one pane (cost independent
//! of size/advance), and a window's result is the merge of its `size / pane` panes when it is
//! emitted. Windows close when the watermark reaches `end + grace`; a record whose every
//! window has closed is late: counted, and written to the late-records topic when one is set.
//! Emit on close (default) sends one final result per window and key; emit on update sends the
//! current result of every open window the record touched.

use super::aggregate::AggFns;
use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec, Window, Windowed};
use crate::serdes::SerdeRef;
use crate::state::WindowStore;
use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

/// When window results go downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitStrategy {
    /// One final result per window, when it closes.
    #[default]
    OnWindowClose,
    /// The current result after every update.
    OnWindowUpdate,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeWindowSpec {
    pub size: i64,
    pub advance: i64,
    pub grace: i64,
}

impl TimeWindowSpec {
    pub fn pane(&self) -> i64 {
        gcd(self.size, self.advance)
    }
    /// Start of the latest window containing `ts`.
    pub fn last_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.advance) * self.advance
    }
    /// Start of the earliest window containing `ts`.
    pub fn first_start(&self, ts: i64) -> i64 {
        (ts - self.size).div_euclid(self.advance) * self.advance + self.advance
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Writes a late record to the late-records topic, if one is configured, and counts it.
pub fn late<K, V>(
    cx: &mut TaskCx,
    node: &Arc<str>,
    r: &Rec<K, V>,
    key_serde: &SerdeRef<K>,
    value_serde: &SerdeRef<V>,
) {
    cx.metrics.late_records += 1;
    tracing::debug!(node = %node, timestamp = r.timestamp, watermark = cx.watermark, "late record");
    if let Some(topic) = cx.late_topic.clone() {
        let mut headers = r.headers.clone();
        headers.push(runnel_log::Header {
            key: "runnel.late.operator".into(),
            value: Some(bytes::Bytes::from(node.to_string())),
        });
        let _ = cx.out.push(
            &topic,
            None,
            r.timestamp,
            headers,
            |b| key_serde.serialize(&r.key, b),
            |b| value_serde.serialize(&r.value, b),
        );
    }
}

pub(crate) struct WindowAggregate<K, V, A> {
    pub node: Arc<str>,
    pub spec: TimeWindowSpec,
    pub emit: EmitStrategy,
    pub fns: AggFns<K, V, A>,
    pub store: Rc<RefCell<WindowStore<K, A>>>,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    pub watermark: i64,
    pub out: Out<Windowed<K>, Option<A>>,
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> WindowAggregate<K, V, A> {
    fn closed(&self, start: i64) -> bool {
        start
            .saturating_add(self.spec.size)
            .saturating_add(self.spec.grace)
            <= self.watermark
    }

    fn result(
        &self,
        store: &mut WindowStore<K, A>,
        key: &K,
        start: i64,
    ) -> Result<Option<A>, String> {
        let pane = self.spec.pane();
        let mut parts = store
            .fetch(key, start, start + self.spec.size - pane)
            .into_iter()
            .map(|(_, a)| a.clone());
        if pane == self.spec.size {
            return Ok(parts.next());
        }
        self.fns.merge_all(key, parts)
    }

    fn add_batch(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let pane = self.spec.pane();
        let mut updates = Vec::new();
        let mut store = self.store.borrow_mut();
        for r in batch {
            cx.at(&self.node, r.offset);
            let last = self.spec.last_start(r.timestamp);
            if self.closed(last) || last < store.closed_before() {
                late(cx, &self.node, &r, &self.key_serde, &self.value_serde);
                continue;
            }
            let p = r.timestamp.div_euclid(pane) * pane;
            let (init, add) = (&self.fns.init, &self.fns.add);
            store
                .update(&r.key, p, || init(), |acc| add(&r.key, &r.value, acc))
                .map_err(|e| cx.fail(e))?;
            if self.emit == EmitStrategy::OnWindowUpdate {
                let mut s = self.spec.first_start(r.timestamp);
                while s <= r.timestamp {
                    if !self.closed(s) {
                        let value = self.result(&mut store, &r.key, s).map_err(|e| cx.fail(e))?;
                        let window = Window {
                            start: s,
                            end: s + self.spec.size,
                        };
                        let key = Windowed {
                            key: r.key.clone(),
                            window,
                        };
                        updates.push(r.derive(key, value));
                    }
                    s += self.spec.advance;
                }
            }
        }
        drop(store);
        self.out.data(cx, updates)
    }

    fn close_windows(&mut self, cx: &mut TaskCx) -> Result<()> {
        let mut emitted = Vec::new();
        let mut store = self.store.borrow_mut();
        while let Some(first_pane) = store.first_start() {
            // Windows before `next_window` were emitted already.
            let s = self.spec.first_start(first_pane).max(store.closed_before());
            if !self.closed(s) {
                break;
            }
            let end = s + self.spec.size;
            if self.emit == EmitStrategy::OnWindowClose {
                let mut keys = HashSet::new();
                let pane = self.spec.pane();
                let mut p = s;
                while p < end {
                    keys.extend(store.keys_at(p));
                    p += pane;
                }
                for key in keys {
                    let value = self.result(&mut store, &key, s).map_err(|e| cx.fail(e))?;
                    let window = Window { start: s, end };
                    emitted.push(Rec {
                        key: Windowed { key, window },
                        value,
                        timestamp: end - 1,
                        headers: Vec::new(),
                        offset: cx.offset,
                    });
                }
            }
            // No window starting at s + advance or later contains panes before it.
            while let Some(p) = store.first_start() {
                if p >= s + self.spec.advance {
                    break;
                }
                for k in store.keys_at(p) {
                    store.remove(&k, p);
                }
            }
            store.set_closed_before(s + self.spec.advance);
        }
        drop(store);
        self.out.data(cx, emitted)
    }
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> Operator<K, V>
    for WindowAggregate<K, V, A>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_cover_the_record() {
        let h = TimeWindowSpec {
            size: 10,
            advance: 4,
            grace: 0,
        };
        assert_eq!(h.pane(), 2);
        assert_eq!(h.first_start(13), 4);
        assert_eq!(h.last_start(13), 12);
        let t = TimeWindowSpec {
            size: 10,
            advance: 10,
            grace: 0,
        };
        assert_eq!(t.first_start(-3), -10);
        assert_eq!(t.last_start(-3), -10);
    }
}
