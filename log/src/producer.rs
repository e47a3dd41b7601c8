//! The in-process producer: batching by size and linger, Kafka's partitioner, delivery futures.
//!
//! [`Producer::send`] encodes the record straight into the open batch of its partition and
//! returns a [`DeliveryFuture`]; awaiting it yields the record's (partition, offset) once its
//! batch is appended and durable per the topic's policy. The producer's sender thread sends a
//! batch when it reaches `batch_size` bytes or has waited `linger`, appending all ready batches of
//! a partition in one burst (one sync under `always`); per producer one burst is in flight at a
//! time, so the records of one partition keep the order of their `send` calls. Disk I/O never
//! runs on the caller's async executor.
//! Backpressure: `send` waits while more than `buffer_memory` bytes are queued.
//!
//! Errors keep each partition gapless (Kafka's idempotent producer): once a batch of a
//! partition fails (a full disk, an I/O error), every later batch of that partition fails with
//! the same cause for the rest of the producer's life, so what a partition stored from a
//! producer is always a prefix of what was sent to it. A new producer writes to it again.
//!
//! Partitioning is Kafka's: an explicit partition wins; a key goes to
//! `murmur2(key) mod partitions`; records without a key stick to one random partition until
//! that partition's batch is sent (the sticky partitioner), then move to another.
//!
//! [`Producer::send_batch`] takes a batch the caller encoded itself (a stream task writing its
//! outputs without key straight into batches): it is queued whole, after any open batch of its
//! partition, so the records of a partition still keep the order in which they were handed over.

use crate::batch::BatchBuilder;
use crate::compression::Compression;
use crate::error::{LogError, Result};
use crate::log::{Log, Topic};
use crate::partition::Partition;
use crate::partitioner::partition_for_key;
use crate::txn::producer::TxnSession;
use crate::types::{Header, now_ms};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The default `batch.size`: also the size at which callers of [`Producer::send_batch`]
/// close the batches they build.
pub const DEFAULT_BATCH_SIZE: usize = 1 << 20;

/// Producer settings, named after Kafka's where they match.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `batch.size` in bytes.
    pub batch_size: usize,
    /// `linger.ms`.
    pub linger: Duration,
    /// `buffer.memory`: bytes queued before `send` waits.
    pub buffer_memory: usize,
    /// `transactional.id`: with one, the producer writes only inside transactions
    /// ([`Producer::init_transactions`], then begin / send / commit or abort), and a newer
    /// producer with the same id fences this one.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: a transaction open longer is aborted by the coordinator.
    pub transaction_timeout: Duration,
    /// `compression.type`: the codec of the batches sent. A topic whose own
    /// `compression.type` names a codec gets that one instead (the log would store it so).
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            linger: Duration::from_millis(5),
            buffer_memory: 64 << 20,
            transactional_id: None,
            transaction_timeout: Duration::from_millis(
                crate::txn::coordinator::DEFAULT_TRANSACTION_TIMEOUT_MS as u64,
            ),
            compression: Compression::None,
        }
    }
}

/// A record to send. Key, value and headers are borrowed: `send` copies them into the batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    pub topic: &'a str,
    pub partition: Option<u32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
    /// Milliseconds since the epoch; now if `None`.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        Self {
            topic,
            partition: None,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }
    pub fn headers(mut self, headers: &'a [Header]) -> Self {
        self.headers = headers;
        self
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
}

/// Completion of one batch, shared by the delivery futures of its records (which is why the
/// batch's topic and partition live here, not in each future).
#[derive(Debug)]
struct BatchDone {
    topic: Arc<str>,
    partition: u32,
    result: OnceLock<std::result::Result<u64, String>>,
    notify: Notify,
}

impl BatchDone {
    fn new(topic: Arc<str>, partition: u32) -> Self {
        Self {
            topic,
            partition,
            result: OnceLock::new(),
            notify: Notify::new(),
        }
    }

    /// The outcome as the caller sees it, once known.
    async fn outcome(&self) -> Result<u64> {
        self.wait()
            .await
            .clone()
            .map_err(|reason| LogError::Delivery {
                topic: self.topic.to_string(),
                partition: self.partition,
                reason,
            })
    }

    fn complete(&self, r: std::result::Result<u64, String>) {
        let _ = self.result.set(r);
        self.notify.notify_waiters();
    }

