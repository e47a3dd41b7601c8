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
use runnel_log::{
    Consumer, ConsumerConfig, Log, LogError, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicConfig,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
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

const REGIONS: [&str; 16] = [
    "north",
    "south",
    "east",
    "west",
    "central",
    "harbor",
    "airport",
    "downtown",
    "uptown",
    "midtown",
    "riverside",
    "hills",
    "lakeside",
    "industrial",
    "suburb",
    "campus",
];
const BASE_TS: i64 = 1_700_000_000_000;
const JITTER_MS: u64 = 200;

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
    let mut events = Events::new();
    let (mut line, mut key, mut bytes) = (Vec::with_capacity(256), Vec::new(), 0);
    for i in 0..n {
        line.clear();
        key.clear();
        events.next_event(i, &mut line, &mut key)?;
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

/// splitmix64: a small deterministic generator, so every run produces the same events.
struct Events {
    state: u64,
}

impl Events {
    fn new() -> Self {
        Self { state: 42 }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Writes event `i` as a JSON line into `line` and its driver id into `key`.
    fn next_event(&mut self, i: u64, line: &mut Vec<u8>, key: &mut Vec<u8>) -> Result<()> {
        let jitter = self.below(2 * JITTER_MS + 1) as i64 - JITTER_MS as i64;
        let ts = (BASE_TS + i as i64 + jitter).max(BASE_TS);
        let driver = self.below(10_000);
        // Drivers mostly stay in "their" region.
        let region = if self.unit() < 0.7 {
            driver % 16
        } else {
            self.below(16)
        } as usize;
        // Region centres around a fictional city at (52.52, 13.40).
        let lat = 52.52 + 0.02 * ((region % 4) as f64 - 1.5) + self.uniform(-0.01, 0.01);
        let lon = 13.40 + 0.03 * ((region / 4) as f64 - 1.5) + self.uniform(-0.015, 0.015);
        // A quarter of the updates are "standing" (< 5 m/s).
        let speed = if self.unit() < 0.25 {
            self.uniform(0.0, 5.0)
        } else {
            self.uniform(5.0, 30.0)
        };
        let round = |x: f64, digits: i32| {
            let m = 10f64.powi(digits);
            (x * m).round() / m
        };
        write!(
            line,
            r#"{{"ts":{ts},"driver_id":{driver},"region":"{}","lat":{},"lon":{},"speed":{}}}"#,
            REGIONS[region],
            round(lat, 6),
            round(lon, 6),
            round(speed, 3)
        )?;
        write!(key, "{driver}")?;
        Ok(())
    }
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
