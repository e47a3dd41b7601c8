//! `runnel bench engine`: the engine's two reference jobs on ride events (JSON lines from
//! `shared/bench/gen_events.py`, the data other engines were measured on).
//!
//! The events are generated once into `~/.cache/runnel-bench/events-N.jsonl` (or read from
//! `--file`), loaded into the topic `rides` of a temporary data directory keyed by driver id
//! with the event time as timestamp, then each job runs in a child process (so its peak
//! resident memory is its own) from a topic holding all events until the last output is
//! written: (a) stateless — `speed > 5`, `driver_id, region, speed * 3.6 AS kmh` as JSON;
//! (b) windowed — watermark 5 s, `speed > 5`, 10 s tumbling windows by region with count,
//! average and maximum speed; (c) and (d) the same two jobs written as SQL job files
//! (`runnel run`). Events/s = input events / that time. Each job runs at-least-once (commit
//! every 5 s) and exactly-once (one transaction every 100 ms, Kafka Streams' default), and the
//! exactly-once row says what fraction of the at-least-once throughput it kept.
//!
//! Then end-to-end latency: a SQL job copying records runs in this process under each
//! guarantee while records are produced one at a time (about 1,000/s); latency is the time from
//! `send` until a `read_committed` consumer of the output sees the record. Last, interactive
//! query latency: the windowed SQL job runs in this process over the loaded events while
//! queries of its output's store (one region's open windows) are sent back to back.
//! `--scrape 1s` renders the metrics page every second while each job runs (what a scrape
//! costs); `--state disk` keeps the jobs' state on disk (scratch files) instead of in memory.

use super::output;
use anyhow::{Context, Result, bail};
use clap::Args;
use runnel::engine::state::Storage;
use runnel::engine::{App, ProcessingGuarantee, StreamsConfig};
use runnel::log::{Log, LogClient, ProducerConfig, ProducerRecord, SharedLogClient, TopicConfig};
use runnel::rides;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Events to generate and process.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Use this JSON-lines file of ride events instead of generating one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Partitions of the input topic (tasks per job).
    #[arg(long, default_value_t = 2)]
    partitions: u32,
    /// Worker threads of each job.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// 100000 events: a smoke test, not for numbers.
    #[arg(long)]
    quick: bool,
    /// Load the input here instead of a temporary directory, and keep it: for profiling one
    /// job with `runnel bench engine-job --dir DIR --job stateless --threads 2`.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Render the `/metrics` page every DURATION while each job runs, as a Prometheus scrape
    /// would (to measure what metrics cost: compare with a run without).
    #[arg(long, value_name = "DURATION")]
    scrape: Option<String>,
    /// Where the jobs keep their state: `memory` or `disk` (each store and task a scratch
    /// file with the default cache in front, as `[job] state = "disk"`).
    #[arg(long, default_value = "memory")]
    state: String,
}

/// Runs one job in this process (started by `bench engine`); prints one result line.
#[derive(Debug, Args)]
pub struct EngineJobArgs {
    #[arg(long)]
    job: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    threads: usize,
    #[arg(long, default_value = "at-least-once")]
    guarantee: ProcessingGuarantee,
    #[arg(long, value_name = "DURATION")]
    scrape: Option<String>,
    #[arg(long, default_value = "memory")]
    state: String,
}

const JOBS: [(&str, &str); 4] = [
    (
        "stateless",
        "filter speed > 5, project driver_id, region, kmh",
    ),
    (
        "windowed",
        "watermark 5 s, filter, 10 s tumbling by region: count, avg, max",
    ),
    ("sql-stateless", "the stateless job as a SQL job file"),
    ("sql-windowed", "the windowed job as a SQL job file"),
];

