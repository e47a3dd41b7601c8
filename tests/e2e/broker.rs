//! The broker against clients nobody here wrote (confluent-kafka, kafka-python, kcat), and the
//! wire-level contracts (unsupported versions answered, malformed frames close one connection,
//! pipelined requests answered in order).
//!
//! The Python clients come from a virtualenv (`RUNNEL_INTEROP_PYTHON`, default
//! `~/.cache/runnel-interop-venv/bin/python`, which `.ci/run` creates) and kcat from Debian.
//! When they are missing a test prints "skipped", unless `RUNNEL_REQUIRE_SERVICES=1`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `runnel broker` child process on a free port; killed (SIGKILL) when dropped.
pub struct BrokerProc {
    child: Child,
    pub addr: String,
    /// The rest of the broker's stdout (the metrics summary it prints when it stops).
    stdout: BufReader<std::process::ChildStdout>,
}

impl BrokerProc {
    pub fn start(dir: &Path) -> Self {
        Self::start_at(dir, "127.0.0.1:0")
    }

    /// On a given address, so that a restarted broker is where its clients reconnect.
    pub fn start_at(dir: &Path, listen: &str) -> Self {
        Self::start_with(dir, &["--listen", listen])
    }

    /// With more `runnel broker` flags (`--listen` among them); `addr` is the first listener's,
    /// without its `PROTOCOL://` prefix.
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(dir)
            .args(["broker", "--default-partitions", "3"])
            .args(args)
            .args(["--stats-interval", "0s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn runnel broker");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the broker: {line:?}"))
            .rsplit("://")
            .next()
            .expect("an address")
            .to_string();
        Self {
            child,
            addr,
            stdout,
        }
    }

    /// SIGTERM, and what the broker printed until it exited (its metrics summary).
    pub fn terminate(mut self) -> String {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        rest
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var("RUNNEL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The interop virtualenv's python, or `None` (after printing "skipped") when absent.
pub fn python(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("RUNNEL_INTEROP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/runnel-interop-venv/bin/python"))
        })
        .filter(|p| p.exists());
    if path.is_none() {
        assert!(
            !required(),
            "{test}: the interop virtualenv is missing (RUNNEL_REQUIRE_SERVICES=1); run .ci/run or set RUNNEL_INTEROP_PYTHON"
        );
        println!("{test}: skipped (no interop virtualenv with confluent-kafka and kafka-python)");
    }
    path
}

pub fn kcat(test: &str) -> bool {
    let ok = Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !required(),
            "{test}: kcat is missing (RUNNEL_REQUIRE_SERVICES=1)"
        );
        println!("{test}: skipped (kcat is not installed)");
    }
    ok
}

fn interop_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/interop.py")
}

/// Runs one interop scenario and asserts it printed "ok".
/// The longest an interop scenario may take: a client that hangs (kafka-python 3.0 was seen
/// spinning in `close` under load) fails its test instead of holding CI until it is killed.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

pub fn scenario(py: &Path, client: &str, name: &str, bootstrap: &str, topic: &str, args: &[&str]) {
    let mut child = Command::new(py)
        .arg(interop_script())
        .args([client, name, bootstrap, topic])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run interop.py");
    // Drained while it runs, so that a chatty client never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for interop.py") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("ok "),
        "{client} {name} failed{}:\n{stdout}\n{stderr}",
        if status.is_none() {
            format!(" (still running after {SCENARIO_LIMIT:?}: killed)")
        } else {
            String::new()
        }
    );
    println!("{}", stdout.trim());
}

