//! The remote producer: per-partition batches, one sender task, `acks=all`.
//!
//! Contract:
//! - `send` picks the partition (explicit, murmur2 of the key as Kafka does, or a sticky
//!   partition for keyless records that moves on when its batch is closed) and appends the
//!   record to that partition's open batch; it waits only while `buffer_memory` bytes are queued.
//! - A batch is closed when its next record would take it past `batch_size` bytes, after
//!   `linger`, or by `flush`. The sender task sends closed batches, oldest first, to each
//!   partition's leader, with up to four Produce requests in flight; a broker answers a
//!   connection in order, so the records of a partition are stored in the order they were sent.
//! - Batches are compressed with `ProducerConfig::compression` when they are finished, once:
//!   a retry re-sends the same bytes.
//! - Idempotence: the sender asks for a producer id (InitProducerId) before its first batch and
//!   stamps every batch with it and a per-partition sequence, fixed from then on. A brokers
//!   without InitProducerId gets plain batches.
//! - Retries: a batch whose request failed with a retriable error or a lost connection is sent
//!   again, byte for byte, by the completer task, in the order the batches were first sent,
//!   with backoff, reconnecting and refreshing metadata, until [`DELIVERY_TIMEOUT`] after its
//!   first send. With idempotence the broker drops the copies it already stored, so a retry
//!   never duplicates; OUT_OF_ORDER_SEQUENCE_NUMBER (a batch that overtook one being retried)
//!   is retried too.
//! - `flush` waits until every batch that held a record sent before it has been answered (or
//!   given up), then returns the first error since the previous flush.
//! - A partition with a batch given up keeps no gap: its later batches fail with the same cause
//!   for the rest of the producer's life (the broker would refuse them as out of sequence
//!   anyway), so what it stored from this producer is a prefix of what was sent to it.

