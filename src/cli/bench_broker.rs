//! `runnel bench broker`: a Kafka-protocol broker measured through Runnel's own client
//! ([`RemoteLog`]), so that Runnel's broker and a peer (`--target`, e.g. tansu) are measured by
//! the same client.
//!
//! Without `--target` it starts `runnel broker` in-process, on its own runtime, with a
//! temporary data directory (deleted after) and a free port. For records of 100 B and 1 KiB on
//! a one-partition topic: produce throughput (one producer, `acks=all`, batches of up to 1 MiB, flushed at the end),
//! consume throughput (one consumer reading the same records from the beginning), for 1 KiB
//! records produce in rounds of 100 records (each round flushed and acknowledged, then each a
//! transaction: the difference is what transactions cost), and for
//! 100 B records the produce latency (send one record, flush, until acknowledged; p50/p99).
//! With Runnel's broker in-process, also the ceiling the consume rows are bounded by: plain
//! loopback TCP from `sendfile` to `recv` (no protocol, no decoding).
//! Topics are created with the durability given (`interval` by default; against another
//! broker it is sent as Kafka's `flush.messages`/`flush.ms`, which the peer may ignore).

use super::bench::{Row, p50_p99, print_rows, progress, random_bytes, size_label};
use super::{close_log, output};
use anyhow::{Result, bail};
use clap::Args;
use runnel_broker::client::producer::RemoteProducer;
use runnel_broker::security::tls::{self, TlsFiles};
use runnel_broker::{
    Bootstrap, Broker, BrokerConfig, ClientSecurity, Listener, RemoteLog, SecurityProtocol,
};
use runnel_log::{
    Compression, ConsumerConfig, Durability, Log, LogClient, LogProducer, OffsetReset,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BrokerBenchArgs {
    /// Measure the broker at HOST:PORT instead of starting Runnel's.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Durability of the topics created on Runnel's broker: always, interval or os.
    #[arg(long, default_value = "interval")]
    durability: String,
    /// Records per throughput run (default 1000000; 20000 with --quick).
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Finish in seconds with small counts (a smoke test; the numbers are rough).
    #[arg(long)]
    quick: bool,
    /// Serve and connect over TLS with this PEM certificate (self-signed, or give its CA as
    /// the same file), to compare with plaintext.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "target"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The producers' batch codec (none, gzip, snappy, lz4, zstd); consumers decompress.
    #[arg(long, default_value = "none", value_name = "CODEC")]
    compression: Compression,
}

pub async fn run(args: BrokerBenchArgs) -> Result<()> {
    let durability: Durability = args.durability.parse()?;
    let records = args
        .records
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 })
        .max(1);
    let samples = if args.quick { 100 } else { 5000 };
    let tmp = tempfile::Builder::new().prefix("runnel-bench-").tempdir()?;
    let (addr, local) = match &args.target {
        Some(t) => (t.clone(), None),
        None => {
            let log = Log::open(tmp.path().join("data"))?;
            let protocol = match args.tls_cert {
                Some(_) => SecurityProtocol::Ssl,
                None => SecurityProtocol::Plaintext,
            };
            let config = BrokerConfig {
                listeners: vec![Listener {
                    protocol,
                    addr: "127.0.0.1:0".into(),
                }],
                auto_create_topics: false,
                default_partitions: 1,
                tls: args
                    .tls_cert
                    .clone()
                    .zip(args.tls_key.clone())
                    .map(|(cert, key)| TlsFiles {
                        cert,
                        key,
                        client_ca: None,
                    }),
                ..Default::default()
            };
            // The broker gets its own runtime, as it has its own process when deployed:
            // sharing the client's two workers, its tasks would queue behind the client's
            // send loop, and the figures would measure tokio's scheduling, not the broker.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("broker")
                .enable_all()
                .build()?;
            let broker = runtime.spawn(Broker::bind(log.clone(), config)).await??;
            let addr = broker.local_addr().to_string();
            let server = runtime.spawn(broker.serve());
            (addr, Some((log, runtime, server)))
        }
    };
    eprintln!(
        "benchmarking the broker at {addr}{}{}, batches {} ({records} records per run)",
        if local.is_some() {
            " (runnel, in-process)"
        } else {
            ""
        },
        if args.tls_cert.is_some() {
            " over TLS"
        } else {
            ""
        },
        args.compression.name()
    );
    let addr = Bootstrap {
        addr,
        security: ClientSecurity {
            protocol: if args.tls_cert.is_some() {
                SecurityProtocol::Ssl
            } else {
                SecurityProtocol::Plaintext
            },
            sasl: None,
            tls: match &args.tls_cert {
                Some(cert) => Some(tls::client_config(Some(cert), None)?),
                None => None,
            },
        },
    };
    let client = RemoteLog::connect_to(addr.clone()).await?;
    // A fresh name per run, so that reruns against a long-running peer start empty.
    let run_id = rand::random::<u32>();
    let mut rows = Vec::new();
    for size in [100usize, 1024] {
        let topic = format!("bench-{size}-{run_id:08x}");
        let config = TopicConfig {
            partitions: 1,
            durability,
            retention_ms: None,
            ..Default::default()
        };
        client.ensure_topic(&topic, &config).await?;
        // 1 KiB values are the JSON-like ride records of `bench log --compression`, so that a
        // codec has something to compress; 100 B ones are random.
        let values = if size == 1024 {
            super::bench_compression::json_like_records(4096)
        } else {
            vec![random_bytes(size)]
        };
        let value = &values[0];
        rows.push(
            produce(
                &addr,
                &topic,
                &values,
                args.compression,
                records,
                durability,
            )
            .await?,
        );
        rows.push(consume(&client, &topic, size, records, durability).await?);
        if size == 1024 {
            let topic = format!("bench-txn-{size}-{run_id:08x}");
            client.ensure_topic(&topic, &config).await?;
            for round in [Round::Flush, Round::Transaction] {
                rows.push(
                    produce_in_rounds(&addr, &topic, value, records, durability, round).await?,
                );
            }
        }
    }
    if local.is_some() {
        let (dir, bytes) = (tmp.path().to_path_buf(), records * 1024);
        rows.push(tokio::task::spawn_blocking(move || loopback_ceiling(&dir, bytes)).await??);
    }
    let topic = format!("bench-latency-{run_id:08x}");
    client
        .ensure_topic(
            &topic,
            &TopicConfig {
                partitions: 1,
                durability,
                ..Default::default()
            },
        )
        .await?;
    rows.push(latency(&client, &topic, samples, durability).await?);
    drop(client);
    if let Some((log, runtime, server)) = local {
        server.abort();
        let _ = server.await;
        runtime.shutdown_background();
        close_log(log);
    }
    print_rows(&rows)
}

