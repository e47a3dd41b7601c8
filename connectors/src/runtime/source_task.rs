//! Source tasks: poll the source, send its records, flush the producer, then store the
//! offsets in the offsets topic (at-least-once: a crash resends at most the records since the
//! last stored offset). A poll is a list of runs ([`SourceRun`]); a run that no transform or
//! converter changes is encoded straight into log batches, others go record by record. With
//! `exactly.once.support = required` (KIP-618) the task's producer is transactional
//! (`connect-<name>`, `connect-<name>-<task>` for tasks past the first): each poll's records and
//! their source offsets are one transaction, and a restarted task fences the one before, aborts
//! what it left open and starts from the offsets committed with the records. Under
//! `errors.tolerance = all` a record that cannot be converted goes to
//! `errors.deadletterqueue.topic.name` with the error and its origin in headers.

use crate::api::{Source, SourceRun};
use crate::config::ConnectorConfig;
use crate::converter::Converters;
use crate::error::{ConnectError, Result};
use crate::runtime::offsets;
use crate::runtime::status::ActiveTopics;
use crate::runtime::task::{TaskContext, dlq_headers};
use crate::runtime::worker::Worker;
use crate::transforms::{Chain, Message};
use runnel_log::batch::BatchBuilder;
use runnel_log::{DEFAULT_BATCH_SIZE, LogProducer, ProducerConfig, ProducerRecord, TopicConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a task whose source had nothing waits before it polls again.
const POLL_IDLE: Duration = Duration::from_millis(100);
/// An exactly-once source's transaction timeout: how long a dead task's open transaction can
/// hold `read_committed` readers of its topics back when nothing restarts it.
const SOURCE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `source` as task `ctx` of the connector `config` describes, until an error (or until
/// dropped).
///
/// # Errors
/// What the source, a transform or converter (under `errors.tolerance = none`) or the log
/// reports: the supervisor restarts the task.
///
/// # Cancel safety
/// See [`Source`]: a new task resumes from the stored offsets.
pub async fn run(
    worker: &Worker,
    config: &ConnectorConfig,
    mut source: Box<dyn Source>,
    ctx: &mut TaskContext,
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
        transactional_id: exactly_once.then(|| match ctx.id {
            0 => format!("connect-{name}"),
            id => format!("connect-{name}-{id}"),
        }),
        transaction_timeout: SOURCE_TRANSACTION_TIMEOUT,
        ..Default::default()
    });
    if exactly_once {
        // Fences a previous task and aborts its open transaction, whose offsets the worker
        // never counted; then the offsets are those committed with their records.
        producer.init_transactions().await?;
    }
    if exactly_once || worker.shared().is_some() {
        // In a group, the connector may have run on another worker since this one read the
        // offsets: they are read again.
        let committed = offsets::load(&worker.client, &worker.offset_topic).await?;
        let mut all = worker.offsets.lock().await;
        all.retain(|(n, _), _| *n != name);
        all.extend(committed.into_iter().filter(|((n, _), _)| *n == name));
    }
    let stored = worker.source_offsets(&name).await?;
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
        topics: ctx.topics.clone(),
        task: ctx.id,
        errors: 0,
        dead_letters: 0,
    };
    loop {
        ctx.wait_running().await;
        let runs = source.poll().await?;
        if runs.is_empty() {
            tokio::time::sleep(POLL_IDLE).await;
            continue;
        }
        if exactly_once {
            producer.begin_transaction()?;
        }
        let mut last: BTreeMap<String, (Value, Value)> = BTreeMap::new();
        let polled: usize = runs.iter().map(SourceRun::len).sum();
        for run in runs {
            if !run.topic.is_empty() && !run.is_empty() {
                task.send(&run).await?;
            }
            last.insert(run.partition.to_string(), (run.partition, run.offset));
        }
        if !exactly_once {
            // The records are durable before their offsets are.
            producer.flush().await?;
        }
        offsets::store(
            &*producer,
            &worker.offset_topic,
            &name,
            &last_offsets(&last),
        )
        .await?;
        if exactly_once {
            producer.commit_transaction().await?;
        } else {
            producer.flush().await?;
        }
        let (errors, dead_letters) = (
            std::mem::take(&mut task.errors),
            std::mem::take(&mut task.dead_letters),
        );
        ctx.status.handled(polled as u64, errors, dead_letters);
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
    /// The connector's active topics, and this task's number, which names who found one.
    topics: ActiveTopics,
    task: u32,
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
            self.topics.used(&run.topic, self.task);
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
                (None, _, _) => {
                    self.topics.used(&r.topic, self.task);
                    Some((r.topic.clone(), Vec::new()))
                }
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

/// A poll's last offset per source partition, as [`offsets::store`] takes them.
fn last_offsets(last: &BTreeMap<String, (Value, Value)>) -> Vec<(&Value, Option<&Value>)> {
    last.values().map(|(p, o)| (p, Some(o))).collect()
}
