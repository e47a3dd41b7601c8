//! Connector configurations in the compacted config topic (Kafka Connect's
//! `config.storage.topic`, `connect-configs` by default), in Kafka Connect's record shapes, so
//! that the connectors created over the REST API outlive the worker:
//!
//! - `connector-<name>` → `{"properties": {"connector.class": .., ...}}`; a tombstone when the
//!   connector is deleted;
//! - `target-state-<name>` → `{"state": "STARTED" | "PAUSED", "state.v2": "STARTED" | "PAUSED" |
//!   "STOPPED"}`: Kafka Connect 3.5+ writes STOPPED as `"state": "PAUSED"` for readers that
//!   predate it and the truth in `state.v2`, which is read first; a tombstone on delete.
//!
//! A connector without a target state is STARTED. Kafka Connect's task records (`task-*`,
//! `commit-*`) coordinate the workers of a group; a worker (alone, or of a group) plans a
//! connector's tasks again from its configuration wherever it runs it, so it neither writes
//! nor reads them (nor does it read anything it does not know).
//!
//! Every write is flushed before it returns: what the REST API answered is durable.

use crate::error::Result;
use crate::runtime::internal;
use runnel_log::{LogProducer, ProducerConfig, ProducerRecord, SharedLogClient};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a connector should be doing, as its owner last said (Kafka Connect's target state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetState {
    #[default]
    Started,
    Paused,
    /// Its tasks shut down; the configuration (and offsets) kept.
    Stopped,
}

impl TargetState {
    fn name(self) -> &'static str {
        match self {
            TargetState::Started => "STARTED",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "STARTED" => Some(TargetState::Started),
            "PAUSED" => Some(TargetState::Paused),
            "STOPPED" => Some(TargetState::Stopped),
            _ => None,
        }
    }
}

/// A connector as the topic holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    pub props: BTreeMap<String, String>,
    pub target: TargetState,
}

/// The config topic: read once by [`ConfigTopic::open`], then written.
pub struct ConfigTopic {
    topic: String,
    producer: Box<dyn LogProducer>,
}

impl ConfigTopic {
    /// The topic `topic` (created if missing) and the connectors it holds, by name.
    ///
    /// # Errors
    /// When the log fails to create or read it ([`crate::ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn open(
        client: &SharedLogClient,
        topic: &str,
    ) -> Result<(Self, BTreeMap<String, Stored>)> {
        let mut reading = Reading::default();
        internal::read(client, topic, |key, value| reading.apply(key, value)).await?;
        let this = Self {
            topic: topic.to_string(),
            producer: client.producer(ProducerConfig::default()),
        };
        Ok((this, reading.finish()))
    }

    /// Stores connector `name`'s configuration.
    ///
    /// # Errors
    /// When the log does not store it ([`crate::ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped, the record may be stored or not.
    pub async fn put(&self, name: &str, props: &BTreeMap<String, String>) -> Result<()> {
        let value = json!({ "properties": props });
        self.write(&[(format!("connector-{name}"), Some(value))])
            .await
    }

    /// Stores connector `name`'s target state.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    ///
    /// # Cancel safety
    /// As [`put`](Self::put).
    pub async fn put_target(&self, name: &str, target: TargetState) -> Result<()> {
        let old = match target {
            TargetState::Stopped => TargetState::Paused,
            t => t,
        };
        let value = json!({ "state": old.name(), "state.v2": target.name() });
        self.write(&[(format!("target-state-{name}"), Some(value))])
            .await
    }

    /// Deletes connector `name`: tombstones for its configuration and target state.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    ///
    /// # Cancel safety
    /// As [`put`](Self::put).
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.write(&[
            (format!("connector-{name}"), None),
            (format!("target-state-{name}"), None),
        ])
        .await
    }

    async fn write(&self, records: &[(String, Option<Value>)]) -> Result<()> {
        for (key, value) in records {
            let value = value.as_ref().map(Value::to_string);
            self.producer
                .send(ProducerRecord {
                    topic: &self.topic,
                    partition: None,
                    key: Some(key.as_bytes()),
                    value: value.as_deref().map(str::as_bytes),
                    headers: &[],
                    timestamp: None,
                })
                .await?;
        }
        Ok(self.producer.flush().await?)
    }
}