    async fn wait(&self) -> &std::result::Result<u64, String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.result.get() {
                return r;
            }
            notified.await;
        }
    }
}

/// Resolves to the record's partition and offset once its batch is durable.
#[derive(Debug)]
#[must_use = "a record is only known to be stored once its DeliveryFuture resolves"]
pub struct DeliveryFuture {
    done: Arc<BatchDone>,
    index: u32,
}

impl DeliveryFuture {
    /// # Errors
    ///
    /// [`LogError::Delivery`] naming the partition and the reason when the batch was not
    /// stored (refused by the partition, or the disk failed its write or sync).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future does not cancel the send, only the wait.
    pub async fn wait(self) -> Result<RecordMetadata> {
        let base = self.done.outcome().await?;
        Ok(RecordMetadata {
            partition: self.done.partition,
            offset: base + self.index as u64,
        })
    }
}

impl std::future::IntoFuture for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    /// Bytes this batch counts against `buffer_memory` (estimates, so the release matches).
    queued: usize,
    created: Instant,
    done: Arc<BatchDone>,
}

/// A closed batch waiting for the sender. It is finished (header, CRC) by the sender's
/// blocking task, not under the accumulator lock on the producing thread.
struct ReadyBatch {
    partition: Arc<Partition>,
    builder: BatchBuilder,
    queued: usize,
    done: Arc<BatchDone>,
}

struct TopicState {
    topic: Arc<Topic>,
    /// Indexed by partition; grows when the topic gains partitions.
    open: Vec<Option<OpenBatch>>,
    sticky: Option<u32>,
}

#[derive(Default)]
struct Accumulator {
    /// A producer writes to few topics: a scan of a short Vec beats hashing the name per record.
    topics: Vec<TopicState>,
    ready: Vec<ReadyBatch>,
    in_flight: Vec<Arc<BatchDone>>,
    queued_bytes: usize,
}

pub(crate) struct Inner {
    pub(crate) log: Log,
    config: ProducerConfig,
    /// The transaction session of a producer with a `transactional_id`.
    pub(crate) txn: Option<TxnSession>,
    acc: Mutex<Accumulator>,
    /// Wakes the sender thread; waited on with the accumulator lock.
    wake_sender: Condvar,
    space_freed: Notify,
    closed: AtomicBool,
    /// Partitions where a batch failed, with the cause: their later batches fail with it.
    failed: Mutex<Vec<(Arc<Partition>, String)>>,
    /// The first batch failure since the last [`Producer::flush`], which reports it even when
    /// the batch was settled before the flush began (its records were sent earlier).
    unreported: Mutex<Option<LogError>>,
}

/// See the module documentation. Cheap to clone; clones share batches and the sender thread.
/// When the last clone is dropped, queued records are still sent (the sender thread drains them),
/// but nobody learns the outcome: call [`Producer::close`] to wait for it.
#[derive(Clone)]
pub struct Producer {
    pub(crate) inner: Arc<Inner>,
    _drain_on_drop: Arc<DrainOnDrop>,
}

struct DrainOnDrop(Arc<Inner>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        close_all(&mut self.0.acc.lock());
        self.0.wake_sender.notify_one();
    }
}

/// Why a record could not be queued right now.
enum Refused {
    BufferFull,
    Error(LogError),
}

impl Producer {
    /// Creates a producer and its sender thread.
    pub fn new(log: Log, config: ProducerConfig) -> Self {
        let txn = config
            .transactional_id
            .clone()
            .map(|id| TxnSession::new(id, config.transaction_timeout));
        let inner = Arc::new(Inner {
            log,
            txn,
            config,
            acc: Mutex::new(Accumulator::default()),
            wake_sender: Condvar::new(),
            space_freed: Notify::new(),
            closed: AtomicBool::new(false),
            failed: Mutex::new(Vec::new()),
            unreported: Mutex::new(None),
        });
        let sender = inner.clone();
        std::thread::Builder::new()
            .name("runnel-producer".into())
            .spawn(move || sender_thread(&sender))
            .expect("spawning the producer's sender thread");
        Self {
            _drain_on_drop: Arc::new(DrainOnDrop(inner.clone())),
            inner,
        }
    }

    /// Whether a batch failed (its partition, and only it, refuses every later batch).
    pub fn has_failed(&self) -> bool {
        !self.inner.failed.lock().is_empty()
    }

