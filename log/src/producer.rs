//! The in-process producer: batching by size and linger, Kafka's partitioner, delivery futures.
//!
//! [`Producer::send`] encodes the record straight into the open batch of its partition and
//! returns a [`DeliveryFuture`]; awaiting it yields the record's (partition, offset) once its
//! batch is appended and durable per the topic's policy. A background task sends a batch when it
//! reaches `batch_size` bytes or has waited `linger`; per producer one append is in flight at a
//! time, so the records of one partition keep the order of their `send` calls.
//! Backpressure: `send` waits while more than `buffer_memory` bytes are queued.
//!
//! Partitioning is Kafka's: an explicit partition wins; a key goes to
//! `murmur2(key) mod partitions`; records without a key stick to one random partition until
//! that partition's batch is sent (the sticky partitioner), then move to another.

use crate::batch::BatchBuilder;
use crate::error::{LogError, Result};
use crate::log::{Log, Topic};
use crate::partitioner::partition_for_key;
use crate::types::{Header, now_ms};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Producer settings, named after Kafka's where they match.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `batch.size` in bytes.
    pub batch_size: usize,
    /// `linger.ms`.
    pub linger: Duration,
    /// `buffer.memory`: bytes queued before `send` waits.
    pub buffer_memory: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1 << 20,
            linger: Duration::from_millis(5),
            buffer_memory: 64 << 20,
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

/// Completion of one batch, shared by the delivery futures of its records.
#[derive(Debug, Default)]
struct BatchDone {
    result: OnceLock<std::result::Result<u64, String>>,
    notify: Notify,
}

impl BatchDone {
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
    topic: Arc<str>,
    partition: u32,
    index: u32,
}

impl DeliveryFuture {
    /// Cancel safety: dropping the future does not cancel the send.
    pub async fn wait(self) -> Result<RecordMetadata> {
        match self.done.wait().await {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition,
                offset: base + self.index as u64,
            }),
            Err(reason) => Err(LogError::Delivery {
                topic: self.topic.to_string(),
                partition: self.partition,
                reason: reason.clone(),
            }),
        }
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

struct ReadyBatch {
    topic: Arc<Topic>,
    partition: u32,
    bytes: Vec<u8>,
    queued: usize,
    done: Arc<BatchDone>,
}

struct TopicState {
    topic: Arc<Topic>,
    open: HashMap<u32, OpenBatch>,
    sticky: Option<u32>,
}

#[derive(Default)]
struct Accumulator {
    topics: HashMap<String, TopicState>,
    ready: Vec<ReadyBatch>,
    in_flight: Vec<(Arc<str>, u32, Arc<BatchDone>)>,
    queued_bytes: usize,
}

struct Inner {
    log: Log,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    wake_sender: Notify,
    space_freed: Notify,
    closed: AtomicBool,
}

/// See the module documentation. Cheap to clone; clones share batches and the sender task.
/// When the last clone is dropped, queued records are still sent (the sender task drains them),
/// but nobody learns the outcome: call [`Producer::close`] to wait for it.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
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

