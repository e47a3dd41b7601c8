//! `runnel quickstart`: the README's main job, end to end on the local data directory.
//!
//! It creates the topic `rides` (4 partitions) if it is missing, produces N deterministic
//! ride-hailing location events as JSON lines keyed by `driver_id` (the shape of
//! `shared/bench/gen_events.py`: 16 regions, event time from 1700000000000 in 1 ms steps with
//! ±200 ms jitter, splitmix64 seeded 42), reads the topic back with the consumer group
//! `quickstart` until it has caught up, and prints the count, average and maximum speed per
//! region. The group resumes from its committed offsets, so a second run reads the events that
//! run produced.

use super::deliveries::Deliveries;
use super::output;
use anyhow::{Result, bail};
use clap::Args;
use runnel::rides::RideEvents;
use runnel_log::{
    Consumer, ConsumerConfig, Log, LogError, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// How many events to produce.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
}

const TOPIC: &str = "rides";
const PARTITIONS: u32 = 4;
const GROUP: &str = "quickstart";
/// Reading back gives up when no record arrived for this long although the group lags.
const STALL: Duration = Duration::from_secs(30);

pub async fn run(log: &Log, args: QuickstartArgs) -> Result<()> {
    match log.topic(TOPIC) {
        Ok(_) => {}
        Err(LogError::UnknownTopic(_)) => {
            let config = TopicConfig {
                partitions: PARTITIONS,
                ..Default::default()
            };
            log.create_topic(TOPIC, config)?;
            eprintln!("created topic {TOPIC} with {PARTITIONS} partitions");
        }
        Err(e) => return Err(e.into()),
    }
    let produced = produce(log, args.events).await?;
    let stats = read_back(log).await?;

    let mut t = output::table(
        &["region", "events", "avg speed (m/s)", "max speed (m/s)"],
        &[1, 2, 3],
    );
    let mut total = Speeds::default();
    for (region, s) in &stats.regions {
        t.add_row(vec![
            region.clone(),
            s.count.to_string(),
            format!("{:.2}", s.sum / s.count as f64),
            format!("{:.2}", s.max),
        ]);
        total.count += s.count;
        total.sum += s.sum;
        total.max = total.max.max(s.max);
    }
    if total.count > 0 {
        t.add_row(vec![
            "all".to_string(),
            total.count.to_string(),
            format!("{:.2}", total.sum / total.count as f64),
            format!("{:.2}", total.max),
        ]);
    }
    let dir = std::path::absolute(log.dir()).unwrap_or_else(|_| log.dir().to_path_buf());
    let skipped = match stats.skipped {
        0 => String::new(),
        n => format!(" ({n} records that are not ride events skipped)"),
    };
    output::print(format!(
        "{t}\nproduced {produced} events to {TOPIC} and read {} back with consumer group {GROUP}{skipped}; the data is in {}",
        total.count,
        dir.display()
    ))
}

/// Produces `n` events; returns how many were stored.
async fn produce(log: &Log, n: u64) -> Result<u64> {
    let progress = output::bar(
        n,
        "{spinner} producing [{bar:30}] {human_pos}/{human_len}",
        "",
    );
    let started = Instant::now();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let mut deliveries = Deliveries::default();
    let mut events = RideEvents::default();
    let (mut line, mut key, mut bytes) = (Vec::with_capacity(256), Vec::new(), 0);
    for _ in 0..n {
        line.clear();
        key.clear();
        events.write_next(&mut line, &mut key)?;
        bytes += line.len() as u64;
        let record = ProducerRecord::new(TOPIC, &line).key(&key);
        deliveries.push(producer.send(record).await?).await;
        progress.inc(1);
    }
    let stored = deliveries.finish(&producer).await.into_result()?;
    progress.finish_and_clear();
    let summary = output::throughput(stored, "event", TOPIC, bytes, started.elapsed());
    eprintln!("produced {summary}");
    Ok(stored)
}

#[derive(Deserialize)]
struct Event<'a> {
    region: &'a str,
    speed: f64,
}

#[derive(Default)]
struct Speeds {
    count: u64,
    sum: f64,
    max: f64,
}

struct Stats {
    regions: BTreeMap<String, Speeds>,
    /// Records of `rides` that are not events of this shape (produced by something else).
    skipped: u64,
}

/// Reads `rides` with the group until it has caught up with every partition.
async fn read_back(log: &Log) -> Result<Stats> {
    let config = ConsumerConfig {
        group_id: Some(GROUP.into()),
        client_id: "runnel-quickstart".into(),
        auto_offset_reset: OffsetReset::Earliest,
        ..Default::default()
    };
    let mut consumer = Consumer::new(log.clone(), config);
    consumer.subscribe(&[TOPIC])?;
    let partitions = log.topic(TOPIC)?.partition_count() as usize;
    let progress = output::spinner("{spinner} reading back {human_pos} events ({elapsed})", "");
    let mut stats = Stats {
        regions: BTreeMap::new(),
        skipped: 0,
    };
    let mut last_record = Instant::now();
    loop {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        progress.inc(records.len() as u64);
        for r in &records {
            let event = r
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Event>(v).ok());
            let Some(e) = event else {
                stats.skipped += 1;
                continue;
            };
            let s = stats.regions.entry(e.region.to_string()).or_default();
            s.count += 1;
            s.sum += e.speed;
            s.max = s.max.max(e.speed);
        }
        let lag = consumer.lag();
        if lag.len() == partitions && lag.iter().all(|l| l.position.is_some() && l.lag == 0) {
            break;
        }
        if !records.is_empty() {
            last_record = Instant::now();
        } else if last_record.elapsed() > STALL {
            bail!(
                "reading {TOPIC} back with group {GROUP} stalled: no record for {} s although it lags",
                STALL.as_secs()
            );
        }
    }
    progress.finish_and_clear();
    consumer.commit().await?;
    consumer.close().await?;
    Ok(stats)
}
