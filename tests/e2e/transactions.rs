//! Transactions: the embedded transactional producer and `read_committed` readers, fencing,
//! transactional offsets, open transactions across a restart and their timeout, and
//! confluent-kafka's transactional producer against `runnel broker`.

use runnel_log::*;
use std::time::{Duration, Instant};

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.record.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

/// Everything `isolation` lets a reader of `topic` see now (waits until `expected` records or
/// the deadline, then a little longer, so that extra records would be seen too).
async fn read(log: &Log, topic: &str, isolation: IsolationLevel, expected: usize) -> Vec<String> {
    let mut c = Consumer::new(
        log.clone(),
        ConsumerConfig {
            isolation_level: isolation,
            ..Default::default()
        },
    );
    let parts = log.topic(topic).unwrap().partition_count();
    c.assign((0..parts).map(|p| TopicPartition::new(topic, p)).collect())
        .unwrap();
    c.seek_to_beginning();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expected && Instant::now() < deadline {
        got.extend(values(&c.poll(Duration::from_millis(200)).await.unwrap()));
    }
    got.extend(values(&c.poll(Duration::from_millis(300)).await.unwrap()));
    got
}

fn txn_producer(log: &Log, id: &str, timeout: Duration) -> Producer {
    Producer::new(
        log.clone(),
        ProducerConfig {
            transactional_id: Some(id.into()),
            transaction_timeout: timeout,
            ..Default::default()
        },
    )
}

