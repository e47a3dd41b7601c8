//! Interactive queries: reads of a running [`App`](crate::App)'s state stores from other
//! threads (Kafka Streams' `KafkaStreams::store`, ksqlDB's pull queries).
//!
//! Contract: stores stay single-threaded. A query is a read function sent to every worker
//! thread; each worker runs it between two steps on each of its tasks that has the named
//! store, on the store as it is then (what the task has processed, committed or not), and
//! answers with the task's watermark and input positions, so the caller knows which input
//! offsets the answer reflects. An idle worker wakes for a query at once; a busy one answers
//! after the batch it is processing. Workers that have stopped do not answer; a query waits
//! at most its timeout for the others. Any named store is queryable with a read function
//! ([`Queries::query`]); an aggregation's store is also readable as the table it emits
//! ([`App::query_table`](crate::App::query_table): values per key and window as the
//! aggregation would emit them now, whatever panes or partials it keeps them in).

use crate::dsl::{Data, Key};
use crate::error::{EngineError, QueryRefused};
use crate::operator::MergeFn;
use crate::ops::window::TimeWindowSpec;
use crate::record::Window;
use crate::state::{KeyValueStore, SessionStore, StoreHandle, WindowStore};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Reads one task's instance of a store; runs on the task's worker thread.
type ReadFn = Arc<dyn Fn(&StoreHandle) -> Result<Box<dyn Any + Send>, String> + Send + Sync>;

/// A table's rows as its aggregation emits them: key, window (`None`: not windowed), value.
pub type TableRows<K, A> = Vec<(K, Option<Window>, A)>;

/// Reads an aggregation's store as its table: the rows of one key (a `&K`) or of every key,
/// as a boxed [`TableRows`]. Set by the DSL where it knows how the aggregation keeps values.
pub(crate) type TableReader =
    Arc<dyn Fn(&StoreHandle, Option<&dyn Any>) -> Result<Box<dyn Any>, String> + Send + Sync>;

/// A [`TableReader`] over a store of type `S` (see [`StoreHandle::with`]).
pub(crate) fn table_reader<S: 'static, K: 'static, A: 'static>(
    read: impl Fn(&S, Option<&K>) -> Result<TableRows<K, A>, String> + Send + Sync + 'static,
) -> TableReader {
    Arc::new(move |h, key| {
        let key = match key {
            Some(k) => Some(
                k.downcast_ref::<K>()
                    .ok_or("the key's type is not the store's key type")?,
            ),
            None => None,
        };
        let rows = h
            .with::<S, _>(|s| read(s, key))
            .ok_or("the store's type is not the aggregation's")??;
        Ok(Box::new(rows) as Box<dyn Any>)
    })
}

/// The rows of a key-value store: one key's, or every key's.
pub(crate) fn key_value_rows<K: Key, A: Data>(
    s: &KeyValueStore<K, A>,
    key: Option<&K>,
) -> Result<TableRows<K, A>, String> {
    match key {
        Some(k) => Ok(s
            .with_value(k, |v| vec![(k.clone(), None, v.clone())])
            .unwrap_or_default()),
        None => {
            let mut rows = Vec::new();
            s.for_each(&mut |k, v| {
                rows.push((k.clone(), None, v.clone()));
                Ok(())
            })?;
            Ok(rows)
        }
    }
}

/// The windows a windowed aggregation still holds (those not closed yet: a closed window's
/// result is in its output, and its first panes may be gone), each merged from its panes as
/// the aggregation emits it.
pub(crate) fn window_rows<K: Key, A: Data>(
    s: &WindowStore<K, A>,
    spec: TimeWindowSpec,
    merge: Option<&MergeFn<K, A>>,
    key: Option<&K>,
) -> Result<TableRows<K, A>, String> {
    let mut panes: HashMap<K, BTreeMap<i64, A>> = HashMap::new();
    s.for_each(key, &mut |k, start, v| {
        panes.entry(k.clone()).or_default().insert(start, v.clone());
        Ok(())
    })?;
    let pane = spec.pane();
    let mut rows = Vec::new();
    for (k, held) in panes {
        let mut starts = BTreeSet::new();
        for &p in held.keys() {
            let mut w = spec.first_start(p);
            while w <= p {
                if w >= s.closed_before() {
                    starts.insert(w);
                }
                w += spec.advance;
            }
        }
        for start in starts {
            let mut parts = held
                .range(start..=start + spec.size - pane)
                .map(|(_, a)| (*a).clone());
            let value = match merge {
                Some(merge) if pane != spec.size => {
                    let Some(first) = parts.next() else { continue };
                    parts.try_fold(first, |x, y| merge(&k, x, y))?
                }
                _ => match parts.next() {
                    Some(v) => v,
                    None => continue,
                },
            };
            let window = Window {
                start,
                end: start + spec.size,
            };
            rows.push((k.clone(), Some(window), value));
        }
    }
    Ok(rows)
}

