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
//! - Requests go where the cluster says ([`cluster::Cluster`]): Produce, Fetch and ListOffsets
//!   to each partition's leader, group requests to the group's coordinator, the rest to any
//!   broker. Runnel's broker is one node that is all of these; a Kafka cluster is several.
//! - Failures that Kafka calls retriable, and lost connections, are retried with backoff
//!   (reconnecting, refreshing metadata when a leader or coordinator moved): admin and group
//!   requests for [`cluster::RETRY_FOR`], produced batches until the producer's delivery
//!   timeout. The producer is idempotent when the broker grants a producer id, so a batch
//!   re-sent after a lost answer is not stored twice.

pub mod admin;
mod cluster;
mod conn;
pub mod consumer;
pub mod member;
pub mod producer;
mod txn;

use crate::error::BrokerError;
use crate::security::ClientSecurity;
use async_trait::async_trait;
use cluster::{Cluster, RETRY_FOR};
use conn::kafka_error;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_log::{
    ConsumerConfig, Durability, GroupMember, GroupMetadata, LogClient, LogConsumer, LogError,
    LogProducer, ProducerConfig, TopicConfig, TopicPartition,
};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Where a client connects first, and how (Kafka's `bootstrap.servers` with the security
/// properties).
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// HOST:PORT.
    pub addr: String,
    pub security: ClientSecurity,
}

impl Bootstrap {
    /// `addr` over plaintext.
    pub fn plaintext(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            security: ClientSecurity::default(),
        }
    }
}

/// A broker reached over the network; see the module documentation.
pub struct RemoteLog {
    bootstrap: Bootstrap,
    cluster: Cluster,
}

impl RemoteLog {
    /// Connects to `bootstrap` (HOST:PORT) over plaintext and checks that it speaks the
    /// versions needed.
    ///
    /// # Errors
    ///
    /// - `BrokerError::Connect` if nothing accepts connections at `bootstrap`.
    /// - `BrokerError::Io` or `BrokerError::Malformed` if the connection breaks or the ApiVersions
    ///   answer cannot be decoded; `BrokerError::Kafka` if ApiVersions answers an error code.
    ///
    /// No retry: a broker that is not up yet is an error at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing exists outside the future until it returns; dropping it closes the
    /// connection being opened.
    pub async fn connect(bootstrap: &str) -> Result<Arc<Self>, BrokerError> {
        Self::connect_to(Bootstrap::plaintext(bootstrap)).await
    }

    /// Connects with the security settings of `bootstrap` (TLS, SASL).
    ///
    /// # Errors
    ///
    /// As [`RemoteLog::connect`], and with the security of `bootstrap`:
    /// - `BrokerError::Tls` if the address is not a valid server name, the handshake fails, or the
    ///   broker closes the connection after it (a client certificate it requires or refuses).
    /// - `BrokerError::Authentication` if the broker refuses the SASL mechanism or credentials, or
    ///   SCRAM's server signature does not match.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`RemoteLog::connect`].
    pub async fn connect_to(bootstrap: Bootstrap) -> Result<Arc<Self>, BrokerError> {
        let log = Arc::new(Self {
            cluster: Cluster::new(&bootstrap),
            bootstrap,
        });
        log.cluster.any().await?;
        Ok(log)
    }

    /// Partition counts of `topics` (`None` for a topic that does not exist).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached;
    /// - `BrokerError::Kafka` if Metadata answers a topic with an error other than
    ///   UNKNOWN_TOPIC_OR_PARTITION (which is `None`, not an error);
    /// - `BrokerError::Unsupported` if the broker serves no Metadata version 4–12;
    /// - `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only (the metadata cache is updated in one step after the answer). If it is
    /// dropped while its request is half written (only when the socket's buffer is full), the admin
    /// connection carries a partial frame and fails for the requests after it.
    pub async fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Option<u32>>, BrokerError> {
        metadata(&self.cluster, topics).await
    }

