//! The combiner: the upstream half of a windowed aggregation that goes through a repartition
//! topic (two-phase aggregation, as Flink's local-global aggregation).
//!
//! Instead of every record, each upstream task sends, per key and pane, its *cumulative*
//! aggregate `(task partition, aggregate)`, re-sent whenever it changed and the watermark
//! moved. The downstream window keeps the latest one per writer and pane and merges them.
//! Because a partial replaces the previous one of the same writer rather than adding to it,
//! a partial sent again after a crash cannot be counted twice, whatever the timing; and
//! because a writer sends a pane's final partial before the watermark marker that passes it,
//! the downstream window closes only with every writer's final partial. Panes restored from
//! the changelog are all sent again, in case the downstream never received them.

use super::aggregate::AggFns;
use super::window::{TimeWindowSpec, late};
use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec};
use crate::serdes::{Serde, SerdeRef};
use crate::state::WindowStore;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) struct Combine<K, V, A> {
    pub node: Arc<str>,
    pub spec: TimeWindowSpec,
    pub fns: AggFns<K, V, A>,
    pub store: Rc<RefCell<WindowStore<K, A>>>,
    pub key_serde: SerdeRef<K>,
    pub value_serde: SerdeRef<V>,
    pub watermark: i64,
    /// Pane → keys whose partial changed since it was last sent.
    pub dirty: BTreeMap<i64, HashSet<K>>,
    /// Whether the panes restored from the changelog were marked to be sent again.
    pub primed: bool,
    pub out: Out<K, (u32, A)>,
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> Combine<K, V, A> {
    fn closed(&self, start: i64) -> bool {
        start
            .saturating_add(self.spec.size)
            .saturating_add(self.spec.grace)
            <= self.watermark
    }

    fn prime(&mut self) {
        if std::mem::replace(&mut self.primed, true) {
            return;
        }
        let mut store = self.store.borrow_mut();
        let mut pane = store.first_start();
        while let Some(p) = pane {
            self.dirty.entry(p).or_default().extend(store.keys_at(p));
            pane = store.next_start_after(p);
        }
    }

    fn add(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let pane = self.spec.pane();
        let mut store = self.store.borrow_mut();
        for r in batch {
            cx.at(&self.node, r.offset);
            if self.closed(self.spec.last_start(r.timestamp)) {
                late(cx, &self.node, &r, &self.key_serde, &self.value_serde);
                continue;
            }
            let p = r.timestamp.div_euclid(pane) * pane;
            let (init, add) = (&self.fns.init, &self.fns.add);
            store
                .update(&r.key, p, || init(), |acc| add(&r.key, &r.value, acc))
                .map_err(|e| cx.fail(e))?;
            let keys = self.dirty.entry(p).or_default();
            if !keys.contains(&r.key) {
                keys.insert(r.key);
            }
        }
        Ok(())
    }

    /// Sends the changed partials, then forgets panes whose every window has closed.
    fn flush(&mut self, cx: &mut TaskCx) -> Result<()> {
        let mut out = Vec::new();
        let mut store = self.store.borrow_mut();
        for (p, keys) in std::mem::take(&mut self.dirty) {
            for key in keys {
                if let Some(acc) = store.get(&key, p) {
                    let value = (cx.partition, acc.clone());
                    out.push(Rec {
                        key,
                        value,
                        timestamp: p,
                        headers: Vec::new(),
                        offset: cx.offset,
                    });
                }
            }
        }
        while let Some(p) = store.first_start() {
            if !self.closed(self.spec.last_start(p)) {
                break;
            }
            for k in store.keys_at(p) {
                store.remove(&k, p);
            }
        }
        drop(store);
        self.out.data(cx, out)
    }
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> Operator<K, V> for Combine<K, V, A> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        self.prime();
        self.add(cx, batch)
    }

    fn on_watermark(&mut self, cx: &mut TaskCx, w: i64) -> Result<()> {
        self.prime();
        if super::rises(&mut self.watermark, w) {
            self.flush(cx)?;
        }
        self.out.control(cx, Control::Watermark(w))
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.prime();
        self.out.control(cx, control)
    }
}

/// The downstream fold: the latest partial per writer for one pane; panes concatenate.
pub(crate) fn partial_fns<K, A: Clone + 'static>() -> AggFns<K, (u32, A), Vec<(u32, A)>> {
    AggFns {
        init: Arc::new(Vec::new),
        add: Arc::new(|_, (writer, a), mut acc: Vec<(u32, A)>| {
            match acc.iter_mut().find(|(w, _)| w == writer) {
                Some(e) => e.1 = a.clone(),
                None => acc.push((*writer, a.clone())),
            }
            Ok(acc)
        }),
        merge: Some(Arc::new(|_, mut a: Vec<(u32, A)>, b| {
            a.extend(b);
            Ok(a)
        })),
    }
}

/// `(writer, aggregate)`: the writer as 4 big-endian bytes, then the aggregate's encoding.
pub(crate) struct PartialSerde<A>(pub SerdeRef<A>);

impl<A> Serde<(u32, A)> for PartialSerde<A> {
    fn serialize(&self, (w, a): &(u32, A), out: &mut Vec<u8>) -> Result<bool, String> {
        out.extend_from_slice(&w.to_be_bytes());
        self.0.serialize(a, out)?;
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<(u32, A), String> {
        let d = data
            .filter(|d| d.len() >= 4)
            .ok_or("partial aggregate without its writer")?;
        let w = u32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
        Ok((w, self.0.deserialize(Some(&d[4..]))?))
    }
}

/// A list of partials: each as a 4-byte length and a [`PartialSerde`] encoding.
pub(crate) struct PartialsSerde<A>(pub SerdeRef<A>);

impl<A> Serde<Vec<(u32, A)>> for PartialsSerde<A> {
    fn serialize(&self, parts: &Vec<(u32, A)>, out: &mut Vec<u8>) -> Result<bool, String> {
        let one = PartialSerde(self.0.clone());
        for p in parts {
            let mut b = Vec::new();
            one.serialize(p, &mut b)?;
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(&b);
        }
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Vec<(u32, A)>, String> {
        let one = PartialSerde(self.0.clone());
        let mut d = data.ok_or("null partials")?;
        let mut out = Vec::new();
        while !d.is_empty() {
            let len = d
                .get(..4)
                .map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize)
                .ok_or("truncated partials")?;
            let part = d.get(4..4 + len).ok_or("truncated partials")?;
            out.push(one.deserialize(Some(part))?);
            d = &d[4 + len..];
        }
        Ok(out)
    }
}
