//! The connector worker: runs each connector as a task on the tokio runtime, keeps its status,
//! pauses, resumes, restarts and deletes it, and restarts a failed one with exponential
//! backoff (1 s doubling to 60 s), its status saying why. `errors.retry.delay.max.ms` (Kafka
//! Connect's key for the longest wait between retries) lowers the 60 s cap, and the first
//! wait with it when it is under 1 s. Connectors are independent: one failing or being
//! deleted never touches another.
//!
//! Source tasks: poll, send, flush the producer, then store the offsets in
//! `__connect_offsets` (at-least-once: a crash resends at most the records since the last
//! stored offset). A poll is a list of runs ([`SourceRun`]); a run that no transform or
//! converter changes is encoded straight into log batches, others go record by record. With `exactly.once.support = required` (KIP-618) the task's producer is
//! transactional (`connect-<name>`): each poll's records and their source offsets are one
//! transaction, and a restarted task fences the one before, aborts what it left open and
//! starts from the offsets committed with the records. Sink tasks: read with the consumer group `connect-<name>`, put, flush, then
//! commit; without converters and transforms the sink gets the records as read, in the
//! log's record runs ([`Sink::put_runs`]). Under `errors.tolerance = all` a record that cannot be converted goes to
//! `errors.deadletterqueue.topic.name` with the error and its origin in headers.

use crate::api::{Connector, Kind, Rejected, Sink, Source, SourceRun};
use crate::config::ConnectorConfig;
use crate::converter::Converters;
use crate::error::{ConnectError, Result};
use crate::registry;
use crate::runtime::offsets::{self, Offsets};
use crate::transforms::{Chain, Message};
use runnel_log::batch::BatchBuilder;
use runnel_log::{
    ConsumerConfig, ConsumerRecord, DEFAULT_BATCH_SIZE, Header, LogProducer, OffsetReset,
    ProducerConfig, ProducerRecord, RecordRun, SharedLogClient, TopicConfig, TopicPartition,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A connector's status, as Kafka Connect reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    pub state: State,
    /// Why it failed, while it waits to be restarted.
    pub trace: Option<String>,
    pub restarts: u32,
    /// Records the connector read from its source or topics, since the worker started it
    /// (restarts included), counted after each poll it handled.
    pub records: u64,
    /// Bad records it skipped or set aside (`errors.tolerance = all`).
    pub errors: u64,
    /// Of those, the ones written to its dead-letter topic.
    pub dead_letters: u64,
}

impl Status {
    fn handled(&mut self, records: u64, errors: u64, dead_letters: u64) {
        self.records += records;
        self.errors += errors;
        self.dead_letters += dead_letters;
    }
}

/// A connector's state; `"RUNNING"`, `"PAUSED"`, `"FAILED"` in Kafka Connect's REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Running,
    Paused,
    /// Failed, waiting to be restarted (the status's `trace` says why).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
}

struct Entry {
    config: ConnectorConfig,
    kind: Kind,
    status: Arc<Mutex<Status>>,
    control: watch::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    client: SharedLogClient,
    connectors: Arc<Mutex<BTreeMap<String, Entry>>>,
    offsets: Arc<tokio::sync::Mutex<Offsets>>,
}

const POLL_IDLE: Duration = Duration::from_millis(100);
/// An exactly-once source's transaction timeout: how long a dead task's open transaction can
/// hold `read_committed` readers of its topics back when nothing restarts it.
const SOURCE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

impl Worker {
    /// A worker over `client`, with no connector yet and the source offsets stored in
    /// `__connect_offsets` loaded.
    ///
    /// # Errors
    /// When the offsets topic cannot be created or read ([`ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started before it returns.
    pub async fn new(client: SharedLogClient) -> Result<Self> {
        let offsets = offsets::load(&client).await?;
        Ok(Self {
            client,
            connectors: Arc::default(),
            offsets: Arc::new(tokio::sync::Mutex::new(offsets)),
        })
    }