impl Producer {
    /// Creates a producer; must be called inside a tokio runtime (it spawns its sender task).
    pub fn new(log: Log, config: ProducerConfig) -> Self {
        let inner = Arc::new(Inner {
            log,
            config,
            acc: Mutex::new(Accumulator::default()),
            wake_sender: Notify::new(),
            space_freed: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(sender_loop(inner.clone()));
        Self {
            _drain_on_drop: Arc::new(DrainOnDrop(inner.clone())),
            inner,
        }
    }

    /// Queues a record and returns its delivery future. Waits only while the buffer is full.
    ///
    /// Cancel safety: if dropped while waiting for buffer space, nothing was queued.
    pub async fn send(&self, rec: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        loop {
            let freed = self.inner.space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.inner.acc.lock().queued_bytes < self.inner.config.buffer_memory {
                break;
            }
            self.inner.wake_sender.notify_one();
            freed.await;
        }
        self.enqueue(rec)
    }

    fn enqueue(&self, rec: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let cfg = &self.inner.config;
        let size = BatchBuilder::estimate(rec.key, rec.value, rec.headers);
        let mut acc = self.inner.acc.lock();
        let acc = &mut *acc;
        if !acc.topics.contains_key(rec.topic) {
            let topic = self.inner.log.topic(rec.topic)?;
            acc.topics.insert(
                rec.topic.to_string(),
                TopicState {
                    topic,
                    open: HashMap::new(),
                    sticky: None,
                },
            );
        }
        let ts = acc.topics.get_mut(rec.topic).expect("inserted above");
        let count = ts.topic.partition_count();
        let partition = match (rec.partition, rec.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(LogError::UnknownPartition {
                    topic: rec.topic.to_string(),
                    partition: p,
                    partitions: count,
                });
            }
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => *ts
                .sticky
                .get_or_insert_with(|| rand::random_range(0..count)),
        };
        let full = ts.open.get(&partition).is_some_and(|b| {
            !b.builder.is_empty() && b.builder.size_bytes() + size > cfg.batch_size
        });
        if full {
            close_batch(ts, partition, &mut acc.ready);
            self.inner.wake_sender.notify_one();
        }
        let batch = ts.open.entry(partition).or_insert_with(|| {
            // The sender must learn of the new batch to arm its linger timer.
            self.inner.wake_sender.notify_one();
            OpenBatch {
                builder: BatchBuilder::new(cfg.batch_size.min(1 << 20)),
                queued: 0,
                created: Instant::now(),
                done: Arc::new(BatchDone::default()),
            }
        });
        batch.queued += size;
        let timestamp = rec.timestamp.unwrap_or_else(now_ms);
        batch
            .builder
            .push(timestamp, rec.key, rec.value, rec.headers);
        let index = batch.builder.len() as u32 - 1;
        let done = batch.done.clone();
        acc.queued_bytes += size;
        Ok(DeliveryFuture {
            done,
            topic: ts.topic.name.clone(),
            partition,
            index,
        })
    }

    /// Sends everything queued so far and waits until it is durable.
    pub async fn flush(&self) -> Result<()> {
        let pending: Vec<(Arc<str>, u32, Arc<BatchDone>)> = {
            let mut acc = self.inner.acc.lock();
            close_all(&mut acc);
            acc.ready
                .iter()
                .map(|b| (b.topic.name.clone(), b.partition, b.done.clone()))
                .chain(acc.in_flight.iter().cloned())
                .collect()
        };
        self.inner.wake_sender.notify_one();
        let mut first_error = None;
        for (topic, partition, done) in pending {
            if let Err(reason) = done.wait().await {
                first_error.get_or_insert_with(|| LogError::Delivery {
                    topic: topic.to_string(),
                    partition,
                    reason: reason.clone(),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes, then stops the sender task. Later sends fail with [`LogError::Closed`].
    pub async fn close(&self) -> Result<()> {
        let r = self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_sender.notify_one();
        r
    }
}

/// Moves every open batch to the ready list.
fn close_all(acc: &mut Accumulator) {
    for ts in acc.topics.values_mut() {
        let parts: Vec<u32> = ts.open.keys().copied().collect();
        for p in parts {
            close_batch(ts, p, &mut acc.ready);
        }
    }
}

/// Moves a partition's open batch to the ready list; a sticky partition moves on.
fn close_batch(ts: &mut TopicState, partition: u32, ready: &mut Vec<ReadyBatch>) {
    if let Some(b) = ts.open.remove(&partition) {
        if ts.sticky == Some(partition) {
            ts.sticky = None;
        }
        ready.push(ReadyBatch {
            topic: ts.topic.clone(),
            partition,
            bytes: b.builder.finish(),
            queued: b.queued,
            done: b.done,
        });
    }
}

/// Takes the ready batches plus the open ones that have lingered long enough.
fn take_sendable(inner: &Inner) -> (Vec<ReadyBatch>, Option<Instant>) {
    let mut acc = inner.acc.lock();
    let acc = &mut *acc;
    let linger = inner.config.linger;
    let mut next_deadline: Option<Instant> = None;
    for ts in acc.topics.values_mut() {
        let due: Vec<u32> = ts
            .open
            .iter()
            .filter(|(_, b)| {
                let deadline = b.created + linger;
                if deadline <= Instant::now() {
                    true
                } else {
                    next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                    false
                }
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            close_batch(ts, p, &mut acc.ready);
        }
    }
    let batches = std::mem::take(&mut acc.ready);
    acc.in_flight = batches
        .iter()
        .map(|b| (b.topic.name.clone(), b.partition, b.done.clone()))
        .collect();
    (batches, next_deadline)
}

async fn sender_loop(inner: Arc<Inner>) {
    loop {
        let (batches, next_deadline) = take_sendable(&inner);
        if batches.is_empty() {
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let wake = inner.wake_sender.notified();
            match next_deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d.into(), wake).await;
                }
                None => wake.await,
            }
            continue;
        }
        let sizes: usize = batches.iter().map(|b| b.queued).sum();
        let results = tokio::task::spawn_blocking(move || {
            batches
                .into_iter()
                .map(|b| {
                    let r = b
                        .topic
                        .partition(b.partition)
                        .and_then(|p| p.append(b.bytes))
                        .map_err(|e| e.to_string());
                    (b.done, r)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match results {
            Ok(results) => {
                for (done, r) in results {
                    done.complete(r);
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "producer append task failed");
                for (_, _, d) in &inner.acc.lock().in_flight {
                    d.complete(Err(format!("append task failed: {join}")));
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
