//! Where to send each request: brokers, partition leaders and group coordinators, as the
//! cluster's Metadata and FindCoordinator answers say, with connections kept per broker.
//!
//! Contract:
//! - A [`Cluster`] is owned by one client role (admin, one producer, one consumer) so that a
//!   long-poll Fetch or a JoinGroup never delays another role's requests on a shared socket.
//! - [`Cluster::leader_addr`] answers from a metadata cache, refreshed (from the bootstrap address,
//!   else any known broker) when a partition is unknown or after [`Cluster::forget_routes`].
//!   Runnel's own broker is one node that leads everything; against a Kafka cluster requests
//!   go to each partition's leader and each group's coordinator.
//! - Connections are opened on first use and reopened when they broke.
//! - [`retriable`] says which failures are worth a retry: connection loss, and Kafka's
//!   retriable error codes (not leader, coordinator moving, timeouts, ...).
//! - [`Backoff`] spaces retries: 50 ms doubling to 1 s, with jitter.

use super::conn::{Connection, kafka_error};
use super::{Bootstrap, str_bytes};
use crate::codes;
use crate::error::BrokerError;
use crate::security::ClientSecurity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use parking_lot::Mutex;
use runnel_log::TopicPartition;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What Metadata said about one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    /// Leader node id of each partition, by index (-1: none right now).
    pub leaders: Vec<i32>,
}

#[derive(Default)]
struct Cache {
    /// node id → "host:port".
    brokers: HashMap<i32, String>,
    topics: HashMap<String, TopicInfo>,
    coordinators: HashMap<String, i32>,
}

/// See the module documentation.
pub(crate) struct Cluster {
    bootstrap: String,
    security: ClientSecurity,
    cache: Mutex<Cache>,
    conns: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
}

impl Cluster {
    pub fn new(target: &Bootstrap) -> Self {
        Self {
            bootstrap: target.addr.clone(),
            security: target.security.clone(),
            cache: Mutex::default(),
            conns: tokio::sync::Mutex::default(),
        }
    }

    /// The connection to `addr`, opened or reopened as needed.
    pub async fn conn_to(&self, addr: &str) -> Result<Arc<Connection>, BrokerError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(addr, &self.security).await?;
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A connection to some broker: the bootstrap address first, then any broker Metadata named.
    pub async fn any(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut addrs = vec![self.bootstrap.clone()];
        addrs.extend(self.cache.lock().brokers.values().cloned());
        let mut last = None;
        for a in addrs {
            match self.conn_to(&a).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("the bootstrap address is tried"))
    }

    /// Asks for metadata of `topics` (never creating them) and caches the answer. Returns each
    /// topic's partition count, `None` for a topic that does not exist.
    pub async fn refresh(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Option<u32>>, BrokerError> {
        let conn = self.any().await?;
        let v = conn.version(ApiKey::Metadata, (4, 12))?;
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(str_bytes(t.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp = conn.send(req, v).await?;
        let mut out = BTreeMap::new();
        let mut cache = self.cache.lock();
        for b in &resp.brokers {
            cache
                .brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in resp.topics {
            let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
            match t.error_code {
                0 => {}
                codes::UNKNOWN_TOPIC_OR_PARTITION => {
                    cache.topics.remove(&name);
                    out.insert(name, None);
                    continue;
                }
                code => return Err(kafka_error("Metadata", code, &name)),
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| leaders.get_mut(i))
                {
                    *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
                }
            }
            out.insert(name.clone(), Some(leaders.len() as u32));
            cache.topics.insert(name, TopicInfo { leaders });
        }
        Ok(out)
    }

    /// The address of `tp`'s leader, asking Metadata when it is not known.
    pub async fn leader_addr(&self, tp: &TopicPartition) -> Result<String, BrokerError> {
        let known = |c: &Cache| {
            let node = *c
                .topics
                .get(&tp.topic)?
                .leaders
                .get(tp.partition as usize)?;
            c.brokers.get(&node).cloned()
        };
        if let Some(a) = known(&self.cache.lock()) {
            return Ok(a);
        }
        self.refresh(std::slice::from_ref(&tp.topic)).await?;
        let c = self.cache.lock();
        let Some(info) = c.topics.get(&tp.topic) else {
            return Err(kafka_error(
                "Metadata",
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                &tp.topic,
            ));
        };
        match info.leaders.get(tp.partition as usize) {
            None => Err(kafka_error(
                "Metadata",
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                &format!("{}-{}", tp.topic, tp.partition),
            )),
            Some(node) => known(&c).ok_or_else(|| {
                kafka_error(
                    "Metadata",
                    codes::LEADER_NOT_AVAILABLE,
                    &format!("{}-{} (leader {node})", tp.topic, tp.partition),
                )
            }),
        }
    }

    /// Groups `partitions` by leader address, keeping their order within each group.
    pub async fn by_leader<'a>(
        &self,
        partitions: &'a [TopicPartition],
    ) -> Result<BTreeMap<String, Vec<&'a TopicPartition>>, BrokerError> {
        let mut out: BTreeMap<String, Vec<&TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            out.entry(self.leader_addr(tp).await?).or_default().push(tp);
        }
        Ok(out)
    }

