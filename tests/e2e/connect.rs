//! The connector worker end to end: files → topic → file with dead letters and a restart that
//! resumes from the stored offsets; worker-file errors; a connector against a broker with
//! `--bootstrap`; databases. The REST API is in [`rest`].

use crate::support::wait_for;
use runnel::connectors::{ConnectorConfig, State, Worker};
use runnel::log::{Log, SharedLogClient};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(name: &str, props: serde_json::Value) -> ConnectorConfig {
    ConnectorConfig::from_json(Some(name), &props).unwrap()
}

fn write_lines(path: &Path, from: usize, to: usize) -> Vec<String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut good = Vec::new();
    for i in from..to {
        let line = if i % 100 == 37 {
            format!("{{\"id\": {i}, broken")
        } else {
            let l = format!("{{\"id\":{i},\"v\":\"x{i}\"}}");
            good.push(l.clone());
            l
        };
        writeln!(f, "{line}").unwrap();
    }
    good
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn file_to_topic_to_file_with_dead_letters_and_a_resuming_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let mut expected = write_lines(&input, 0, 5_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let start = |client: SharedLogClient| {
        let w = rt.block_on(Worker::new(client)).unwrap();
        let _g = rt.enter();
        w.create(config("in", serde_json::json!({
            "connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "lines",
            "format": "json", "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "dlq",
        })))
        .unwrap();
        w.create(config(
            "out",
            serde_json::json!({
                "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "file": output.to_str().unwrap(), "topics": "lines",
            }),
        ))
        .unwrap();
        w
    };
    let stored = |w: &Worker| {
        rt.block_on(w.offsets("in"))
            .unwrap()
            .first()
            .and_then(|(_, o)| o["position"].as_u64())
            .unwrap_or(0)
    };
    let worker = start(client.clone());
    wait_for("the first 5,000 lines", || {
        lines_of(&output).len() == expected.len()
    });
    let size = std::fs::metadata(&input).unwrap().len();
    wait_for("the source offset", || stored(&worker) == size);
    assert_eq!(lines_of(&output), expected, "every good record, in order");
    let dead = rt
        .block_on(runnel::rides::read_raw(&client, "dlq"))
        .unwrap();
    assert_eq!(dead.len(), 50, "every malformed line is a dead letter");
    let reason = dead[0]
        .headers
        .iter()
        .find(|h| h.key == "__connect.errors.exception.message")
        .and_then(|h| h.value.clone())
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reason).contains("in.jsonl:38: not JSON"),
        "{reason:?}"
    );
    assert_eq!(worker.status("in").unwrap().state, State::Running);

    // A new worker resumes where the stored offsets say: nothing twice, nothing missing.
    for name in ["in", "out"] {
        worker.delete(name).unwrap();
    }
    drop(worker);
    expected.extend(write_lines(&input, 5_000, 6_000));
    let worker = start(client.clone());
    let size = std::fs::metadata(&input).unwrap().len();
    wait_for(
        "the source's offset at the end and the sink caught up",
        || stored(&worker) == size && sink_caught_up(&rt, &client, "out", "lines"),
    );
    assert_eq!(lines_of(&output), expected);
    drop(worker);
}

/// One HTTP/1.1 request; returns the status and the JSON body (Null when empty).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    http_raw(
        addr,
        method,
        path,
        &body.map(|b| b.to_string()).unwrap_or_default(),
    )
}

/// [`http`] with a body as it is, JSON or not.
fn http_raw(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status: u16 = raw[9..12].parse().unwrap();
    let text = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_worker_file_with_an_unknown_key_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        "[[connector]]\nname = \"in\"\n\"connector.class\" = \"FileStreamSource\"\nfile = \"/tmp/x\"\ntopik = \"t\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("connect")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("worker.toml")
            && err.contains("unknown key \"topik\"")
            && err.contains("\"topic\""),
        "{err}"
    );
}

/// Stores `values` in `topic` (created with defaults if missing), in order, and waits until
/// they are durable.
fn produce<S: AsRef<str>>(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    topic: &str,
    values: &[S],
) {
    rt.block_on(async {
        client
            .ensure_topic(topic, &runnel::log::TopicConfig::default())
            .await
            .unwrap();
        let p = client.producer(Default::default());
        let records: Vec<runnel::log::ProducerRecord<'_>> = values
            .iter()
            .map(|v| runnel::log::ProducerRecord::new(topic, v.as_ref().as_bytes()))
            .collect();
        p.send_all(&records).await.unwrap();
        p.flush().await.unwrap();
    });
}

