//! `runnel bench log --compression CODECS`: the embedded log's append and read throughput and
//! the compression ratio per batch codec, on 1 KiB JSON-like records.
//!
//! For `none` and then each codec asked for, `--repeat` times: one in-process [`Producer`]
//! with that `compression` appends the records to a fresh one-partition topic (durability
//! `os`, so the disk is not what is measured) and a [`Consumer`] reads them back from the
//! beginning as record runs (decompression included). Throughput is MB/s of uncompressed
//! values; the ratio is the values' bytes over the bytes stored. Medians of the repeats are
//! printed, with the range, as the machine may be shared.
//!
//! The records are JSON objects of about 1 KiB shaped like application events (ids, a
//! timestamp, coordinates, an enum, a list of tags from a vocabulary and a random hex trace
//! id), generated once from a fixed seed: compressible as real JSON is, not as repeated bytes.

use super::bench::progress;
use super::output;
use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_log::{
    Compression, Consumer, ConsumerConfig, Durability, Log, Producer, ProducerConfig,
    ProducerRecord, TopicConfig, TopicPartition,
};
use std::time::{Duration, Instant};

/// Distinct records generated; the run cycles through them.
const DISTINCT: usize = 4096;

/// One codec's medians over the repeats.
struct Measured {
    codec: Compression,
    append_mb_s: Vec<f64>,
    read_mb_s: Vec<f64>,
    ratio: f64,
}

pub async fn run(log: &Log, codecs: &[Compression], records: u64, repeat: usize) -> Result<()> {
    let values = json_like_records(DISTINCT);
    let mut all = vec![Compression::None];
    all.extend(codecs.iter().filter(|c| **c != Compression::None));
    let mut results = Vec::new();
    for codec in all {
        let mut m = Measured {
            codec,
            append_mb_s: Vec::new(),
            read_mb_s: Vec::new(),
            ratio: 0.0,
        };
        for i in 0..repeat.max(1) {
            let topic = format!("compression-{codec}-{i}");
            let (bytes, append) = append(log, &topic, codec, &values, records).await?;
            let stored = log.describe_topic(&topic)?.partitions[0].size_bytes;
            let read = read(log, &topic, records).await?;
            log.delete_topic(&topic)?;
            m.append_mb_s
                .push(bytes as f64 / append.as_secs_f64() / 1e6);
            m.read_mb_s.push(bytes as f64 / read.as_secs_f64() / 1e6);
            m.ratio = bytes as f64 / stored.max(1) as f64;
        }
        results.push(m);
    }
    let mut t = output::table(
        &[
            "codec",
            "records",
            "append MB/s (median)",
            "append range",
            "read MB/s (median)",
            "read range",
            "ratio",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    for m in &mut results {
        t.add_row(vec![
            m.codec.to_string(),
            records.to_string(),
            format!("{:.0}", output::median(&mut m.append_mb_s)),
            range(&m.append_mb_s),
            format!("{:.0}", output::median(&mut m.read_mb_s)),
            range(&m.read_mb_s),
            format!("{:.2}", m.ratio),
        ]);
    }
    output::print(t)
}

/// Appends `records` of `values` (cycled) to a new topic; returns (value bytes, time taken).
async fn append(
    log: &Log,
    topic: &str,
    codec: Compression,
    values: &[Vec<u8>],
    records: u64,
) -> Result<(u64, Duration)> {
    log.create_topic(
        topic,
        TopicConfig {
            durability: Durability::Os,
            retention_ms: None,
            ..Default::default()
        },
    )?;
    let label = format!("append 1 KiB JSON, {codec}");
    let pb = progress(&label, records);
    let producer = Producer::new(
        log.clone(),
        ProducerConfig {
            compression: codec,
            ..Default::default()
        },
    );
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..records {
        let value = &values[i as usize % values.len()];
        bytes += value.len() as u64;
        // Fire and forget: close() reports any record that was not stored.
        drop(
            producer
                .send(ProducerRecord::new(topic, value).partition(0))
                .await?,
        );
        if i % 1024 == 1023 {
            pb.inc(1024);
        }
    }
    producer.close().await?;
    let elapsed = started.elapsed();
    output::finish(
        &pb,
        format!(
            "{label}: {:.0} MB/s",
            bytes as f64 / elapsed.as_secs_f64() / 1e6
        ),
    );
    Ok((bytes, elapsed))
}

/// Reads `topic` back from the beginning as record runs; returns the time taken.
async fn read(log: &Log, topic: &str, records: u64) -> Result<Duration> {
    let mut consumer = Consumer::new(log.clone(), ConsumerConfig::default());
    consumer.assign(vec![TopicPartition::new(topic, 0)])?;
    consumer.seek_to_beginning();
    let started = Instant::now();
    let mut read = 0u64;
    while read < records {
        let runs = consumer.poll_runs(Duration::from_secs(10)).await?;
        if runs.is_empty() {
            bail!("reading {topic} back stalled after {read} of {records} records");
        }
        read += runs.iter().map(|r| r.len() as u64).sum::<u64>();
    }
    Ok(started.elapsed())
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

/// `n` JSON objects of about 1 KiB (see the module doc), from a fixed seed.
pub(super) fn json_like_records(n: usize) -> Vec<Vec<u8>> {
    const WORDS: [&str; 24] = [
        "pickup",
        "dropoff",
        "surge",
        "airport",
        "cash",
        "card",
        "wallet",
        "promo",
        "night",
        "rain",
        "traffic",
        "detour",
        "toll",
        "shared",
        "premium",
        "eco",
        "van",
        "pet",
        "quiet",
        "music",
        "luggage",
        "child-seat",
        "wheelchair",
        "scheduled",
    ];
    const STATUS: [&str; 4] = ["requested", "accepted", "in_progress", "completed"];
    let mut rng = StdRng::seed_from_u64(42);
    (0..n)
        .map(|i| {
            let mut s = format!(
                r#"{{"event_id":{},"ts":{},"driver_id":{},"rider_id":{},"region":"region-{:02}","status":"{}","lat":{:.6},"lon":{:.6},"speed":{:.2},"fare":{:.2},"trace":""#,
                1_000_000 + i,
                1_764_979_200_000u64 + i as u64 * 17 + rng.random_range(0..5),
                rng.random_range(0..10_000),
                rng.random_range(0..1_000_000),
                rng.random_range(0..16),
                STATUS[rng.random_range(0..STATUS.len())],
                52.3 + rng.random::<f64>() * 0.4,
                13.1 + rng.random::<f64>() * 0.6,
                rng.random::<f64>() * 30.0,
                3.0 + rng.random::<f64>() * 60.0,
            );
            for _ in 0..16 {
                s.push_str(&format!("{:02x}", rng.random::<u8>()));
            }
            s.push_str(r#"","tags":["#);
            while s.len() < 1000 {
                s.push_str(&format!(r#""{}","#, WORDS[rng.random_range(0..WORDS.len())]));
            }
            s.pop();
            s.push_str("]}");
            s.into_bytes()
        })
        .collect()
}