use super::cluster::{Backoff, Cluster, retriable, stale_route};
use super::conn::Connection;
use super::conn::kafka_error;
use super::metadata;
use super::txn::{Joining, RemoteTxn};
use crate::codes;
use crate::error::BrokerError;
use async_trait::async_trait;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProduceRequest};
use parking_lot::Mutex;
use runnel_log::batch::BatchBuilder;
use runnel_log::partitioner::partition_for_key;
use runnel_log::txn::producer_state::next_sequence;
use runnel_log::types::now_ms;
use runnel_log::{
    GroupMetadata, LogError, LogProducer, ProducerConfig, ProducerRecord, TopicPartition,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// The largest buffer a new batch starts with (a larger `batch_size` grows it as needed).
const MAX_INITIAL_BATCH: usize = 1 << 20;
/// The most bytes of batches sent in one Produce request.
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Produce requests in flight on the producer's connection. The broker answers a connection's
/// requests in order, so pipelining keeps each partition's order while the next request is
/// encoded and sent during the broker's append of the previous one.
const MAX_IN_FLIGHT: usize = 4;

/// How long a batch is retried after its first send (Kafka's `delivery.timeout.ms` default).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// The outcome of one Produce request: each batch with its error, if it failed.
type Answer = Pin<Box<dyn Future<Output = Vec<(Sealed, Option<BrokerError>)>> + Send>>;

/// A batch with its final bytes (producer id and sequence included): what is re-sent.
struct Sealed {
    topic: Arc<str>,
    partition: u32,
    records: u64,
    bytes: Bytes,
}

struct Open {
    topic: Arc<str>,
    partition: u32,
    builder: BatchBuilder,
    created: Instant,
    /// What this batch's records count against `buffer_memory` (the sum of `send`'s
    /// estimates, released as such when the batch is settled).
    queued: usize,
}

/// An open batch's key: the address of its topic's interned name (names are interned in
/// `State::partitions` and never dropped before the state) and the partition. Hashing a
/// pointer instead of the name keeps `send` cheap per record.
type OpenKey = (usize, u32);

fn open_key(topic: &Arc<str>, partition: u32) -> OpenKey {
    (Arc::as_ptr(topic) as *const u8 as usize, partition)
}

/// FxHash's mixing step: enough for keys that are pointers and small integers.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A closed batch, finished by the sender once it knows the producer id.
struct Ready {
    topic: Arc<str>,
    partition: u32,
    builder: BatchBuilder,
    queued: usize,
}

#[derive(Default)]
struct State {
    open: IdMap<OpenKey, Open>,
    ready: VecDeque<Ready>,
    /// Batches closed so far (moved from `open` to `ready`).
    closed: u64,
    queued_bytes: usize,
    /// Topic name → (interned name, partition count).
    partitions: HashMap<String, (Arc<str>, u32)>,
    /// The topic of the last `send`, to skip hashing its name when the next is the same.
    hot: Option<(Arc<str>, u32)>,
    /// Sticky partition of keyless records, per topic (by interned name's address).
    sticky: IdMap<usize, u32>,
    error: Option<LogError>,
    /// Partitions with a batch given up, and why: their later batches fail with it.
    failed: Vec<(Arc<str>, u32, String)>,
    /// Records stored per partition.
    stored: HashMap<(Arc<str>, u32), u64>,
    flush_requested: bool,
    dropped: bool,
}

impl State {
    fn close(&mut self, key: &OpenKey) {
        if let Some(open) = self.open.remove(key) {
            if self.sticky.get(&key.0) == Some(&key.1) {
                self.sticky.remove(&key.0);
            }
            self.ready.push_back(Ready {
                topic: open.topic,
                partition: open.partition,
                builder: open.builder,
                queued: open.queued,
            });
            self.closed += 1;
        }
    }

    fn knows(&self, topic: &str) -> bool {
        self.hot.as_ref().is_some_and(|(t, _)| &**t == topic) || self.partitions.contains_key(topic)
    }
}

struct Shared {
    cluster: Cluster,
    config: ProducerConfig,
    /// The transaction session of a producer with a `transactional_id`.
    txn: Option<RemoteTxn>,
    state: Mutex<State>,
    /// Wakes the sender task.
    work: Notify,
    /// Wakes `send` calls waiting for buffer space.
    space: Notify,
    /// Batches answered so far (in closing order).
    answered: watch::Sender<u64>,
    /// Batches written to a connection (or settled without being written) so far.
    written: watch::Sender<u64>,
}

/// See the module documentation.
pub struct RemoteProducer {
    shared: Arc<Shared>,
}

impl RemoteProducer {
    /// Must be called inside a tokio runtime: it starts the sender task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the sender task).
    pub fn new(bootstrap: super::Bootstrap, config: ProducerConfig) -> Self {
        let txn = config
            .transactional_id
            .clone()
            .map(|id| RemoteTxn::new(id, config.transaction_timeout));
        let shared = Arc::new(Shared {
            cluster: Cluster::new(&bootstrap),
            txn,
            config,
            state: Mutex::default(),
            work: Notify::new(),
            space: Notify::new(),
            answered: watch::channel(0).0,
            written: watch::channel(0).0,
        });
        tokio::spawn(sender(shared.clone()));
        Self { shared }
    }

    /// Learns `topic`'s partition count from the broker (once per topic).
    async fn topic(&self, topic: &str) -> Result<(), LogError> {
        let counts = metadata(&self.shared.cluster, &[topic.to_string()]).await?;
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

impl RemoteProducer {
    /// Appends `record` (of estimated `size`) to its partition's open batch, with the state
    /// locked and the topic known. Returns whether the sender must be woken.
    fn push(
        &self,
        st: &mut State,
        record: &ProducerRecord<'_>,
        size: usize,
    ) -> Result<bool, LogError> {
        if st.hot.as_ref().is_none_or(|(t, _)| &**t != record.topic) {
            st.hot = Some(st.partitions[record.topic].clone());
        }
        let (topic, count) = st.hot.as_ref().expect("just set");
        let (topic_key, count) = (open_key(topic, 0).0, *count);
        let partition = match (record.partition, record.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(LogError::UnknownPartition {
                    topic: record.topic.to_string(),
                    partition: p,
                    partitions: count,
                });
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => *st
                .sticky
                .entry(topic_key)
                .or_insert_with(|| rand::random_range(0..count)),
        };
        let mut key = (topic_key, partition);
        let batch_size = self.shared.config.batch_size;
        // Closed before the record that would overflow it, not after: a batch filled past
        // its buffer's capacity would be copied into a larger one (1 MiB per batch).
        let overflows = st
            .open
            .get(&key)
            .is_some_and(|o| !o.builder.is_empty() && o.builder.size_bytes() + size > batch_size);
        if overflows {
            st.close(&key);
            if (record.partition, record.key) == (None, None) {
                // The sticky partition moves on with its closed batch, this record included.
                key.1 = *st
                    .sticky
                    .entry(topic_key)
                    .or_insert_with(|| rand::random_range(0..count));
            }
        }
        let partition = key.1;
        let first = st.open.is_empty() && st.ready.is_empty();
        let open = match st.open.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Open {
                topic: st.hot.as_ref().expect("set above").0.clone(),
                partition,
                // Sized for a full batch at once (as Kafka's producer does): growing it by
                // doubling would copy each batch about once more.
                builder: BatchBuilder::new(size.max(batch_size.min(MAX_INITIAL_BATCH)))
                    .with_compression(self.shared.config.compression),
                created: Instant::now(),
                queued: 0,
            }),
        };
        open.builder.push(
            record.timestamp.unwrap_or_else(now_ms),
            record.key,
            record.value,
            record.headers,
        );
        open.queued += size;
        st.queued_bytes += size;
        Ok(overflows || first)
    }

    fn check_size(&self, record: &ProducerRecord<'_>) -> Result<usize, LogError> {
        if let Some(t) = &self.shared.txn {
            t.check_open()?;
        }
        let size = BatchBuilder::estimate(record.key, record.value, record.headers);
        if size > self.shared.config.batch_size.max(1 << 20) * 16 {
            return Err(LogError::RecordTooLarge {
                size,
                max: self.shared.config.batch_size,
            });
        }
        Ok(size)
    }

    /// Waits until `topic` is known and the buffer has room (cancel safe: nothing queued).
    async fn wait_ready(&self, topic: &str) -> Result<(), LogError> {
        loop {
            let space = self.shared.space.notified();
            let known = {
                let st = self.shared.state.lock();
                let known = st.knows(topic);
                if known && st.queued_bytes < self.shared.config.buffer_memory {
                    return Ok(());
                }
                known
            };
            if known {
                space.await;
            } else {
                self.topic(topic).await?;
            }
        }
    }
}

impl RemoteProducer {
    /// [`LogProducer::send`] without the trait's boxed future, for a caller that holds the
    /// producer itself (as the embedded `Producer::send`): one allocation less per record.
    ///
    /// # Errors
    ///
    /// - `LogError::RecordTooLarge` if the record is over 16 batches (of the batch size, at least
    ///   1 MiB);
    /// - `LogError::Transaction` (InvalidTxnState) for a transactional producer outside a
    ///   transaction;
    /// - `LogError::UnknownTopic` if the topic does not exist, `LogError::Remote` if its metadata
    ///   cannot be had (broker unreachable for 30 s);
    /// - `LogError::UnknownPartition` if `record.partition` is past the topic's partitions.
    ///
    /// A delivery failure is not an error here: it comes from `flush` (or the next transaction call).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the record is queued in the same poll that returns `Ok`; a future dropped while
    /// it waits for buffer space or the topic's metadata has queued nothing.
    pub async fn send(&self, record: ProducerRecord<'_>) -> runnel_log::Result<()> {
        let size = self.check_size(&record)?;
        // One lock per record on the fast path: topic known and buffer space free.
        loop {
            {
                let mut st = self.shared.state.lock();
                if st.knows(record.topic) && st.queued_bytes < self.shared.config.buffer_memory {
                    if self.push(&mut st, &record, size)? {
                        drop(st);
                        self.shared.work.notify_one();
                    }
                    return Ok(());
                }
            }
            self.wait_ready(record.topic).await?;
        }
    }
}

#[async_trait]
impl LogProducer for RemoteProducer {
    async fn send(&self, record: ProducerRecord<'_>) -> runnel_log::Result<()> {
        RemoteProducer::send(self, record).await
    }

    /// One lock for as many records as the buffer takes, instead of one per record.
    async fn send_all(&self, records: &[ProducerRecord<'_>]) -> runnel_log::Result<()> {
        let mut next = 0;
        while next < records.len() {
            let mut wake = false;
            {
                let mut st = self.shared.state.lock();
                while let Some(r) = records.get(next) {
                    if !st.knows(r.topic) || st.queued_bytes >= self.shared.config.buffer_memory {
                        break;
                    }
                    let size = self.check_size(r)?;
                    wake |= self.push(&mut st, r, size)?;
                    next += 1;
                }
            }
            if wake {
                self.shared.work.notify_one();
            }
            if let Some(r) = records.get(next) {
                self.wait_ready(r.topic).await?;
            }
        }
        Ok(())
    }

    async fn flush(&self) -> runnel_log::Result<()> {
        let target = self.request_flush();
        self.settled(target).await
    }

    fn stored_per_partition(&self) -> Option<HashMap<TopicPartition, u64>> {
        let st = self.shared.state.lock();
        Some(
            st.stored
                .iter()
                .map(|((t, p), n)| (TopicPartition::new(&**t, *p), *n))
                .collect(),
        )
    }

    fn has_failed(&self) -> bool {
        !self.shared.state.lock().failed.is_empty()
    }

    async fn init_transactions(&self) -> runnel_log::Result<()> {
        self.session()?.init(&self.shared.cluster).await
    }

    fn begin_transaction(&self) -> runnel_log::Result<()> {
        self.session()?.begin()
    }

    async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, u64)],
        group: &GroupMetadata,
    ) -> runnel_log::Result<()> {
        self.session()?
            .send_offsets(&self.shared.cluster, offsets, group)
            .await
    }

    /// Flushes, then ends the transaction. When the batches all went to the coordinator's
    /// connection, EndTxn follows them as soon as they are written instead of after their
    /// answers: one round trip per transaction fewer (see [`RemoteTxn`]).
    async fn commit_transaction(&self) -> runnel_log::Result<()> {
        let session = self.session()?;
        let target = self.request_flush();
        let _ = self
            .shared
            .written
            .subscribe()
            .wait_for(|&n| n >= target)
            .await;
        let behind = session.start_commit_behind_batches().await?;
        let flushed = self.settled(target).await;
        match behind {
            // A batch refused makes the broker refuse the commit: report the batch's error.
            Some(ended) => {
                let ended = ended.await;
                flushed.and(ended)
            }
            None => {
                flushed?;
                session.end(&self.shared.cluster, true).await
            }
        }
    }

    async fn abort_transaction(&self) -> runnel_log::Result<()> {
        let session = self.session()?;
        // What is queued is sent and then aborted with the rest.
        let _ = LogProducer::flush(self).await;
        session.end(&self.shared.cluster, false).await
    }
}