    /// Queues a record and returns its delivery future. Waits only while the buffer is full.
    ///
    /// # Errors
    ///
    /// - [`LogError::Closed`] after [`close`](Self::close).
    /// - [`LogError::UnknownTopic`] / [`LogError::UnknownPartition`] for a topic that does not
    ///   exist or a partition it does not have.
    /// - [`LogError::Transaction`] for a transactional producer outside an open transaction
    ///   (or fenced, or abortable after an earlier failure).
    /// - [`LogError::Delivery`] when an earlier batch to the same partition failed: it refuses
    ///   every later batch, so records are never stored out of order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped while waiting for buffer space, nothing was queued.
    pub async fn send(&self, rec: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        match self.try_enqueue(&rec) {
            Ok(f) => Ok(f),
            Err(Refused::Error(e)) => Err(e),
            // Boxed so the common path's future stays small (it is polled once per record).
            Err(Refused::BufferFull) => Box::pin(self.send_when_space(rec)).await,
        }
    }

    async fn send_when_space(&self, rec: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        loop {
            let freed = self.inner.space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_enqueue(&rec) {
                Ok(f) => return Ok(f),
                Err(Refused::Error(e)) => return Err(e),
                Err(Refused::BufferFull) => {
                    self.inner.wake_sender.notify_one();
                    freed.await;
                }
            }
        }
    }

    /// Encodes the record into its partition's open batch, under one lock acquisition.
    fn try_enqueue(
        &self,
        rec: &ProducerRecord<'_>,
    ) -> std::result::Result<DeliveryFuture, Refused> {
        let mut acc = self.inner.acc.lock();
        let (done, index) = self.enqueue_locked(&mut acc, rec)?;
        Ok(DeliveryFuture {
            done: done.clone(),
            index,
        })
    }