async fn produce(
    addr: &Bootstrap,
    topic: &str,
    values: &[Vec<u8>],
    compression: Compression,
    records: u64,
    durability: Durability,
) -> Result<Row> {
    let size = values[0].len();
    let label = format!("produce {}", size_label(size));
    let pb = progress(&label, records);
    // The producer itself, not `Box<dyn LogProducer>`: the embedded rows it is compared with
    // call `Producer::send` directly too.
    let producer = RemoteProducer::new(
        addr.clone(),
        ProducerConfig {
            compression,
            ..Default::default()
        },
    );
    let started = Instant::now();
    for (i, value) in (0..records).zip(values.iter().cycle()) {
        producer
            .send(ProducerRecord::new(topic, value).partition(0))
            .await?;
        if i % 4096 == 0 {
            pb.set_position(i);
        }
    }
    producer.flush().await?;
    let elapsed = finish_rate(&pb, &label, records, started);
    Ok(produce_row(
        match compression {
            Compression::None => "produce (acks=all)".into(),
            codec => format!("produce (acks=all, {})", codec.name()),
        },
        size,
        durability,
        records,
        elapsed,
    ))
}

/// A row of one producer's throughput.
fn produce_row(
    benchmark: String,
    size: usize,
    durability: Durability,
    records: u64,
    elapsed: Duration,
) -> Row {
    Row {
        benchmark,
        size,
        durability: Some(durability),
        producers: Some(1),
        records,
        throughput: Some((records * size as u64, elapsed)),
        percentiles: None,
    }
}

/// Records per round of the rounds rows.
const RECORDS_PER_TRANSACTION: u64 = 100;

/// How a round of [`RECORDS_PER_TRANSACTION`] records ends before the next begins.
#[derive(Clone, Copy)]
enum Round {
    /// `flush`, waiting for the acknowledgement: the floor of any produce that waits for its
    /// records each round, as a transaction's commit does.
    Flush,
    /// A transaction committed (EndTxn, markers): the cost of exactly-once.
    Transaction,
}

/// Produce in rounds of [`RECORDS_PER_TRANSACTION`] records, each ended by `round`.
async fn produce_in_rounds(
    addr: &Bootstrap,
    topic: &str,
    value: &[u8],
    records: u64,
    durability: Durability,
    round: Round,
) -> Result<Row> {
    use runnel::log::LogProducer;
    let (label, benchmark) = match round {
        Round::Flush => (
            "produce, flushed every round",
            format!("produce, flushed every {RECORDS_PER_TRANSACTION}"),
        ),
        Round::Transaction => (
            "transactional produce",
            format!("produce, {RECORDS_PER_TRANSACTION} per transaction"),
        ),
    };
    let label = format!("{label} {}", size_label(value.len()));
    let pb = progress(&label, records);
    let transactional = matches!(round, Round::Transaction);
    let producer = RemoteProducer::new(
        addr.clone(),
        ProducerConfig {
            transactional_id: transactional.then(|| format!("bench-{topic}")),
            ..Default::default()
        },
    );
    if transactional {
        producer.init_transactions().await?;
    }
    let started = Instant::now();
    let mut i = 0;
    while i < records {
        if transactional {
            producer.begin_transaction()?;
        }
        for _ in 0..RECORDS_PER_TRANSACTION.min(records - i) {
            RemoteProducer::send(&producer, ProducerRecord::new(topic, value).partition(0)).await?;
            i += 1;
        }
        match round {
            Round::Flush => LogProducer::flush(&producer).await?,
            Round::Transaction => producer.commit_transaction().await?,
        }
        pb.set_position(i);
    }
    let elapsed = finish_rate(&pb, &label, records, started);
    Ok(produce_row(
        benchmark,
        value.len(),
        durability,
        records,
        elapsed,
    ))
}