impl RemoteProducer {
    /// Closes the open batches for sending now; returns how many batches must be settled
    /// for every record sent so far to be.
    fn request_flush(&self) -> u64 {
        let target = {
            let mut st = self.shared.state.lock();
            st.flush_requested = true;
            st.closed + st.open.len() as u64
        };
        self.shared.work.notify_one();
        target
    }

    /// Waits until `target` batches are settled; the first error since the last flush.
    async fn settled(&self, target: u64) -> runnel_log::Result<()> {
        let mut answered = self.shared.answered.subscribe();
        let _ = answered.wait_for(|&n| n >= target).await;
        match self.shared.state.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn session(&self) -> runnel_log::Result<&RemoteTxn> {
        self.shared.txn.as_ref().ok_or_else(|| {
            LogError::InvalidConfig(
                "this producer has no transactional_id, so it cannot run transactions".into(),
            )
        })
    }
}

/// Producer id and epoch, once the sender has asked (`None`: the broker has no idempotence).
type Identity = Option<(i64, i16)>;

async fn init_producer_id(cluster: &Cluster) -> Result<Identity, BrokerError> {
    let conn = cluster.any().await?;
    let v = match conn.version(ApiKey::InitProducerId, (0, 4)) {
        Ok(v) => v,
        Err(BrokerError::Unsupported { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1);
    let resp = conn.send(req, v).await?;
    if resp.error_code != 0 {
        return Err(kafka_error("InitProducerId", resp.error_code, ""));
    }
    tracing::debug!(
        producer_id = resp.producer_id.0,
        epoch = resp.producer_epoch,
        "idempotent producer"
    );
    Ok(Some((resp.producer_id.0, resp.producer_epoch)))
}

/// One queued request: its answer, and what to count when it is settled.
struct InFlight {
    answer: Answer,
    batches: u64,
    bytes: usize,
    first_sent: Instant,
}

/// The sender task: closes due batches, seals them and sends them to their leaders; the
/// completer task awaits the answers in order, retries what failed, and records the outcome.
async fn sender(shared: Arc<Shared>) {
    let (answers, mut pending) = tokio::sync::mpsc::channel::<InFlight>(MAX_IN_FLIGHT);
    let completer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(f) = pending.recv().await {
                let mut failed = Vec::new();
                for (b, e) in f.answer.await {
                    match e {
                        Some(e) => failed.push((b, e)),
                        None => count_stored(&shared, &b),
                    }
                }
                let result = retry_until_delivered(&shared, failed, f.first_sent).await;
                let mut st = shared.state.lock();
                if let Err((e, partitions)) = result {
                    let cause = e.to_string();
                    if let Some(txn) = &shared.txn {
                        txn.note_failed(&cause);
                    }
                    for (topic, partition) in partitions {
                        if !st.failed.iter().any(|f| f.0 == topic && f.1 == partition) {
                            st.failed.push((topic, partition, cause.clone()));
                        }
                    }
                    st.error.get_or_insert(e);
                }
                st.queued_bytes = st.queued_bytes.saturating_sub(f.bytes);
                drop(st);
                shared.space.notify_waiters();
                shared.answered.send_modify(|a| *a += f.batches);
            }
        })
    };
    let mut identity: Option<Identity> = None;
    let mut sequences: HashMap<(Arc<str>, u32), i32> = HashMap::new();
    loop {
        let (batches, wait, finished) = {
            let mut st = shared.state.lock();
            let linger = shared.config.linger;
            let now = Instant::now();
            let due: Vec<OpenKey> = st
                .open
                .iter()
                .filter(|(_, o)| st.flush_requested || now.duration_since(o.created) >= linger)
                .map(|(k, _)| *k)
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
                if !take.is_empty() && bytes + r.builder.size_bytes() > MAX_REQUEST_BYTES {
                    break;
                }
                bytes += r.builder.size_bytes();
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
        let (batches, doomed) = after_failures(&shared, batches);
        for (r, e) in doomed {
            fail(&shared, vec![r], e);
        }
        if batches.is_empty() {
            continue;
        }
        let first_sent = Instant::now();
        // Released when the request is settled: the same amounts `send` counted.
        let queued: usize = batches.iter().map(|b| b.queued).sum();
        let mut joining = None;
        if let Some(txn) = &shared.txn {
            // Transactional: the id comes from init_transactions, and each partition joins
            // the transaction before its first batch.
            let partitions: Vec<(Arc<str>, u32)> = batches
                .iter()
                .map(|r| (r.topic.clone(), r.partition))
                .collect();
            let joined = match txn.producer() {
                Ok(id) => join_transaction(&shared.cluster, txn, &partitions)
                    .await
                    .map(|j| (id, j)),
                Err(e) => Err(e),
            };
            let ((pid, epoch), pending) = match joined {
                Ok(x) => x,
                Err(e) => {
                    fail(&shared, batches, e);
                    continue;
                }
            };
            joining = pending;
            if identity != Some(Some((pid, epoch))) {
                identity = Some(Some((pid, epoch)));
                sequences.clear();
            }
        }
        let transactional = shared.txn.is_some();
        let id = match identity {
            Some(id) => id,
            None => {
                let got = shared
                    .cluster
                    .retry("InitProducerId", DELIVERY_TIMEOUT, || {
                        init_producer_id(&shared.cluster)
                    })
                    .await;
                match got {
                    Ok(id) => *identity.insert(id),
                    Err(e) => {
                        // Nothing can be sent without an id the broker agreed to: fail these
                        // batches and ask again for the next ones.
                        fail(&shared, batches, e.into());
                        continue;
                    }
                }
            }
        };
        let sealed: Vec<Sealed> = batches
            .into_iter()
            .map(|r| {
                let records = r.builder.len() as u64;
                let bytes = match id {
                    Some((pid, epoch)) => {
                        let seq = sequences.entry((r.topic.clone(), r.partition)).or_insert(0);
                        let base = *seq;
                        *seq = next_sequence(base, r.builder.len() as i32);
                        if transactional {
                            r.builder.finish_transactional(pid, epoch, base)
                        } else {
                            r.builder.finish_idempotent(pid, epoch, base)
                        }
                    }
                    None => r.builder.finish(),
                };
                Sealed {
                    topic: r.topic,
                    partition: r.partition,
                    records,
                    bytes: Bytes::from(bytes),
                }
            })
            .collect();
        let n = sealed.len() as u64;
        let sent = send_sealed(&shared.cluster, sealed).await;
        if let Some(txn) = &shared.txn {
            for conn in &sent.written_to {
                txn.note_written(conn);
            }
            if sent.unwritten {
                txn.note_failed("a batch could not be sent");
            }
        }
        shared.written.send_modify(|w| *w += n);
        let mut answer = sent.answer;
        if let Some(j) = joining {
            answer = after_joining(shared.clone(), j, answer);
        }
        let f = InFlight {
            answer,
            batches: n,
            bytes: queued,
            first_sent,
        };
        if answers.send(f).await.is_err() {
            return;
        }
    }
}

/// Adds `partitions` to the transaction. When every one of them is led by the coordinator,
/// returns the AddPartitionsToTxn still in flight: the Produce may follow it on the same
/// connection. Otherwise it waits for the answer first.
async fn join_transaction(
    cluster: &Cluster,
    txn: &RemoteTxn,
    partitions: &[(Arc<str>, u32)],
) -> Result<Option<Joining>, LogError> {
    let Some(j) = txn.start_add_partitions(cluster, partitions).await? else {
        return Ok(None);
    };
    let mut same_connection = true;
    for (topic, partition) in partitions {
        let tp = TopicPartition::new(&**topic, *partition);
        if cluster.leader_addr(&tp).await.ok().as_deref() != Some(j.coordinator.as_str()) {
            same_connection = false;
            break;
        }
    }
    if same_connection {
        return Ok(Some(j));
    }
    j.settle(txn).await?;
    Ok(None)
}

/// The Produce `answer` of batches sent behind the AddPartitionsToTxn `joining`: when the
/// coordinator refused to add the partitions, every batch fails with its reason (the broker
/// refused them too, for a partition not in the transaction).
fn after_joining(shared: Arc<Shared>, joining: Joining, answer: Answer) -> Answer {
    Box::pin(async move {
        let txn = shared
            .txn
            .as_ref()
            .expect("only a transactional producer joins");
        let joined = joining.settle(txn).await;
        let out = answer.await;
        match joined {
            Ok(()) => out,
            Err(e) => {
                let reason = e.to_string();
                out.into_iter()
                    .map(|(b, _)| {
                        (
                            b,
                            Some(BrokerError::Log(LogError::Protocol(reason.clone()))),
                        )
                    })
                    .collect()
            }
        }
    })
}

/// Splits `batches` into those to send and those of partitions where an earlier batch was
/// given up, each with its error.
fn after_failures(shared: &Shared, batches: Vec<Ready>) -> (Vec<Ready>, Vec<(Ready, LogError)>) {
    let st = shared.state.lock();
    if st.failed.is_empty() {
        return (batches, Vec::new());
    }
    let mut send = Vec::with_capacity(batches.len());
    let mut doomed = Vec::new();
    for r in batches {
        match st
            .failed
            .iter()
            .find(|f| f.0 == r.topic && f.1 == r.partition)
        {
            Some((topic, partition, cause)) => {
                let e = LogError::Delivery {
                    topic: topic.to_string(),
                    partition: *partition,
                    reason: format!(
                        "not stored, because an earlier batch failed (a producer leaves no gap; use a new one): {cause}"
                    ),
                };
                doomed.push((r, e));
            }
            None => send.push(r),
        }
    }
    (send, doomed)
}

/// Settles batches that could not be sent (no producer id, or an earlier batch given up).
fn fail(shared: &Shared, batches: Vec<Ready>, e: LogError) {
    if let Some(txn) = &shared.txn {
        txn.note_failed(&e.to_string());
    }
    let size: usize = batches.iter().map(|b| b.queued).sum();
    let mut st = shared.state.lock();
    st.error.get_or_insert(e);
    st.queued_bytes = st.queued_bytes.saturating_sub(size);
    drop(st);
    shared.space.notify_waiters();
    shared.written.send_modify(|a| *a += batches.len() as u64);
    shared.answered.send_modify(|a| *a += batches.len() as u64);
}

/// Whether a failed batch may be sent again: retriable errors and, for an idempotent batch,
/// OUT_OF_ORDER_SEQUENCE_NUMBER (an earlier batch of the partition is being retried).
fn may_retry(b: &Sealed, e: &BrokerError) -> bool {
    let idempotent = runnel_log::batch::parse_header(&b.bytes).is_ok_and(|h| h.producer_id >= 0);
    retriable(e)
        || (idempotent
            && matches!(e, BrokerError::Kafka { code, .. } if *code == codes::OUT_OF_ORDER_SEQUENCE_NUMBER))
}

/// Re-sends `failed` (in order) until every batch is stored, one fails for good, or
/// [`DELIVERY_TIMEOUT`] has passed since `first_sent`. On giving up: the error, and the
/// partitions of every batch not stored.
async fn retry_until_delivered(
    shared: &Shared,
    mut failed: Vec<(Sealed, BrokerError)>,
    first_sent: Instant,
) -> Result<(), (LogError, Vec<(Arc<str>, u32)>)> {
    let cluster = &shared.cluster;
    let mut backoff = Backoff::default();
    while !failed.is_empty() {
        let give_up = first_sent.elapsed() >= DELIVERY_TIMEOUT;
        if let Some((b, e)) = failed.iter().find(|(b, e)| give_up || !may_retry(b, e)) {
            let e = LogError::Delivery {
                topic: b.topic.to_string(),
                partition: b.partition,
                reason: e.to_string(),
            };
            let partitions = failed
                .iter()
                .map(|(b, _)| (b.topic.clone(), b.partition))
                .collect();
            return Err((e, partitions));
        }
        tracing::debug!(batches = failed.len(), error = %failed[0].1, "retrying produce");
        if failed.iter().any(|(_, e)| stale_route(e)) {
            cluster.forget_routes();
        }
        backoff.wait().await;
        let again = std::mem::take(&mut failed)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        for (b, e) in send_sealed(cluster, again).await.answer.await {
            match e {
                Some(e) => failed.push((b, e)),
                None => count_stored(shared, &b),
            }
        }
    }
    Ok(())
}

fn count_stored(shared: &Shared, b: &Sealed) {
    let mut st = shared.state.lock();
    *st.stored.entry((b.topic.clone(), b.partition)).or_default() += b.records;
}

/// Batches handed to [`send_sealed`]: the future of their outcome, the connections their
/// requests were written to, and whether some could not be written at all.
struct Sent {
    answer: Answer,
    written_to: Vec<Arc<Connection>>,
    unwritten: bool,
}

/// Writes `batches` now, one Produce request per leader, and returns the future of their
/// outcomes. A batch whose leader is unknown or unreachable fails with that error (and is
/// retried by the caller).
async fn send_sealed(cluster: &Cluster, batches: Vec<Sealed>) -> Sent {
    let mut by_leader: BTreeMap<String, Vec<Sealed>> = BTreeMap::new();
    let mut failed = Vec::new();
    for b in batches {
        let tp = runnel_log::TopicPartition::new(&*b.topic, b.partition);
        match cluster.leader_addr(&tp).await {
            Ok(addr) => by_leader.entry(addr).or_default().push(b),
            Err(e) => failed.push((b, Some(e))),
        }
    }
    let mut unwritten = !failed.is_empty();
    let mut written_to = Vec::new();
    let mut requests = Vec::new();
    for (addr, batches) in by_leader {
        match start_request(cluster, &addr, &batches).await {
            Ok((conn, answer)) => {
                written_to.push(conn);
                requests.push((batches, Ok(answer)));
            }
            Err(e) => {
                unwritten = true;
                requests.push((batches, Err(e)));
            }
        }
    }
    let answer = Box::pin(async move {
        let mut out = failed;
        for (batches, answer) in requests {
            let answer = match answer {
                Ok(a) => a.await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(codes) => {
                    for b in batches {
                        // A partition missing from the answer was not stored as far as we know.
                        let code = codes
                            .get(&(b.topic.clone(), b.partition))
                            .copied()
                            .unwrap_or(codes::NETWORK_EXCEPTION);
                        let e =
                            (code != 0 && code != codes::DUPLICATE_SEQUENCE_NUMBER).then(|| {
                                kafka_error(
                                    "Produce",
                                    code,
                                    &format!("{}-{}", b.topic, b.partition),
                                )
                            });
                        out.push((b, e));
                    }
                }
                Err(e) => {
                    for b in batches {
                        let e = clone_error(&e);
                        out.push((b, Some(e)));
                    }
                }
            }
        }
        out
    });
    Sent {
        answer,
        written_to,
        unwritten,
    }
}

/// The same error again, for each batch of a request that failed as a whole.
fn clone_error(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::Kafka {
            api,
            code,
            name,
            context,
        } => BrokerError::Kafka {
            api,
            code: *code,
            name,
            context: context.clone(),
        },
        BrokerError::Io { addr, source } | BrokerError::Connect { addr, source } => {
            BrokerError::Io {
                addr: addr.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            }
        }
        other => BrokerError::Malformed(other.to_string()),
    }
}

