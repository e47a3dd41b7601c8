//! The remote producer: per-partition batches, one sender task, `acks=all`.
//!
//! Contract:
//! - `send` picks the partition (explicit, murmur2 of the key as Kafka does, or a sticky
//!   partition for keyless records that moves on when its batch is closed) and appends the
//!   record to that partition's open batch; it waits only while `buffer_memory` bytes are queued.
//! - A batch is closed at `batch_size` bytes, after `linger`, or by `flush`. The sender task
//!   sends closed batches, oldest first, with up to four Produce requests in flight on one
//!   connection; the broker answers a connection in order, so the records of a partition are
//!   stored in the order they were sent.
//! - `flush` waits until every batch that held a record sent before it has been answered, then
//!   returns the first error since the previous flush. Failed batches are not retried (no
//!   idempotence yet), so a failure is reported, never hidden by a duplicate.

use super::conn::{Connection, kafka_error};
use super::{metadata, str_bytes};
use async_trait::async_trait;
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use parking_lot::Mutex;
use runnel_log::batch::BatchBuilder;
use runnel_log::partitioner::partition_for_key;
use runnel_log::types::now_ms;
use runnel_log::{LogError, LogProducer, ProducerConfig, ProducerRecord};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Notify, watch};

/// The most bytes of batches sent in one Produce request.
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Produce requests in flight on the producer's connection. The broker answers a connection's
/// requests in order, so pipelining keeps each partition's order while the next request is
/// encoded and sent during the broker's append of the previous one.
const MAX_IN_FLIGHT: usize = 4;

type Answer = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>;

struct Open {
    builder: BatchBuilder,
    created: Instant,
}

