//! `runnel bench log`: measures the embedded log on a temporary data directory (deleted after).
//!
//! For records of 100 B and 1 KiB it measures:
//! - append throughput from one in-process [`Producer`] under each durability policy, and under
//!   `always` from 16 producers in 16 tasks, once each writing its own partition of a
//!   16-partition topic (one sync per partition, overlapping) and once all writing one partition
//!   (group commit: appends waiting at the same time share one sync);
//! - read throughput of a [`Consumer`] reading the `os` topic back from the beginning, and of
//!   raw [`Partition::read`](runnel_log::Partition::read)s of 1 MiB chunks (bytes as stored,
//!   CRC-checked, not decoded);
//!
//! then, for 100 B records under each policy, the append-to-read latency (p50, p99): a consumer
//! task polls while a producer sends one record at a time, flushes it and awaits its delivery;
//! the value carries the send time, so latency is send → seen by the consumer. Last, the time
//! to open a data directory holding one partition of about 1 GiB (100 MiB with `--quick`), plus
//! its first read, after a clean shutdown and as after a crash (the tail segment scanned).
//!
//! Every append run starts after `sync(2)`, so dirty pages left by earlier runs do not throttle it.
//! Records are keyless with an explicit partition (no hashing in the measurement) and their
//! values are random bytes generated once. The default run takes about a minute on two cores
//! and writes up to 6 GiB to the temporary directory;
//! `--quick` takes seconds and is meant for smoke tests, not for numbers.

use super::close_log;
use super::output;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use runnel_log::batch::BatchBuilder;
use runnel_log::{
    Compression, Consumer, ConsumerConfig, Durability, Log, Producer, ProducerConfig,
    ProducerRecord, TopicConfig, TopicPartition,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure the log: append and read throughput, append-to-read latency, open time.
    Log(LogArgs),
    /// Measure the engine's reference jobs (stateless and 10 s windows) on ride events.
    Engine(super::bench_engine::EngineArgs),
    /// One job of `bench engine`, in its own process (for its peak memory).
    #[command(hide = true)]
    EngineJob(super::bench_engine::EngineJobArgs),
    /// Measure a Kafka-protocol broker through Runnel's client: produce and consume
    /// throughput, produce latency (Runnel's broker in-process, or any broker with --target).
    Broker(super::bench_broker::BrokerBenchArgs),
    /// Measure the connectors: file ingest vs cat, topic → PostgreSQL vs COPY, PostgreSQL source.
    Connect(super::bench_connect::ConnectBenchArgs),
    /// Measure the Nexmark queries q0-q8 (SQL jobs, built in): running and generator-included
    /// events/s, per core.
    Nexmark(super::bench_sql::NexmarkArgs),
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Records per append run (default 3000000; 20000 with --quick).
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Finish in seconds with small counts (a smoke test; the numbers are rough).
    #[arg(long)]
    quick: bool,
    /// Instead of the runs above, compare batch codecs (comma-separated: gzip,snappy,lz4,zstd)
    /// with `none` on 1 KiB JSON-like records: append and read MB/s and the ratio
    /// (default 200000 records per run; 20000 with --quick).
    #[arg(long, value_name = "CODECS", value_delimiter = ',')]
    compression: Option<Vec<Compression>>,
    /// Runs per codec with --compression (medians are printed).
    #[arg(long, value_name = "N", default_value_t = 3)]
    repeat: usize,
}

/// How much each benchmark does.
struct Plan {
    records: u64,
    latency_samples: usize,
    /// Segments of the partition the open test writes; the last (active) one is a batch short
    /// of rolling, the worst case for the scan after a crash.
    open_segments: u64,
    open_samples: usize,
    /// Raw reads repeat whole passes over the partition for at least this long.
    raw_read_time: Duration,
}

impl Plan {
    fn new(args: &LogArgs) -> Self {
        let plan = if args.quick {
            Plan {
                records: 20_000,
                latency_samples: 100,
                open_segments: 1,
                open_samples: 3,
                raw_read_time: Duration::from_millis(100),
            }
        } else {
            Plan {
                records: 3_000_000,
                latency_samples: 5000,
                // 7 full 128 MiB segments and a nearly full tail: about 1 GiB.
                open_segments: 8,
                open_samples: 5,
                raw_read_time: Duration::from_secs(1),
            }
        };
        Plan {
            records: args.records.unwrap_or(plan.records).max(1),
            ..plan
        }
    }
}

