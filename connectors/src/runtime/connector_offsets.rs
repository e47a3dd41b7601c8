//! A connector's offsets as the REST API handles them (KIP-875, Kafka Connect 3.6+): read any
//! time; altered or reset only while the connector is STOPPED, so that no task moves them
//! meanwhile (else [`ConnectError::NotStopped`]).
//!
//! A source's are its source offsets in the offsets topic ([`crate::runtime::offsets`]):
//! `{"partition": <source partition>, "offset": <source offset>}`. A sink's are its consumer
//! group's (`connect-<name>`) committed offsets: `{"partition": {"kafka_topic": t,
//! "kafka_partition": p}, "offset": {"kafka_offset": o}}`. A `null` offset resets its partition.
//! The log client has no call that deletes a group's offsets, so resetting a sink's partition
//! commits the partition's log start offset: the sink reads it again from its first record, as
//! it does after Kafka Connect's deletion with the sink's `auto.offset.reset = earliest`. An
//! exactly-once sink resumes from the offsets it stored with its data, which a change here does
//! not reach: the answer says so, as Kafka Connect's does for connectors that keep their own.

use crate::api::{Connector, Kind};
use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::registry;
use crate::runtime::offsets;
use crate::runtime::sink_task::group;
use crate::runtime::worker::Worker;
use runnel_log::{ConsumerConfig, ProducerConfig, TopicPartition};
use serde_json::{Value, json};