    /// Checks the configuration (building the connector once) and starts it.
    ///
    /// # Errors
    /// [`ConnectError::Config`] or [`ConnectError::UnknownClass`] for a configuration
    /// [`registry::build`] refuses; [`ConnectError::Exists`] for a name already running.
    ///
    /// # Panics
    /// Outside a tokio runtime: the connector's task is spawned on the current one.
    pub fn create(&self, config: ConnectorConfig) -> Result<()> {
        retry_delay_max(&config)?;
        let kind = registry::build(&config)?.kind();
        let mut all = self.connectors.lock().expect("not poisoned");
        if all.contains_key(&config.name) {
            return Err(ConnectError::Exists(config.name));
        }
        let entry = self.start(config.clone(), kind, 0);
        all.insert(config.name, entry);
        Ok(())
    }

    fn start(&self, config: ConnectorConfig, kind: Kind, restarts: u32) -> Entry {
        let status = Arc::new(Mutex::new(Status {
            state: State::Running,
            trace: None,
            restarts,
            records: 0,
            errors: 0,
            dead_letters: 0,
        }));
        let (control, rx) = watch::channel(Control::Run);
        let task = tokio::spawn(supervise(self.clone(), config.clone(), status.clone(), rx));
        Entry {
            config,
            kind,
            status,
            control,
            task,
        }
    }

    /// The names of the connectors, in order.
    pub fn names(&self) -> Vec<String> {
        self.connectors
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// The configuration of connector `name`, as given.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn config(&self, name: &str) -> Result<ConnectorConfig> {
        self.with(name, |e| e.config.clone())
    }

    /// Whether connector `name` is a source or a sink.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        self.with(name, |e| e.kind)
    }

    /// The state of connector `name`, why it failed, and how often it was restarted.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn status(&self, name: &str) -> Result<Status> {
        self.with(name, |e| e.status.lock().expect("not poisoned").clone())
    }

    /// Pauses connector `name`: its task waits before its next poll or put.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn pause(&self, name: &str) -> Result<()> {
        self.with(name, |e| {
            let _ = e.control.send(Control::Pause);
            e.status.lock().expect("not poisoned").state = State::Paused;
        })
    }

    /// Resumes connector `name` after [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn resume(&self, name: &str) -> Result<()> {
        self.with(name, |e| {
            let _ = e.control.send(Control::Run);
            e.status.lock().expect("not poisoned").state = State::Running;
        })
    }

    /// Stops and starts the connector's task (with its configuration, possibly a new one).
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector; for a new configuration,
    /// what [`create`](Self::create) says of it (the connector keeps running as it was).
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`create`](Self::create).
    pub fn restart(&self, name: &str, config: Option<ConnectorConfig>) -> Result<()> {
        if let Some(c) = &config {
            retry_delay_max(c)?;
            registry::build(c)?;
        }
        let mut all = self.connectors.lock().expect("not poisoned");
        let old = all
            .remove(name)
            .ok_or_else(|| ConnectError::NotFound(name.into()))?;
        old.task.abort();
        let restarts = old.status.lock().expect("not poisoned").restarts;
        let entry = self.start(config.unwrap_or(old.config), old.kind, restarts);
        all.insert(name.into(), entry);
        Ok(())
    }

    /// Stops connector `name` and forgets it; its stored offsets stay.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn delete(&self, name: &str) -> Result<()> {
        let entry = self
            .connectors
            .lock()
            .expect("not poisoned")
            .remove(name)
            .ok_or_else(|| ConnectError::NotFound(name.into()))?;
        entry.task.abort();
        Ok(())
    }

    /// Stops every connector and waits until their tasks are gone, so sinks are dropped
    /// (a Parquet sink closes its files) before the process exits.
    ///
    /// # Cancel safety
    /// Not cancel safe: the worker forgets every connector first, so dropped part way it
    /// leaves those not aborted yet running, out of its reach.
    pub async fn shutdown(&self) {
        let entries: Vec<Entry> =
            std::mem::take(&mut *self.connectors.lock().expect("not poisoned"))
                .into_values()
                .collect();
        for e in entries {
            e.task.abort();
            let _ = e.task.await;
        }
    }

    /// The stored source offsets of a connector: (partition, offset).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn offsets(&self, name: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
        self.offsets
            .lock()
            .await
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, p), o)| (serde_json::from_str(p).unwrap_or_default(), o.clone()))
            .collect()
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&Entry) -> T) -> Result<T> {
        let all = self.connectors.lock().expect("not poisoned");
        all.get(name)
            .map(f)
            .ok_or_else(|| ConnectError::NotFound(name.into()))
    }
}