const SIZES: [usize; 2] = [100, 1024];
const POLICIES: [Durability; 3] = [Durability::Always, Durability::Interval, Durability::Os];
/// (durability, producers, partitions, records per send call) of the append runs of each
/// record size. With fewer partitions than producers, producers share partitions and so share
/// syncs (group commit). One run sends 1,024 records per call (`Producer::send_all`): the
/// batch-level send, which pays the producer's lock and the async call once per call.
const APPEND_RUNS: [(Durability, u32, u32, usize); 6] = [
    (Durability::Always, 1, 1, 1),
    (Durability::Interval, 1, 1, 1),
    (Durability::Os, 1, 1, 1),
    (Durability::Os, 1, 1, SEND_ALL),
    (Durability::Always, 16, 16, 1),
    (Durability::Always, 16, 1, 1),
];
const SEND_ALL: usize = 1024;
const MIB: usize = 1 << 20;

/// One line of the result table.
pub(super) struct Row {
    pub benchmark: String,
    pub size: usize,
    pub durability: Option<Durability>,
    pub producers: Option<u32>,
    pub records: u64,
    /// Bytes moved in `elapsed` (with `records`, the throughput columns).
    pub throughput: Option<(u64, Duration)>,
    /// (p50, p99)
    pub percentiles: Option<(Duration, Duration)>,
}

impl Row {
    /// A latency row: one producer, `samples` records of `size`, their p50 and p99.
    pub(super) fn latency(
        benchmark: &str,
        size: usize,
        durability: Durability,
        samples: usize,
        percentiles: (Duration, Duration),
    ) -> Self {
        Row {
            benchmark: benchmark.into(),
            size,
            durability: Some(durability),
            producers: Some(1),
            records: samples as u64,
            throughput: None,
            percentiles: Some(percentiles),
        }
    }

    fn cells(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let (per_sec, mb) = match self.throughput {
            Some((bytes, elapsed)) => {
                let secs = elapsed.as_secs_f64().max(1e-9);
                let mb = bytes as f64 / secs / 1e6;
                let mb = if mb >= 1000.0 {
                    format!("{mb:.0} ({:.2} GB/s)", mb / 1000.0)
                } else {
                    format!("{mb:.1}")
                };
                (format!("{:.0}", self.records as f64 / secs), mb)
            }
            None => (dash(), dash()),
        };
        let (p50, p99) = match self.percentiles {
            Some((p50, p99)) => (output::latency(p50), output::latency(p99)),
            None => (dash(), dash()),
        };
        vec![
            self.benchmark.clone(),
            size_label(self.size),
            self.durability.map_or_else(dash, |d| d.to_string()),
            self.producers.map_or_else(dash, |p| p.to_string()),
            self.records.to_string(),
            per_sec,
            mb,
            p50,
            p99,
        ]
    }
}

pub(super) fn size_label(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    let args = match cmd {
        BenchCommand::Log(args) => args,
        BenchCommand::Engine(args) => return super::bench_engine::run(args).await,
        BenchCommand::Nexmark(args) => return super::bench_sql::run(args).await,
        BenchCommand::EngineJob(args) => {
            return tokio::task::spawn_blocking(|| super::bench_engine::run_job(args)).await?;
        }
        BenchCommand::Broker(args) => return super::bench_broker::run(args).await,
        BenchCommand::Connect(args) => return super::bench_connect::run(args).await,
    };
    let plan = Plan::new(&args);
    let tmp = tempfile::Builder::new().prefix("runnel-bench-").tempdir()?;
    if let Some(codecs) = &args.compression {
        let records = args
            .records
            .unwrap_or(if args.quick { 20_000 } else { 200_000 });
        let log = Log::open(tmp.path().join("data"))?;
        let result = super::bench_compression::run(&log, codecs, records, args.repeat).await;
        close_log(log);
        return result;
    }
    let open_bytes = plan.open_segments * TopicConfig::default().segment_bytes;
    let peak = (2 * plan.records * SIZES[1] as u64).max(open_bytes);
    eprintln!(
        "benchmarking the log in {} ({} records per append run, up to {} on disk)",
        tmp.path().display(),
        plan.records,
        output::bytes(peak)
    );
    let log = Log::open(tmp.path().join("data"))?;
    let mut rows = Vec::new();
    for size in SIZES {
        let value: Arc<[u8]> = random_bytes(size).into();
        for (durability, producers, partitions, per_call) in APPEND_RUNS {
            settle_page_cache();
            let run = Run {
                durability,
                producers,
                partitions,
                per_call,
            };
            rows.push(append(&log, &value, run, plan.records).await?);
            // The `os` topic is read back below; the others go now to bound the disk used.
            if durability != Durability::Os {
                log.delete_topic(&run.topic(size))?;
            }
        }
        let topic = Run {
            durability: Durability::Os,
            producers: 1,
            partitions: 1,
            per_call: 1,
        }
        .topic(size);
        rows.push(read_consumer(&log, &topic, size, plan.records).await?);
        rows.push(read_raw(&log, &topic, size, plan.raw_read_time).await?);
        log.delete_topic(&topic)?;
    }
    for durability in POLICIES {
        rows.push(latency(&log, durability, plan.latency_samples).await?);
    }
    close_log(log);
    rows.extend(
        open_time(
            tmp.path().join("open"),
            plan.open_segments,
            plan.open_samples,
        )
        .await?,
    );

    print_rows(&rows)
}