impl Worker {
    /// Connector `name`'s offsets, as (partition, offset) in Kafka Connect's shapes.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector; [`ConnectError::Log`] when a
    /// sink's group cannot be read.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn offsets(&self, name: &str) -> Result<Vec<(Value, Value)>> {
        let config = self.config(name)?;
        if self.kind(name)? == Kind::Source {
            return self.source_offsets(name).await;
        }
        let tps = self.sink_partitions(&config).await?;
        let committed = self.client.committed_offsets(&group(name), &tps).await?;
        Ok(tps
            .iter()
            .zip(committed)
            .filter_map(|(tp, at)| {
                let partition = json!({ "kafka_topic": tp.topic, "kafka_partition": tp.partition });
                Some((partition, json!({ "kafka_offset": at? })))
            })
            .collect())
    }

    /// Sets the offsets of connector `name` (STOPPED) per partition, or resets a partition's
    /// for a `None` offset. Returns what to tell the user.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`], [`ConnectError::NotStopped`]; [`ConnectError::Config`] for
    /// an offset of the wrong shape (a sink's naming a partition that does not exist);
    /// [`ConnectError::Log`] when they cannot be stored.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, some offsets may be changed and others not.
    pub async fn alter_offsets(
        &self,
        name: &str,
        changes: Vec<(Value, Option<Value>)>,
    ) -> Result<String> {
        let _one = self.changes.lock().await;
        let config = self.changeable(name)?;
        if self.kind(name)? == Kind::Source {
            for (partition, offset) in &changes {
                if !partition.is_object() || offset.as_ref().is_some_and(|o| !o.is_object()) {
                    return Err(config.error(format!(
                        "a source offset is {{\"partition\": {{..}}, \"offset\": {{..}} or null}}, not {{\"partition\": {partition}, \"offset\": {}}}",
                        offset.as_ref().unwrap_or(&Value::Null)
                    )));
                }
            }
            self.store_source_offsets(name, changes).await?;
        } else {
            let mut commits = Vec::new();
            for (partition, offset) in changes {
                let tp = self.sink_partition(&config, &partition).await?;
                let at = match offset {
                    None => None,
                    Some(o) => Some(o["kafka_offset"].as_u64().ok_or_else(|| {
                        config.error(format!(
                            "a sink offset is {{\"kafka_offset\": <number>}} or null, not {o}"
                        ))
                    })?),
                };
                commits.push((tp, at));
            }
            self.commit_sink(name, commits).await?;
        }
        message(&config, "altered")
    }

    /// Resets every offset of connector `name` (STOPPED): a source reads its partitions from
    /// their start, a sink its topics from their first records. Returns what to tell the user.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`], [`ConnectError::NotStopped`]; [`ConnectError::Log`] when the
    /// offsets cannot be read or stored.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`alter_offsets`](Self::alter_offsets).
    pub async fn reset_offsets(&self, name: &str) -> Result<String> {
        let _one = self.changes.lock().await;
        let config = self.changeable(name)?;
        if self.kind(name)? == Kind::Source {
            let all = self.source_offsets(name).await?;
            self.store_source_offsets(name, all.into_iter().map(|(p, _)| (p, None)).collect())
                .await?;
        } else {
            let tps = self.sink_partitions(&config).await?;
            let committed = self.client.committed_offsets(&group(name), &tps).await?;
            let commits = tps
                .into_iter()
                .zip(committed)
                .filter(|(_, c)| c.is_some())
                .map(|(tp, _)| (tp, None))
                .collect();
            self.commit_sink(name, commits).await?;
        }
        message(&config, "reset")
    }

    /// Connector `name`'s configuration, when its offsets may change.
    fn changeable(&self, name: &str) -> Result<ConnectorConfig> {
        if !self.stopped(name)? {
            return Err(ConnectError::NotStopped(name.into()));
        }
        self.config(name)
    }

    async fn store_source_offsets(
        &self,
        name: &str,
        changes: Vec<(Value, Option<Value>)>,
    ) -> Result<()> {
        let producer = self.client.producer(ProducerConfig::default());
        let entries: Vec<(&Value, Option<&Value>)> =
            changes.iter().map(|(p, o)| (p, o.as_ref())).collect();
        offsets::store(&*producer, &self.offset_topic, name, &entries).await?;
        producer.flush().await?;
        let mut all = self.offsets.lock().await;
        for (partition, offset) in changes {
            offsets::set(&mut all, name, &partition, offset);
        }
        Ok(())
    }

    /// Commits the sink group's offsets, a partition's log start offset for `None`.
    async fn commit_sink(
        &self,
        name: &str,
        commits: Vec<(TopicPartition, Option<u64>)>,
    ) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let mut resolved = Vec::new();
        for (tp, at) in commits {
            let at = match at {
                Some(o) => o,
                None => self.client.start_offsets(std::slice::from_ref(&tp)).await?[0],
            };
            resolved.push((tp, at));
        }
        // The sink's tasks are gone (STOPPED), so its group has no member to take over from.
        let mut consumer = self.client.consumer(ConsumerConfig {
            group_id: Some(group(name)),
            enable_auto_commit: false,
            ..Default::default()
        });
        consumer.assign(resolved.iter().map(|(tp, _)| tp.clone()).collect())?;
        consumer.commit_offsets(resolved).await?;
        consumer.close().await?;
        Ok(())
    }

    /// The partitions of the sink's topics, in order.
    async fn sink_partitions(&self, config: &ConnectorConfig) -> Result<Vec<TopicPartition>> {
        let Connector::Sink(sink) = registry::build(config)? else {
            return Ok(Vec::new());
        };
        let mut tps = Vec::new();
        for t in sink.topics() {
            let n = self.client.partition_count(&t).await?.unwrap_or(0);
            tps.extend((0..n).map(|p| TopicPartition::new(&t, p)));
        }
        Ok(tps)
    }

    /// The partition `{"kafka_topic": t, "kafka_partition": p}` names, which must exist.
    async fn sink_partition(&self, config: &ConnectorConfig, v: &Value) -> Result<TopicPartition> {
        let shape = || {
            config.error(format!(
                "a sink partition is {{\"kafka_topic\": <name>, \"kafka_partition\": <number>}}, not {v}"
            ))
        };
        let topic = v["kafka_topic"].as_str().ok_or_else(shape)?;
        let partition = v["kafka_partition"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(shape)?;
        let count = self.client.partition_count(topic).await?.unwrap_or(0);
        if partition >= count {
            return Err(config.error(format!(
                "topic {topic:?} has no partition {partition} ({count} partitions)"
            )));
        }
        Ok(TopicPartition::new(topic, partition))
    }
}

/// Kafka Connect's answer to a change of offsets (`verb`: altered, reset).
fn message(config: &ConnectorConfig, verb: &str) -> Result<String> {
    let kept = config.common()?.exactly_once() && registry::build(config)?.kind() == Kind::Sink;
    Ok(if kept {
        format!(
            "The consumer group offsets of this connector have been {verb} successfully. It resumes from the offsets it stores with its data (exactly.once.support), which need to be {verb} there."
        )
    } else {
        format!("The offsets for this connector have been {verb} successfully")
    })
}