/// The reference jobs in SQL (the same inputs and results as the DSL ones).
fn sql_job(job: &str) -> String {
    let sql = match job {
        "sql-stateless" => {
            "INSERT INTO out SELECT driver_id, region, speed * 3.6 AS kmh FROM rides WHERE speed > 5"
        }
        _ => {
            "INSERT INTO out SELECT region, window_start, window_end, COUNT(*) AS count, AVG(speed) AS avg_speed, \
             MAX(speed) AS max_speed FROM rides WHERE speed > 5 GROUP BY region, tumble(ts, INTERVAL '10' SECOND)"
        }
    };
    format!(
        r#"[job]
name = "bench-{job}-{pid}"
sql = "{sql}"

[[input]]
name = "rides"
schema = "ts BIGINT, driver_id BIGINT, region VARCHAR, lat DOUBLE, lon DOUBLE, speed DOUBLE"
event_time = "ts"
watermark = "5 seconds"

[[output]]
name = "out"
topic = "out-{job}"
"#,
        pid = std::process::id()
    )
}

pub async fn run(args: EngineArgs) -> Result<()> {
    let events = if args.quick { 100_000 } else { args.events };
    let file = match &args.file {
        Some(f) => f.clone(),
        None => generated_file(events)?,
    };
    let tmp = tempfile::Builder::new()
        .prefix("runnel-bench-engine-")
        .tempdir()?;
    let dir = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let loaded = load(&file, &dir, args.partitions).await?;
    eprintln!(
        "loaded {loaded} events from {} into rides ({} partitions)",
        file.display(),
        args.partitions
    );
    let mut t = output::table(
        &[
            "job",
            "what",
            "guarantee",
            "events",
            "seconds",
            "events/s",
            "of at-least-once",
            "outputs",
            "peak RSS",
        ],
        &[3, 4, 5, 6, 7, 8],
    );
    let runs = JOBS.iter().flat_map(|&(job, what)| {
        [
            ProcessingGuarantee::AtLeastOnce,
            ProcessingGuarantee::ExactlyOnce,
        ]
        .map(|g| (job, what, g))
    });
    let mut at_least_once_rate = f64::NAN;
    let (mut scrapes, mut scrape_seconds) = (0, 0.0);
    for (job, what, guarantee) in runs {
        let pb = output::spinner(
            "{spinner} {msg} {elapsed}",
            &format!("running {job} {guarantee}"),
        );
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args([
            "bench",
            "engine-job",
            "--job",
            job,
            "--threads",
            &args.threads.to_string(),
            "--guarantee",
            &guarantee.to_string(),
            "--state",
            &args.state,
            "--dir",
        ])
        .arg(&dir);
        if let Some(every) = &args.scrape {
            cmd.args(["--scrape", every]);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        pb.finish_and_clear();
        if !out.status.success() {
            bail!(
                "the {job} job failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8(out.stdout)?;
        let r: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("job output {line:?}"))?;
        let secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
        scrapes += r["scrapes"].as_u64().unwrap_or(0);
        scrape_seconds += r["scrape_seconds"].as_f64().unwrap_or(0.0);
        let rate = loaded as f64 / secs;
        let share = match guarantee {
            ProcessingGuarantee::AtLeastOnce => {
                at_least_once_rate = rate;
                String::new()
            }
            ProcessingGuarantee::ExactlyOnce => {
                format!("{:.0} %", 100.0 * rate / at_least_once_rate)
            }
        };
        t.add_row(vec![
            job.to_string(),
            what.to_string(),
            guarantee.to_string(),
            loaded.to_string(),
            format!("{secs:.2}"),
            format!("{:.2} M", rate / 1e6),
            share,
            r["outputs"].to_string(),
            output::bytes(r["peak_rss"].as_u64().unwrap_or(0)),
        ]);
    }
    output::print(t)?;
    if let Some(every) = &args.scrape
        && scrapes > 0
    {
        let mean = scrape_seconds / scrapes as f64;
        let every = super::duration_arg("--scrape", every)?.as_secs_f64();
        println!(
            "metrics: {scrapes} pages rendered while the jobs ran, {:.0} µs each: {:.3} % of one core at one scrape every {every} s",
            mean * 1e6,
            100.0 * mean / every
        );
    }
    let samples = if args.quick { 200 } else { 3_000 };
    let mut t = output::table(
        &["guarantee", "commit interval", "records", "p50", "p99"],
        &[1, 2, 3, 4],
    );
    for guarantee in [
        ProcessingGuarantee::AtLeastOnce,
        ProcessingGuarantee::ExactlyOnce,
    ] {
        let (interval, p50, p99) = end_to_end_latency(guarantee, samples).await?;
        t.add_row(vec![
            guarantee.to_string(),
            format!("{} ms", interval.as_millis()),
            samples.to_string(),
            output::latency(p50),
            output::latency(p99),
        ]);
    }
    output::print(t)?;
    let pb = output::spinner(
        "{spinner} {msg} {elapsed}",
        "interactive queries under load",
    );
    let (queries, p50, p99) = tokio::task::spawn_blocking(move || query_latency(&dir)).await??;
    pb.finish_and_clear();
    let mut t = output::table(
        &["interactive queries", "while", "answered", "p50", "p99"],
        &[2, 3, 4],
    );
    t.add_row(vec![
        "one region's open windows".to_string(),
        format!("the sql-windowed job processes {loaded} events"),
        queries.to_string(),
        output::latency(p50),
        output::latency(p99),
    ]);
    output::print(t)
}

/// Interactive queries of the windowed SQL job's output (one region's open windows, regions
/// in turn, back to back) while the job processes the loaded events in this process:
/// (queries answered, p50, p99).
fn query_latency(dir: &Path) -> Result<(usize, Duration, Duration)> {
    let log = Log::open(dir)?;
    let client: SharedLogClient = Arc::new(log.clone());
    let sql = runnel::sql::SqlJob::parse(Path::new("sql-windowed.toml"), &sql_job("sql-windowed"))?;
    let view = sql
        .views()
        .first()
        .cloned()
        .context("the windowed job's output is queryable")?;
    let mut config = StreamsConfig::new(&format!("bench-query-{}", std::process::id()));
    config.until_end = true;
    let app = Arc::new(App::new(sql.topology_for_run()?, client, config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (running, handle) = (app.clone(), rt.handle().clone());
    let job = std::thread::spawn(move || running.run(&handle));
    let mut latencies = Vec::new();
    while !job.is_finished() {
        let region = rides::REGIONS[latencies.len() % rides::REGIONS.len()];
        let started = Instant::now();
        // Before the workers start (and after they end) there is nobody to ask.
        if runnel::sql::query::query(&app, &view, Some(region), Duration::from_secs(5)).is_ok() {
            latencies.push(started.elapsed());
        }
    }
    job.join().expect("the job's thread does not panic")?;
    drop((app, rt));
    super::close_log(log);
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok((latencies.len(), at(0.5), at(0.99)))
}

/// Input appended → output visible to a `read_committed` reader, through a SQL job that copies
/// records, under `guarantee` with its default commit interval: (interval, p50, p99).
async fn end_to_end_latency(
    guarantee: ProcessingGuarantee,
    samples: usize,
) -> Result<(Duration, Duration, Duration)> {
    use runnel::log::{Consumer, ConsumerConfig, OffsetReset, Producer, TopicPartition};
    let dir = tempfile::Builder::new()
        .prefix("runnel-bench-latency-")
        .tempdir()?;
    let log = Log::open(dir.path())?;
    log.create_topic("lat-in", TopicConfig::default())?;
    log.create_topic("lat-out", TopicConfig::default())?;
    let job = r#"[job]
name = "latency"
sql = "INSERT INTO out SELECT id FROM input"

[[input]]
name = "input"
topic = "lat-in"
schema = "id BIGINT"

[[output]]
name = "out"
topic = "lat-out"
"#;
    let sql = runnel::sql::SqlJob::parse(Path::new("latency.toml"), job)?;
    let config = StreamsConfig::new("latency").guarantee(guarantee);
    let interval = config.commit_interval;
    let client: SharedLogClient = Arc::new(log.clone());
    let app = App::new(sql.topology_for_run()?, client, config);
    let stop = app.stop_flag();
    let handle = tokio::runtime::Handle::current();
    let running = tokio::task::spawn_blocking(move || app.run(&handle));
    // No linger: each record goes out when sent, so the figure is the pipeline's.
    let producer = Producer::new(
        log.clone(),
        ProducerConfig {
            linger: Duration::ZERO,
            ..Default::default()
        },
    );
    let mut consumer = Consumer::new(
        log.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    consumer.assign(vec![TopicPartition::new("lat-out", 0)])?;
    let pb = output::bar(
        samples as u64,
        "{spinner} latency {msg} [{bar:30}] {pos}/{len}",
        &guarantee.to_string(),
    );
    let mut sent_at = Vec::with_capacity(samples);
    let mut latencies = Vec::with_capacity(samples);
    let mut next_send = Instant::now();
    while latencies.len() < samples {
        if sent_at.len() < samples && Instant::now() >= next_send {
            let value = format!("{{\"id\":{}}}", sent_at.len());
            sent_at.push(Instant::now());
            drop(
                producer
                    .send(ProducerRecord::new("lat-in", value.as_bytes()).partition(0))
                    .await?,
            );
            next_send += Duration::from_millis(1);
        }
        for r in consumer.poll(Duration::from_millis(1)).await? {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap_or(b"{}"))?;
            if let Some(id) = v["id"].as_u64() {
                latencies.push(sent_at[id as usize].elapsed());
                pb.inc(1);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    running.await??;
    let (p50, p99) = super::bench::p50_p99(latencies, &pb, &format!("latency {guarantee}"));
    drop((producer, consumer));
    super::close_log(log);
    Ok((interval, p50, p99))
}

/// Runs a job over the topic `rides` of `dir`; prints `{seconds, outputs, peak_rss}`.
pub fn run_job(args: EngineJobArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let log = Log::open(&args.dir)?;
    let client: SharedLogClient = Arc::new(log.clone());
    let topology = match args.job.as_str() {
        "stateless" => rides::fast_rides("rides", "out-stateless"),
        "windowed" => rides::speed_per_region("rides", "out-windowed"),
        job @ ("sql-stateless" | "sql-windowed") => {
            let path = Path::new(job).with_extension("toml");
            let sql = runnel::sql::SqlJob::parse(&path, &sql_job(job))?;
            sql.topology_for_run()?
        }
        other => bail!("unknown job {other:?}: stateless, windowed, sql-stateless or sql-windowed"),
    };
    let mut config = StreamsConfig::new(&format!("bench-{}-{}", args.job, std::process::id()))
        .guarantee(args.guarantee);
    config.storage = match args.state.as_str() {
        "memory" => Storage::Memory,
        "disk" => Storage::disk(),
        other => bail!("state {other:?} is not one of memory, disk"),
    };
    config.until_end = true;
    config.num_threads = args.threads;
    if args.guarantee == ProcessingGuarantee::AtLeastOnce {
        config.commit_interval = Duration::from_secs(5);
    }
    let app = App::new(topology, client, config);
    let scraping = match &args.scrape {
        Some(every) => Some(scrape_while_running(
            super::duration_arg("--scrape", every)?,
            &log,
            &args.job,
            app.stats(),
        )),
        None => None,
    };
    let started = Instant::now();
    let summary = app.run(rt.handle())?;
    let seconds = started.elapsed().as_secs_f64();
    let (scrapes, rendering) = match scraping {
        Some((stop, thread)) => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            thread.join().expect("the scraper does not panic")
        }
        None => (0, Duration::ZERO),
    };
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "outputs": summary.metrics.records_out, "peak_rss": peak_rss(),
            "scrapes": scrapes, "scrape_seconds": rendering.as_secs_f64()})
    );
    // The app holds a clone of the log: dropped first, or closing waits for it in vain.
    drop((app, rt));
    super::close_log(log);
    Ok(())
}

/// Renders the metrics page of the log and the job every `every` on a thread of its own, as
/// `runnel run --http` does for a Prometheus scrape, until the flag is set; the thread returns
/// how many pages it rendered and the time that took.
fn scrape_while_running(
    every: Duration,
    log: &Log,
    job: &str,
    stats: Arc<runnel::engine::stats::AppStats>,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<(u64, Duration)>,
) {
    use super::server::metrics::{JobView, Sources, render};
    let name = job.to_string();
    let sources = Sources {
        log: Some(log.clone()),
        jobs: Some(Arc::new(move || {
            vec![JobView {
                name: name.clone(),
                running: true,
                stats: stats.clone(),
            }]
        })),
        ..Default::default()
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let (mut scrapes, mut rendering) = (0, Duration::ZERO);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            std::hint::black_box(render(&sources));
            rendering += started.elapsed();
            scrapes += 1;
            std::thread::park_timeout(every);
        }
        (scrapes, rendering)
    });
    (stop, thread)
}

/// VmHWM of this process, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The cached events file, generated with `shared/bench/gen_events.py` when missing.
fn generated_file(events: u64) -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home.join(".cache/runnel-bench");
    let file = dir.join(format!("events-{events}.jsonl"));
    if file.exists() {
        return Ok(file);
    }
    std::fs::create_dir_all(&dir)?;
    let script = [
        "../shared/bench/gen_events.py",
        "shared/bench/gen_events.py",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .context(
        "shared/bench/gen_events.py is not beside this checkout: pass --file with ride events",
    )?;
    let pb = output::spinner(
        "{spinner} {msg} {elapsed}",
        &format!("generating {events} events with {}", script.display()),
    );
    let tmp = dir.join(format!("events-{events}.jsonl.partial"));
    let status = std::process::Command::new("python3")
        .arg(&script)
        .args(["--n", &events.to_string(), "--out"])
        .arg(&tmp)
        .stdout(std::process::Stdio::null())
        .status()?;
    pb.finish_and_clear();
    if !status.success() {
        bail!("{} failed", script.display());
    }
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

/// Loads the events into `rides`, keyed by driver id, timestamped with `ts`.
async fn load(file: &Path, dir: &Path, partitions: u32) -> Result<u64> {
    let log = Log::open(dir)?;
    let cfg = TopicConfig {
        partitions,
        ..Default::default()
    };
    log.ensure_topic("rides", &cfg).await?;
    let size = std::fs::metadata(file)?.len();
    let pb = output::bar(
        size,
        "{spinner} loading [{bar:30}] {bytes}/{total_bytes}",
        "",
    );
    let producer = log.producer(ProducerConfig::default());
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut n = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let ts = field(&line, b"\"ts\":")
            .with_context(|| format!("{}:{}: no \"ts\"", file.display(), i + 1))?;
        let driver = field(&line, b"\"driver_id\":")
            .with_context(|| format!("{}:{}: no \"driver_id\"", file.display(), i + 1))?;
        let key = driver.to_string();
        producer
            .send(
                ProducerRecord::new("rides", &line)
                    .key(key.as_bytes())
                    .timestamp(ts),
            )
            .await?;
        n += 1;
        pb.inc(line.len() as u64 + 1);
    }
    producer.flush().await?;
    pb.finish_and_clear();
    drop(producer);
    super::close_log(log);
    Ok(n)
}

/// The integer after `name` in a JSON line.
fn field(line: &[u8], name: &[u8]) -> Option<i64> {
    let at = line.windows(name.len()).position(|w| w == name)? + name.len();
    let digits: String = line[at..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'-')
        .map(|&c| c as char)
        .collect();
    digits.parse().ok()
}
