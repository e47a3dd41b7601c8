//! What the workers of a group share: the config topic's connectors and the status topic's
//! statuses (and active topics), each tailed by every worker, so that any of them answers the
//! REST API for every connector, wherever it runs, and sees a change written by another; and
//! the group's last assignment, which says where to forward a request.
//!
//! Contract:
//! - [`Shared::open`] returns once both topics are read to their ends; after that the views
//!   follow them in the background (a record shows a few hundred milliseconds after it is
//!   written).
//! - [`Shared::catch_up`] returns once the config view holds every record written to the topic
//!   before it was called: a worker that wrote a change reads it back before answering.
//! - [`Shared::changes`] wakes on each record of the config topic.
//! - [`Shared::active`] is the status topic's active topics as read, with what this worker
//!   published added at once (Kafka Connect's status store cache): a task publishes a topic it
//!   uses unless it is there, so after a reset from any worker it is published again.

use crate::error::Result;
use crate::runtime::configs::{Reading, Stored};
use crate::runtime::group::Assignment;
use crate::runtime::internal;
use crate::runtime::status::{Active, State, active_topic};
use runnel_log::SharedLogClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// A status as a worker published it (`status-connector-*`, `status-task-*`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Reported {
    pub state: State,
    pub trace: Option<String>,
    pub worker_id: String,
}

/// The status topic's statuses.
#[derive(Default)]
pub struct Statuses {
    pub connectors: BTreeMap<String, Reported>,
    pub tasks: BTreeMap<(String, u32), Reported>,
}

impl Statuses {
    fn apply(&mut self, active: &Active, key: &[u8], value: Option<&[u8]>) {
        let reported = value.and_then(|v| serde_json::from_slice::<Reported>(v).ok());
        let name = String::from_utf8_lossy(key);
        if let Some(c) = name.strip_prefix("status-connector-") {
            set(&mut self.connectors, c.to_string(), reported);
        } else if let Some((c, id)) = name
            .strip_prefix("status-task-")
            .and_then(|t| t.rsplit_once('-'))
            && let Ok(id) = id.parse()
        {
            set(&mut self.tasks, (c.to_string(), id), reported);
        } else if name.starts_with("topic-") {
            let value = value.and_then(|v| serde_json::from_slice(v).ok());
            active_topic(
                &mut active.lock().expect("not poisoned"),
                key,
                value.as_ref(),
            );
        }
    }
}

fn set<K: Ord>(map: &mut BTreeMap<K, Reported>, key: K, value: Option<Reported>) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

/// See the module documentation. The tails stop when it is dropped.
pub struct Shared {
    client: SharedLogClient,
    config_topic: String,
    configs: Arc<Mutex<Reading>>,
    config_at: watch::Receiver<u64>,
    statuses: Arc<Mutex<Statuses>>,
    active: Active,
    /// Kept so that the status topic's tail goes on.
    _status_at: watch::Receiver<u64>,
    /// The group's last assignment (none before the first join).
    assignment: Mutex<Option<Arc<Assignment>>>,
}

impl Shared {
    /// Tails `config_topic` and `status_topic` (both created if missing).
    ///
    /// # Errors
    /// When the log fails to create or read them ([`crate::ConnectError::Log`]).
    ///
    /// # Panics
    /// Outside a tokio runtime: the tails are spawned on the current one.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the tails stop.
    pub async fn open(
        client: &SharedLogClient,
        config_topic: &str,
        status_topic: &str,
    ) -> Result<Self> {
        let configs = Arc::new(Mutex::new(Reading::default()));
        let statuses = Arc::new(Mutex::new(Statuses::default()));
        let c = configs.clone();
        let config_at = follow(client, config_topic, move |k, v| {
            c.lock().expect("not poisoned").apply(k, v)
        })
        .await?;
        let active = Active::default();
        let (s, a) = (statuses.clone(), active.clone());
        let status_at = follow(client, status_topic, move |k, v| {
            s.lock().expect("not poisoned").apply(&a, k, v)
        })
        .await?;
        let this = Self {
            client: client.clone(),
            config_topic: config_topic.to_string(),
            configs,
            config_at,
            statuses,
            active,
            _status_at: status_at.clone(),
            assignment: Mutex::default(),
        };
        this.catch_up().await?;
        wait_for(status_at, internal::end_offset(client, status_topic).await?).await;
        Ok(this)
    }

    /// Returns once the config view holds what the topic held when it was called.
    ///
    /// # Errors
    /// When the log cannot say where the topic ends ([`crate::ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn catch_up(&self) -> Result<()> {
        let end = internal::end_offset(&self.client, &self.config_topic).await?;
        wait_for(self.config_at.clone(), end).await;
        Ok(())
    }

    /// Wakes on each record of the config topic (mark it seen to wait for the next).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.config_at.clone()
    }

    /// The connectors with a configuration whose names `pick` keeps.
    pub fn connectors(&self, pick: impl Fn(&str) -> bool) -> BTreeMap<String, Stored> {
        self.configs.lock().expect("not poisoned").connectors(pick)
    }

    /// Connector `name`, when it has a configuration.
    pub fn connector(&self, name: &str) -> Option<Stored> {
        self.connectors(|n| n == name).remove(name)
    }

    /// The names of the connectors with a configuration, in order.
    pub fn names(&self) -> BTreeSet<String> {
        let configs = self.configs.lock().expect("not poisoned");
        configs.names().cloned().collect()
    }

    pub fn statuses(&self) -> MutexGuard<'_, Statuses> {
        self.statuses.lock().expect("not poisoned")
    }

    /// The active topics, by connector.
    pub fn active(&self) -> &Active {
        &self.active
    }

    /// The group's last assignment, if it ever had one.
    pub fn assignment(&self) -> Option<Arc<Assignment>> {
        self.assignment.lock().expect("not poisoned").clone()
    }

    pub fn set_assignment(&self, assignment: Assignment) {
        *self.assignment.lock().expect("not poisoned") = Some(Arc::new(assignment));
    }
}

/// Starts tailing `topic` into `each`; returns the tail's position.
async fn follow(
    client: &SharedLogClient,
    topic: &str,
    each: impl FnMut(&[u8], Option<&[u8]>) + Send + 'static,
) -> Result<watch::Receiver<u64>> {
    internal::ensure(client, topic).await?;
    let (at, seen) = watch::channel(0);
    tokio::spawn(internal::tail(client.clone(), topic.to_string(), each, at));
    Ok(seen)
}

/// Waits until the position `at` reaches `end` (or its tail is gone).
async fn wait_for(mut at: watch::Receiver<u64>, end: u64) {
    let _ = at.wait_for(|&p| p >= end).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_by_key_and_dropped_by_tombstones() {
        let (mut s, a) = (Statuses::default(), Active::default());
        let v = br#"{"state":"RUNNING","trace":null,"worker_id":"w1","generation":0}"#;
        s.apply(&a, b"status-connector-a-b", Some(v));
        s.apply(&a, b"status-task-a-b-1", Some(v));
        s.apply(&a, b"status-task-a-b-0", Some(v));
        s.apply(&a, b"status-task-a-b-0", None);
        assert_eq!(s.connectors["a-b"].worker_id, "w1");
        assert_eq!(
            s.tasks.keys().collect::<Vec<_>>(),
            [&("a-b".to_string(), 1)]
        );
    }
}