async fn send_all(p: &Producer, topic: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let v = format!("{prefix}{i}");
        drop(
            p.send(ProducerRecord::new(topic, v.as_bytes()))
                .await
                .unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_aborted_and_open_transactions_as_readers_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let p = txn_producer(&log, "writer", Duration::from_secs(60));
    p.init_transactions().await.unwrap();
    // Sending outside a transaction is refused.
    assert!(p.send(ProducerRecord::new("t", b"x")).await.is_err());

    p.begin_transaction().unwrap();
    send_all(&p, "t", "a", 10).await;
    p.commit_transaction().await.unwrap();

    p.begin_transaction().unwrap();
    send_all(&p, "t", "b", 5).await;
    p.abort_transaction().await.unwrap();

    // A plain producer's records between transactions are committed data.
    let plain = Producer::new(log.clone(), ProducerConfig::default());
    plain
        .send(ProducerRecord::new("t", b"plain"))
        .await
        .unwrap()
        .await
        .unwrap();

    p.begin_transaction().unwrap();
    send_all(&p, "t", "c", 3).await;
    let source = TopicPartition::new("t", 0);
    p.send_offsets_to_transaction(&[(source.clone(), 7)], &GroupMetadata::unmanaged("g"))
        .await
        .unwrap();
    assert_eq!(
        log.groups().committed("g", &source),
        None,
        "visible before commit"
    );
    p.commit_transaction().await.unwrap();
    assert_eq!(log.groups().committed("g", &source).unwrap().offset, 7);

    // An open transaction of another producer: its records and everything after them wait.
    let open = txn_producer(&log, "open", Duration::from_secs(60));
    open.init_transactions().await.unwrap();
    open.begin_transaction().unwrap();
    send_all(&open, "t", "o", 4).await;
    open.flush().await.unwrap();
    plain
        .send(ProducerRecord::new("t", b"after-open"))
        .await
        .unwrap()
        .await
        .unwrap();

    let mut want: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    want.push("plain".into());
    want.extend((0..3).map(|i| format!("c{i}")));
    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 14).await,
        want
    );
    let all = read(&log, "t", IsolationLevel::ReadUncommitted, 24).await;
    assert_eq!(all.len(), 24, "read_uncommitted sees every record: {all:?}");

    open.commit_transaction().await.unwrap();
    want.extend((0..4).map(|i| format!("o{i}")));
    want.push("after-open".into());
    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 19).await,
        want
    );
    let part = log.partition(&TopicPartition::new("t", 0)).unwrap();
    assert_eq!(part.last_stable_offset(), part.high_watermark());
    assert_eq!(part.aborted_transactions(0, u64::MAX).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let first = txn_producer(&log, "same", Duration::from_secs(60));
    first.init_transactions().await.unwrap();
    first.begin_transaction().unwrap();
    send_all(&first, "t", "zombie", 3).await;
    first.flush().await.unwrap();

    let second = txn_producer(&log, "same", Duration::from_secs(60));
    second.init_transactions().await.unwrap();
    let err = first.commit_transaction().await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    second.begin_transaction().unwrap();
    send_all(&second, "t", "live", 2).await;
    second.commit_transaction().await.unwrap();

    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 2).await,
        ["live0", "live1"]
    );
    // Bad input: an end with a stale epoch or an unknown id changes nothing.
    let (pid, epoch) = log
        .transactions()
        .describe("same")
        .map(|m| (m.producer_id, m.epoch))
        .unwrap();
    let stale = log
        .transactions()
        .end_txn(&log, "same", pid, epoch - 1, TxnOutcome::Commit)
        .unwrap_err();
    assert!(matches!(
        stale,
        LogError::Transaction {
            kind: runnel_log::error::TxnErrorKind::ProducerFenced,
            ..
        }
    ));
    let unknown = log
        .transactions()
        .end_txn(&log, "nobody", 1, 0, TxnOutcome::Commit)
        .unwrap_err();
    assert!(matches!(
        unknown,
        LogError::Transaction {
            kind: runnel_log::error::TxnErrorKind::InvalidProducerIdMapping,
            ..
        }
    ));
    // Commit with nothing open.
    assert!(
        log.transactions()
            .end_txn(&log, "same", pid, epoch, TxnOutcome::Abort)
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_survives_a_restart_and_is_aborted_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let done = txn_producer(&log, "done", Duration::from_secs(60));
        done.init_transactions().await.unwrap();
        done.begin_transaction().unwrap();
        send_all(&done, "t", "kept", 3).await;
        let source = TopicPartition::new("t", 0);
        done.send_offsets_to_transaction(&[(source.clone(), 3)], &GroupMetadata::unmanaged("g"))
            .await
            .unwrap();
        done.commit_transaction().await.unwrap();

        let left = txn_producer(&log, "left-open", Duration::from_secs(60));
        left.init_transactions().await.unwrap();
        left.begin_transaction().unwrap();
        send_all(&left, "t", "lost", 5).await;
        left.send_offsets_to_transaction(&[(source, 99)], &GroupMetadata::unmanaged("g"))
            .await
            .unwrap();
        left.flush().await.unwrap();
        // Closed with the transaction open, as a crashed process leaves it.
        done.close().await.unwrap();
        left.close().await.unwrap();
    }
    // The log's clock stands still until the test moves it past the transaction's timeout.
    let clock = Clock::manual(runnel_log::types::now_ms());
    let log = reopen_on(dir.path(), clock.clone()).await;
    let part = log.partition(&TopicPartition::new("t", 0)).unwrap();
    assert!(
        part.last_stable_offset() < part.high_watermark(),
        "the open transaction is still open after the restart"
    );
    let committed = || {
        log.groups()
            .committed("g", &TopicPartition::new("t", 0))
            .map(|c| c.offset)
    };
    assert_eq!(
        committed(),
        Some(3),
        "offsets of the committed transaction, reloaded"
    );
    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 3).await,
        ["kept0", "kept1", "kept2"]
    );
    assert!(
        part.last_stable_offset() < part.high_watermark(),
        "still open before its timeout"
    );
    clock.advance(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    while part.last_stable_offset() < part.high_watermark() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        part.last_stable_offset(),
        part.high_watermark(),
        "the coordinator aborted the transaction past its timeout"
    );
    assert_eq!(
        committed(),
        Some(3),
        "the aborted transaction's offsets never count"
    );
    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 3).await,
        ["kept0", "kept1", "kept2"]
    );
    assert_eq!(part.aborted_transactions(0, u64::MAX).len(), 1);
}