/// The sessions a session aggregation holds: one key's, or every key's.
pub(crate) fn session_rows<K: Key, A: Data>(
    s: &SessionStore<K, A>,
    key: Option<&K>,
) -> TableRows<K, A> {
    let row = |k: &K, start, end, v: &A| (k.clone(), Some(Window { start, end }), v.clone());
    match key {
        Some(k) => s
            .overlapping(k, i64::MIN, i64::MAX)
            .into_iter()
            .filter_map(|(start, end)| Some(row(k, start, end, s.get(k, start, end)?)))
            .collect(),
        None => s
            .iter()
            .map(|(k, start, end, v)| row(k, start, end, v))
            .collect(),
    }
}

/// A query on its way to a worker.
pub(crate) struct Request {
    store: String,
    read: ReadFn,
    reply: std::sync::mpsc::Sender<Vec<TaskAnswer<Box<dyn Any + Send>>>>,
}

/// What one task answered, and as of where.
#[derive(Debug, Clone)]
pub struct TaskAnswer<T> {
    /// `<sub-topology>_<partition>`.
    pub task: String,
    /// The task's watermark (event time, ms), `None` before its first.
    pub watermark: Option<i64>,
    /// Per input `(topic, partition, next offset to process)`: the answer reflects every
    /// record before these offsets.
    pub positions: Vec<(String, u32, Option<u64>)>,
    /// What the read function returned, or why it failed on this task.
    pub value: Result<T, String>,
}

/// See the module documentation. One per [`App`](crate::App), shared by its workers.
#[derive(Default)]
pub struct Queries {
    workers: Mutex<Vec<UnboundedSender<Request>>>,
}

impl Queries {
    /// A worker's end: the requests sent to it.
    pub(crate) fn register(&self) -> UnboundedReceiver<Request> {
        let (tx, rx) = unbounded_channel();
        let mut workers = self.workers.lock();
        workers.retain(|w| !w.is_closed());
        workers.push(tx);
        rx
    }

    /// Runs `read` on every task's instance of `store` and gathers the answers (tasks
    /// without the store do not answer). `read` gets the task's [`StoreHandle`]; typed access
    /// is [`StoreHandle::with`].
    ///
    /// # Errors
    ///
    /// `EngineError::Query` with [`QueryRefused::NotRunning`] when no worker is running, [`QueryRefused::UnknownStore`] when
    /// no task has the store, [`QueryRefused::Timeout`] when a running worker did not answer
    /// within `timeout` (a task blocked in a long batch or a restore).
    pub fn query<T: Send + 'static>(
        &self,
        store: &str,
        timeout: Duration,
        read: impl Fn(&StoreHandle) -> Result<T, String> + Send + Sync + 'static,
    ) -> crate::Result<Vec<TaskAnswer<T>>> {
        let read: ReadFn = Arc::new(move |h| read(h).map(|v| Box::new(v) as Box<dyn Any + Send>));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut asked = 0;
        for w in self.workers.lock().iter() {
            let request = Request {
                store: store.to_string(),
                read: read.clone(),
                reply: tx.clone(),
            };
            if w.send(request).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        if asked == 0 {
            return Err(EngineError::Query(QueryRefused::NotRunning));
        }
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::new();
        for answered in 0..asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => answers.extend(a),
                // A worker that stopped before answering dropped its request.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(EngineError::Query(QueryRefused::Timeout {
                        missing: asked - answered,
                        asked,
                        timeout,
                    }));
                }
            }
        }
        if answers.is_empty() {
            return Err(EngineError::Query(QueryRefused::UnknownStore(
                store.to_string(),
            )));
        }
        Ok(answers
            .into_iter()
            .map(|a| TaskAnswer {
                task: a.task,
                watermark: a.watermark,
                positions: a.positions,
                value: a.value.map(|v| {
                    *v.downcast::<T>()
                        .expect("the answer has the type its read function returns")
                }),
            })
            .collect())
    }
}

impl Request {
    /// Answers for the worker's tasks; `tasks` yields each task's answer frame and its store
    /// of the requested name, if it has one.
    pub(crate) fn answer<'a>(
        self,
        tasks: impl Iterator<Item = (TaskAnswer<()>, Option<&'a StoreHandle>)>,
    ) {
        let answers = tasks
            .filter_map(|(frame, store)| {
                let value = (self.read)(store?);
                Some(TaskAnswer {
                    task: frame.task,
                    watermark: frame.watermark,
                    positions: frame.positions,
                    value,
                })
            })
            .collect();
        // The asker may have given up (timeout): nothing to do then.
        let _ = self.reply.send(answers);
    }

    pub(crate) fn store(&self) -> &str {
        &self.store
    }
}
