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

/// A record a batch function could not process (an expression failed on it): it goes to the
/// application's dead-letter topic with the reason, and the batch goes on without it.
pub(crate) struct Refused {
    pub offset: u64,
    pub timestamp: i64,
    pub value: Vec<u8>,
    pub reason: String,
}

/// A whole batch at a time: the SQL layer evaluates its expressions on Arrow batches.
pub(crate) type BatchFn<K, V, K2, V2> =
    Arc<dyn Fn(Vec<Rec<K, V>>, &mut Vec<Refused>) -> Vec<Rec<K2, V2>> + Send + Sync>;

pub(crate) struct Batchwise<K, V, K2, V2> {
    pub node: Arc<str>,
    pub f: BatchFn<K, V, K2, V2>,
    pub out: Out<K2, V2>,
    pub dead_letters: Arc<str>,
}

impl<K, V, K2: Clone, V2: Clone> Operator<K, V> for Batchwise<K, V, K2, V2> {
    fn on(&mut self, cx: &mut TaskCx, msg: Msg<K, V>) {
        let (node, f, dead_letters) = (&self.node, &self.f, &self.dead_letters);
        map_msg(cx, &self.out, msg, |cx, batch| {
            if let Some(first) = batch.first() {
                cx.at(node, first.offset);
            }
            let mut refused = Vec::new();
            let out = f(batch, &mut refused);
            for r in refused {
                tracing::warn!(node = %node, offset = r.offset, reason = %r.reason,
                    "record refused; sent to the dead-letter topic {dead_letters}");
                let h = |k: &str, v: String| runnel_log::Header {
                    key: k.into(),
                    value: Some(bytes::Bytes::from(v)),
                };
                let headers = vec![
                    h("runnel.error", r.reason),
                    h("runnel.node", node.to_string()),
                    h("runnel.topic", cx.topic.to_string()),
                    h("runnel.partition", cx.partition.to_string()),
                    h("runnel.offset", r.offset.to_string()),
                ];
                cx.out.push_raw(
                    dead_letters,
                    None,
                    r.timestamp,
                    headers,
                    None,
                    Some(&r.value),
                );
                cx.metrics.dead_letters += 1;
            }
            out
        })
    }
}