    /// Queues records from the front of `records` under one lock acquisition, without
    /// delivery futures, until they are all queued or the buffer is full; returns how many.
    fn try_enqueue_all(
        &self,
        records: &[ProducerRecord<'_>],
    ) -> std::result::Result<usize, Refused> {
        let mut acc = self.inner.acc.lock();
        for (i, rec) in records.iter().enumerate() {
            match self.enqueue_locked(&mut acc, rec) {
                Ok(_) => {}
                Err(Refused::BufferFull) => return Ok(i),
                Err(e) => return Err(e),
            }
        }
        Ok(records.len())
    }

    /// Queues every record, waiting while the buffer is full; the records' deliveries are
    /// awaited with [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), for the first record refused; the records before it are
    /// queued.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped, a prefix of `records` may have been queued, and the caller
    /// cannot tell how long.
    pub async fn send_all(&self, mut records: &[ProducerRecord<'_>]) -> Result<()> {
        while !records.is_empty() {
            let queued = match self.try_enqueue_all(records) {
                Ok(n) => n,
                Err(Refused::Error(e)) => return Err(e),
                Err(Refused::BufferFull) => 0,
            };
            records = &records[queued..];
            if let Some(first) = records.first() {
                // The buffer is full: wait for space for the next one, then go on in bulk.
                drop(self.send_when_space(*first).await?);
                records = &records[1..];
            }
        }
        Ok(())
    }

    /// Encodes one record into its partition's open batch; returns the batch's completion and
    /// the record's index in it.
    fn enqueue_locked<'a>(
        &self,
        acc: &'a mut Accumulator,
        rec: &ProducerRecord<'_>,
    ) -> std::result::Result<(&'a Arc<BatchDone>, u32), Refused> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Refused::Error(LogError::Closed));
        }
        if let Some(t) = &self.inner.txn {
            t.check_open().map_err(Refused::Error)?;
        }
        let cfg = &self.inner.config;
        let size = BatchBuilder::estimate(rec.key, rec.value, rec.headers);
        if acc.queued_bytes >= cfg.buffer_memory {
            return Err(Refused::BufferFull);
        }
        let ts =
            topic_state(&self.inner.log, &mut acc.topics, rec.topic).map_err(Refused::Error)?;
        acc.queued_bytes += size;
        let count = ts.topic.partition_count();
        let partition = match (rec.partition, rec.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                acc.queued_bytes -= size;
                return Err(Refused::Error(LogError::UnknownPartition {
                    topic: rec.topic.to_string(),
                    partition: p,
                    partitions: count,
                }));
            }
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => *ts
                .sticky
                .get_or_insert_with(|| rand::random_range(0..count)),
        };
        if ts.open.len() < count as usize {
            ts.open.resize_with(count as usize, || None);
        }
        let full = ts.open[partition as usize].as_ref().is_some_and(|b| {
            !b.builder.is_empty() && b.builder.size_bytes() + size > cfg.batch_size
        });
        if full {
            if let Err(e) = close_batch(ts, partition, &mut acc.ready) {
                acc.queued_bytes -= size;
                return Err(Refused::Error(e));
            }
            self.inner.wake_sender.notify_one();
        }
        if ts.open[partition as usize].is_none() {
            // The sender must learn of the new batch to arm its linger timer.
            self.inner.wake_sender.notify_one();
            let builder = BatchBuilder::new(cfg.batch_size.min(DEFAULT_BATCH_SIZE))
                .with_compression(ts.compression(cfg));
            ts.open[partition as usize] = Some(OpenBatch {
                builder,
                queued: 0,
                created: Instant::now(),
                done: Arc::new(BatchDone::new(ts.topic.name.clone(), partition)),
            });
        }
        let batch = ts.open[partition as usize].as_mut().expect("opened above");
        batch.queued += size;
        let timestamp = rec.timestamp.unwrap_or_else(now_ms);
        batch
            .builder
            .push(timestamp, rec.key, rec.value, rec.headers);
        let index = batch.builder.len() as u32 - 1;
        Ok((&batch.done, index))
    }

    /// Queues `batch`, records the caller encoded for `topic`, as one batch: to `partition`,
    /// or with `None` to a partition picked at random (where records without key and partition
    /// may go). Its offsets are assigned when it is appended; [`flush`](Self::flush) reports
    /// its outcome, and so does the returned future of its last record (`None` for an empty
    /// batch), for a caller that tracks deliveries batch by batch. Waits only while the buffer
    /// is full.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped while waiting for buffer space, nothing was queued.
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        mut batch: BatchBuilder,
    ) -> Result<Option<DeliveryFuture>> {
        if batch.is_empty() {
            return Ok(None);
        }
        loop {
            let freed = self.inner.space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_enqueue_batch(topic, partition, batch) {
                Ok(last) => return Ok(Some(last)),
                Err((Refused::Error(e), _)) => return Err(e),
                Err((Refused::BufferFull, refused)) => {
                    batch = refused;
                    self.inner.wake_sender.notify_one();
                    freed.await;
                }
            }
        }
    }

    /// Queues a built batch as ready, after the open batch of its partition (whose records
    /// were sent before it); hands the batch back when it cannot.
    #[expect(
        clippy::result_large_err,
        reason = "the batch is handed back by value for the caller to retry; boxing it would allocate on every send"
    )]
    fn try_enqueue_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: BatchBuilder,
    ) -> std::result::Result<DeliveryFuture, (Refused, BatchBuilder)> {
        let mut guard = self.inner.acc.lock();
        let acc = &mut *guard;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err((Refused::Error(LogError::Closed), batch));
        }
        if let Some(Err(e)) = self.inner.txn.as_ref().map(TxnSession::check_open) {
            return Err((Refused::Error(e), batch));
        }
        if acc.queued_bytes >= self.inner.config.buffer_memory {
            return Err((Refused::BufferFull, batch));
        }
        let ts = match topic_state(&self.inner.log, &mut acc.topics, topic) {
            Ok(ts) => ts,
            Err(e) => return Err((Refused::Error(e), batch)),
        };
        let count = ts.topic.partition_count();
        let partition = match partition {
            Some(p) if p < count => p,
            Some(p) => {
                let e = LogError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                    partitions: count,
                };
                return Err((Refused::Error(e), batch));
            }
            None => rand::random_range(0..count),
        };
        let target = match ts.topic.partition(partition) {
            Ok(p) => p,
            Err(e) => return Err((Refused::Error(e), batch)),
        };
        if let Err(e) = close_batch(ts, partition, &mut acc.ready) {
            return Err((Refused::Error(e), batch));
        }
        let size = batch.size_bytes();
        let last = DeliveryFuture {
            done: Arc::new(BatchDone::new(ts.topic.name.clone(), partition)),
            index: batch.len() as u32 - 1,
        };
        acc.queued_bytes += size;
        acc.ready.push(ReadyBatch {
            partition: target,
            builder: batch.with_compression(ts.compression(&self.inner.config)),
            queued: size,
            done: last.done.clone(),
        });
        self.inner.wake_sender.notify_one();
        Ok(last)
    }

    /// Sends everything queued so far and waits until it is durable. Fails with the first
    /// batch failure since the previous flush, whether or not that batch was still pending:
    /// a caller that commits after a successful flush never commits past a lost record.
    ///
    /// # Errors
    ///
    /// [`LogError::Delivery`] for the first batch since the previous flush that was not
    /// stored.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the batches are sent whether or not the future is polled; a dropped flush
    /// only stops waiting, and its failures are reported by the next flush.
    pub async fn flush(&self) -> Result<()> {
        let pending: Vec<Arc<BatchDone>> = {
            let mut acc = self.inner.acc.lock();
            close_all(&mut acc);
            acc.ready
                .iter()
                .map(|b| b.done.clone())
                .chain(acc.in_flight.iter().cloned())
                .collect()
        };
        self.inner.wake_sender.notify_one();
        let mut first_error = None;
        for done in pending {
            if let Err(e) = done.outcome().await {
                first_error.get_or_insert(e);
            }
        }
        let earlier = self.inner.unreported.lock().take();
        match earlier.or(first_error) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes, then stops the sender thread. Later sends fail with [`LogError::Closed`].
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush); the producer is closed either way.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped during its flush, the producer stays open.
    pub async fn close(&self) -> Result<()> {
        let r = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_sender.notify_one();
        r
    }
}

