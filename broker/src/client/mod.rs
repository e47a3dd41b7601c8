//! Runnel's Kafka client: [`RemoteLog`] implements the log traits over Kafka's wire protocol.
//!
//! Contract (the traits' contract, over the network):
//! - [`RemoteLog`] (admin): topics via Metadata and CreateTopics, end offsets via ListOffsets,
//!   committed offsets via OffsetFetch. A topic's durability travels as Kafka's topic configs
//!   (`flush.messages=1` for `always`, `flush.ms` for `interval`), which Runnel's broker maps
//!   back, so the same call means the same thing against Kafka.
//! - [`producer::RemoteProducer`]: `send` queues into per-partition RecordBatch v2 batches
//!   (Kafka's murmur2 partitioner, sticky partition for keyless records); a sender task sends
//!   them with `acks=all`; `flush` returns once every record sent before it is acknowledged,
//!   or with the first error.
//! - [`consumer::RemoteConsumer`]: manual assignment or group membership with Kafka's consumer
//!   protocol (JoinGroup/SyncGroup/Heartbeat; the leader computes the assignment with
//!   `runnel_log::assignor`), so it can share a group with librdkafka or Java consumers and
//!   with Runnel's in-process consumers.
//! - Runnel's broker is one node, leader and coordinator of everything, so every request goes
//!   to the bootstrap address. Against a multi-broker Kafka cluster this client is not enough
//!   yet: it does not route requests to partition leaders or group coordinators.

mod conn;
pub mod consumer;
pub mod producer;

use crate::error::BrokerError;
use async_trait::async_trait;
use conn::{Connection, kafka_error};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_log::{
    ConsumerConfig, Durability, LogClient, LogConsumer, LogError, LogProducer, ProducerConfig,
    TopicConfig, TopicPartition,
};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A broker reached over the network; see the module documentation.
pub struct RemoteLog {
    bootstrap: String,
    admin: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl RemoteLog {
    /// Connects to `bootstrap` (HOST:PORT) and checks that it speaks the versions needed.
    pub async fn connect(bootstrap: &str) -> Result<Arc<Self>, BrokerError> {
        let log = Arc::new(Self {
            bootstrap: bootstrap.to_string(),
            admin: tokio::sync::Mutex::new(None),
        });
        log.conn().await?;
        Ok(log)
    }

    /// The shared admin connection, reopened if it broke.
    async fn conn(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut c = self.admin.lock().await;
        match c.as_ref() {
            Some(conn) if !conn.is_closed() => Ok(conn.clone()),
            _ => {
                let conn = Connection::connect(&self.bootstrap).await?;
                *c = Some(conn.clone());
                Ok(conn)
            }
        }
    }

    /// Partition counts of `topics` (`None` for a topic that does not exist).
    pub async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Option<u32>>, BrokerError> {
        metadata(&*self.conn().await?, topics).await
    }

    /// Low-level: ListOffsets at `timestamp` (-1 latest, -2 earliest) for each partition.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<Vec<u64>, BrokerError> {
        list_offsets(&*self.conn().await?, partitions, timestamp).await
    }
}

/// Metadata for `topics`, without creating them.
pub(crate) async fn metadata(
    conn: &Connection,
    topics: &[String],
) -> Result<BTreeMap<String, Option<u32>>, BrokerError> {
    let v = conn.version(ApiKey::Metadata, (4, 12))?;
    let req = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(t.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let resp = conn.send(req, v).await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
        let count = match t.error_code {
            0 => Some(t.partitions.len() as u32),
            3 => None,
            code => return Err(kafka_error("Metadata", code, &name)),
        };
        out.insert(name, count);
    }
    Ok(out)
}