/// Over `interval` topics the coordinator does not sync its records, so a power loss can take
/// them while a partition keeps the records of a transaction that was open (its flush came
/// first): at the next open that transaction is aborted, rather than holding the partition's
/// last stable offset, and every `read_committed` reader, forever.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_the_coordinator_lost_is_aborted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let config = TopicConfig {
            durability: Durability::Interval,
            ..Default::default()
        };
        log.create_topic("t", config).unwrap();
        let p = txn_producer(&log, "lost-record", Duration::from_secs(600));
        p.init_transactions().await.unwrap();
        p.begin_transaction().unwrap();
        send_all(&p, "t", "kept", 2).await;
        p.commit_transaction().await.unwrap();
        p.begin_transaction().unwrap();
        send_all(&p, "t", "open", 3).await;
        p.flush().await.unwrap();
        p.close().await.unwrap();
    }
    // What the power loss left: the partition's records, none of the coordinator's.
    let state = walk(dir.path()).into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("__transaction_state"))
    });
    for path in state.collect::<Vec<_>>() {
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let log = reopen(dir.path()).await;
    let part = log.partition(&TopicPartition::new("t", 0)).unwrap();
    assert_eq!(
        part.high_watermark(),
        2 + 1 + 3 + 1,
        "records, commit and abort markers"
    );
    assert_eq!(part.last_stable_offset(), part.high_watermark());
    assert_eq!(
        read(&log, "t", IsolationLevel::ReadCommitted, 2).await,
        ["kept0", "kept1"]
    );
    assert_eq!(part.aborted_transactions(0, u64::MAX).len(), 1);
}

/// Every path under `dir`, children before their directory.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Opens the log at `dir` once the producers of the previous one have let go of it (their
/// sender threads end after `close`).
async fn reopen(dir: &std::path::Path) -> Log {
    reopen_on(dir, Clock::system()).await
}