type PartitionCodes = HashMap<(Arc<str>, u32), i16>;

/// A Produce request body (v3 to v8) in parts: the fields around each partition's records
/// are encoded here, and the record batches are referenced, not copied.
fn produce_body(
    acks: i16,
    timeout_ms: i32,
    topics: &BTreeMap<Arc<str>, BTreeMap<u32, Vec<&Bytes>>>,
) -> Vec<Bytes> {
    use bytes::BufMut;
    let mut parts = Vec::new();
    let mut buf = bytes::BytesMut::with_capacity(128);
    buf.put_i16(-1); // no transactional id
    buf.put_i16(acks);
    buf.put_i32(timeout_ms);
    buf.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        buf.put_i16(topic.len() as i16);
        buf.put_slice(topic.as_bytes());
        buf.put_i32(partitions.len() as i32);
        for (partition, batches) in partitions {
            buf.put_i32(*partition as i32);
            buf.put_i32(batches.iter().map(|b| b.len()).sum::<usize>() as i32);
            parts.push(buf.split().freeze());
            parts.extend(batches.iter().map(|b| (*b).clone()));
        }
    }
    if !buf.is_empty() {
        parts.push(buf.freeze());
    }
    parts
}

/// Writes one Produce request for `batches` to `addr` and returns the future of the error
/// code per partition.
async fn start_request(
    cluster: &Cluster,
    addr: &str,
    batches: &[Sealed],
) -> Result<
    (
        Arc<Connection>,
        impl Future<Output = Result<PartitionCodes, BrokerError>> + Send + 'static,
    ),
    BrokerError,