/// Prints the result table.
pub(super) fn print_rows(rows: &[Row]) -> Result<()> {
    let mut t = output::table(
        &[
            "benchmark",
            "record size",
            "durability",
            "producers",
            "records",
            "records/s",
            "MB/s",
            "p50",
            "p99",
        ],
        &[1, 3, 4, 5, 6, 7, 8],
    );
    for row in rows {
        t.add_row(row.cells());
    }
    output::print(t)
}

/// Writes back every dirty page before a run, so a run is not throttled by the kernel
/// (`balance_dirty_pages`) for data the previous runs left behind.
fn settle_page_cache() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// `n` random bytes: incompressible values, generated once per size.
pub(super) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v[..]);
    v
}

/// One append run's shape.
#[derive(Debug, Clone, Copy)]
struct Run {
    durability: Durability,
    producers: u32,
    partitions: u32,
    /// Records per send call: 1 is `send`, more is `send_all` of that many.
    per_call: usize,
}

impl Run {
    fn topic(&self, size: usize) -> String {
        let Run {
            durability,
            producers,
            partitions,
            per_call,
        } = self;
        format!("append-{size}-{durability}-{producers}p-{partitions}-{per_call}")
    }
}

pub(super) fn progress(label: &str, len: u64) -> ProgressBar {
    output::bar(
        len,
        "{spinner} {msg:38} [{bar:20}] {human_pos}/{human_len}",
        label,
    )
}

/// Sends `records` values split over `run.producers` producers; producer `i` writes
/// partition `i mod run.partitions`.
async fn append(log: &Log, value: &Arc<[u8]>, run: Run, records: u64) -> Result<Row> {
    let Run {
        durability,
        producers,
        partitions,
        per_call,
    } = run;
    let topic = run.topic(value.len());
    let api = if per_call > 1 {
        format!(" (send_all of {per_call})")
    } else {
        String::new()
    };
    let config = TopicConfig {
        partitions,
        durability,
        retention_ms: None,
        ..Default::default()
    };
    log.create_topic(&topic, config)?;
    let label = format!(
        "append {}, {durability}, {}, {}{api}",
        size_label(value.len()),
        output::count(producers.into(), "producer"),
        output::count(partitions.into(), "partition")
    );
    let pb = progress(&label, records);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for producer_index in 0..producers {
        let partition = producer_index % partitions;
        let n = records / u64::from(producers)
            + u64::from(u64::from(producer_index) < records % u64::from(producers));
        let (log, topic, value, pb) = (log.clone(), topic.clone(), value.clone(), pb.clone());
        tasks.spawn(async move {
            let producer = Producer::new(log, ProducerConfig::default());
            let record = ProducerRecord::new(&topic, &value).partition(partition);
            if per_call > 1 {
                let calls = vec![record; per_call];
                let mut left = n as usize;
                while left > 0 {
                    let now = left.min(per_call);
                    producer.send_all(&calls[..now]).await?;
                    left -= now;
                    pb.inc(now as u64);
                }
            } else {
                for i in 0..n {
                    // Fire and forget: close() below reports any record that was not stored.
                    drop(producer.send(record).await?);
                    if i % 1024 == 1023 {
                        pb.inc(1024);
                    }
                }
                pb.inc(n % 1024);
            }
            producer.close().await?;
            anyhow::Ok(())
        });
    }
    while let Some(stored) = tasks.join_next().await {
        stored??;
    }
    let elapsed = started.elapsed();
    let rate = records as f64 / elapsed.as_secs_f64();
    output::finish(&pb, format!("{label}: {rate:.0} records/s"));
    Ok(Row {
        benchmark: format!(
            "append to {}{api}",
            output::count(partitions.into(), "partition")
        ),
        size: value.len(),
        durability: Some(durability),
        producers: Some(producers),
        records,
        throughput: Some((records * value.len() as u64, elapsed)),
        percentiles: None,
    })
}

