//! Non-windowed aggregation of a grouped stream into a table: one value per key in a
//! key-value store, an update downstream for every input record. An aggregate function's
//! `Err` stops the task, naming the record it failed on.

use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec};
use crate::state::KeyValueStore;
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

/// How to fold values into an aggregate, and (for windows built from panes and for sessions)
/// how to combine two aggregates (for the fallible aggregations of the operator API,
/// [`KGroupedStream::aggregate_into`](crate::KGroupedStream::aggregate_into)).
pub struct AggFns<K, V, A> {
    pub init: Arc<dyn Fn() -> A + Send + Sync>,
    pub add: AddFn<K, V, A>,
    pub merge: Option<MergeFn<K, A>>,
}

/// Folds one value into an aggregate; `Err` when it cannot (why).
pub type AddFn<K, V, A> = Arc<dyn Fn(&K, &V, A) -> Result<A, String> + Send + Sync>;
/// Combines two aggregates of one key; `Err` when it cannot (why).
pub type MergeFn<K, A> = Arc<dyn Fn(&K, A, A) -> Result<A, String> + Send + Sync>;

impl<K, V, A> Clone for AggFns<K, V, A> {
    fn clone(&self) -> Self {
        Self {
            init: self.init.clone(),
            add: self.add.clone(),
            merge: self.merge.clone(),
        }
    }
}

impl<K, V, A> AggFns<K, V, A> {
    /// Combines aggregates oldest first (`None` for none).
    ///
    /// # Errors
    ///
    /// The first error of `merge`, unchanged.
    ///
    /// # Panics
    ///
    /// If `merge` is `None`.
    pub fn merge_all(
        &self,
        key: &K,
        parts: impl IntoIterator<Item = A>,
    ) -> Result<Option<A>, String> {
        let merge = self
            .merge
            .as_ref()
            .expect("checked when the topology was built");
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Ok(None);
        };
        parts.try_fold(first, |a, b| merge(key, a, b)).map(Some)
    }
}

pub(crate) struct Aggregate<K, V, A> {
    pub node: Arc<str>,
    pub fns: AggFns<K, V, A>,
    pub store: Rc<RefCell<KeyValueStore<K, A>>>,
    pub out: Out<K, Option<A>>,
}

impl<K: Hash + Eq + Clone + 'static, V, A: Clone + 'static> Operator<K, V> for Aggregate<K, V, A> {
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let mut out = Vec::with_capacity(batch.len());
        let mut store = self.store.borrow_mut();
        for r in batch {
            cx.at(&self.node, r.offset);
            let acc = store
                .update(&r.key, |acc| {
                    let acc = acc.unwrap_or_else(|| (self.fns.init)());
                    (self.fns.add)(&r.key, &r.value, acc)
                })
                .map_err(|e| cx.fail(e))?
                .clone();
            let key = r.key.clone();
            out.push(r.with(key, Some(acc)));
        }
        drop(store);
        self.out.data(cx, out)
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }
}