impl TopicState {
    /// The codec of this topic's batches: the topic's own `compression.type` wins, as the
    /// log would store them so anyway.
    fn compression(&self, config: &ProducerConfig) -> Compression {
        self.topic
            .config()
            .compression_type
            .stored(config.compression)
    }
}

/// The state of `name`, added on its first record.
fn topic_state<'a>(
    log: &Log,
    topics: &'a mut Vec<TopicState>,
    name: &str,
) -> Result<&'a mut TopicState> {
    let i = match topics.iter().position(|t| &*t.topic.name == name) {
        Some(i) => i,
        None => {
            topics.push(TopicState {
                topic: log.topic(name)?,
                open: Vec::new(),
                sticky: None,
            });
            topics.len() - 1
        }
    };
    Ok(&mut topics[i])
}

/// Moves every open batch to the ready list.
fn close_all(acc: &mut Accumulator) {
    for ts in acc.topics.iter_mut() {
        for p in 0..ts.open.len() as u32 {
            if let Err(e) = close_batch(ts, p, &mut acc.ready) {
                tracing::error!(error = %e, "cannot send a batch");
            }
        }
    }
}

/// Moves a partition's open batch to the ready list; a sticky partition moves on.
fn close_batch(ts: &mut TopicState, partition: u32, ready: &mut Vec<ReadyBatch>) -> Result<()> {
    let Some(b) = ts.open.get_mut(partition as usize).and_then(Option::take) else {
        return Ok(());
    };
    if ts.sticky == Some(partition) {
        ts.sticky = None;
    }
    match ts.topic.partition(partition) {
        Ok(p) => {
            ready.push(ReadyBatch {
                partition: p,
                builder: b.builder,
                queued: b.queued,
                done: b.done,
            });
            Ok(())
        }
        Err(e) => {
            b.done.complete(Err(e.to_string()));
            Err(e)
        }
    }
}