/// The offset the sink's consumer group committed on partition 0 of `topic` (0 if none).
fn committed(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    connector: &str,
    topic: &str,
) -> u64 {
    let tp = runnel::log::TopicPartition::new(topic, 0);
    rt.block_on(client.committed_offsets(&format!("connect-{connector}"), &[tp]))
        .unwrap()[0]
        .unwrap_or(0)
}

/// Whether the sink `connector`'s group has committed the end of every partition of `topic`:
/// what it wrote is then final until something new arrives (a check that holds where a pause
/// before asserting would let a late duplicate through).
fn sink_caught_up(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    connector: &str,
    topic: &str,
) -> bool {
    let partitions = rt
        .block_on(client.partition_count(topic))
        .unwrap()
        .unwrap_or(0);
    let tps: Vec<_> = (0..partitions)
        .map(|p| runnel::log::TopicPartition::new(topic, p))
        .collect();
    let ends = rt.block_on(client.end_offsets(&tps)).unwrap();
    let committed = rt
        .block_on(client.committed_offsets(&format!("connect-{connector}"), &tps))
        .unwrap();
    partitions > 0 && ends.iter().zip(committed).all(|(&end, c)| c == Some(end))
}

/// `runnel --bootstrap ADDR connect WORKER_FILE` with its REST API on a free port.
pub fn worker_over(addr: &str, worker_file: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["--bootstrap", addr, "connect", "--rest", "127.0.0.1:0"])
        .arg(worker_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runnel connect")
}

#[test]
fn a_file_source_over_a_broker_stores_what_the_embedded_log_stores() {
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("broker"));
    let input = dir.path().join("in.jsonl");
    let expected = write_lines(&input, 0, 2_000);
    let worker_file = dir.path().join("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"in\"\n\"connector.class\" = \"FileStreamSource\"\nfile = \"{}\"\ntopic = \"lines\"\nformat = \"json\"\n\"errors.tolerance\" = \"all\"\n",
            input.display()
        ),
    )
    .unwrap();
    let mut worker = worker_over(&broker.addr, &worker_file);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    let mut got = Vec::new();
    wait_for("the lines in the broker", || {
        got = rt
            .block_on(runnel::rides::read_raw(&client, "lines"))
            .unwrap_or_default();
        got.len() >= expected.len()
    });
    let _ = worker.kill();
    let _ = worker.wait();
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        values, expected,
        "the same records, in order, as the embedded test stores"
    );
}

/// KIP-618: a file source with `exactly.once.support = required` over `runnel broker`, its
/// worker SIGKILLed at random moments five times and then left to finish: the topic, read
/// committed, holds every line exactly once, in order.
#[test]
fn an_exactly_once_file_source_killed_repeatedly_stores_each_line_once() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("broker"));
    let input = dir.path().join("in.jsonl");
    let expected = write_lines(&input, 0, 100_000);
    let worker_file = dir.path().join("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"in\"\n\"connector.class\" = \"FileStreamSource\"\nfile = \"{}\"\ntopic = \"lines\"\nformat = \"json\"\n\"errors.tolerance\" = \"all\"\n\"exactly.once.support\" = \"required\"\n\"batch.max.lines\" = 500\n",
            input.display()
        ),
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args([
                "--bootstrap",
                &broker.addr,
                "connect",
                "--rest",
                "127.0.0.1:0",
            ])
            .arg(&worker_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(618);
    for _ in 0..5 {
        let mut worker = spawn();
        // A random moment of the copy (the kill, not an assertion, waits on the clock).
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    let mut worker = spawn();
    let mut got = Vec::new();
    wait_for("every line in the broker", || {
        got = rt
            .block_on(runnel::rides::read_raw(&client, "lines"))
            .unwrap_or_default();
        got.len() >= expected.len()
    });
    let _ = worker.kill();
    let _ = worker.wait();
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values.len(), expected.len(), "no line twice, none missing");
    assert!(values == expected, "the lines, in order, once each");
}

