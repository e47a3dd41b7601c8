//! Connector and task statuses, kept in memory for the REST API and metrics, and published to
//! the compacted status topic (Kafka Connect's `status.storage.topic`, `connect-status` by
//! default) in Kafka Connect's shapes:
//!
//! - `status-connector-<name>` and `status-task-<name>-<id>` → `{"state": "RUNNING", "trace":
//!   null, "worker_id": .., "generation": ..}` on each change of state; tombstones when the
//!   connector is deleted;
//! - `topic-<topic>-connector-<name>` → `{"topic": {"name", "connector", "task",
//!   "discoverTimestamp"}}` the first time a connector uses a topic (KIP-558's active topics),
//!   tombstones when they are reset or the connector deleted.
//!
//! Writes go through one background task, in order, without making the writer wait: like
//! Kafka Connect's status store, statuses are reports, and a write that fails is logged, not
//! retried. At start the worker reads the topic back for its generation (one more than the
//! highest written, so each run of the worker reads as a newer one) and each connector's active
//! topics.

use crate::error::Result;
use crate::runtime::internal;
use runnel_log::{ProducerConfig, ProducerRecord, SharedLogClient};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A connector's or a task's status, as Kafka Connect reports it, with the worker's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    pub state: State,
    /// Why it failed, while it is FAILED.
    pub trace: Option<String>,
    pub restarts: u32,
    /// Records the task read from its source or topics, since the worker started it
    /// (restarts included), counted after each poll it handled.
    pub records: u64,
    /// Bad records it skipped or set aside (`errors.tolerance = all`).
    pub errors: u64,
    /// Of those, the ones written to its dead-letter topic.
    pub dead_letters: u64,
}

impl Status {
    /// A status in `state`, counting nothing yet.
    pub fn new(state: State) -> Self {
        Self {
            state,
            trace: None,
            restarts: 0,
            records: 0,
            errors: 0,
            dead_letters: 0,
        }
    }
}

/// A state as Kafka Connect names it in its REST API and status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Running,
    Paused,
    /// Failed; a task waits to be restarted (the status's `trace` says why).
    Failed,
    /// A connector whose tasks are shut down, its configuration kept (`PUT .../stop`).
    Stopped,
    /// About to be restarted (in the answer to a restart request).
    Restarting,
    /// Not running on any worker: what the worker publishes when it stops.
    Unassigned,
}

/// The status topic's writer; a no-op for a worker without one. Cheap to clone.
#[derive(Clone, Default)]
pub struct Publisher {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Write>,
    worker_id: String,
    generation: u64,
}

enum Write {
    Record(String, Option<Vec<u8>>),
    /// Answered once every record before it was flushed.
    Flush(oneshot::Sender<()>),
}

