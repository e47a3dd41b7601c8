//! Compressed record batches (Kafka's gzip, snappy, lz4 and zstd) end to end:
//!
//! - `confluent_kafka_compressed_batches_are_read_by_runnel`: confluent-kafka produces 10,000
//!   messages with each codec to `runnel broker`; `runnel --bootstrap consume` and, once the
//!   broker stopped, `runnel consume` on its data directory read each of them exactly once;
//!   the stored batches carry the codec the client chose (stored as produced).
//! - `runnel_compressed_batches_are_read_by_confluent_kafka_kafka_python_and_kcat`: `runnel
//!   --bootstrap produce --compression CODEC`; both Python clients and kcat read every message
//!   once.
//! - `compacted_topic_of_compressed_batches_compacts`: the latest value per key survives
//!   compaction and the rewritten batches keep their codec.
//! - `corrupt_compressed_payload_is_an_error_naming_the_place`: a payload that does not
//!   decompress (CRC fixed up) is an error naming topic, partition and offset, from the
//!   embedded consumer, `runnel consume` and `runnel --bootstrap consume`, never a panic; the
//!   records before it are still read over the wire.
//!
//! - `job_and_worker_files_set_the_codec_of_what_they_write`: `[job] compression` of a SQL job
//!   and `producer.override.compression.type` of a source connector.
//!
//! The Python clients are skipped as in `broker.rs` when the interop virtualenv is missing.

use crate::broker::{BrokerProc, kcat, python, scenario};
use crate::support::read_all;
use runnel_log::batch::{self, BatchBuilder};
use runnel_log::{
    CleanupPolicy, Compression, Consumer, ConsumerConfig, Log, LogError, LogOptions, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
const N: usize = 10_000;

/// `runnel ARGS` (the caller passes `--data-dir` or `--bootstrap`); its output is read while it
/// runs (a full pipe would stall it), and it is killed, failing the test, after two minutes.
pub fn runnel(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start runnel");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("wait for runnel"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid, which is not reaped before it exits.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("runnel {args:?} did not exit within 120 s");
        }
    }
}

fn runnel_ok(args: &[&str]) -> String {
    let out = runnel(args);
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `runnel WHERE consume TOPIC` of the first `N` records as JSON lines, `WHERE` being
/// `--bootstrap ADDR` or `--data-dir DIR`.
fn consume_all(place: &[&str], topic: &str) -> String {
    let n = N.to_string();
    let mut args = place.to_vec();
    args.extend_from_slice(&["consume", topic, "--from-beginning", "--max-messages", &n]);
    args.extend_from_slice(&["--format", "json", "--timeout", "20s"]);
    runnel_ok(&args)
}

/// The values of `consume --format json` output, which must be each of 0..n exactly once.
fn assert_each_once(what: &str, json_lines: &str, n: usize) {
    let mut seen = vec![0u32; n];
    for line in json_lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let i: usize = v["value"].as_str().unwrap().parse().unwrap();
        seen[i] += 1;
    }
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let twice = seen.iter().filter(|&&c| c > 1).count();
    assert!(
        missing == 0 && twice == 0,
        "{what}: {missing} of {n} missing, {twice} read more than once"
    );
}

/// The codecs of the batches of every partition of `topic` in the data directory `dir`.
fn stored_codecs(dir: &Path, topic: &str) -> Vec<Compression> {
    let log = Log::open(dir).unwrap();
    let mut codecs = Vec::new();
    for p in log.topic(topic).unwrap().partitions() {
        let f = p.read(0, 64 << 20).unwrap();
        for b in batch::split_batches(&f.batches) {
            codecs.push(batch::parse_header(&b).unwrap().compression().unwrap());
        }
    }
    codecs
}

#[test]
fn confluent_kafka_compressed_batches_are_read_by_runnel() {
    let Some(py) = python("compressed batches from confluent-kafka") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let broker = BrokerProc::start(Path::new(data));
    let n = N.to_string();
    for codec in CODECS {
        let topic = format!("from-confluent-{codec}");
        let args = [codec.name(), n.as_str()];
        scenario(
            &py,
            "confluent",
            "produce-compressed",
            &broker.addr,
            &topic,
            &args,
        );
        let out = consume_all(&["--bootstrap", &broker.addr], &topic);
        assert_each_once(&format!("{codec} over --bootstrap"), &out, N);
    }
    broker.terminate();
    for codec in CODECS {
        let topic = format!("from-confluent-{codec}");
        let out = consume_all(&["--data-dir", data], &topic);
        assert_each_once(&format!("{codec} embedded"), &out, N);
        let codecs = stored_codecs(Path::new(data), &topic);
        // librdkafka sends a batch uncompressed when the codec would not make it smaller (a
        // batch of one or two records, when the producer was slow to fill batches).
        assert!(
            codecs.contains(&codec)
                && codecs
                    .iter()
                    .all(|c| *c == codec || *c == Compression::None),
            "{topic} is stored as produced: {codecs:?}"
        );
    }
}