/// Exactly-once into files: an exactly-once file source → topic → file sink that commits by
/// renaming its offsets sidecar and rotates every ~1 MiB; the worker SIGKILLed five times at
/// random moments, then left to finish: the rotated files and the current one, in order, hold
/// every line once.
#[test]
fn an_exactly_once_file_sink_through_sigkills_writes_each_line_once() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let lines: Vec<String> = (0..600_000)
        .map(|i| format!("line {i:06} of the input"))
        .collect();
    // The input grows by a sixth after each kill (the source tails it), so that every kill
    // falls before the copy's end however fast the sink is.
    let sixths: Vec<String> = lines.chunks(100_000).map(|c| c.join("\n") + "\n").collect();
    std::fs::write(&input, &sixths[0]).unwrap();
    let out = dir.path().join("out.txt");
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        format!(
            r#"[[connector]]
name = "in"
"connector.class" = "FileStreamSource"
file = "{}"
topic = "lines"
"batch.max.lines" = 500
"exactly.once.support" = "required"

[[connector]]
name = "out"
"connector.class" = "FileStreamSink"
file = "{}"
topics = "lines"
"rotate.size.bytes" = 1048576
"exactly.once.support" = "required"
"#,
            input.display(),
            out.display()
        ),
    )
    .unwrap();
    let written = || -> Vec<String> {
        let mut rotated: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("out.txt.")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        rotated.sort();
        let mut all = Vec::new();
        for (_, p) in rotated {
            all.extend(lines_of(&p));
        }
        all.extend(lines_of(&out));
        all
    };
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["connect", "--rest", "127.0.0.1:0"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut kills = 0;
    while kills < 5 {
        let mut worker = spawn();
        let before = written().len();
        wait_for("lines to arrive", || written().len() > before);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..100)));
        worker.kill().unwrap();
        worker.wait().unwrap();
        assert!(
            written().len() < lines.len(),
            "the copy ended before it was killed 5 times ({kills})"
        );
        kills += 1;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        std::io::Write::write_all(&mut f, sixths[kills].as_bytes()).unwrap();
    }
    let mut worker = spawn();
    wait_for("every line", || written().len() >= lines.len());
    let _ = worker.kill();
    let _ = worker.wait();
    let got = written();
    assert_eq!(got.len(), lines.len(), "no line twice, none missing");
    assert!(got == lines, "the lines in order");
}

/// The database at `env` (default `default`), or `None` (the test is skipped) when it is not
/// reachable and `RUNNEL_REQUIRE_SERVICES` is not set.
fn database(env: &str, default: &str) -> Option<String> {
    let url = std::env::var(env).unwrap_or_else(|_| default.to_string());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reachable = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            runnel::connectors::jdbc::connect(&url),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    });
    if reachable {
        return Some(url);
    }
    assert!(
        std::env::var("RUNNEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{url} is not reachable and RUNNEL_REQUIRE_SERVICES=1"
    );
    eprintln!("skipped: {url} is not reachable (set {env})");
    None
}

fn count_rows(url: &str, table: &str) -> i64 {
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let d = runnel::connectors::jdbc::Dialect::of(url).unwrap();
        // One short connection, closed before returning: polling must not pile up sessions.
        let Ok(mut conn) = sqlx::AnyConnection::connect(url).await else {
            return -1;
        };
        let n = sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {}", d.quote(table)))
            .fetch_one(&mut conn)
            .await
            .unwrap_or(-1);
        let _ = conn.close().await;
        n
    })
}

/// `SELECT COUNT(*)` and `COUNT(DISTINCT id)` of `table`.
fn count_distinct_ids(url: &str, table: &str) -> (i64, i64) {
    let count = count_rows(url, table);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let distinct = rt.block_on(async {
        let pool = runnel::connectors::jdbc::connect(url).await.unwrap();
        let d = runnel::connectors::jdbc::Dialect::of(url).unwrap();
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT COUNT(DISTINCT id) FROM {}",
            d.quote(table)
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
    });
    (count, distinct)
}