pub(crate) async fn list_offsets(
    conn: &Connection,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<Vec<u64>, BrokerError> {
    let v = conn.version(ApiKey::ListOffsets, (1, 7))?;
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for tp in partitions {
        topics.entry(&tp.topic).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(tp.partition as i32)
                .with_timestamp(timestamp),
        );
    }
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = conn.send(req, v).await?;
    let mut found = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            let tp = format!("{}-{}", t.name.0.as_str(), p.partition_index);
            if p.error_code != 0 {
                return Err(kafka_error("ListOffsets", p.error_code, &tp));
            }
            found.insert(tp, p.offset.max(0) as u64);
        }
    }
    partitions
        .iter()
        .map(|tp| {
            let key = format!("{}-{}", tp.topic, tp.partition);
            found
                .get(&key)
                .copied()
                .ok_or_else(|| BrokerError::Malformed(format!("ListOffsets response lacks {key}")))
        })
        .collect()
}

/// OffsetFetch of `group` for `partitions`, in order.
pub(crate) async fn committed(
    conn: &Connection,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<Vec<Option<u64>>, BrokerError> {
    let v = conn.version(ApiKey::OffsetFetch, (1, 7))?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        topics
            .entry(&tp.topic)
            .or_default()
            .push(tp.partition as i32);
    }
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(Some(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps)
                })
                .collect(),
        ));
    let resp = conn.send(req, v).await?;
    if resp.error_code != 0 {
        return Err(kafka_error("OffsetFetch", resp.error_code, group));
    }
    let mut found = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(kafka_error("OffsetFetch", p.error_code, group));
            }
            let offset = u64::try_from(p.committed_offset).ok();
            found.insert((t.name.0.to_string(), p.partition_index as u32), offset);
        }
    }
    Ok(partitions
        .iter()
        .map(|tp| {
            found
                .get(&(tp.topic.clone(), tp.partition))
                .copied()
                .flatten()
        })
        .collect())
}

/// Kafka topic configs for a Runnel topic config. Durability uses Kafka's own names
/// (`flush.messages=1` is fsync per append, as Runnel's `always`; `flush.ms` is `interval`),
/// so Kafka accepts them; only `os`, which Kafka has no name for, is sent as `runnel.durability`.
fn kafka_configs(c: &TopicConfig) -> Vec<(&'static str, String)> {
    let mut v = crate::api::admin::kafka_topic_configs(c);
    v.push(match c.durability {
        Durability::Always => ("flush.messages", "1".into()),
        Durability::Interval => ("flush.ms", c.flush_interval_ms.to_string()),
        Durability::Os => ("runnel.durability", "os".into()),
    });
    v
}

