//! Sink tasks: read with the consumer group `connect-<name>` (every task of the connector is a
//! member, so the group spreads the partitions over them), put, flush, then commit; without
//! converters and transforms the sink gets the records as read, in the log's record runs
//! ([`Sink::put_runs`]). Under `errors.tolerance = all` a record that cannot be converted or
//! written goes to `errors.deadletterqueue.topic.name` with the error and its origin in headers.

use crate::api::{Rejected, Sink};
use crate::config::ConnectorConfig;
use crate::converter::Converters;
use crate::error::{ConnectError, Result};
use crate::runtime::task::{TaskContext, dlq_headers};
use crate::runtime::worker::Worker;
use crate::transforms::{Chain, Message};
use runnel_log::{
    ConsumerConfig, ConsumerRecord, OffsetReset, ProducerConfig, ProducerRecord, RecordRun,
    TopicConfig, TopicPartition,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The consumer group of sink connector `name`'s tasks.
pub fn group(name: &str) -> String {
    format!("connect-{name}")
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

/// Runs `sink` as task `ctx` of the connector `config` describes: read, convert, transform,
/// put, flush, send the records that could not be written to the dead-letter topic (or fail
/// naming the first of them under `errors.tolerance = none`), then commit. A dead letter keeps
/// the record's original key and value, with the reason and its origin
/// (`__connect.errors.topic`, `.partition`, `.offset`) in headers.
///
/// # Errors
/// What the sink, a converter or transform (under `errors.tolerance = none`) or the log
/// reports: the supervisor restarts the task.
///
/// # Cancel safety
/// See [`Sink`]: nothing put since the last commit counts as written.
pub async fn run(
    worker: &Worker,
    config: &ConnectorConfig,
    mut sink: Box<dyn Sink>,
    ctx: &mut TaskContext,
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
        group_id: Some(group(&config.name)),
        client_id: group(&config.name),
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
        // The sink's own offsets, committed with its data, decide where to resume: the task
        // reads its share of the partitions, every `count`th one (no group membership, which
        // could hand a partition to another member that does not know them).
        let Some(mut stored) = sink.stored_offsets().await? else {
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
        let mine: Vec<TopicPartition> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % ctx.count == ctx.id)
            .map(|(_, tp)| tp)
            .collect();
        stored.retain(|(tp, _)| mine.contains(tp));
        consumer.assign(mine.clone())?;
        for tp in &mine {
            let at = stored.iter().find(|(s, _)| s == tp).map_or(0, |(_, o)| *o);
            consumer.seek(tp, at)?;
        }
        tracing::info!(connector = %name, task = ctx.id, partitions = mine.len(), "resuming from the offsets stored with the data");
        // The group's copy follows the sink's (lag and `groups describe` tell the truth).
        commit_group(&mut *consumer, stored, true).await?;
    } else {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
    }
    loop {
        ctx.wait_running().await;
        let runs = consumer.poll_runs(Duration::from_millis(200)).await?;
        for run in &runs {
            ctx.topics.used(&run.topic, ctx.id);
        }
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
        ctx.status
            .handled(polled as u64, bad.len() as u64, dead_letters as u64);
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