impl Publisher {
    /// A writer of `topic` (created if missing), with what the topic holds: the active topics
    /// of each connector.
    ///
    /// # Errors
    /// When the log fails to create or read the topic ([`crate::ConnectError::Log`]).
    ///
    /// # Panics
    /// Outside a tokio runtime: the writer is spawned on the current one.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is written before it returns.
    pub async fn open(
        client: &SharedLogClient,
        topic: &str,
        worker_id: &str,
    ) -> Result<(Self, BTreeMap<String, BTreeSet<String>>)> {
        let mut generation = 0;
        let mut active: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        internal::read(client, topic, |key, value| {
            let value: Option<Value> = value.and_then(|v| serde_json::from_slice(v).ok());
            if let Some(g) = value.as_ref().and_then(|v| v["generation"].as_u64()) {
                generation = generation.max(g + 1);
            }
            if key.starts_with(b"topic-") {
                active_topic(&mut active, key, value.as_ref());
            }
        })
        .await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let producer = client.producer(ProducerConfig::default());
        let topic = topic.to_string();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut write = Some(first);
                let mut flushed = Vec::new();
                // Everything queued now goes out before one flush.
                while let Some(w) = write {
                    match w {
                        Write::Record(key, value) => {
                            let record = ProducerRecord {
                                topic: &topic,
                                partition: None,
                                key: Some(key.as_bytes()),
                                value: value.as_deref(),
                                headers: &[],
                                timestamp: None,
                            };
                            if let Err(e) = producer.send(record).await {
                                tracing::warn!(key = %key, error = %e, "a status was not written to the status topic");
                            }
                        }
                        Write::Flush(done) => flushed.push(done),
                    }
                    write = rx.try_recv().ok();
                }
                if let Err(e) = producer.flush().await {
                    tracing::warn!(error = %e, "statuses were not written to the status topic");
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        let inner = Inner {
            tx,
            worker_id: worker_id.to_string(),
            generation,
        };
        Ok((
            Self {
                inner: Some(Arc::new(inner)),
            },
            active,
        ))
    }

    /// Publishes the status `key` names (`None`: deletes it).
    fn status(&self, key: String, status: Option<(State, Option<&str>)>) {
        if let Some(i) = &self.inner {
            let value = status.map(|(state, trace)| {
                json!({ "state": state, "trace": trace, "worker_id": i.worker_id, "generation": i.generation })
            });
            i.send(key, value);
        }
    }

    /// Publishes connector `name`'s state.
    pub fn connector(&self, name: &str, state: State) {
        self.status(format!("status-connector-{name}"), Some((state, None)));
    }

    /// Publishes that `connector` used `topic` (from its task `task`).
    fn topic(&self, connector: &str, topic: &str, task: u32) {
        if let Some(i) = &self.inner {
            let value = json!({ "topic": {
                "name": topic, "connector": connector, "task": task,
                "discoverTimestamp": runnel_log::types::now_ms(),
            }});
            i.send(format!("topic-{topic}-connector-{connector}"), Some(value));
        }
    }

    /// Deletes what the topic says of `connector`'s active `topics`.
    fn forget_topics<'a>(&self, connector: &str, topics: impl IntoIterator<Item = &'a String>) {
        if let Some(i) = &self.inner {
            for t in topics {
                i.send(format!("topic-{t}-connector-{connector}"), None);
            }
        }
    }

    /// Deletes connector `name`'s status and its tasks' (`tasks` of them).
    pub fn forget(&self, name: &str, tasks: u32) {
        self.status(format!("status-connector-{name}"), None);
        for id in 0..tasks {
            self.status(format!("status-task-{name}-{id}"), None);
        }
    }