fn roundtrip(client: &str) {
    let Some(py) = python(&format!("{client} roundtrip")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    scenario(
        &py,
        client,
        "roundtrip",
        &broker.addr,
        "roundtrip",
        &["100000"],
    );
}

fn group(client: &str) {
    let Some(py) = python(&format!("{client} group")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    scenario(&py, client, "group", &broker.addr, "grouped", &["20000"]);
}

#[test]
fn confluent_kafka_roundtrip_100k_idempotent_acks_all() {
    roundtrip("confluent");
}

#[test]
fn kafka_python_roundtrip_100k_idempotent_acks_all() {
    roundtrip("kafka-python");
}

#[test]
fn confluent_kafka_group_rebalance_commits_and_restart() {
    group("confluent");
}

#[test]
fn kafka_python_group_rebalance_commits_and_restart() {
    group("kafka-python");
}

#[test]
fn acknowledged_messages_survive_sigkill_of_the_broker() {
    let Some(py) = python("sigkill") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let acked = dir.path().join("acked.txt");
    let broker = BrokerProc::start(&dir.path().join("data"));
    let mut producer = Command::new(&py)
        .arg(interop_script())
        .args(["confluent", "produce-acked", &broker.addr, "durable"])
        .stdout(std::fs::File::create(&acked).unwrap())
        .spawn()
        .expect("run the producer");
    let started = Instant::now();
    let count = || {
        std::fs::read_to_string(&acked)
            .map(|s| s.lines().filter(|l| l.starts_with("acked ")).count())
            .unwrap_or(0)
    };
    while count() < 3000 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill();
    std::thread::sleep(Duration::from_millis(300));
    let _ = producer.kill();
    let _ = producer.wait();
    assert!(
        count() >= 3000,
        "only {} messages acknowledged in 60 s",
        count()
    );
    let broker = BrokerProc::start(&dir.path().join("data"));
    scenario(
        &py,
        "confluent",
        "verify-acked",
        &broker.addr,
        "durable",
        &[acked.to_str().unwrap()],
    );
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// librdkafka's idempotent producer keeps producing while the broker is killed with SIGKILL
/// and restarted three times on the same address: it retries what was in flight with the same
/// producer id and sequences, and the restarted broker, which rebuilt its producer state from
/// the log, drops the batches it had stored but not acknowledged. Every message is stored
/// exactly once.
#[test]
fn idempotent_producer_through_broker_restarts_stores_each_message_once() {
    let Some(py) = python("idempotent restarts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let out = dir.path().join("produced.txt");
    let n: usize = 40_000;
    let mut broker = BrokerProc::start_at(&data, &addr);
    let mut producer = Command::new(&py)
        .arg(interop_script())
        .args(["confluent", "produce-n", &addr, "restarts", &n.to_string()])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("run the producer");
    let acked = || {
        std::fs::read_to_string(&out)
            .map(|s| s.lines().filter(|l| l.starts_with("acked ")).count())
            .unwrap_or(0)
    };
    for round in 1..=3 {
        let started = Instant::now();
        while acked() < round * 8000 && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(acked() >= round * 8000, "only {} acknowledged", acked());
        broker.kill();
        broker = BrokerProc::start_at(&data, &addr);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = producer.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the producer did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        status.success() && text.contains("ok confluent"),
        "producer failed: {}",
        text.lines()
            .filter(|l| !l.starts_with("acked "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    scenario(
        &py,
        "confluent",
        "verify-exact",
        &broker.addr,
        "restarts",
        &[&n.to_string()],
    );
}

/// kafka-python opens fetch sessions (KIP-227) and fetches incrementally when the broker grants
/// them, through a rebalance (partitions leave and join its sessions): the group scenario's
/// checks (no gaps, no repeats, restart at the commits) still hold. librdkafka's numbers are
/// printed for the record.
#[test]
fn kafka_python_uses_incremental_fetch_sessions() {
    let Some(py) = python("fetch sessions") else {
        return;
    };
    let sessions = |client: &str| {
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerProc::start(dir.path());
        scenario(&py, client, "group", &broker.addr, "sessions", &["20000"]);
        let summary = broker.terminate();
        let line = summary
            .lines()
            .find(|l| l.starts_with("fetch sessions:"))
            .unwrap_or_else(|| panic!("no fetch-session line in {summary}"))
            .to_string();
        println!("{client}: {line}");
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    let (opened, incremental) = sessions("kafka-python");
    assert!(
        opened >= 1 && incremental >= 3,
        "kafka-python: {opened} sessions, {incremental} incremental fetches"
    );
    sessions("confluent");
}

/// librdkafka's admin `list_offsets` with `OffsetSpec.max_timestamp()` (ListOffsets v7,
/// timestamp -3), earliest, latest and by timestamp, and the consumer's `offsets_for_times`.
#[test]
fn confluent_kafka_list_offsets_max_timestamp_and_by_timestamp() {
    let Some(py) = python("list offsets") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    scenario(&py, "confluent", "list-offsets", &broker.addr, "times", &[]);
}

#[test]
fn kcat_lists_produces_and_consumes() {
    if !kcat("kcat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    let mut p = Command::new("kcat")
        .args(["-b", &broker.addr, "-P", "-t", "kc", "-K", ":"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..1000)
        .map(|i| format!("key{}:value{i}\n", i % 7))
        .collect();
    p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(p.wait().unwrap().success(), "kcat -P failed");

    let list = Command::new("kcat")
        .args(["-b", &broker.addr, "-L"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("topic \"kc\" with 3 partitions"),
        "kcat -L:\n{list}"
    );
    assert!(
        list.contains(&format!("broker 0 at {}", broker.addr)),
        "kcat -L:\n{list}"
    );

    let out = Command::new("kcat")
        .args([
            "-b",
            &broker.addr,
            "-C",
            "-t",
            "kc",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", "%k:%s\n"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    // Per key, the order is the produced order.
    for k in 0..7 {
        let key = format!("key{k}:");
        let have: Vec<&String> = got.iter().filter(|l| l.starts_with(&key)).collect();
        let want: Vec<String> = (0..1000)
            .filter(|i| i % 7 == k)
            .map(|i| format!("key{k}:value{i}"))
            .collect();
        assert_eq!(have, want.iter().collect::<Vec<_>>());
    }
    got.sort();
    assert_eq!(got.len(), 1000);
}

// ---- the wire, byte by byte ----

fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&api_key.to_be_bytes());
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&correlation_id.to_be_bytes());
    r.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    r.extend_from_slice(body);
    let mut framed = (r.len() as i32).to_be_bytes().to_vec();
    framed.extend(r);
    framed
}

fn response(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

#[test]
fn unsupported_versions_are_answered_and_pipelined_requests_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    let mut s = TcpStream::connect(&broker.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    all.extend(request(18, 0, 1, &[])); // ApiVersions v0
    all.extend(request(18, 99, 2, &[])); // ApiVersions at a version nobody has
    all.extend(request(999, 0, 3, &[])); // an API that does not exist
    all.extend(request(0, 1, 4, &[])); // Produce v1: below what Runnel serves
    all.extend(request(3, 0, 5, &0i32.to_be_bytes())); // Metadata v0, all topics
    s.write_all(&all).unwrap();
    let r1 = response(&mut s);
    assert_eq!(i32::from_be_bytes(r1[..4].try_into().unwrap()), 1);
    assert_eq!(i16_at(&r1, 4), 0, "ApiVersions v0 error code");
    let r2 = response(&mut s);
    assert_eq!(i32::from_be_bytes(r2[..4].try_into().unwrap()), 2);
    assert_eq!(
        i16_at(&r2, 4),
        35,
        "UNSUPPORTED_VERSION for ApiVersions v99"
    );
    assert!(
        i32::from_be_bytes(r2[6..10].try_into().unwrap()) > 10,
        "the v0 body lists our APIs"
    );
    let r3 = response(&mut s);
    assert_eq!(i32::from_be_bytes(r3[..4].try_into().unwrap()), 3);
    assert_eq!(i16_at(&r3, 4), 35);
    let r4 = response(&mut s);
    assert_eq!(i32::from_be_bytes(r4[..4].try_into().unwrap()), 4);
    assert_eq!(i16_at(&r4, 4), 35);
    let r5 = response(&mut s);
    assert_eq!(i32::from_be_bytes(r5[..4].try_into().unwrap()), 5);
}

#[test]
fn a_malformed_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(dir.path());
    let mut good = TcpStream::connect(&broker.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for garbage in [
        (-5i32).to_be_bytes().to_vec(), // negative size
        [0, 0, 0, 3, 1, 2, 3].to_vec(), // shorter than a header
        request(3, 9, 7, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // undecodable Metadata v9
        request(3, 1, 8, &0x7fff_ffffi32.to_be_bytes()), // 2^31 topics in 4 bytes
    ] {
        let mut bad = TcpStream::connect(&broker.addr).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        bad.write_all(&garbage).unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(bad.read(&mut buf), Ok(0) | Err(_)),
            "connection left open"
        );
    }
    good.write_all(&request(18, 0, 42, &[])).unwrap();
    let r = response(&mut good);
    assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), 42);
}

// ---- Runnel's own client against the broker ----

/// `runnel produce/consume --bootstrap` against `runnel broker`: every line back, per-key order
/// kept, and a group that resumes from its commits.
#[test]
fn cli_produce_and_consume_with_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(&dir.path().join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use runnel::log::LogClient;
        let client = runnel::broker::RemoteLog::connect(&broker.addr)
            .await
            .unwrap();
        let config = runnel::log::TopicConfig {
            partitions: 4,
            ..Default::default()
        };
        assert_eq!(client.ensure_topic("events", &config).await.unwrap(), 4);
    });
    let input = dir.path().join("events.jsonl");
    let lines: String = (0..10_000)
        .map(|i| format!("{{\"driver\":\"d{}\",\"seq\":{i}}}\n", i % 17))
        .collect();
    std::fs::write(&input, &lines).unwrap();
    let runnel = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["--bootstrap", &broker.addr])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runnel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    runnel(&[
        "produce",
        "events",
        "--file",
        input.to_str().unwrap(),
        "--key-field",
        "driver",
    ]);
    let out = runnel(&[
        "consume",
        "events",
        "--group",
        "g",
        "--from-beginning",
        "--format",
        "json",
        "--timeout",
        "3s",
    ]);
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let value: serde_json::Value = serde_json::from_str(v["value"].as_str().unwrap()).unwrap();
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(value["seq"].as_u64().unwrap());
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 10_000);
    for (key, seqs) in &per_key {
        let k: u64 = key[1..].parse().unwrap();
        let want: Vec<u64> = (0..10_000).filter(|i| i % 17 == k).collect();
        assert_eq!(seqs, &want, "order of key {key}");
    }
    // The group committed everything: a second run reads nothing.
    let again = runnel(&["consume", "events", "--group", "g", "--timeout", "2s"]);
    assert_eq!(again.lines().count(), 0);
    // Without the topic, a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "--bootstrap",
            &broker.addr,
            "consume",
            "missing",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// SIGTERM with a client still connected: the broker prints its metrics, closes the log cleanly
/// and exits at once (no wait for the client to go away).
#[test]
fn sigterm_prints_metrics_and_closes_the_log_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--stats-interval",
            "0s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use runnel::log::LogClient;
        let client = runnel::broker::RemoteLog::connect(&addr).await.unwrap();
        client
            .ensure_topic("t", &runnel::log::TopicConfig::default())
            .await
            .unwrap();
    });
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(&request(18, 0, 1, &[])).unwrap();
    response(&mut idle);
    let started = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("connections:") && rest.contains("CreateTopics"),
        "{rest}"
    );
    assert!(dir.path().join("t-0").join(".clean-shutdown").exists());
}

/// Runnel's own client rides out `runnel broker` being killed with SIGKILL and restarted
/// three times under a running producer and a group consumer: the producer's flushes all succeed
/// (retries with the same producer id and sequences, reconnects), the topic holds every record
/// exactly once (the restarted broker drops the retried copies it had stored), and the
/// consumer, which keeps polling through the restarts, sees every record.
#[test]
fn rust_client_reconnects_and_retries_through_broker_restarts() {
    use runnel::log::{ConsumerConfig, LogClient, OffsetReset, ProducerConfig, ProducerRecord};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let mut broker = BrokerProc::start_at(&data, &addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    const N: usize = 30_000;
    let flushed = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let client = rt.block_on(async {
        let client = runnel::broker::RemoteLog::connect(&addr).await.unwrap();
        let config = runnel::log::TopicConfig {
            partitions: 3,
            durability: runnel::log::Durability::Always,
            ..Default::default()
        };
        client.ensure_topic("restarts", &config).await.unwrap();
        client
    });
    let producer = rt.spawn({
        let client = client.clone();
        let flushed = flushed.clone();
        async move {
            let p = client.producer(ProducerConfig::default());
            for i in 0..N {
                let key = format!("k{}", i % 31);
                let value = i.to_string();
                p.send(ProducerRecord::new("restarts", value.as_bytes()).key(key.as_bytes()))
                    .await
                    .unwrap();
                if i % 100 == 99 {
                    // Small batches, each fsynced (`always`): a kill most likely lands
                    // between a batch's append and its answer.
                    p.flush().await.expect("a flush failed across a restart");
                    flushed.store(i + 1, Ordering::Relaxed);
                }
            }
            p.flush().await.expect("the last flush failed");
            flushed.store(N, Ordering::Relaxed);
        }
    });
    let consumer = rt.spawn({
        let client = client.clone();
        let consumed = consumed.clone();
        async move {
            let mut c = client.consumer(ConsumerConfig {
                group_id: Some("restarts".into()),
                auto_offset_reset: OffsetReset::Earliest,
                heartbeat_interval: Duration::from_millis(200),
                ..Default::default()
            });
            c.subscribe(&["restarts"]).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.len() < N && Instant::now() < deadline {
                for r in c
                    .poll(Duration::from_millis(300))
                    .await
                    .expect("poll failed")
                {
                    let v: usize = std::str::from_utf8(r.record.value.as_ref().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    seen.insert(v);
                }
                consumed.store(seen.len(), Ordering::Relaxed);
            }
            c.close().await.unwrap();
            seen.len()
        }
    });
    for at in [6_000, 12_000, 18_000] {
        let started = Instant::now();
        while flushed.load(Ordering::Relaxed) < at && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            flushed.load(Ordering::Relaxed) >= at,
            "the producer stalled"
        );
        std::thread::sleep(Duration::from_micros(300));
        broker.kill();
        std::thread::sleep(Duration::from_millis(300));
        broker = BrokerProc::start_at(&data, &addr);
    }
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), producer)
            .await
            .expect("the producer did not finish")
            .unwrap();
        let seen = consumer.await.unwrap();
        assert_eq!(seen, N, "the consumer missed records");
        // Each record once in the log: a fresh reader from the beginning.
        let mut c = client.consumer(ConsumerConfig::default());
        c.assign(
            (0..3)
                .map(|p| runnel::log::TopicPartition::new("restarts", p))
                .collect(),
        )
        .unwrap();
        c.seek_to_beginning();
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while counts.values().sum::<usize>() < N + 1000 && Instant::now() < deadline {
            let batch = c.poll(Duration::from_millis(500)).await.unwrap();
            if batch.is_empty() && counts.len() == N {
                break;
            }
            for r in batch {
                let v = std::str::from_utf8(r.record.value.as_ref().unwrap()).unwrap();
                *counts.entry(v.parse().unwrap()).or_default() += 1;
            }
        }
        let twice: Vec<_> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(counts.len(), N, "records missing from the log");
        assert!(
            twice.is_empty(),
            "{} records stored twice, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
    });
}