/// Moves the open batches that have lingered long enough to the ready list; returns when the
/// next open batch will be due.
fn close_lingered(acc: &mut Accumulator, linger: Duration) -> Option<Instant> {
    let now = Instant::now();
    let mut next_deadline: Option<Instant> = None;
    for ts in acc.topics.iter_mut() {
        for p in 0..ts.open.len() {
            let Some(b) = &ts.open[p] else { continue };
            let deadline = b.created + linger;
            if deadline <= now {
                if let Err(e) = close_batch(ts, p as u32, &mut acc.ready) {
                    tracing::error!(error = %e, "cannot send a batch");
                }
            } else {
                next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
        }
    }
    next_deadline
}

/// Waits until there are batches to send and takes them (recording them as in flight), or
/// returns `None` once the producer is closed and everything is sent.
fn next_sendable(inner: &Inner) -> Option<Vec<ReadyBatch>> {
    let mut acc = inner.acc.lock();
    loop {
        let next_deadline = close_lingered(&mut acc, inner.config.linger);
        if !acc.ready.is_empty() {
            let batches = std::mem::take(&mut acc.ready);
            acc.in_flight = batches.iter().map(|b| b.done.clone()).collect();
            return Some(batches);
        }
        if inner.closed.load(Ordering::Acquire) {
            return None;
        }
        match next_deadline {
            Some(d) => {
                inner.wake_sender.wait_until(&mut acc, d);
            }
            None => inner.wake_sender.wait(&mut acc),
        }
    }
}

/// Finishes the batches and appends them, grouped by partition so that each partition's
/// batches share one write burst and, under `always`, one sync. Order within a partition is kept.
fn append_batches(
    inner: &Inner,
    batches: Vec<ReadyBatch>,
) -> Vec<(Arc<BatchDone>, std::result::Result<u64, String>)> {
    let mut groups: Vec<(Arc<Partition>, Vec<ReadyBatch>)> = Vec::new();
    for b in batches {
        match groups
            .iter_mut()
            .find(|(p, _)| Arc::ptr_eq(p, &b.partition))
        {
            Some((_, g)) => g.push(b),
            None => groups.push((b.partition.clone(), vec![b])),
        }
    }
    if let Some(txn) = &inner.txn {
        // One coordinator call for every partition of the burst; a failure shows in the
        // appends below, which try again per partition.
        let partitions: Vec<Arc<Partition>> = groups.iter().map(|(p, _)| p.clone()).collect();
        let _ = txn.add_partitions(&inner.log, &partitions);
    }
    let mut out = Vec::new();
    for (partition, group) in groups {
        let (dones, builders): (Vec<_>, Vec<_>) =
            group.into_iter().map(|b| (b.done, b.builder)).unzip();
        let earlier = (inner.failed.lock().iter())
            .find(|(p, _)| Arc::ptr_eq(p, &partition))
            .map(|(_, cause)| cause.clone());
        let results: Vec<std::result::Result<u64, String>> = match (earlier, &inner.txn) {
            (Some(cause), _) => {
                let reason = format!(
                    "not stored, because an earlier batch of {}-{} failed (a producer leaves no gap; use a new one): {cause}",
                    partition.topic, partition.id
                );
                dones.iter().map(|_| Err(reason.clone())).collect()
            }
            (None, None) => to_strings(
                partition.append_built(builders.into_iter().map(BatchBuilder::finish).collect()),
            ),
            (None, Some(txn)) => to_strings(txn.append(&inner.log, &partition, builders)),
        };
        if let Some(Err(cause)) = results.iter().find(|r| r.is_err()) {
            let mut failed = inner.failed.lock();
            if !failed.iter().any(|(p, _)| Arc::ptr_eq(p, &partition)) {
                failed.push((partition.clone(), cause.clone()));
            }
            inner
                .unreported
                .lock()
                .get_or_insert_with(|| LogError::Delivery {
                    topic: partition.topic.to_string(),
                    partition: partition.id,
                    reason: cause.clone(),
                });
        }
        out.extend(dones.into_iter().zip(results));
    }
    out
}

fn to_strings(results: Vec<Result<u64>>) -> Vec<std::result::Result<u64, String>> {
    results
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

/// The producer's sender: a plain thread, because all it does is blocking disk I/O and it must
/// not wait for a runtime worker to be free (a task producing in a tight loop would starve a
/// sender task on its own worker).
fn sender_thread(inner: &Inner) {
    while let Some(batches) = next_sendable(inner) {
        let sizes: usize = batches.iter().map(|b| b.queued).sum();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            append_batches(inner, batches)
        })) {
            Ok(results) => {
                for (done, r) in results {
                    done.complete(r);
                }
            }
            Err(_) => {
                // A bug, not bad input; fail these batches rather than leave senders waiting.
                tracing::error!("producer append panicked; failing the batches in flight");
                for d in &inner.acc.lock().in_flight {
                    d.complete(Err("internal error while appending (see the log)".into()));
                }
            }
        }
        {
            let mut acc = inner.acc.lock();
            acc.in_flight.clear();
            acc.queued_bytes = acc.queued_bytes.saturating_sub(sizes);
        }
        inner.space_freed.notify_waiters();
    }
}