/// The longest wait between restarts of a failed connector.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// `errors.retry.delay.max.ms`, or [`RETRY_DELAY_MAX`].
fn retry_delay_max(config: &ConnectorConfig) -> Result<Duration> {
    match config.common()?.retry_delay_max_ms {
        None => Ok(RETRY_DELAY_MAX),
        Some(0) => Err(config.error("errors.retry.delay.max.ms = 0: use at least 1".into())),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// The waits before each restart: 1 s doubling, each at most `max`.
fn backoffs(max: Duration) -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(Duration::from_secs(1).min(max)), move |d| {
        Some((*d * 2).min(max))
    })
}

/// Runs a connector; after a failure, says why and tries again with exponential backoff.
async fn supervise(
    worker: Worker,
    config: ConnectorConfig,
    status: Arc<Mutex<Status>>,
    mut control: watch::Receiver<Control>,
) {
    // Checked by `create` and `restart`.
    let mut backoffs = backoffs(retry_delay_max(&config).unwrap_or(RETRY_DELAY_MAX));
    loop {
        let result = match registry::build(&config) {
            Ok(Connector::Source(s)) => {
                run_source(&worker, &config, s, &mut control, &status).await
            }
            Ok(Connector::Sink(s)) => run_sink(&worker, &config, s, &mut control, &status).await,
            Err(e) => Err(e),
        };
        let Err(e) = result else { return };
        let backoff = backoffs.next().expect("endless");
        tracing::warn!(connector = %config.name, error = %e, retry_in = ?backoff, "connector failed");
        {
            let mut s = status.lock().expect("not poisoned");
            s.state = State::Failed;
            s.trace = Some(e.to_string());
        }
        tokio::time::sleep(backoff).await;
        let mut s = status.lock().expect("not poisoned");
        s.restarts += 1;
        s.state = if *control.borrow() == Control::Pause {
            State::Paused
        } else {
            State::Running
        };
    }
}

/// Waits while paused.
async fn wait_running(control: &mut watch::Receiver<Control>) {
    while *control.borrow() == Control::Pause {
        if control.changed().await.is_err() {
            return;
        }
    }
}

fn dlq_headers(error: &str, origin: &[(&str, String)]) -> Vec<Header> {
    std::iter::once(("__connect.errors.exception.message", error.to_string()))
        .chain(origin.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| Header {
            key: k.into(),
            value: Some(v.into_bytes().into()),
        })
        .collect()
}

async fn run_source(
    worker: &Worker,
    config: &ConnectorConfig,
    mut source: Box<dyn Source>,
    control: &mut watch::Receiver<Control>,
    status: &Mutex<Status>,
) -> Result<()> {
    let name = config.name.clone();
    let common = config.common()?;
    let (tolerate, exactly_once) = (common.tolerates_errors(), common.exactly_once());
    let dlq = common.dead_letter_topic;
    let chain = Chain::from_config(config)?;
    let converters = Converters::from_config(config)?;
    let compression = match common.compression {
        Some(codec) => codec.parse()?,
        None => Default::default(),
    };
    let producer = worker.client.producer(ProducerConfig {
        compression,
        transactional_id: exactly_once.then(|| format!("connect-{name}")),
        transaction_timeout: SOURCE_TRANSACTION_TIMEOUT,
        ..Default::default()
    });
    if exactly_once {
        // Fences a previous task and aborts its open transaction, whose offsets the worker
        // never counted; then the offsets are those committed with their records.
        producer.init_transactions().await?;
        let committed = offsets::load(&worker.client).await?;
        let mut all = worker.offsets.lock().await;
        all.retain(|(n, _), _| *n != name);
        all.extend(committed.into_iter().filter(|((n, _), _)| *n == name));
    }
    let stored = worker.offsets(&name).await;
    source.start(&stored).await?;
    let mut task = SourceTask {
        worker,
        name: name.clone(),
        producer: &*producer,
        chain,
        converters,
        tolerate,
        dlq,
        ensured: Vec::new(),
        errors: 0,
        dead_letters: 0,
    };
    loop {
        wait_running(control).await;
        let runs = source.poll().await?;
        if runs.is_empty() {
            tokio::time::sleep(POLL_IDLE).await;
            continue;
        }
        if exactly_once {
            producer.begin_transaction()?;
        }
        let mut last: BTreeMap<String, (serde_json::Value, serde_json::Value)> = BTreeMap::new();
        let polled: usize = runs.iter().map(SourceRun::len).sum();
        for run in runs {
            if !run.topic.is_empty() && !run.is_empty() {
                task.send(&run).await?;
            }
            last.insert(run.partition.to_string(), (run.partition, run.offset));
        }
        if exactly_once {
            offsets::store(&*producer, &name, &last).await?;
            producer.commit_transaction().await?;
        } else {
            // The records are durable before their offsets are.
            producer.flush().await?;
            offsets::store(&*producer, &name, &last).await?;
            producer.flush().await?;
        }
        let (errors, dead_letters) = (
            std::mem::take(&mut task.errors),
            std::mem::take(&mut task.dead_letters),
        );
        status
            .lock()
            .expect("not poisoned")
            .handled(polled as u64, errors, dead_letters);
        let mut all = worker.offsets.lock().await;
        for (p, (_, o)) in last {
            all.insert((name.clone(), p), o);
        }
    }
}