#[async_trait]
impl LogClient for RemoteLog {
    async fn ensure_topic(&self, name: &str, config: &TopicConfig) -> runnel_log::Result<u32> {
        let conn = self.conn().await?;
        let v = conn.version(ApiKey::CreateTopics, (2, 5))?;
        let topic = CreatableTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_num_partitions(config.partitions as i32)
            .with_replication_factor(1)
            .with_configs(
                kafka_configs(config)
                    .into_iter()
                    .map(|(k, val)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(val)))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        let resp = conn.send(req, v).await?;
        for t in resp.topics {
            match t.error_code {
                0 | crate::codes::TOPIC_ALREADY_EXISTS => {}
                code => {
                    let msg = t.error_message.map(|m| m.to_string()).unwrap_or_default();
                    return Err(kafka_error("CreateTopics", code, &format!("{name}: {msg}")).into());
                }
            }
        }
        self.partition_count(name)
            .await?
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    async fn partition_count(&self, topic: &str) -> runnel_log::Result<Option<u32>> {
        let counts = self.partition_counts(&[topic.to_string()]).await?;
        Ok(counts.get(topic).copied().flatten())
    }

    async fn end_offsets(&self, partitions: &[TopicPartition]) -> runnel_log::Result<Vec<u64>> {
        Ok(self.list_offsets(partitions, -1).await?)
    }

    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> runnel_log::Result<Vec<Option<u64>>> {
        Ok(committed(&*self.conn().await?, group, partitions).await?)
    }

    fn producer(&self, config: ProducerConfig) -> Box<dyn LogProducer> {
        Box::new(producer::RemoteProducer::new(
            self.bootstrap.clone(),
            config,
        ))
    }

    fn consumer(&self, config: ConsumerConfig) -> Box<dyn LogConsumer> {
        Box::new(consumer::RemoteConsumer::new(
            self.bootstrap.clone(),
            config,
        ))
    }

    fn describe(&self) -> String {
        format!("broker at {}", self.bootstrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Broker, BrokerConfig};
    use runnel_log::{Log, OffsetReset, ProducerRecord, SharedLogClient};
    use std::time::Duration;

    async fn broker() -> (tempfile::TempDir, Log, String, Arc<Broker>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let config = BrokerConfig {
            listen: "127.0.0.1:0".into(),
            auto_create_topics: false,
            default_partitions: 1,
        };
        let b = Broker::bind(log.clone(), config).await.unwrap();
        let addr = b.local_addr().to_string();
        tokio::spawn(b.clone().serve());
        (dir, log, addr, b)
    }

    /// The embedded log's trait contract, through the broker.
    #[tokio::test(flavor = "multi_thread")]
    async fn remote_log_through_the_traits() {
        let (_dir, _log, addr, b) = broker().await;
        let log: SharedLogClient = RemoteLog::connect(&addr).await.unwrap();
        runnel_log::client::check_conformance(log, Durability::Always).await;
        // The requests were counted.
        let m = &b.metrics;
        assert!(m.requests("Produce") >= 1 && m.requests("Fetch") >= 1);
        assert!(m.requests("ApiVersions") >= 2 && m.requests("CreateTopics") == 2);
        assert!(m.bytes_in.load(std::sync::atomic::Ordering::Relaxed) > 100);
        assert!(m.bytes_out.load(std::sync::atomic::Ordering::Relaxed) > 100);
        assert!(m.summary().contains("OffsetCommit"));
    }

    /// A wire member and an in-process member share one group: the partitions are split, and
    /// the wire member resumes from the in-process member's commits.
    #[tokio::test(flavor = "multi_thread")]
    async fn wire_and_in_process_consumers_share_a_group() {
        let (_dir, log, addr, _broker) = broker().await;
        let remote: SharedLogClient = RemoteLog::connect(&addr).await.unwrap();
        let cfg = TopicConfig {
            partitions: 4,
            ..Default::default()
        };
        remote.ensure_topic("shared", &cfg).await.unwrap();
        let producer = remote.producer(ProducerConfig::default());
        for i in 0..400u32 {
            let key = format!("k{}", i % 13);
            producer
                .send(ProducerRecord::new("shared", &i.to_be_bytes()).key(key.as_bytes()))
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();
        let config = ConsumerConfig {
            group_id: Some("mixed".into()),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            heartbeat_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let mut local = runnel_log::Consumer::new(log.clone(), config.clone());
        local.subscribe(&["shared"]).unwrap();
        let mut wire = remote.consumer(config);
        wire.subscribe(&["shared"]).unwrap();
        // Each member polls on its own, as in an application: a member rejoins only from poll.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let wire_task = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let records = wire.poll(Duration::from_millis(200)).await.unwrap();
                    let _ = tx.send((records, wire.assignment()));
                }
                wire.close().await.unwrap();
            }
        });
        let mut seen = std::collections::BTreeSet::new();
        let mut wire_assignment = Vec::new();
        let value = |r: &runnel_log::ConsumerRecord| {
            u32::from_be_bytes(r.record.value.as_ref().unwrap()[..4].try_into().unwrap())
        };
        // Until every record is read and the group has settled on a split of the partitions.
        let settled = |l: &Vec<TopicPartition>, w: &Vec<TopicPartition>| {
            !l.is_empty() && !w.is_empty() && l.len() + w.len() == 4
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while (seen.len() < 400 || !settled(&local.assignment(), &wire_assignment))
            && std::time::Instant::now() < deadline
        {
            seen.extend(
                local
                    .poll(Duration::from_millis(200))
                    .await
                    .unwrap()
                    .iter()
                    .map(value),
            );
            while let Ok((records, assignment)) = rx.try_recv() {
                seen.extend(records.iter().map(value));
                wire_assignment = assignment;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(seen.len(), 400);
        let la = local.assignment();
        assert!(
            settled(&la, &wire_assignment),
            "local {la:?} wire {wire_assignment:?}"
        );
        wire_task.await.unwrap();
    }
}