> {
    let c = cluster.conn_to(addr).await?;
    // v3 to v8 share one layout (v9 is the flexible encoding), which produce_body writes.
    let v = c.version(ApiKey::Produce, (3, 8))?;
    // Batches of one partition are sent one after the other: one records field per partition.
    let mut topics: BTreeMap<Arc<str>, BTreeMap<u32, Vec<&Bytes>>> = BTreeMap::new();
    for b in batches {
        topics
            .entry(b.topic.clone())
            .or_default()
            .entry(b.partition)
            .or_default()
            .push(&b.bytes);
    }
    let names: HashMap<String, Arc<str>> =
        topics.keys().map(|t| (t.to_string(), t.clone())).collect();
    let body = produce_body(-1, 30_000, &topics);
    let resp = c.start_raw::<ProduceRequest>(v, &body).await?;
    Ok((c, async move {
        let mut out = HashMap::new();
        for t in resp.await?.responses {
            let Some(topic) = names.get(t.name.0.as_str()) else {
                continue;
            };
            for p in t.partition_responses {
                out.insert((topic.clone(), p.index as u32), p.error_code);
            }
        }
        Ok(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    /// The hand-written Produce body decodes, at every version it is sent at, to the request
    /// the codec would have written.
    #[test]
    fn produce_body_decodes_as_kafka_protocol_reads_it() {
        let (a, b, c) = (
            Bytes::from_static(b"first batch"),
            Bytes::from_static(b"second"),
            Bytes::from_static(b"other topic"),
        );
        let mut topics: BTreeMap<Arc<str>, BTreeMap<u32, Vec<&Bytes>>> = BTreeMap::new();
        topics
            .entry("t1".into())
            .or_default()
            .insert(3, vec![&a, &b]);
        topics.entry("t1".into()).or_default().insert(0, vec![&c]);
        topics.entry("t2".into()).or_default().insert(1, vec![&c]);
        let body: Vec<u8> = produce_body(-1, 1234, &topics).concat();
        for v in 3..=8 {
            let r = ProduceRequest::decode(&mut Bytes::from(body.clone()), v).unwrap();
            assert_eq!((r.acks, r.timeout_ms, r.transactional_id), (-1, 1234, None));
            let got: Vec<(String, i32, Bytes)> = r
                .topic_data
                .iter()
                .flat_map(|t| {
                    t.partition_data
                        .iter()
                        .map(|p| (t.name.0.to_string(), p.index, p.records.clone().unwrap()))
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    ("t1".into(), 0, c.clone()),
                    ("t1".into(), 3, Bytes::from_static(b"first batchsecond")),
                    ("t2".into(), 1, c.clone()),
                ]
            );
        }
    }
}