struct Ready {
    topic: Arc<str>,
    partition: u32,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct State {
    open: HashMap<(Arc<str>, u32), Open>,
    ready: VecDeque<Ready>,
    /// Batches closed so far (moved from `open` to `ready`).
    closed: u64,
    queued_bytes: usize,
    partitions: HashMap<String, (Arc<str>, u32)>,
    sticky: HashMap<Arc<str>, u32>,
    error: Option<LogError>,
    flush_requested: bool,
    dropped: bool,
}

impl State {
    fn close(&mut self, key: &(Arc<str>, u32)) {
        if let Some(open) = self.open.remove(key) {
            if self.sticky.get(&key.0) == Some(&key.1) {
                self.sticky.remove(&key.0);
            }
            self.ready.push_back(Ready {
                topic: key.0.clone(),
                partition: key.1,
                bytes: open.builder.finish(),
            });
            self.closed += 1;
        }
    }
}

struct Shared {
    bootstrap: String,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the sender task.
    work: Notify,
    /// Wakes `send` calls waiting for buffer space.
    space: Notify,
    /// Batches answered so far (in closing order).
    answered: watch::Sender<u64>,
    metadata_conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

/// See the module documentation.
pub struct RemoteProducer {
    shared: Arc<Shared>,
}

impl RemoteProducer {
    /// Must be called inside a tokio runtime: it starts the sender task.
    pub fn new(bootstrap: String, config: ProducerConfig) -> Self {
        let shared = Arc::new(Shared {
            bootstrap,
            config,
            state: Mutex::default(),
            work: Notify::new(),
            space: Notify::new(),
            answered: watch::channel(0).0,
            metadata_conn: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(sender(shared.clone()));
        Self { shared }
    }

    /// Learns `topic`'s partition count from the broker (once per topic).
    async fn topic(&self, topic: &str) -> Result<(), LogError> {
        let mut c = self.shared.metadata_conn.lock().await;
        if c.as_ref().is_none_or(|c| c.is_closed()) {
            *c = Some(Connection::connect(&self.shared.bootstrap).await?);
        }
        let conn = c.as_ref().expect("just connected").clone();
        drop(c);
        let counts = metadata(&conn, &[topic.to_string()]).await?;
        let count = counts
            .get(topic)
            .copied()
            .flatten()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        let entry = (Arc::<str>::from(topic), count);
        self.shared
            .state
            .lock()
            .partitions
            .insert(topic.to_string(), entry);
        Ok(())
    }
}

impl Drop for RemoteProducer {
    fn drop(&mut self) {
        // The sender finishes what is queued, then stops.
        let mut st = self.shared.state.lock();
        st.dropped = true;
        st.flush_requested = true;
        drop(st);
        self.shared.work.notify_one();
    }
}

#[async_trait]
impl LogProducer for RemoteProducer {
    async fn send(&self, record: ProducerRecord<'_>) -> runnel_log::Result<()> {
        let size = BatchBuilder::estimate(record.key, record.value, record.headers);
        if size > self.shared.config.batch_size.max(1 << 20) * 16 {
            return Err(LogError::RecordTooLarge {
                size,
                max: self.shared.config.batch_size,
            });
        }
        // One lock per record on the fast path: topic known and buffer space free.
        let mut st = loop {
            let space = self.shared.space.notified();
            // The guard's scope ends before either await (a guard is not Send).
            let known = {
                let st = self.shared.state.lock();
                let known = st.partitions.contains_key(record.topic);
                if known && st.queued_bytes < self.shared.config.buffer_memory {
                    break st;
                }
                known
            };
            if known {
                space.await;
            } else {
                self.topic(record.topic).await?;
            }
        };
        let (topic, count) = st.partitions[record.topic].clone();
        let partition = match (record.partition, record.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(LogError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                    partitions: count,
                });
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => *st
                .sticky
                .entry(topic.clone())
                .or_insert_with(|| rand::random_range(0..count)),
        };
        let key = (topic, partition);
        let first = st.open.is_empty() && st.ready.is_empty();
        let open = st.open.entry(key.clone()).or_insert_with(|| Open {
            builder: BatchBuilder::new(size.max(1024)),
            created: Instant::now(),
        });
        open.builder.push(
            record.timestamp.unwrap_or_else(now_ms),
            record.key,
            record.value,
            record.headers,
        );
        let full = open.builder.size_bytes() >= self.shared.config.batch_size;
        st.queued_bytes += size;
        if full {
            st.close(&key);
        }
        drop(st);
        if full || first {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    async fn flush(&self) -> runnel_log::Result<()> {
        let target = {
            let mut st = self.shared.state.lock();
            st.flush_requested = true;
            st.closed + st.open.len() as u64
        };
        self.shared.work.notify_one();
        let mut answered = self.shared.answered.subscribe();
        let _ = answered.wait_for(|&n| n >= target).await;
        match self.shared.state.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The sender task: closes due batches and sends them; a second task awaits the answers in
/// order and records the outcome.
async fn sender(shared: Arc<Shared>) {
    let mut conn: Option<Arc<Connection>> = None;
    let (answers, mut pending) = tokio::sync::mpsc::channel::<(Answer, u64, usize)>(MAX_IN_FLIGHT);
    let completer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some((answer, n, sizes)) = pending.recv().await {
                let result = answer.await;
                let mut st = shared.state.lock();
                if let Err(e) = result {
                    st.error.get_or_insert(e);
                }
                st.queued_bytes = st.queued_bytes.saturating_sub(sizes);
                drop(st);
                shared.space.notify_waiters();
                shared.answered.send_modify(|a| *a += n);
            }
        })
    };
    loop {
        let (batches, wait, finished) = {
            let mut st = shared.state.lock();
            let linger = shared.config.linger;
            let now = Instant::now();
            let due: Vec<(Arc<str>, u32)> = st
                .open
                .iter()
                .filter(|(_, o)| st.flush_requested || now.duration_since(o.created) >= linger)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &due {
                st.close(k);
            }
            if st.open.is_empty() {
                st.flush_requested = false;
            }
            let mut take = Vec::new();
            let mut bytes = 0;
            while let Some(r) = st.ready.front() {
                if !take.is_empty() && bytes + r.bytes.len() > MAX_REQUEST_BYTES {
                    break;
                }
                bytes += r.bytes.len();
                take.push(st.ready.pop_front().expect("front exists"));
            }
            let finished = take.is_empty() && st.dropped && st.open.is_empty();
            let wait = st.open.values().map(|o| o.created + linger).min();
            (take, wait, finished)
        };
        if finished {
            drop(answers);
            let _ = completer.await;
            return;
        }
        if batches.is_empty() {
            match wait {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), shared.work.notified()).await;
                }
                None => shared.work.notified().await,
            }
            continue;
        }
        let n = batches.len() as u64;
        let sizes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let answer: Answer = match start_batches(&shared.bootstrap, &mut conn, batches).await {
            Ok(answer) => Box::pin(answer),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        if answers.send((answer, n, sizes)).await.is_err() {
            return;
        }
    }
}

/// Writes one Produce request for `batches` and returns the future of its outcome.
async fn start_batches(
    bootstrap: &str,
    conn: &mut Option<Arc<Connection>>,
    batches: Vec<Ready>,
) -> Result<impl Future<Output = Result<(), LogError>> + Send + 'static, LogError> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(Connection::connect(bootstrap).await?);
    }
    let c = conn.as_ref().expect("connected");
    let v = c.version(ApiKey::Produce, (3, 9))?;
    // Batches of one partition are concatenated in order: one records field per partition.
    let mut topics: BTreeMap<Arc<str>, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    for b in batches {
        topics
            .entry(b.topic)
            .or_default()
            .entry(b.partition)
            .or_default()
            .extend_from_slice(&b.bytes);
    }
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(str_bytes(t.to_string())))
                        .with_partition_data(
                            parts
                                .into_iter()
                                .map(|(p, bytes)| {
                                    PartitionProduceData::default()
                                        .with_index(p as i32)
                                        .with_records(Some(Bytes::from(bytes)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let resp = c.start(req, v).await?;
    Ok(async move {
        for t in resp.await?.responses {
            for p in t.partition_responses {
                if p.error_code != 0 {
                    return Err(LogError::Delivery {
                        topic: t.name.0.to_string(),
                        partition: p.index as u32,
                        reason: kafka_error("Produce", p.error_code, "").to_string(),
                    });
                }
            }
        }
        Ok(())
    })
}