/// The topic's records read so far (at start, or as a worker of a group tails the topic).
#[derive(Default)]
pub(crate) struct Reading {
    configs: BTreeMap<String, BTreeMap<String, String>>,
    targets: BTreeMap<String, TargetState>,
}

impl Reading {
    /// Applies the next record. Records it does not know, or cannot read, are skipped with a
    /// warning.
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        let value: Option<Value> = match value.map(serde_json::from_slice) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                tracing::warn!(key = %key, error = %e, "skipped a config record that is not JSON");
                return;
            }
        };
        if let Some(name) = key.strip_prefix("connector-") {
            let Some(value) = value else {
                self.configs.remove(name);
                return;
            };
            match serde_json::from_value::<BTreeMap<String, String>>(value["properties"].clone()) {
                Ok(props) => {
                    self.configs.insert(name.to_string(), props);
                }
                Err(e) => {
                    tracing::warn!(connector = %name, error = %e, "skipped a connector config record without string properties");
                }
            }
        } else if let Some(name) = key.strip_prefix("target-state-") {
            let Some(value) = value else {
                self.targets.remove(name);
                return;
            };
            let state = [&value["state.v2"], &value["state"]]
                .into_iter()
                .find_map(|s| s.as_str().and_then(TargetState::parse));
            match state {
                Some(s) => {
                    self.targets.insert(name.to_string(), s);
                }
                None => {
                    tracing::warn!(connector = %name, value = %value, "skipped a target state record of an unknown state");
                }
            }
        }
    }

    /// The connectors with a configuration, with their target states.
    fn finish(self) -> BTreeMap<String, Stored> {
        self.connectors(|_| true)
    }

    /// The connectors with a configuration whose names `pick` keeps, with their target states.
    pub(crate) fn connectors(&self, pick: impl Fn(&str) -> bool) -> BTreeMap<String, Stored> {
        self.configs
            .iter()
            .filter(|(name, _)| pick(name))
            .map(|(name, props)| {
                let target = self.targets.get(name).copied().unwrap_or_default();
                let props = props.clone();
                (name.clone(), Stored { props, target })
            })
            .collect()
    }

    /// The names of the connectors with a configuration, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.configs.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(records: &[(&str, Option<&str>)]) -> BTreeMap<String, Stored> {
        let mut reading = Reading::default();
        for (k, v) in records {
            reading.apply(k.as_bytes(), v.map(str::as_bytes));
        }
        reading.finish()
    }

    #[test]
    fn the_latest_record_per_key_counts_and_tombstones_delete() {
        let stored = read(&[
            ("connector-a", Some(r#"{"properties":{"topic":"t1"}}"#)),
            ("connector-b", Some(r#"{"properties":{"topic":"t2"}}"#)),
            ("target-state-b", Some(r#"{"state":"PAUSED"}"#)),
            ("connector-a", Some(r#"{"properties":{"topic":"t3"}}"#)),
            ("connector-b", None),
            ("task-a-0", Some(r#"{"properties":{}}"#)),
            ("commit-a", Some(r#"{"tasks":1}"#)),
            ("connector-c", Some(r#"{"properties":{"topic":"t4"}}"#)),
            (
                "target-state-c",
                Some(r#"{"state":"PAUSED","state.v2":"STOPPED"}"#),
            ),
            ("connector-d", Some("not json")),
        ]);
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(stored["a"].props["topic"], "t3");
        assert_eq!(stored["a"].target, TargetState::Started);
        assert_eq!(stored["c"].target, TargetState::Stopped, "state.v2 wins");
    }
}