async fn consume(
    client: &RemoteLog,
    topic: &str,
    size: usize,
    records: u64,
    durability: Durability,
) -> Result<Row> {
    let label = format!("consume {}", size_label(size));
    let pb = progress(&label, records);
    let mut consumer = client.consumer(ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        max_partition_fetch_bytes: 4 << 20,
        ..Default::default()
    });
    consumer.assign(vec![TopicPartition::new(topic, 0)])?;
    consumer.seek_to_beginning();
    let started = Instant::now();
    let mut got = 0u64;
    while got < records {
        // Runs, as the embedded rows read (no `ConsumerRecord` per record).
        let runs = consumer.poll_runs(Duration::from_secs(10)).await?;
        if runs.is_empty() {
            bail!("consume {topic}: nothing for 10 s after {got} of {records} records");
        }
        got += runs.iter().map(|r| r.len() as u64).sum::<u64>();
        pb.set_position(got);
    }
    let elapsed = finish_rate(&pb, &label, got, started);
    Ok(Row {
        benchmark: "consume".into(),
        size,
        durability: Some(durability),
        producers: None,
        records: got,
        throughput: Some((got * size as u64, elapsed)),
        percentiles: None,
    })
}

/// Ends a throughput run's progress line with its rate; returns the time it took.
fn finish_rate(
    pb: &indicatif::ProgressBar,
    label: &str,
    records: u64,
    started: Instant,
) -> Duration {
    let elapsed = started.elapsed();
    let rate = records as f64 / elapsed.as_secs_f64();
    output::finish(pb, format!("{label}: {rate:.0} records/s"));
    elapsed
}

/// Produce latency: one 100 B record at a time, sent and flushed until acknowledged.
async fn latency(
    client: &RemoteLog,
    topic: &str,
    samples: usize,
    durability: Durability,
) -> Result<Row> {
    const SIZE: usize = 100;
    let label = format!("produce latency {}", size_label(SIZE));
    let pb = progress(&label, samples as u64);
    let producer = client.producer(ProducerConfig::default());
    let value = random_bytes(SIZE);
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        producer
            .send(ProducerRecord::new(topic, &value).partition(0))
            .await?;
        producer.flush().await?;
        latencies.push(started.elapsed());
        pb.inc(1);
    }
    let percentiles = p50_p99(latencies, &pb, &label);
    Ok(Row::latency(
        "produce latency (acks=all)",
        SIZE,
        durability,
        samples,
        percentiles,
    ))
}

/// What this machine's loopback TCP carries with no protocol at all: a file in the page cache
/// sent with `sendfile` in 4 MiB calls (as the broker sends Fetch answers) and received into
/// one reused 4 MiB buffer. No consumer of a broker on this machine reads faster than this,
/// so it is the ceiling to read the consume rows against.
fn loopback_ceiling(dir: &std::path::Path, bytes: u64) -> Result<Row> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    const CHUNK: usize = 4 << 20;
    let path = dir.join("loopback.bin");
    let mut file = std::fs::File::create(&path)?;
    let block = random_bytes(CHUNK);
    for _ in 0..bytes.div_ceil(CHUNK as u64) {
        file.write_all(&block)?;
    }
    let file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (socket, _) = listener.accept()?;
        let mut offset: libc::off_t = 0;
        while (offset as u64) < len {
            let want = CHUNK.min((len - offset as u64) as usize);
            // SAFETY: both descriptors are open for the whole call and `offset` is a valid
            // pointer, which sendfile advances by what it sent.
            let sent =
                unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut offset, want) };
            match sent {
                n if n < 0 => return Err(std::io::Error::last_os_error()),
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                _ => {}
            }
        }
        Ok(())
    });
    let label = "TCP loopback, sendfile -> recv";
    let pb = progress(label, len);
    let mut socket = std::net::TcpStream::connect(addr)?;
    let mut buf = vec![0u8; CHUNK];
    let started = Instant::now();
    let mut got = 0u64;
    while got < len {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            let why = match sender.join().expect("the loopback sender panicked") {
                Err(e) => e.to_string(),
                Ok(()) => "it closed the socket".into(),
            };
            bail!("the loopback sender stopped after {got} of {len} bytes: {why}");
        }
        got += n as u64;
        pb.set_position(got);
    }
    let elapsed = started.elapsed();
    output::finish(
        &pb,
        format!(
            "{label}: {:.0} MB/s",
            got as f64 / elapsed.as_secs_f64() / 1e6
        ),
    );
    sender.join().expect("the loopback sender panicked")?;
    std::fs::remove_file(&path)?;
    Ok(Row {
        benchmark: "TCP loopback ceiling (sendfile -> recv)".into(),
        size: CHUNK,
        durability: None,
        producers: None,
        records: got / CHUNK as u64,
        throughput: Some((got, elapsed)),
        percentiles: None,
    })
}