/// What a source task needs to send the runs its source polls.
struct SourceTask<'a> {
    worker: &'a Worker,
    name: String,
    producer: &'a dyn LogProducer,
    chain: Chain,
    converters: Converters,
    tolerate: bool,
    dlq: Option<String>,
    /// Topics known to exist.
    ensured: Vec<String>,
    /// Bad records since the last poll, and those of them sent to the dead-letter topic.
    errors: u64,
    dead_letters: u64,
}

impl SourceTask<'_> {
    async fn ensure(&mut self, topic: &str) -> Result<()> {
        if !self.ensured.iter().any(|t| t == topic) {
            self.worker
                .client
                .ensure_topic(topic, &TopicConfig::default())
                .await?;
            self.ensured.push(topic.to_string());
        }
        Ok(())
    }

    /// Sends a run's records. When no transform and no converter changes them, they go as
    /// they are: records without key straight into log batches of
    /// [`DEFAULT_BATCH_SIZE`] (one encoding pass, no record copied on its own), keyed ones in
    /// one `send_all`. Otherwise record by record, through the transforms and converters, bad
    /// records to the dead-letter topic.
    async fn send(&mut self, run: &SourceRun) -> Result<()> {
        if run.error.is_none() && self.chain.is_empty() && self.converters.pass_through(run.text) {
            self.ensure(&run.topic).await?;
            if run.has_keys() {
                let records: Vec<ProducerRecord<'_>> = run
                    .records()
                    .map(|(key, value)| ProducerRecord {
                        topic: &run.topic,
                        partition: None,
                        key,
                        value,
                        headers: &[],
                        timestamp: None,
                    })
                    .collect();
                return Ok(self.producer.send_all(&records).await?);
            }
            let now = runnel_log::types::now_ms();
            let mut batch = BatchBuilder::new(DEFAULT_BATCH_SIZE);
            for (_, value) in run.records() {
                let size = BatchBuilder::estimate(None, value, &[]);
                if !batch.is_empty() && batch.size_bytes() + size > DEFAULT_BATCH_SIZE {
                    let full = std::mem::replace(&mut batch, BatchBuilder::new(DEFAULT_BATCH_SIZE));
                    self.producer.send_batch(&run.topic, None, full).await?;
                }
                batch.push(now, None, value, &[]);
            }
            return Ok(self.producer.send_batch(&run.topic, None, batch).await?);
        }
        for (key, value) in run.records() {
            let mut r = Message {
                topic: run.topic.clone(),
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                header_keys: Vec::new(),
            };
            let mut error = run.error.clone();
            if error.is_none() && !self.chain.is_empty() {
                match self.chain.apply(r.clone()) {
                    Ok(Some(m)) => r = m,
                    Ok(None) => continue,
                    Err(e) => error = Some(e.to_string()),
                }
            }
            if error.is_none()
                && let Err(e) = convert_out(&self.converters, &mut r, run.text)
            {
                error = Some(e);
            }
            let name = &self.name;
            if error.is_some() && self.tolerate {
                self.errors += 1;
                self.dead_letters += u64::from(self.dlq.is_some());
            }
            let target = match (&error, self.tolerate, &self.dlq) {
                (None, _, _) => Some((r.topic.clone(), Vec::new())),
                (Some(e), true, Some(d)) => Some((
                    d.clone(),
                    dlq_headers(
                        e,
                        &[
                            ("__connect.errors.connector.name", name.clone()),
                            (
                                "__connect.errors.source.partition",
                                run.partition.to_string(),
                            ),
                            ("__connect.errors.source.offset", run.offset.to_string()),
                        ],
                    ),
                )),
                (Some(e), true, None) => {
                    tracing::warn!(connector = %name, error = %e, "skipped a bad record (no dead-letter topic set)");
                    None
                }
                (Some(e), false, _) => {
                    return Err(ConnectError::Record {
                        what: format!("connector {name:?}"),
                        message: format!("{e} (set errors.tolerance = all to skip such records)"),
                    });
                }
            };
            if let Some((topic, headers)) = target {
                self.ensure(&topic).await?;
                self.producer
                    .send(ProducerRecord {
                        topic: &topic,
                        partition: None,
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                        headers: &headers,
                        timestamp: None,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Applies the key and value converters to a source record (after its transforms); `text`:
/// the value is a text line.
fn convert_out(c: &Converters, r: &mut Message, text: bool) -> std::result::Result<(), String> {
    if let (Some(conv), Some(k)) = (c.key, &r.key) {
        r.key = Some(
            conv.from_connect(k, false)
                .map_err(|e| format!("key.converter: {e}"))?,
        );
    }
    if let (Some(conv), Some(v)) = (c.value, &r.value) {
        r.value = Some(
            conv.from_connect(v, text)
                .map_err(|e| format!("value.converter: {e}"))?,
        );
    }
    Ok(())
}

/// Applies the converters then the transforms to a record read for a sink: `Ok(None)` when a
/// filter dropped it, `Err` with the reason when it cannot be handed to the sink.
fn prepare(
    converters: &Converters,
    chain: &Chain,
    mut r: ConsumerRecord,
) -> std::result::Result<Option<ConsumerRecord>, String> {
    if let (Some(c), Some(k)) = (converters.key, &r.record.key) {
        r.record.key = c
            .to_connect(k)
            .map_err(|e| format!("key.converter: {e}"))?
            .map(Into::into);
    }
    if let (Some(c), Some(v)) = (converters.value, &r.record.value) {
        r.record.value = c
            .to_connect(v)
            .map_err(|e| format!("value.converter: {e}"))?
            .map(Into::into);
    }
    if chain.is_empty() {
        return Ok(Some(r));
    }
    let m = Message {
        topic: r.topic.to_string(),
        key: r.record.key.as_deref().map(<[u8]>::to_vec),
        value: r.record.value.as_deref().map(<[u8]>::to_vec),
        header_keys: r.record.headers.iter().map(|h| h.key.clone()).collect(),
    };
    match chain.apply(m) {
        Ok(Some(m)) => {
            if *r.topic != *m.topic {
                r.topic = m.topic.as_str().into();
            }
            r.record.key = m.key.map(Into::into);
            r.record.value = m.value.map(Into::into);
            Ok(Some(r))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Sink tasks: read, convert, transform, put, flush, send the records that could not be
/// written to the dead-letter topic (or fail naming the first of them under
/// `errors.tolerance = none`), then commit. A dead letter keeps the record's original key and
/// value, with the reason and its origin (`__connect.errors.topic`, `.partition`, `.offset`)
/// in headers.
async fn run_sink(
    worker: &Worker,
    config: &ConnectorConfig,
    mut sink: Box<dyn Sink>,
    control: &mut watch::Receiver<Control>,
    status: &Mutex<Status>,
) -> Result<()> {
    let name = config.name.clone();
    let topics = sink.topics();
    for t in &topics {
        worker
            .client
            .ensure_topic(t, &TopicConfig::default())
            .await?;
    }
    let mut consumer = worker.client.consumer(ConsumerConfig {
        group_id: Some(format!("connect-{}", config.name)),
        client_id: format!("connect-{}", config.name),
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        // Bigger batches: a database sink commits (and fsyncs) once per batch.
        max_partition_fetch_bytes: 8 << 20,
        ..Default::default()
    });
    let chain = Chain::from_config(config)?;
    let converters = Converters::from_config(config)?;
    let pass_through = chain.is_empty() && converters == Converters::default();
    let common = config.common()?;
    let tolerate = common.tolerates_errors();
    let dlq = common.dead_letter_topic.clone();
    if let (true, Some(d)) = (tolerate, &dlq) {
        worker
            .client
            .ensure_topic(d, &TopicConfig::default())
            .await?;
    }
    let producer = worker.client.producer(ProducerConfig::default());
    let exactly_once = common.exactly_once();
    if exactly_once {
        // The sink's own offsets, committed with its data, decide where to resume: every
        // partition is read by this task (no group membership, which could hand a partition
        // to another member that does not know them).
        let Some(stored) = sink.stored_offsets().await? else {
            return Err(config.error(
                "exactly.once.support: this sink cannot keep its offsets with its data; use none"
                    .into(),
            ));
        };
        let mut all = Vec::new();
        for t in &topics {
            let n = worker.client.partition_count(t).await?.unwrap_or(0);
            all.extend((0..n).map(|p| TopicPartition::new(t, p)));
        }
        consumer.assign(all.clone())?;
        for tp in &all {
            let at = stored.iter().find(|(s, _)| s == tp).map_or(0, |(_, o)| *o);
            consumer.seek(tp, at)?;
        }
        tracing::info!(connector = %name, partitions = all.len(), "resuming from the offsets stored with the data");
        // The group's copy follows the sink's (lag and `groups describe` tell the truth).
        commit_group(&mut *consumer, stored, true).await?;
    } else {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
    }
    loop {
        wait_running(control).await;
        let runs = consumer.poll_runs(Duration::from_millis(200)).await?;
        if runs.is_empty() {
            if let Some(durable) = sink.durable_offsets().filter(|d| !d.is_empty()) {
                commit_group(&mut *consumer, durable, exactly_once).await?;
            }
            continue;
        }
        // The next offset to read per partition: after the last record of its run.
        let next: BTreeMap<TopicPartition, u64> = runs
            .iter()
            .filter_map(|run| {
                let last = run.last()?.offset;
                Some((TopicPartition::new(&*run.topic, run.partition), last + 1))
            })
            .collect();
        // (original record, reason, stage)
        let mut bad: Vec<(ConsumerRecord, String, &str)> = Vec::new();
        if pass_through {
            // Nothing converts the records: the sink takes them as read.
            for Rejected { index, reason } in sink.put_runs(&runs).await? {
                let Some(record) = record_at(&runs, index) else {
                    return Err(ConnectError::Record {
                        what: format!("connector {name:?}"),
                        message: format!(
                            "the sink rejected record {index}, which it was not given"
                        ),
                    });
                };
                bad.push((record, reason, "TASK_PUT"));
            }
        } else {
            // Each record as read is kept for its dead letter.
            let mut good = Vec::new();
            let mut originals = Vec::new();
            for r in runs.iter().flat_map(RecordRun::to_consumer_records) {
                let original = r.clone();
                match prepare(&converters, &chain, r) {
                    Ok(Some(r)) => {
                        good.push(r);
                        originals.push(original);
                    }
                    Ok(None) => {}
                    Err(e) => bad.push((original, e, "VALUE_CONVERTER")),
                }
            }
            let rejected: Vec<Rejected> = if good.is_empty() {
                Vec::new()
            } else {
                sink.put(&good).await?
            };
            for Rejected { index, reason } in rejected {
                bad.push((originals[index].clone(), reason, "TASK_PUT"));
            }
        }
        sink.flush().await?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // What a test waits for before it stops a worker whose sink holds records past
            // its committed offsets (a Parquet sink's open file).
            for (tp, next) in &next {
                tracing::debug!(
                    "sink {name}: {}-{} put and flushed up to offset {next} (exclusive)",
                    tp.topic,
                    tp.partition
                );
            }
        }
        if !bad.is_empty() {
            bad.sort_by_key(|(r, _, _)| (r.topic.clone(), r.partition, r.record.offset));
            if !tolerate {
                let (r, reason, _) = &bad[0];
                return Err(ConnectError::Record {
                    what: format!(
                        "connector {name:?}: record {}-{} offset {}",
                        r.topic, r.partition, r.record.offset
                    ),
                    message: format!(
                        "{reason} (set errors.tolerance = all and errors.deadletterqueue.topic.name to set such records aside)"
                    ),
                });
            }
            for (r, reason, stage) in &bad {
                let Some(d) = &dlq else {
                    tracing::warn!(connector = %name, topic = %r.topic, partition = r.partition, offset = r.record.offset, error = %reason, "skipped a record the sink could not take (no dead-letter topic set)");
                    continue;
                };
                let headers = dlq_headers(
                    reason,
                    &[
                        ("__connect.errors.connector.name", name.clone()),
                        ("__connect.errors.stage", stage.to_string()),
                        ("__connect.errors.topic", r.topic.to_string()),
                        ("__connect.errors.partition", r.partition.to_string()),
                        ("__connect.errors.offset", r.record.offset.to_string()),
                    ],
                );
                producer
                    .send(ProducerRecord {
                        topic: d,
                        partition: None,
                        key: r.record.key.as_deref(),
                        value: r.record.value.as_deref(),
                        headers: &headers,
                        timestamp: Some(r.record.timestamp),
                    })
                    .await?;
            }
            // The dead letters are durable before the offsets that skip them are.
            producer.flush().await?;
        }
        let polled: usize = runs.iter().map(RecordRun::len).sum();
        let dead_letters = if dlq.is_some() { bad.len() } else { 0 };
        status.lock().expect("not poisoned").handled(
            polled as u64,
            bad.len() as u64,
            dead_letters as u64,
        );
        let commit: Vec<(TopicPartition, u64)> = match sink.durable_offsets() {
            Some(d) => d,
            None => next.into_iter().collect(),
        };
        if !commit.is_empty() {
            commit_group(&mut *consumer, commit, exactly_once).await?;
        }
    }
}

/// Record `index` of `runs` (counted across them, in order), as a [`ConsumerRecord`].
fn record_at(runs: &[RecordRun], mut index: usize) -> Option<ConsumerRecord> {
    for run in runs {
        match run.get(index) {
            Some(r) => {
                return Some(ConsumerRecord {
                    topic: run.topic.clone(),
                    partition: run.partition,
                    record: r.to_record(),
                });
            }
            None => index -= run.len(),
        }
    }
    None
}

/// Commits a sink's offsets to its consumer group. Under exactly-once the offsets that count
/// are in the sink's own store, so the group's copy (for `groups describe` and lag) may fail.
async fn commit_group(
    consumer: &mut dyn runnel_log::LogConsumer,
    offsets: Vec<(TopicPartition, u64)>,
    exactly_once: bool,
) -> Result<()> {
    match consumer.commit_offsets(offsets).await {
        Err(e) if exactly_once => {
            tracing::debug!(error = %e, "the consumer group did not take the sink's offsets");
            Ok(())
        }
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_second_doubling_up_to_the_cap() {
        let secs = |max: u64| -> Vec<u64> {
            backoffs(Duration::from_secs(max))
                .take(8)
                .map(|d| d.as_secs())
                .collect()
        };
        assert_eq!(secs(60), [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(secs(5), [1, 2, 4, 5, 5, 5, 5, 5]);
        let ms: Vec<u128> = backoffs(Duration::from_millis(300))
            .take(3)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [300, 300, 300]);
    }

    #[test]
    fn the_retry_delay_cap_is_checked() {
        let c = |v: &str| {
            ConnectorConfig::from_json(
                Some("c"),
                &serde_json::json!({ "errors.retry.delay.max.ms": v }),
            )
            .unwrap()
        };
        assert_eq!(
            retry_delay_max(&c("250")).unwrap(),
            Duration::from_millis(250)
        );
        assert!(retry_delay_max(&c("0")).is_err());
        assert!(retry_delay_max(&c("soon")).is_err());
    }
}