/// Lines → exactly-once file source → topic (in `runnel broker`) → JDBC sink in `insert` mode
/// (no key: a repeated record would be a second row) with its offsets in the database; the
/// worker SIGKILLed five times at random moments, then left to finish: every row exactly once.
/// Then the consumer group is rewound to 0, as a crash between the database's commit and the
/// group's would leave it: the sink resumes from its own offsets and writes nothing twice.
fn exactly_once_into(url: &str, lines: usize) {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("broker"));
    let table = format!("eos_{}_{}", std::process::id(), rand_suffix());
    drop_table(url, &table);
    let input = dir.path().join("in.jsonl");
    // The input grows by a sixth after each kill (the source tails it), so that every kill
    // falls before the copy's end however fast the sink is.
    let sixth = lines / 6;
    json_lines(&input, 1..=sixth);
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        format!(
            r#"[[connector]]
name = "in"
"connector.class" = "FileStreamSource"
file = "{}"
topic = "{table}"
format = "json"
"batch.max.lines" = 1000
"exactly.once.support" = "required"

[[connector]]
name = "to-db"
"connector.class" = "JdbcSinkConnector"
"connection.url" = "{url}"
topics = "{table}"
"insert.mode" = "insert"
"auto.create" = true
"exactly.once.support" = "required"
"#,
            input.display()
        ),
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["--bootstrap", &broker.addr])
            .args(["connect", "--rest", "127.0.0.1:0"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut seen = Vec::new();
    for kill in 0..5 {
        let mut worker = spawn();
        let before = count_rows(url, &table).max(0);
        // Killed once it made progress, at a random moment after that.
        wait_for(
            &format!("rows to arrive after {kill} kills ({seen:?})"),
            || count_rows(url, &table) > before,
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..50)));
        worker.kill().unwrap();
        worker.wait().unwrap();
        seen.push(count_rows(url, &table));
        assert!(
            seen[kill] < lines as i64,
            "the copy ended before it was killed 5 times ({seen:?})"
        );
        let last = if kill == 4 { lines } else { (kill + 2) * sixth };
        json_lines(&input, (kill + 1) * sixth + 1..=last);
    }
    let mut worker = spawn();
    wait_for("every row", || count_rows(url, &table) >= lines as i64);
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        count_distinct_ids(url, &table),
        (lines as i64, lines as i64),
        "every row once (rows after each kill: {seen:?})"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    let tp = runnel::log::TopicPartition::new(&table, 0);
    let group = "connect-to-db";
    rt.block_on(async {
        let mut c = client.consumer(runnel::log::ConsumerConfig {
            group_id: Some(group.into()),
            enable_auto_commit: false,
            ..Default::default()
        });
        c.assign(vec![tp.clone()]).unwrap();
        c.commit_offsets(vec![(tp.clone(), 0)]).await.unwrap();
    });
    let mut worker = spawn();
    // The group moves on from 0 once the sink commits where it stands.
    wait_for("the sink to take up its offsets again", || {
        rt.block_on(client.committed_offsets(group, std::slice::from_ref(&tp)))
            .unwrap()[0]
            .is_some_and(|o| o > 0)
    });
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        count_distinct_ids(url, &table),
        (lines as i64, lines as i64),
        "every row once after the group was rewound"
    );
    drop_table(url, &table);
}

#[test]
fn exactly_once_into_postgresql_through_sigkills() {
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        exactly_once_into(&url, 200_000);
    }
}

#[test]
fn exactly_once_into_mariadb_through_sigkills() {
    if let Some(url) = database("RUNNEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        exactly_once_into(&url, 200_000);
    }
}

fn drop_table(url: &str, table: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = runnel::connectors::jdbc::connect(url).await.unwrap();
        let d = runnel::connectors::jdbc::Dialect::of(url).unwrap();
        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {}", d.quote(table)))
            .execute(&pool)
            .await;
    })
}