    /// The connection to `group`'s coordinator (FindCoordinator, cached).
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>, BrokerError> {
        let cached = {
            let c = self.cache.lock();
            c.coordinators
                .get(group)
                .and_then(|n| c.brokers.get(n).cloned())
        };
        if let Some(addr) = cached {
            return self.conn_to(&addr).await;
        }
        let conn = self.any().await?;
        let v = conn.version(ApiKey::FindCoordinator, (0, 3))?;
        let resp = conn
            .send(
                FindCoordinatorRequest::default()
                    .with_key(str_bytes(group))
                    .with_key_type(0),
                v,
            )
            .await?;
        if resp.error_code != 0 {
            return Err(kafka_error("FindCoordinator", resp.error_code, group));
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        {
            let mut c = self.cache.lock();
            c.brokers.insert(resp.node_id.0, addr.clone());
            c.coordinators.insert(group.to_string(), resp.node_id.0);
        }
        self.conn_to(&addr).await
    }

    /// Forgets every leader and coordinator, so that the next request asks where they are.
    pub fn forget_routes(&self) {
        let mut c = self.cache.lock();
        c.topics.clear();
        c.coordinators.clear();
    }

    /// Runs `f` until it succeeds, fails with an error that is not [`retriable`], or `within`
    /// has passed; between attempts it waits ([`Backoff`]) and, when the error says a leader
    /// or coordinator moved or a broker went away, forgets the routes.
    pub async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        within: Duration,
        mut f: F,
    ) -> Result<T, BrokerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BrokerError>>,
    {
        let deadline = Instant::now() + within;
        let mut backoff = Backoff::default();
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if retriable(&e) && Instant::now() < deadline => {
                    tracing::debug!(what, error = %e, "retrying");
                    if stale_route(&e) {
                        self.forget_routes();
                    }
                    backoff.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a request that failed with `e` may succeed if sent again.
pub(crate) fn retriable(e: &BrokerError) -> bool {
    match e {
        BrokerError::Connect { .. } | BrokerError::Io { .. } => true,
        BrokerError::Kafka { code, .. } => retriable_code(*code),
        _ => false,
    }
}

/// Kafka's retriable error codes that this client meets.
pub(crate) fn retriable_code(code: i16) -> bool {
    matches!(
        code,
        codes::UNKNOWN_TOPIC_OR_PARTITION
            | codes::LEADER_NOT_AVAILABLE
            | codes::NOT_LEADER_OR_FOLLOWER
            | codes::REQUEST_TIMED_OUT
            | codes::NETWORK_EXCEPTION
            | codes::COORDINATOR_LOAD_IN_PROGRESS
            | codes::COORDINATOR_NOT_AVAILABLE
            | codes::NOT_COORDINATOR
            | codes::NOT_ENOUGH_REPLICAS
            | codes::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | codes::KAFKA_STORAGE_ERROR
    )
}

/// Whether `e` means the coordinator or leader moved (or is gone), so the cache is stale.
pub(crate) fn stale_route(e: &BrokerError) -> bool {
    match e {
        BrokerError::Connect { .. } | BrokerError::Io { .. } => true,
        BrokerError::Kafka { code, .. } => matches!(
            *code,
            codes::NOT_COORDINATOR
                | codes::COORDINATOR_NOT_AVAILABLE
                | codes::NOT_LEADER_OR_FOLLOWER
                | codes::LEADER_NOT_AVAILABLE
                | codes::UNKNOWN_TOPIC_OR_PARTITION
        ),
        _ => false,
    }
}

/// How long admin and group requests (metadata, offsets, commits) are retried.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// Exponential backoff between retries: 50 ms, doubling up to 1 s, ±25 % jitter.
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    pub async fn wait(&mut self) {
        let jitter = rand::random_range(0.75..1.25);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Duration::from_secs(1));
    }
}