/// [`reopen`] with the log's time-based behaviour (transaction timeouts) on `clock`.
async fn reopen_on(dir: &std::path::Path, clock: Clock) -> Log {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let options = LogOptions {
            clock: clock.clone(),
            ..LogOptions::default()
        };
        match Log::open_with(dir, options) {
            Err(LogError::DataDirLocked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn confluent_kafka_transactions_against_the_broker() {
    interop_transactions("confluent");
}

#[test]
fn kafka_python_transactions_against_the_broker() {
    interop_transactions("kafka-python");
}

fn interop_transactions(client: &str) {
    let Some(py) = crate::broker::python(&format!("{client} transactions")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(dir.path());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/transactions.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .args([broker.addr.as_str(), "txn", client])
        .output()
        .expect("run transactions.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", stdout.trim());
}

const EOS_EVENTS: u64 = 300_000;

/// The stateless SQL reference job's file, with the guarantee given.
pub(crate) fn stateless_job(dir: &std::path::Path, guarantee: &str) -> std::path::PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"[job]
name = "eos"
guarantee = "{guarantee}"
sql = "INSERT INTO out SELECT driver_id, region, speed * 3.6 AS kmh FROM rides WHERE speed > 5"

[[input]]
name = "rides"
schema = "ts BIGINT, driver_id BIGINT, region VARCHAR, lat DOUBLE, lon DOUBLE, speed DOUBLE"
event_time = "ts"
watermark = "5 seconds"

[[output]]
name = "out"
"#
        ),
    )
    .unwrap();
    path
}

/// km/h in millionths: the engine's arithmetic may differ from Rust's in the last bit.
fn micro(kmh: f64) -> i64 {
    (kmh * 1e6).round() as i64
}

/// `n` reference ride events in the 4-partition topic `rides` of the log at `data`, as stored.
fn produce_rides(
    rt: &tokio::runtime::Runtime,
    data: &std::path::Path,
    n: u64,
) -> Vec<runnel::rides::Ride> {
    let client: SharedLogClient = std::sync::Arc::new(Log::open(data).unwrap());
    rt.block_on(runnel::rides::produce_rides(&client, "rides", 4, n, |_| {}))
        .unwrap();
    let rides = rt
        .block_on(runnel::rides::read_json::<runnel::rides::Ride>(
            &client, "rides",
        ))
        .unwrap();
    rides.into_iter().map(|(_, r)| r).collect()
}

/// (driver, region, km/h) of every row the job must write for `rides`, sorted.
pub(crate) fn expected_rows(rides: &[runnel::rides::Ride]) -> Vec<(u64, String, i64)> {
    let mut rows: Vec<_> = rides
        .iter()
        .filter(|r| r.speed > 5.0)
        .map(|r| {
            (
                u64::from(r.driver_id),
                r.region.clone(),
                micro(r.speed * 3.6),
            )
        })
        .collect();
    rows.sort();
    rows
}

pub(crate) fn output_rows(values: &[serde_json::Value]) -> Vec<(u64, String, i64)> {
    let mut rows: Vec<_> = values
        .iter()
        .map(|v| {
            (
                v["driver_id"].as_u64().unwrap(),
                v["region"].as_str().unwrap().to_string(),
                micro(v["kmh"].as_f64().unwrap()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Runs `runnel [--bootstrap B] run job --until-end` and SIGKILLs it at random moments after
/// it starts, at least five times, then lets it finish. Returns how often it was killed.
fn kill_repeatedly(data: &std::path::Path, bootstrap: Option<&str>, job: &std::path::Path) -> u32 {
    use rand::{Rng, SeedableRng};
    use std::io::BufRead;
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"));
        match bootstrap {
            Some(b) => cmd.args(["--bootstrap", b]),
            None => cmd.arg("--data-dir").arg(data),
        };
        cmd.arg("run")
            .arg(job)
            .arg("--until-end")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    for _ in 0..15 {
        let mut child = spawn();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 && !line.contains("running job") {
            line.clear();
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        std::thread::sleep(Duration::from_millis(rng.random_range(10..250)));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the job failed");
            if kills >= 5 {
                return kills;
            }
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if kills >= 5 {
            break;
        }
    }
    let status = spawn().wait().unwrap();
    assert!(status.success(), "the last run failed");
    kills
}

/// A stateless SQL job under exactly-once whose output fills the disk stops with the storage
/// error; once space returns, a restart completes the output with every row exactly once.
#[test]
fn an_exactly_once_sql_job_whose_disk_fills_stops_and_completes_after_space_returns() {
    let Some(disk) = crate::faults::SmallDisk::mount("256m") else {
        return;
    };
    let data = disk.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rides = produce_rides(&rt, &data, 100_000);
    // Room for a part of the output only.
    disk.grow(&format!("{}", disk.used() + (3 << 20)));
    let dir = tempfile::tempdir().unwrap();
    let job = stateless_job(dir.path(), "exactly-once");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(&data)
            .arg("run")
            .arg(&job)
            .arg("--until-end")
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the disk should fill; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("No space left on device"),
        "the job stops with the storage error:\n{stderr}"
    );
    disk.grow("256m");
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client: SharedLogClient = std::sync::Arc::new(Log::open(&data).unwrap());
    let out: Vec<(String, serde_json::Value)> = rt
        .block_on(runnel::rides::read_json(&client, "out"))
        .unwrap();
    let got = output_rows(&out.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    let expected = expected_rows(&rides);
    assert_eq!(got.len(), expected.len(), "every row once, none twice");
    assert!(got == expected, "the rows the job must write");
}

/// The issue's scenario: a stateless SQL job under exactly-once, SIGKILLed at random moments
/// at least five times and then run to the end, leaves every expected row exactly once in its
/// output as a `read_committed` reader sees it.
#[test]
fn an_exactly_once_sql_job_killed_repeatedly_writes_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rides = produce_rides(&rt, &data, EOS_EVENTS);
    assert_eq!(rides.len() as u64, EOS_EVENTS);
    let job = stateless_job(dir.path(), "exactly-once");
    let kills = kill_repeatedly(&data, None, &job);
    assert!(
        kills >= 5,
        "the job finished before it was killed 5 times ({kills})"
    );
    let client: SharedLogClient = std::sync::Arc::new(Log::open(&data).unwrap());
    let out: Vec<(String, serde_json::Value)> = rt
        .block_on(runnel::rides::read_json(&client, "out"))
        .unwrap();
    let got = output_rows(&out.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    let want = expected_rows(&rides);
    assert_eq!(got.len(), want.len(), "rows after {kills} kills");
    let differ = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        differ.is_none(),
        "the rows differ from the expected ones after {kills} kills, first at {differ:?}: {:?} vs {:?}",
        differ.map(|i| &got[i]),
        differ.map(|i| &want[i])
    );
}

/// The same through `runnel broker`: the job runs with `--bootstrap`, so its transactions,
/// transactional offsets and `read_committed` reads go over Kafka's protocol.
#[test]
fn an_exactly_once_sql_job_over_the_broker_killed_repeatedly_writes_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt.block_on(async {
        runnel::broker::client::RemoteLog::connect(&broker.addr)
            .await
            .unwrap()
    });
    let rides = rt.block_on(async {
        runnel::rides::produce_rides(&client, "rides", 4, EOS_EVENTS / 3, |_| {})
            .await
            .unwrap();
        runnel::rides::read_json::<runnel::rides::Ride>(&client, "rides")
            .await
            .unwrap()
    });
    let rides: Vec<_> = rides.into_iter().map(|(_, r)| r).collect();
    let job = stateless_job(dir.path(), "exactly-once");
    let kills = kill_repeatedly(dir.path(), Some(&broker.addr), &job);
    assert!(
        kills >= 5,
        "the job finished before it was killed 5 times ({kills})"
    );
    let out: Vec<(String, serde_json::Value)> = rt
        .block_on(runnel::rides::read_json(&client, "out"))
        .unwrap();
    let got = output_rows(&out.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    assert_eq!(got, expected_rows(&rides), "rows after {kills} kills");
}

/// `runnel broker` SIGKILLed with transactions open: after the restart the committed one is
/// intact, the open ones stay invisible to `read_committed` until their producer re-initialises
/// (one) or their timeout passes (the other), and then the last stable offset is the end.
#[test]
fn the_broker_killed_with_open_transactions_aborts_them_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The network client's producers start their sender tasks on it.
    let _runtime = rt.enter();
    let broker = crate::broker::BrokerProc::start(&data);
    let addr = broker.addr.clone();
    let connect = |addr: &str| -> SharedLogClient {
        rt.block_on(runnel::broker::client::RemoteLog::connect(addr))
            .unwrap()
    };
    let client = connect(&addr);
    let producer = |client: &SharedLogClient, id: &str, timeout_ms: u64| {
        client.producer(ProducerConfig {
            transactional_id: Some(id.into()),
            transaction_timeout: Duration::from_millis(timeout_ms),
            ..Default::default()
        })
    };
    let tp = TopicPartition::new("t", 0);
    rt.block_on(async {
        client
            .ensure_topic("t", &TopicConfig::default())
            .await
            .unwrap();
        let committed = producer(&client, "committed", 60_000);
        committed.init_transactions().await.unwrap();
        committed.begin_transaction().unwrap();
        for i in 0..10 {
            let v = format!("c{i}");
            committed
                .send(ProducerRecord::new("t", v.as_bytes()))
                .await
                .unwrap();
        }
        committed.commit_transaction().await.unwrap();
        for (id, timeout) in [("reinit", 60_000), ("times-out", 3_000)] {
            let open = producer(&client, id, timeout);
            open.init_transactions().await.unwrap();
            open.begin_transaction().unwrap();
            for i in 0..5 {
                let v = format!("{id}{i}");
                open.send(ProducerRecord::new("t", v.as_bytes()))
                    .await
                    .unwrap();
            }
            open.flush().await.unwrap();
        }
    });
    broker.kill();
    let broker = crate::broker::BrokerProc::start_at(&data, &addr);
    let client = connect(&broker.addr);
    let committed: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    // Right after the restart: the committed records, nothing of the open transactions.
    let seen = rt.block_on(async {
        let mut c = client.consumer(ConsumerConfig::default());
        c.assign(vec![tp.clone()]).unwrap();
        c.seek(&tp, 0).unwrap();
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            for r in c.poll(Duration::from_millis(200)).await.unwrap() {
                seen.push(String::from_utf8(r.record.value.unwrap().to_vec()).unwrap());
            }
        }
        seen
    });
    assert_eq!(seen, committed, "read_committed right after the restart");
    // The re-initialising producer aborts its own leftover transaction; the other one is
    // aborted at its timeout. A read_committed reader reaches the end only once both are.
    rt.block_on(producer(&client, "reinit", 60_000).init_transactions())
        .unwrap();
    let all = rt
        .block_on(tokio::time::timeout(
            Duration::from_secs(30),
            runnel::rides::read_raw(&client, "t"),
        ))
        .expect("the last stable offset reached the end")
        .unwrap();
    let values: Vec<String> = all
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values, committed, "after both aborts");
}

/// confluent-kafka's consume-transform-produce loop (send_offsets_to_transaction) against
/// `runnel broker`, SIGKILLed at random moments five times and restarted, then run to the end:
/// each input's output exactly once.
#[test]
fn confluent_kafka_consume_transform_produce_through_sigkills() {
    use rand::{Rng, SeedableRng};
    use std::io::BufRead;
    let Some(py) = crate::broker::python("consume-transform-produce") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(dir.path());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/transactions.py");
    let n = "60000";
    let run = |mode: &str, extra: &[&str]| {
        let out = std::process::Command::new(&py)
            .arg(&script)
            .args([broker.addr.as_str(), "ctp", mode])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("ok "),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("ctp-setup", &[n]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(447);
    for kill in 0..5 {
        let mut child = std::process::Command::new(&py)
            .arg(&script)
            .args([broker.addr.as_str(), "ctp", "ctp-run"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Killed after its first committed transaction, at a random moment.
        while out.read_line(&mut line).unwrap() > 0 && !line.starts_with("committed") {
            assert!(!line.starts_with("ok"), "the loop ended before kill {kill}");
            line.clear();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..100)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    run("ctp-run", &[]);
    run("ctp-verify", &[n]);
}

/// Compaction of a topic written in transactions: an aborted value never wins over the
/// committed one before it and is dropped from the cleaned segments; the abort markers stay
/// (the aborted index still lists them).
#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_committed_values_and_drops_aborted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "state",
        TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let p = txn_producer(&log, "writer", Duration::from_secs(60));
    p.init_transactions().await.unwrap();
    for (round, commit) in [(0, true), (1, false), (2, true), (3, false)] {
        p.begin_transaction().unwrap();
        for k in 0..10 {
            let (key, value) = (format!("k{k}"), format!("v{round}-{k}-{}", "x".repeat(40)));
            drop(
                p.send(ProducerRecord::new("state", value.as_bytes()).key(key.as_bytes()))
                    .await
                    .unwrap(),
            );
        }
        if commit {
            p.commit_transaction().await.unwrap();
        } else {
            p.abort_transaction().await.unwrap();
        }
    }
    let latest = |values: Vec<String>| {
        let mut v: Vec<String> = values.into_iter().filter(|v| v.starts_with("v")).collect();
        v.sort();
        v
    };
    let (_, removed) = log.run_cleaner().unwrap();
    assert!(removed > 0, "compaction removed nothing");
    let after = latest(read(&log, "state", IsolationLevel::ReadCommitted, 10).await);
    let want: Vec<String> = (0..10)
        .map(|k| format!("v2-{k}-{}", "x".repeat(40)))
        .collect();
    assert_eq!(after, want, "the last committed value of each key");
    // Round 1 (aborted) lies in cleaned segments; round 3 (aborted) is in the active segment,
    // which compaction never touches (as in Kafka), so read_uncommitted still sees it.
    let everything = read(&log, "state", IsolationLevel::ReadUncommitted, 10).await;
    assert!(
        everything.iter().all(|v| !v.starts_with("v1")),
        "an aborted value survived compaction: {everything:?}"
    );
    let part = log.partition(&TopicPartition::new("state", 0)).unwrap();
    assert!(part.aborted_transactions(0, u64::MAX).len() >= 2);
}