/// Reads `topic` (one partition of `records` values) from the beginning with a consumer.
async fn read_consumer(log: &Log, topic: &str, size: usize, records: u64) -> Result<Row> {
    let label = format!("read {} with a consumer", size_label(size));
    let pb = progress(&label, records);
    let mut consumer = Consumer::new(log.clone(), ConsumerConfig::default());
    consumer.assign(vec![TopicPartition::new(topic, 0)])?;
    consumer.seek_to_beginning();
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0u64);
    while read < records {
        // Runs, as a stream processor reads (no `ConsumerRecord` per record).
        let runs = consumer.poll_runs(Duration::from_secs(10)).await?;
        if runs.is_empty() {
            bail!("reading {topic} back stalled after {read} of {records} records");
        }
        let before = read;
        for r in runs.iter().flat_map(|run| run.iter()) {
            read += 1;
            bytes += r.value.map_or(0, |v| v.len() as u64);
        }
        pb.inc(read - before);
    }
    let elapsed = started.elapsed();
    let rate = read as f64 / elapsed.as_secs_f64();
    output::finish(&pb, format!("{label}: {rate:.0} records/s"));
    Ok(Row {
        benchmark: "read (consumer)".into(),
        size,
        durability: None,
        producers: None,
        records: read,
        throughput: Some((bytes, elapsed)),
        percentiles: None,
    })
}

/// Reads partition 0 of `topic` in 1 MiB chunks, whole passes for at least `min_time`.
async fn read_raw(log: &Log, topic: &str, size: usize, min_time: Duration) -> Result<Row> {
    let label = format!("read {} raw, 1 MiB chunks", size_label(size));
    let pb = output::spinner("{spinner} {msg}", &label);
    let partition = log.partition(&TopicPartition::new(topic, 0))?;
    let per_pass = partition.high_watermark() - partition.log_start_offset();
    let (bytes, passes, elapsed) = tokio::task::spawn_blocking(move || -> Result<_> {
        let started = Instant::now();
        let (mut bytes, mut passes) = (0u64, 0u64);
        while passes == 0 || started.elapsed() < min_time {
            let (mut offset, end) = (partition.log_start_offset(), partition.high_watermark());
            while offset < end {
                let fetched = partition.read(offset, MIB)?;
                if fetched.batches.is_empty() {
                    break;
                }
                bytes += fetched.batches.len() as u64;
                offset = fetched.next_offset;
            }
            passes += 1;
        }
        Ok((bytes, passes, started.elapsed()))
    })
    .await??;
    let gbps = bytes as f64 / elapsed.as_secs_f64() / 1e9;
    output::finish(&pb, format!("{label}: {gbps:.2} GB/s"));
    Ok(Row {
        benchmark: "read (raw partition)".into(),
        size,
        durability: None,
        producers: None,
        records: per_pass * passes,
        throughput: Some((bytes, elapsed)),
        percentiles: None,
    })
}