#[test]
fn runnel_compressed_batches_are_read_by_confluent_kafka_kafka_python_and_kcat() {
    let Some(py) = python("compressed batches from runnel") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProc::start(&data);
    let input = dir.path().join("values.txt");
    let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for codec in CODECS {
        let topic = format!("from-runnel-{codec}");
        rt.block_on(async {
            use runnel::log::LogClient;
            let client = runnel::broker::RemoteLog::connect(&broker.addr)
                .await
                .unwrap();
            let config = TopicConfig {
                partitions: 2,
                ..Default::default()
            };
            client.ensure_topic(&topic, &config).await.unwrap();
        });
        runnel_ok(&[
            "--bootstrap",
            &broker.addr,
            "produce",
            &topic,
            "--file",
            input.to_str().unwrap(),
            "--compression",
            codec.name(),
        ]);
        let n = N.to_string();
        for client in ["confluent", "kafka-python"] {
            scenario(&py, client, "verify-exact", &broker.addr, &topic, &[&n]);
        }
        if kcat("compressed batches from runnel, kcat") {
            let out = Command::new("kcat")
                .args([
                    "-b",
                    &broker.addr,
                    "-C",
                    "-t",
                    &topic,
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let mut values: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
            values.sort_unstable();
            assert_eq!(
                values,
                (0..N).collect::<Vec<_>>(),
                "kcat reads {codec} exactly"
            );
        }
    }
    broker.terminate();
    for codec in CODECS {
        let codecs = stored_codecs(&data, &format!("from-runnel-{codec}"));
        assert!(
            !codecs.is_empty() && codecs.iter().all(|c| *c == codec),
            "{codec}: {codecs:?}"
        );
    }
}

#[test]
fn compacted_topic_of_compressed_batches_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path(),
        LogOptions {
            cleaner_interval: Duration::from_secs(3600),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for codec in CODECS {
        let topic = format!("kv-{codec}");
        log.create_topic(
            &topic,
            TopicConfig {
                cleanup_policy: CleanupPolicy::Compact,
                segment_bytes: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        let producer = Producer::new(
            log.clone(),
            ProducerConfig {
                compression: codec,
                ..Default::default()
            },
        );
        // 40 batches of 50 records over 20 keys: every key is overwritten many times, and
        // each batch keeps some records and loses others.
        rt.block_on(async {
            for i in 0..2000u32 {
                let key = format!("k{}", (i * 7) % 20);
                let value = format!("{i:06}-{}", "x".repeat(40));
                let rec = ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes());
                drop(producer.send(rec).await.unwrap());
                if i % 50 == 49 {
                    producer.flush().await.unwrap();
                }
            }
            producer.close().await.unwrap();
        });
        let p = log.partition(&TopicPartition::new(&topic, 0)).unwrap();
        let before = read_all(&p, 0).unwrap().len();
        let (_, removed) = log.run_cleaner().unwrap();
        assert!(removed > 1000, "{codec}: removed {removed} of {before}");
        let after = read_all(&p, 0).unwrap();
        assert_eq!(after.len(), before - removed as usize, "{codec}");
        let mut latest: HashMap<Vec<u8>, (u64, Vec<u8>)> = HashMap::new();
        for r in &after {
            let value = r.value.clone().unwrap().to_vec();
            latest.insert(r.key.clone().unwrap().to_vec(), (r.offset, value));
        }
        for k in 0..20u32 {
            let last = (0..2000u32).rev().find(|i| (i * 7) % 20 == k).unwrap();
            let (offset, value) = &latest[format!("k{k}").as_bytes()];
            assert_eq!(
                *offset, last as u64,
                "{codec} k{k}: the latest offset survives"
            );
            assert!(value.starts_with(format!("{last:06}-").as_bytes()));
        }
        let f = p.read(0, 64 << 20).unwrap();
        for b in batch::split_batches(&f.batches) {
            let h = batch::validate(&b).unwrap();
            assert_eq!(
                h.compression().unwrap(),
                codec,
                "rewritten batches keep the codec"
            );
        }
    }
}

#[test]
fn corrupt_compressed_payload_is_an_error_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let log = Log::open(&data).unwrap();
        log.create_topic("bad", TopicConfig::default()).unwrap();
        let p = log.partition(&TopicPartition::new("bad", 0)).unwrap();
        let build = |from: u32| {
            let mut b = BatchBuilder::new(4096).with_compression(Compression::Zstd);
            for i in from..from + 100 {
                b.push(1000, None, Some(i.to_string().as_bytes()), &[]);
            }
            b.finish()
        };
        p.append(build(0)).unwrap();
        let mut bad = build(100);
        // The zstd frame's blocks scrambled; the CRC fixed up, so only the codec can notice.
        let len = bad.len();
        for x in &mut bad[batch::HEADER_LEN + 6..len - 4] {
            *x = x.wrapping_mul(31).wrapping_add(7);
        }
        batch::seal(&mut bad);
        p.append(bad).unwrap();
        p.append(build(200)).unwrap();

        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(async {
            let mut c = Consumer::new(log.clone(), ConsumerConfig::default());
            c.assign(vec![TopicPartition::new("bad", 0)]).unwrap();
            c.seek_to_beginning();
            loop {
                match c.poll(Duration::from_secs(5)).await {
                    Ok(records) => assert!(!records.is_empty(), "no error within 5 s"),
                    Err(e) => break e,
                }
            }
        });
        let named = matches!(&err, LogError::UnreadableBatch { topic, partition: 0, offset: 100, next: 200, .. } if topic == "bad");
        assert!(
            named,
            "the error names bad-0, offset 100 and the next one, 200: {err}"
        );
    }
    let data = data.to_str().unwrap();
    let embedded = runnel(&[
        "--data-dir",
        data,
        "consume",
        "bad",
        "--from-beginning",
        "--timeout",
        "2s",
    ]);
    let broker = BrokerProc::start(Path::new(data));
    let remote = runnel(&[
        "--bootstrap",
        &broker.addr,
        "consume",
        "bad",
        "--from-beginning",
        "--timeout",
        "5s",
    ]);
    for (how, out) in [("embedded", &embedded), ("--bootstrap", &remote)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{how}: a corrupt batch must fail the command"
        );
        assert!(!stderr.contains("panicked"), "{how}: {stderr}");
        assert!(
            stderr.contains("bad-0 at offset 100") && stderr.contains("zstd payload"),
            "{how}: the error names topic, partition, offset and codec: {stderr}"
        );
    }
    // Over the wire the records before the bad batch are handed out first, as with a bad CRC.
    let values: Vec<String> = String::from_utf8_lossy(&remote.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(values, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A SQL job with `[job] compression = "zstd"` reads gzip batches and writes its output in zstd
/// batches, and a file
/// source with Kafka Connect's `producer.override.compression.type = "lz4"` writes lz4 batches
/// (over `--bootstrap`, through the broker client's producer); both read back whole.
#[test]
fn job_and_worker_files_set_the_codec_of_what_they_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let input = dir.path().join("events.jsonl");
    let lines: String = (0..1000)
        .map(|i| format!("{{\"id\":{i},\"name\":\"rider {i}\"}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    runnel_ok(&["--data-dir", d, "topics", "create", "events"]);
    // The job's input is compressed too: the SQL input reads gzip batches.
    let file = input.to_str().unwrap();
    runnel_ok(&[
        "--data-dir",
        d,
        "produce",
        "events",
        "--file",
        file,
        "--compression",
        "gzip",
    ]);
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"shout\"\ncompression = \"zstd\"\nsql = \"INSERT INTO loud SELECT id, UPPER(name) AS name FROM events\"\n\n[[input]]\nname = \"events\"\nschema = \"id BIGINT, name VARCHAR\"\n\n[[output]]\nname = \"loud\"\n",
    )
    .unwrap();
    runnel_ok(&["--data-dir", d, "run", job.to_str().unwrap(), "--until-end"]);
    let out = runnel_ok(&[
        "--data-dir",
        d,
        "consume",
        "loud",
        "--from-beginning",
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.lines().count(), 1000);
    assert!(out.contains("RIDER 999"), "{}", &out[..out.len().min(300)]);
    let codecs = stored_codecs(&data, "loud");
    assert!(
        !codecs.is_empty() && codecs.iter().all(|c| *c == Compression::Zstd),
        "{codecs:?}"
    );

    let broker = BrokerProc::start(&data);
    runnel_ok(&["--bootstrap", &broker.addr, "topics", "create", "copied"]);
    let worker_file = dir.path().join("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"in\"\n\"connector.class\" = \"FileStreamSource\"\nfile = \"{}\"\ntopic = \"copied\"\n\"producer.override.compression.type\" = \"lz4\"\n",
            input.display()
        ),
    )
    .unwrap();
    // Killed when dropped, so a failed assertion below does not leave the worker running.
    let worker = KillOnDrop(crate::connect::worker_over(&broker.addr, &worker_file));
    // `consume` waits up to its timeout for each record: it returns once all 1000 arrived.
    let copied = runnel_ok(&[
        "--bootstrap",
        &broker.addr,
        "consume",
        "copied",
        "--from-beginning",
        "--max-messages",
        "1000",
        "--timeout",
        "30s",
    ]);
    drop(worker);
    broker.terminate();
    assert_eq!(copied.lines().count(), 1000);
    let codecs = stored_codecs(&data, "copied");
    assert!(
        !codecs.is_empty() && codecs.iter().all(|c| *c == Compression::Lz4),
        "{codecs:?}"
    );
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
