//! Every record-at-a-time transformation (filter, map, flat_map, peek, branch, merge, table
//! filter/map_values) as one operator around a closure that appends 0..n outputs per input,
//! and the batch-at-a-time operator the SQL layer evaluates its expressions with.
//!
//! A closure's `Err` stops the task with an error naming the operator and the record's
//! topic, partition and offset; a record a batch function refuses alone goes to the
//! application's dead-letter topic with the reason, and the batch goes on without it.

use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec};
use std::sync::Arc;

/// A record predicate shared by the tasks.
pub(crate) type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// Appends the outputs of one record; `Err` when it cannot (why).
pub(crate) type FlatFn<K, V, K2, V2> =
    Arc<dyn Fn(Rec<K, V>, &mut Vec<Rec<K2, V2>>) -> Result<(), String> + Send + Sync>;

pub(crate) struct Stateless<K, V, K2, V2> {
    pub node: Arc<str>,
    pub f: FlatFn<K, V, K2, V2>,
    pub out: Out<K2, V2>,
}

impl<K, V, K2: Clone, V2: Clone> Operator<K, V> for Stateless<K, V, K2, V2> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            cx.at(&self.node, r.offset);
            (self.f)(r, &mut out).map_err(|e| cx.fail(e))?;
        }
        self.out.data(cx, out)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
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
    fn on_data(&mut self, cx: &mut TaskCx, mut batch: Vec<Rec<K, V>>) -> Result<()> {
        let (node, pred) = (&self.node, &self.pred);
        batch.retain(|r| {
            cx.at(node, r.offset);
            pred(&r.key, &r.value)
        });
        self.out.data(cx, batch)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}

/// A record a batch function could not process (an expression failed on it): it goes to the
/// application's dead-letter topic with the reason, and the batch goes on without it.
pub struct Refused {
    pub offset: u64,
    pub timestamp: i64,
    pub value: Vec<u8>,
    pub reason: String,
}

/// A whole batch at a time: the SQL layer evaluates its expressions on Arrow batches. `Err`
/// when the batch as a whole cannot go on (why); the task then stops at the batch's first
/// record.
pub type BatchFn<K, V, K2, V2> = Arc<
    dyn Fn(Vec<Rec<K, V>>, &mut Vec<Refused>) -> Result<Vec<Rec<K2, V2>>, String> + Send + Sync,
>;

pub(crate) struct Batchwise<K, V, K2, V2> {
    pub node: Arc<str>,
    pub f: BatchFn<K, V, K2, V2>,
    pub out: Out<K2, V2>,
    pub dead_letters: Arc<str>,
}

impl<K, V, K2: Clone, V2: Clone> Operator<K, V> for Batchwise<K, V, K2, V2> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let (node, dead_letters) = (&self.node, &self.dead_letters);
        if let Some(first) = batch.first() {
            cx.at(node, first.offset);
        }
        let mut refused = Vec::new();
        let out = (self.f)(batch, &mut refused).map_err(|e| cx.fail(e))?;
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
        self.out.data(cx, out)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}