/// Append-to-read latency of `samples` records of 100 B, sent one at a time.
async fn latency(log: &Log, durability: Durability, samples: usize) -> Result<Row> {
    const SIZE: usize = 100;
    let topic = format!("latency-{durability}");
    let config = TopicConfig {
        durability,
        retention_ms: None,
        ..Default::default()
    };
    log.create_topic(&topic, config)?;
    let label = format!("latency {}, {durability}", size_label(SIZE));
    let pb = progress(&label, samples as u64);
    let mut consumer = Consumer::new(log.clone(), ConsumerConfig::default());
    consumer.assign(vec![TopicPartition::new(&topic, 0)])?;
    consumer.seek_to_end();
    let clock = Instant::now();
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(samples);
        while latencies.len() < samples {
            let records = consumer.poll(Duration::from_secs(10)).await?;
            let seen = clock.elapsed();
            if records.is_empty() {
                bail!("the latency consumer saw nothing for 10 s");
            }
            for r in records {
                let sent = r
                    .record
                    .value
                    .as_deref()
                    .and_then(|v| v.get(..8))
                    .and_then(|v| v.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or_default();
                latencies.push(seen.saturating_sub(Duration::from_nanos(sent)));
            }
        }
        Ok(latencies)
    });
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let mut value = random_bytes(SIZE);
    for _ in 0..samples {
        let now = clock.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&now.to_le_bytes());
        let delivery = producer
            .send(ProducerRecord::new(&topic, &value).partition(0))
            .await?;
        // Send it now rather than after the producer's linger.
        producer.flush().await?;
        delivery.wait().await?;
        pb.inc(1);
    }
    producer.close().await?;
    let latencies = reader.await??;
    let percentiles = p50_p99(latencies, &pb, &label);
    Ok(Row::latency(
        "append-to-read latency",
        SIZE,
        durability,
        samples,
        percentiles,
    ))
}

/// The `pct`th percentile of sorted values.
/// The median and 99th percentile of `samples`, also shown on the finished progress line.
pub(super) fn p50_p99(
    mut samples: Vec<Duration>,
    pb: &ProgressBar,
    label: &str,
) -> (Duration, Duration) {
    samples.sort_unstable();
    let (p50, p99) = (percentile(&samples, 50), percentile(&samples, 99));
    let line = format!(
        "{label}: p50 {}, p99 {}",
        output::latency(p50),
        output::latency(p99)
    );
    output::finish(pb, line);
    (p50, p99)
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let i = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

/// Writes about `bytes` of 1 KiB records to one partition under `os`, closes the log, then
/// times `Log::open` plus the first read, `samples` times.
async fn open_time(dir: PathBuf, segments: u64, samples: usize) -> Result<Vec<Row>> {
    const SIZE: usize = 1024;
    const PER_BATCH: u64 = 1000;
    let pb = output::bar(
        segments * TopicConfig::default().segment_bytes,
        "{spinner} {msg:38} [{bar:20}] {binary_bytes}/{binary_total_bytes}",
        &format!("write {segments} segments for the open test"),
    );
    let writing = pb.clone();
    let (written, records, clean, crashed) = tokio::task::spawn_blocking(move || -> Result<_> {
        let tp = TopicPartition::new("open", 0);
        let log = Log::open(&dir)?;
        let config = TopicConfig {
            durability: Durability::Os,
            retention_ms: None,
            ..Default::default()
        };
        log.create_topic(&tp.topic, config)?;
        let value = random_bytes(SIZE);
        let mut builder = BatchBuilder::new(MIB + MIB / 8);
        let now = runnel_log::types::now_ms();
        for _ in 0..PER_BATCH {
            builder.push(now, None, Some(&value), &[]);
        }
        let batch = builder.finish();
        let per_segment = TopicConfig::default().segment_bytes / batch.len() as u64;
        let (mut written, mut records) = (0u64, 0u64);
        for _ in 0..segments * per_segment - 1 {
            log.append(&tp, batch.clone())?;
            written += batch.len() as u64;
            records += PER_BATCH;
            writing.set_position(written);
        }
        close_log(log);
        // Without the clean-shutdown marker, open scans and CRC-checks the whole tail segment,
        // as after a crash.
        let marker = dir.join("open-0").join(".clean-shutdown");
        let timed = |crash: bool| -> Result<Vec<Duration>> {
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples {
                if crash {
                    std::fs::remove_file(&marker)?;
                }
                let started = Instant::now();
                let log = Log::open(&dir)?;
                let first = log.read(&tp, 0, MIB)?;
                times.push(started.elapsed());
                if first.batches.is_empty() {
                    bail!("the reopened log returned no data for {tp}");
                }
                close_log(log);
            }
            Ok(times)
        };
        Ok((written, records, timed(false)?, timed(true)?))
    })
    .await??;
    let mut rows = Vec::new();
    for (how, times) in [("clean shutdown", clean), ("after a crash", crashed)] {
        let label = format!("open {} partition ({how})", output::bytes(written));
        let (p50, p99) = p50_p99(times, &pb, &label);
        rows.push(Row {
            benchmark: label,
            size: SIZE,
            durability: Some(Durability::Os),
            producers: None,
            records,
            throughput: None,
            percentiles: Some((p50, p99)),
        });
    }
    Ok(rows)
}