/// Lines → file source → topic → upsert sink (twice the same records: still one row each)
/// → incrementing source → topic → file sink: the output file holds the same records.
fn round_trip_through(url: &str, lines: usize) {
    let dir = tempfile::tempdir().unwrap();
    let table = format!("rt_{}_{}", std::process::id(), rand_suffix());
    drop_table(url, &table);
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let mut f = std::fs::File::create(&input).unwrap();
    let mut expected = Vec::new();
    for i in 1..=lines {
        let line = format!(
            "{{\"id\":{i},\"name\":\"n{i}\",\"score\":{}.5,\"ok\":{}}}",
            i % 97,
            i % 2 == 0
        );
        writeln!(f, "{line}").unwrap();
        expected.push(i as i64);
    }
    drop(f);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let input_s = input.to_str().unwrap();
    worker.create(config("in", serde_json::json!({"connector.class": "FileStreamSource", "file": input_s, "topic": table, "format": "json"}))).unwrap();
    // The same lines again, so the upsert sink sees every key twice.
    worker.create(config("in-again", serde_json::json!({"connector.class": "FileStreamSource", "file": input_s, "topic": table, "format": "json"}))).unwrap();
    worker.create(config("to-db", serde_json::json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector", "connection.url": url, "topics": table,
        "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id", "auto.create": "true",
    }))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while count_rows(url, &table) != lines as i64 {
        std::thread::sleep(Duration::from_millis(200));
        let statuses: Vec<_> = worker
            .names()
            .iter()
            .map(|n| (n.clone(), worker.status(n).unwrap()))
            .collect();
        let rows = count_rows(url, &table);
        assert!(
            Instant::now() < deadline,
            "timed out with {rows} rows in the table: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.create(config("from-db", serde_json::json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector", "connection.url": url, "mode": "incrementing",
        "incrementing.column.name": "id", "table.whitelist": table, "topic.prefix": "db-", "poll.interval.ms": "200",
    }))).unwrap();
    worker.create(config("out", serde_json::json!({"connector.class": "FileStreamSink", "file": output.to_str().unwrap(), "topics": format!("db-{table}")}))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines_of(&output).len() < lines {
        let statuses: Vec<_> = worker
            .names()
            .iter()
            .map(|n| (n.clone(), worker.status(n).unwrap()))
            .collect();
        let n = lines_of(&output).len();
        assert!(
            Instant::now() < deadline,
            "timed out with {n} lines in the output file: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(
        "the file sink caught up with the database's records",
        || sink_caught_up(&rt, &client, "out", &format!("db-{table}")),
    );
    let got: Vec<serde_json::Value> = lines_of(&output)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        got.iter()
            .map(|v| v["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(got[6]["name"], "n7");
    assert_eq!(
        count_rows(url, &table),
        lines as i64,
        "the replayed records did not add rows"
    );
    for name in worker.names() {
        worker.delete(&name).unwrap();
    }
    drop_table(url, &table);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn round_trip_through_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
    round_trip_through(&url, 5_000);
}

#[test]
fn round_trip_through_postgresql() {
    // Before the reachability check: another test may have the server stopped.
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        round_trip_through(&url, 100_000);
    }
}

#[test]
fn round_trip_through_mariadb() {
    if let Some(url) = database("RUNNEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        round_trip_through(&url, 20_000);
    }
}

/// PostgreSQL tests run one at a time: one of them stops the server.
static POSTGRES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

/// Starts PostgreSQL again even if the test fails while it is stopped.
struct RestartPostgres;

impl Drop for RestartPostgres {
    fn drop(&mut self) {
        pg_ctl("start");
    }
}

fn worker_file(dir: &Path, input: &Path, url: &str, table: &str) -> std::path::PathBuf {
    let file = dir.join("worker.toml");
    std::fs::write(
        &file,
        format!(
            r#"[[connector]]
name = "in"
"connector.class" = "FileStreamSource"
file = "{}"
topic = "{table}"
format = "json"

[[connector]]
name = "to-db"
"connector.class" = "JdbcSinkConnector"
"connection.url" = "{url}"
topics = "{table}"
"insert.mode" = "upsert"
"pk.mode" = "record_value"
"pk.fields" = "id"
"auto.create" = true
"batch.size" = 200
"#,
            input.display()
        ),
    )
    .unwrap();
    file
}

/// Appends the JSON lines of ids `ids` to `path` (created if missing).
fn json_lines(path: &Path, ids: std::ops::RangeInclusive<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in ids {
        writeln!(f, "{{\"id\":{i},\"v\":\"row {i}\"}}").unwrap();
    }
}

#[test]
fn a_killed_worker_restarts_without_losing_or_duplicating_rows() {
    // Before the reachability check: another test may have the server stopped.
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = format!("kill_{}_{}", std::process::id(), rand_suffix());
    drop_table(&url, &table);
    let input = dir.path().join("in.jsonl");
    let n = 100_000;
    json_lines(&input, 1..=n);
    let file = worker_file(dir.path(), &input, &url, &table);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["connect", "--rest", "127.0.0.1:0"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut worker = spawn();
    wait_for("some rows", || count_rows(&url, &table) > 0);
    worker.kill().unwrap(); // SIGKILL, mid-stream
    worker.wait().unwrap();
    let before = count_rows(&url, &table);
    let mut worker = spawn();
    wait_for("every row", || count_rows(&url, &table) == n as i64);
    // Once the worker is gone (and the server dropped its connection, with any transaction
    // it had open) the table changes no more: the count below is final.
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        count_rows(&url, &table),
        n as i64,
        "no row missing, none twice (killed at {before})"
    );
    drop_table(&url, &table);
}

#[test]
fn the_sink_rides_out_a_postgresql_outage() {
    // Before the reachability check: another test may have the server stopped.
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = format!("outage_{}_{}", std::process::id(), rand_suffix());
    drop_table(&url, &table);
    let input = dir.path().join("in.jsonl");
    let n = 50_000;
    json_lines(&input, 1..=n / 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client)).unwrap();
    let _g = rt.enter();
    for c in runnel::connectors::workerfile::parse(
        "worker.toml",
        &std::fs::read_to_string(worker_file(dir.path(), &input, &url, &table)).unwrap(),
    )
    .unwrap()
    {
        worker.create(c).unwrap();
    }
    wait_for("some rows", || count_rows(&url, &table) > 0);
    {
        let _restart = RestartPostgres;
        pg_ctl("stop");
        // Rows that arrive during the outage: the sink fails on them even if it wrote the
        // first half before the server stopped.
        json_lines(&input, n / 2 + 1..=n);
        wait_for("the outage in the sink's status", || {
            let s = worker.status("to-db").unwrap();
            s.state == State::Failed && s.trace.as_deref().is_some_and(|t| t.contains("database"))
        });
        // The outage lasts until a restart of the sink failed on it too.
        wait_for("a restart failed by the outage", || {
            let s = worker.status("to-db").unwrap();
            s.restarts >= 1 && s.state == State::Failed
        });
    } // PostgreSQL starts again here.
    wait_for("every row after the outage", || {
        count_rows(&url, &table) == n as i64
    });
    let s = worker.status("to-db").unwrap();
    assert!(s.restarts >= 1, "{s:?}");
    wait_for("RUNNING again", || {
        worker.status("to-db").unwrap().state == State::Running
    });
    for name in worker.names() {
        worker.delete(&name).unwrap();
    }
    drop_table(&url, &table);
}

#[test]
fn transforms_reshape_and_route_source_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\":1,\"secret\":\"s\",\"card\":\"4111\"}\n{\"id\":2,\"secret\":\"t\",\"card\":\"5500\"}\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker
        .create(config("in", serde_json::json!({
            "connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "raw-payments",
            "transforms": "tag,drop,mask,key,route",
            "transforms.tag.type": "org.apache.kafka.connect.transforms.InsertField$Value",
            "transforms.tag.static.field": "origin", "transforms.tag.static.value": "file",
            "transforms.drop.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
            "transforms.drop.exclude": "secret",
            "transforms.mask.type": "org.apache.kafka.connect.transforms.MaskField$Value",
            "transforms.mask.fields": "card",
            "transforms.key.type": "org.apache.kafka.connect.transforms.ValueToKey",
            "transforms.key.fields": "id",
            "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": "raw-(.*)", "transforms.route.replacement": "$1",
        })))
        .unwrap();
    let mut got = Vec::new();
    wait_for("the transformed records", || {
        got = rt
            .block_on(runnel::rides::read_raw(&client, "payments"))
            .unwrap_or_default();
        got.len() == 2
    });
    let v: serde_json::Value = serde_json::from_slice(got[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": 1, "card": "", "origin": "file"})
    );
    assert_eq!(got[1].key.as_deref(), Some(&br#"{"id":2}"#[..]));
    worker.delete("in").unwrap();
}

mod convert;
mod distributed;
mod files;
mod full_disk;
mod jdbc_modes;
mod parquet;
mod rest;
mod tasks;