    /// Waits until everything published before is written (or failed to be).
    ///
    /// # Cancel safety
    /// Cancel safe: the writes go on.
    pub async fn flush(&self) {
        if let Some(i) = &self.inner {
            let (done, wait) = oneshot::channel();
            if i.tx.send(Write::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// The worker id statuses name (`runnel` without a status topic).
    pub fn worker_id(&self) -> &str {
        self.inner.as_ref().map_or("runnel", |i| &i.worker_id)
    }
}

impl Inner {
    fn send(&self, key: String, value: Option<Value>) {
        let value = value.map(|v| v.to_string().into_bytes());
        // Fails only once the writer is gone, with the runtime.
        let _ = self.tx.send(Write::Record(key, value));
    }
}

/// Applies a `topic-<topic>-connector-<name>` record (its value names both, so names with
/// dashes are read right).
pub(crate) fn active_topic(
    active: &mut BTreeMap<String, BTreeSet<String>>,
    key: &[u8],
    value: Option<&Value>,
) {
    match value {
        Some(v) => {
            let (Some(topic), Some(connector)) = (
                v["topic"]["name"].as_str(),
                v["topic"]["connector"].as_str(),
            ) else {
                return;
            };
            active
                .entry(connector.to_string())
                .or_default()
                .insert(topic.to_string());
        }
        None => {
            // A tombstone: the key is all there is.
            let key = String::from_utf8_lossy(key);
            for (connector, topics) in active.iter_mut() {
                let suffix = format!("-connector-{connector}");
                if let Some(t) = key
                    .strip_prefix("topic-")
                    .and_then(|k| k.strip_suffix(&suffix))
                {
                    topics.remove(t);
                }
            }
        }
    }
}

/// A task's status, shared by the worker and the task; each change of state is published as
/// `status-task-<connector>-<id>`. Cheap to clone.
#[derive(Clone)]
pub struct TaskStatus {
    /// The status, and whether the task was retired (its status final).
    status: Arc<Mutex<(Status, bool)>>,
    key: Arc<str>,
    publisher: Publisher,
}

impl TaskStatus {
    /// Task `id` of `connector`, in `status` (published).
    pub fn new(publisher: &Publisher, connector: &str, id: u32, status: Status) -> Self {
        let this = Self {
            status: Arc::new(Mutex::new((status, false))),
            key: format!("status-task-{connector}-{id}").into(),
            publisher: publisher.clone(),
        };
        this.publish(&this.get());
        this
    }

    /// Publishes `s` (under the status's lock, so that publications keep the order of the
    /// changes).
    fn publish(&self, s: &Status) {
        self.publisher
            .status(self.key.to_string(), Some((s.state, s.trace.as_deref())));
    }

    pub fn get(&self) -> Status {
        self.status.lock().expect("not poisoned").0.clone()
    }

    /// Sets the state, with why for FAILED (a trace is kept only while FAILED); nothing once
    /// the task is retired.
    pub fn set(&self, state: State, trace: Option<String>) {
        let mut guard = self.status.lock().expect("not poisoned");
        let (s, retired) = &mut *guard;
        if !*retired && (s.state != state || s.trace != trace) {
            s.state = state;
            s.trace = trace;
            self.publish(s);
        }
    }

    /// UNASSIGNED for good: the worker stopped the task, which may still be finishing a step
    /// and must not publish a state after this one.
    pub fn retire(&self) {
        let mut guard = self.status.lock().expect("not poisoned");
        let (s, retired) = &mut *guard;
        if !*retired {
            *retired = true;
            s.state = State::Unassigned;
            s.trace = None;
            self.publish(s);
        }
    }

    /// Counts a restart after a failure.
    pub fn restarted(&self) {
        self.status.lock().expect("not poisoned").0.restarts += 1;
    }

    /// Counts a poll's records: all of them, the bad ones, those sent to the dead-letter topic.
    pub fn handled(&self, records: u64, errors: u64, dead_letters: u64) {
        let s = &mut self.status.lock().expect("not poisoned").0;
        s.records += records;
        s.errors += errors;
        s.dead_letters += dead_letters;
    }
}

/// Every connector's active topics as the worker knows them: read back from the status topic
/// (at start, or tailed by a worker of a group) and added to as its tasks publish them.
pub type Active = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// The topics a connector used since it was created or its topics were reset (KIP-558), each
/// published when a task uses it and [`Active`] does not have it. Cheap to clone.
#[derive(Clone)]
pub struct ActiveTopics {
    connector: Arc<str>,
    all: Active,
    publisher: Publisher,
}

impl ActiveTopics {
    /// `connector`'s, in `all`.
    pub fn new(publisher: &Publisher, connector: &str, all: &Active) -> Self {
        Self {
            connector: connector.into(),
            all: all.clone(),
            publisher: publisher.clone(),
        }
    }

    /// Notes that task `task` read or wrote `topic`.
    pub fn used(&self, topic: &str, task: u32) {
        let mut all = self.all.lock().expect("not poisoned");
        let topics = all.entry(self.connector.to_string()).or_default();
        if !topics.contains(topic) {
            topics.insert(topic.to_string());
            self.publisher.topic(&self.connector, topic, task);
        }
    }

    /// The topics, in order.
    pub fn list(&self) -> Vec<String> {
        let all = self.all.lock().expect("not poisoned");
        all.get(&*self.connector)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Forgets them all (`PUT /connectors/{name}/topics/reset`, or the connector deleted).
    pub fn reset(&self) {
        let topics = self
            .all
            .lock()
            .expect("not poisoned")
            .remove(&*self.connector);
        self.publisher
            .forget_topics(&self.connector, topics.iter().flatten());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_topics_are_read_from_values_and_dropped_by_tombstones() {
        let mut active = BTreeMap::new();
        let record = |t: &str, c: &str| json!({"topic": {"name": t, "connector": c, "task": 0}});
        for (t, c) in [("a-connector-b", "c-d"), ("x", "c-d"), ("x", "e")] {
            let key = format!("topic-{t}-connector-{c}");
            active_topic(&mut active, key.as_bytes(), Some(&record(t, c)));
        }
        active_topic(&mut active, b"topic-a-connector-b-connector-c-d", None);
        let names = |c: &str| active[c].iter().cloned().collect::<Vec<_>>();
        assert_eq!(names("c-d"), ["x"]);
        assert_eq!(names("e"), ["x"]);
    }
}
