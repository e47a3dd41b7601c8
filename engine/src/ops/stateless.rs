//! Every record-at-a-time transformation (filter, map, flat_map, peek, branch, merge, table
//! filter/map_values) as one operator around a closure that appends 0..n outputs per input.

use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Msg, Rec};
use crate::task::map_msg;
use std::sync::Arc;

/// A record predicate shared by the tasks.
pub(crate) type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

pub(crate) type FlatFn<K, V, K2, V2> = Arc<dyn Fn(Rec<K, V>, &mut Vec<Rec<K2, V2>>) + Send + Sync>;

pub(crate) struct Stateless<K, V, K2, V2> {
    pub node: Arc<str>,
    pub f: FlatFn<K, V, K2, V2>,
    pub out: Out<K2, V2>,
}

impl<K, V, K2: Clone, V2: Clone> Operator<K, V> for Stateless<K, V, K2, V2> {
    fn on(&mut self, cx: &mut TaskCx, msg: Msg<K, V>) {
        let (node, f) = (&self.node, &self.f);
        map_msg(cx, &self.out, msg, |cx, batch| {
            let mut out = Vec::with_capacity(batch.len());
            for r in batch {
                cx.at(node, r.offset);
                f(r, &mut out);
            }
            out
        })
    }
}

/// Keeps the records a predicate accepts, in place (no new batch: filters are the most
/// common operator and often the first).
pub(crate) struct Retain<K, V> {
    pub node: Arc<str>,
    pub pred: Predicate<K, V>,
    pub out: Out<K, V>,
}

impl<K: Clone, V: Clone> Operator<K, V> for Retain<K, V> {
    fn on(&mut self, cx: &mut TaskCx, msg: Msg<K, V>) {
        let (node, pred) = (&self.node, &self.pred);
        map_msg(cx, &self.out, msg, |cx, mut batch| {
            batch.retain(|r| {
                cx.at(node, r.offset);
                pred(&r.key, &r.value)
            });
            batch
        })
    }
}