    /// Low-level: ListOffsets at `timestamp` (-1 latest, -2 earliest, -3 the record with the
    /// largest timestamp, else the first record at or after it) for each partition.
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Connect` / `BrokerError::Io` if a partition's leader cannot be reached;
    /// - `BrokerError::Kafka` with ListOffsets' or Metadata's code for a partition (an unknown topic
    ///   or partition is UNKNOWN_TOPIC_OR_PARTITION);
    /// - `BrokerError::Unsupported` if the leader serves no ListOffsets version 1–7;
    /// - `BrokerError::Malformed` if the answer lacks a partition asked for or cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only. The partial-frame caveat of [`RemoteLog::partition_counts`] applies.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<Vec<u64>, BrokerError> {
        list_offsets(&self.cluster, partitions, timestamp).await
    }
}

/// Metadata for `topics`, without creating them (retried).
pub(crate) async fn metadata(
    cluster: &Cluster,
    topics: &[String],
) -> Result<BTreeMap<String, Option<u32>>, BrokerError> {
    cluster
        .retry("Metadata", RETRY_FOR, || cluster.refresh(topics))
        .await
}

/// ListOffsets of `partitions` at `timestamp`, each asked of its leader (retried).
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<Vec<u64>, BrokerError> {
    list_offsets_isolated(cluster, partitions, timestamp, 0).await
}

/// [`list_offsets`] at an isolation level (1: read_committed, for which latest is the LSO).
async fn list_offsets_isolated(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    timestamp: i64,
    isolation: i8,
) -> Result<Vec<u64>, BrokerError> {
    cluster
        .retry("ListOffsets", RETRY_FOR, || {
            list_offsets_once(cluster, partitions, timestamp, isolation)
        })
        .await
}

async fn list_offsets_once(
    cluster: &Cluster,
    partitions: &[TopicPartition],
    timestamp: i64,
    isolation: i8,
) -> Result<Vec<u64>, BrokerError> {
    let mut found = BTreeMap::new();
    for (addr, tps) in cluster.by_leader(partitions).await? {
        let conn = cluster.conn_to(&addr).await?;
        let v = conn.version(ApiKey::ListOffsets, (1, 7))?;
        let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for tp in tps {
            topics.entry(&tp.topic).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(tp.partition as i32)
                    .with_timestamp(timestamp),
            );
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
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
        for t in resp.topics {
            for p in t.partitions {
                let tp = format!("{}-{}", t.name.0.as_str(), p.partition_index);
                if p.error_code != 0 {
                    return Err(kafka_error("ListOffsets", p.error_code, &tp));
                }
                found.insert(tp, p.offset.max(0) as u64);
            }
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

/// OffsetFetch of `group` for `partitions`, in order, from the group's coordinator (retried).
pub(crate) async fn committed(
    cluster: &Cluster,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<Vec<Option<u64>>, BrokerError> {
    cluster
        .retry("OffsetFetch", RETRY_FOR, || {
            committed_once(cluster, group, partitions)
        })
        .await
}

async fn committed_once(
    cluster: &Cluster,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<Vec<Option<u64>>, BrokerError> {
    let conn = cluster.coordinator(group).await?;
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
    let mut v = crate::topic_configs::kafka_topic_configs(c);
    v.push(match c.durability {
        Durability::Always => ("flush.messages", "1".into()),
        Durability::Interval => ("flush.ms", c.flush_interval_ms.to_string()),
        Durability::Os => ("runnel.durability", "os".into()),
    });
    v
}

impl RemoteLog {
    /// One CreateTopics request for `name`: `true` if it created the topic, `false` if the
    /// topic existed (TOPIC_ALREADY_EXISTS).
    async fn create_topic(&self, name: &str, config: &TopicConfig) -> Result<bool, BrokerError> {
        let conn = self.cluster.any().await?;
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
        let mut created = true;
        for t in resp.topics {
            match t.error_code {
                0 => {}
                crate::codes::TOPIC_ALREADY_EXISTS => created = false,
                code => {
                    let msg = t.error_message.map(|m| m.to_string()).unwrap_or_default();
                    return Err(kafka_error("CreateTopics", code, &format!("{name}: {msg}")));
                }
            }
        }
        Ok(created)
    }
}

#[async_trait]
impl LogClient for RemoteLog {
    async fn ensure_topic(&self, name: &str, config: &TopicConfig) -> runnel_log::Result<u32> {
        self.cluster
            .retry("CreateTopics", RETRY_FOR, || {
                self.create_topic(name, config)
            })
            .await?;
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

    async fn start_offsets(&self, partitions: &[TopicPartition]) -> runnel_log::Result<Vec<u64>> {
        Ok(self.list_offsets(partitions, -2).await?)
    }

    async fn stable_offsets(&self, partitions: &[TopicPartition]) -> runnel_log::Result<Vec<u64>> {
        // ListOffsets latest with isolation level 1 is the last stable offset.
        Ok(list_offsets_isolated(&self.cluster, partitions, -1, 1).await?)
    }

    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> runnel_log::Result<Vec<Option<u64>>> {
        Ok(committed(&self.cluster, group, partitions).await?)
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

    fn group_member(&self, config: ConsumerConfig) -> runnel_log::Result<Box<dyn GroupMember>> {
        Ok(Box::new(member::RemoteMember::new(
            &self.bootstrap,
            config,
        )?))
    }

    async fn commit_offsets(
        &self,
        group: &GroupMetadata,
        offsets: &[(TopicPartition, u64)],
    ) -> runnel_log::Result<()> {
        Ok(member::commit(&self.cluster, group, offsets).await?)
    }

    fn describe(&self) -> String {
        format!("broker at {}", self.bootstrap.addr)
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
            listeners: vec![crate::Listener::plaintext("127.0.0.1:0")],
            auto_create_topics: false,
            default_partitions: 1,
            ..Default::default()
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

    /// Copies `from` to `to`, counting as it goes (the counts are read while connections are open).
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        counts: Arc<[std::sync::atomic::AtomicU64; 2]>,
        which: usize,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counts[which].fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A TCP forwarder from a free port to `to`, counting the bytes each way.
    async fn forwarder(
        to: String,
    ) -> (std::net::SocketAddr, Arc<[std::sync::atomic::AtomicU64; 2]>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<[std::sync::atomic::AtomicU64; 2]> = Arc::default();
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&to).await.unwrap();
                let c = c.clone();
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, c.clone(), 0));
                    pipe(sr, cw, c, 1).await;
                });
            }
        });
        (addr, counts)
    }

    /// Requests go where Metadata and FindCoordinator say, not to the bootstrap address: the
    /// broker advertises a forwarder's address, and the produced and fetched bytes (and the
    /// group's requests) go through the forwarder, while the bootstrap address carries only
    /// metadata and topic creation.
    #[tokio::test(flavor = "multi_thread")]
    async fn requests_go_to_leaders_and_coordinators_not_the_bootstrap_address() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = bound.local_addr().unwrap();
        drop(bound);
        let (advertised, forwarded) = forwarder(real.to_string()).await;
        let config = BrokerConfig {
            listeners: vec![crate::Listener::plaintext(real.to_string())],
            auto_create_topics: false,
            default_partitions: 1,
            advertised_listeners: vec![crate::Listener::plaintext(advertised.to_string())],
            ..Default::default()
        };
        let b = Broker::bind(log, config).await.unwrap();
        tokio::spawn(b.clone().serve());
        let remote: SharedLogClient = RemoteLog::connect(&real.to_string()).await.unwrap();
        let topic = TopicConfig {
            partitions: 2,
            ..Default::default()
        };
        remote.ensure_topic("routed", &topic).await.unwrap();
        let producer = remote.producer(ProducerConfig::default());
        let value = vec![7u8; 1000];
        for i in 0..1000u32 {
            producer
                .send(ProducerRecord::new("routed", &value).partition(i % 2))
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();
        let mut consumer = remote.consumer(ConsumerConfig {
            group_id: Some("routed".into()),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        });
        consumer.subscribe(&["routed"]).unwrap();
        let mut n = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while n < 1000 && std::time::Instant::now() < deadline {
            n += consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .len();
        }
        consumer.close().await.unwrap();
        assert_eq!(n, 1000);
        let up = forwarded[0].load(std::sync::atomic::Ordering::Relaxed);
        let down = forwarded[1].load(std::sync::atomic::Ordering::Relaxed);
        let total_in = b
            .metrics
            .bytes_in
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(up > 1_000_000 && down > 1_000_000, "up {up} down {down}");
        assert!(
            total_in - up < 50_000,
            "{} bytes went to the bootstrap address",
            total_in - up
        );
        assert!(b.metrics.requests("JoinGroup") >= 1);
    }

    /// Many small batches queued at once go out several per partition per request (idempotent,
    /// each following the one before): all are stored, once, in order.
    #[tokio::test(flavor = "multi_thread")]
    async fn many_batches_per_request_are_stored_once_in_order() {
        let (_dir, log, addr, _broker) = broker().await;
        let remote: SharedLogClient = RemoteLog::connect(&addr).await.unwrap();
        remote
            .ensure_topic("small", &TopicConfig::default())
            .await
            .unwrap();
        let producer = remote.producer(ProducerConfig {
            batch_size: 2048,
            ..Default::default()
        });
        for i in 0..50_000u32 {
            producer
                .send(ProducerRecord::new("small", &i.to_be_bytes()).partition(0))
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();
        let p = log.partition(&TopicPartition::new("small", 0)).unwrap();
        assert_eq!(p.high_watermark(), 50_000);
        let mut next = 0u32;
        let mut offset = 0;
        while offset < 50_000 {
            let f = p.read(offset, 1 << 20).unwrap();
            for b in runnel_log::batch::split_batches(&f.batches) {
                for r in runnel_log::batch::records(&b).unwrap() {
                    let v = u32::from_be_bytes(r.value.as_ref().unwrap()[..4].try_into().unwrap());
                    assert_eq!(v, next);
                    next += 1;
                }
            }
            offset = f.next_offset;
        }
    }

    /// A commit sent behind its batches on the coordinator's connection never commits a
    /// transaction a partition refused a batch of: the commit fails, the transaction aborts,
    /// and the producer's next transaction commits.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_batch_makes_the_commit_fail_and_the_transaction_abortable() {
        let (_dir, log, addr, _broker) = broker().await;
        let remote: SharedLogClient = RemoteLog::connect(&addr).await.unwrap();
        remote
            .ensure_topic("ok", &TopicConfig::default())
            .await
            .unwrap();
        let limited = TopicConfig {
            max_message_bytes: 1000,
            ..Default::default()
        };
        remote.ensure_topic("limited", &limited).await.unwrap();
        let producer = remote.producer(ProducerConfig {
            transactional_id: Some("refused".into()),
            ..Default::default()
        });
        producer.init_transactions().await.unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(ProducerRecord::new("ok", b"kept only if committed").partition(0))
            .await
            .unwrap();
        producer
            .send(ProducerRecord::new("limited", &[7u8; 5000]).partition(0))
            .await
            .unwrap();
        let refused = producer.commit_transaction().await.unwrap_err();
        assert!(refused.to_string().contains("limited"), "{refused}");
        let status = |log: &Log| log.transactions().describe("refused").unwrap().status;
        assert_eq!(status(&log), runnel_log::txn::state_log::TxnStatus::Ongoing);
        producer.abort_transaction().await.unwrap();
        assert_eq!(
            status(&log),
            runnel_log::txn::state_log::TxnStatus::CompleteAbort
        );

        producer.begin_transaction().unwrap();
        producer
            .send(ProducerRecord::new("ok", b"committed").partition(0))
            .await
            .unwrap();
        producer.commit_transaction().await.unwrap();
        assert_eq!(
            status(&log),
            runnel_log::txn::state_log::TxnStatus::CompleteCommit
        );
        let mut consumer = remote.consumer(runnel_log::ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        });
        consumer.assign(vec![TopicPartition::new("ok", 0)]).unwrap();
        let mut values = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while values.is_empty() && std::time::Instant::now() < deadline {
            for r in consumer.poll(Duration::from_millis(100)).await.unwrap() {
                values.push(r.record.value.unwrap().to_vec());
            }
        }
        assert_eq!(values, vec![b"committed".to_vec()]);
    }

    /// `send_all` queues many records under one lock, waits when the buffer is full (and gets
    /// the space back when batches are answered), and keeps each partition's order.
    #[tokio::test(flavor = "multi_thread")]
    async fn send_all_waits_for_buffer_space_and_keeps_order() {
        let (_dir, log, addr, _broker) = broker().await;
        let remote: SharedLogClient = RemoteLog::connect(&addr).await.unwrap();
        let cfg = TopicConfig {
            partitions: 3,
            ..Default::default()
        };
        remote.ensure_topic("bulk", &cfg).await.unwrap();
        let producer = remote.producer(ProducerConfig {
            batch_size: 4096,
            buffer_memory: 64 << 10,
            ..Default::default()
        });
        let values: Vec<[u8; 4]> = (0..30_000u32).map(|i| i.to_be_bytes()).collect();
        let records: Vec<ProducerRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| ProducerRecord::new("bulk", v).partition(i as u32 % 3))
            .collect();
        // Within 10 s: when the buffer counted records by their estimate but released batches
        // by their encoded size (smaller for small records), it stayed full and this crawled
        // along on linger timeouts for about 13 s.
        tokio::time::timeout(Duration::from_secs(10), async {
            producer.send_all(&records).await.unwrap();
            producer.flush().await.unwrap();
        })
        .await
        .expect("send_all stalled on buffer space");
        for p in 0..3u32 {
            let part = log.partition(&TopicPartition::new("bulk", p)).unwrap();
            assert_eq!(part.high_watermark(), 10_000);
            let mut expected = p;
            let mut offset = 0;
            while offset < 10_000 {
                let f = part.read(offset, 1 << 20).unwrap();
                for b in runnel_log::batch::split_batches(&f.batches) {
                    for r in runnel_log::batch::records(&b).unwrap() {
                        let v =
                            u32::from_be_bytes(r.value.as_ref().unwrap()[..4].try_into().unwrap());
                        assert_eq!(v, expected);
                        expected += 3;
                    }
                }
                offset = f.next_offset;
            }
        }
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
