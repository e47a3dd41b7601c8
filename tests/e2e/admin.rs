//! Admin over the wire: `runnel --bootstrap ... topics create|list|describe|alter|delete` and
//! `groups list|describe` against a `runnel broker` child process, and confluent-kafka's
//! AdminClient (create_partitions, describe_configs, incremental_alter_configs,
//! describe_cluster, delete_records) and kafka-python's delete_group_offsets (OffsetDelete)
//! against the same broker.

use crate::broker::{BrokerProc, python, scenario};
use std::process::Output;

/// `runnel --bootstrap ADDR ARGS`, as `compression::runnel` runs it.
fn runnel(addr: &str, args: &[&str]) -> Output {
    let mut all = vec!["--bootstrap", addr];
    all.extend_from_slice(args);
    crate::compression::runnel(&all)
}

fn ok(addr: &str, args: &[&str]) -> String {
    let out = runnel(addr, args);
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails unless the command fails with one `error:` line containing every one of `words`.
fn fails_with(addr: &str, args: &[&str], words: &[&str]) {
    let out = runnel(addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "runnel {args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in words {
        assert!(
            stderr.contains(w),
            "runnel {args:?}: {w:?} not in: {stderr}"
        );
    }
}

/// The value of `key:` in `topics describe` output.
fn field<'a>(describe: &'a str, key: &str) -> &'a str {
    describe
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{describe}"))
        .trim()
}

#[test]
fn topics_and_groups_over_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(&dir.path().join("data"));
    let addr = broker.addr.as_str();

    // Producing to a missing topic says how to create it over --bootstrap.
    let input = dir.path().join("lines.txt");
    let lines: String = (0..300).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let file = input.to_str().unwrap();
    fails_with(
        addr,
        &["produce", "orders", "--file", file],
        &[&format!("runnel --bootstrap {addr} topics create orders")],
    );

    let created = ok(
        addr,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--compact",
        ],
    );
    assert!(
        created.contains("created topic orders with 3 partitions"),
        "{created}"
    );
    fails_with(addr, &["topics", "create", "orders"], &["already exists"]);
    ok(addr, &["topics", "create", "clicks", "--retention", "1h"]);
    let list = ok(addr, &["topics", "list"]);
    assert!(list.contains("orders") && list.contains("clicks"), "{list}");

    let keyed: String = (0..300)
        .map(|i| format!("{{\"k\":\"{}\",\"i\":{i}}}\n", i % 10))
        .collect();
    std::fs::write(&input, keyed).unwrap();
    ok(
        addr,
        &["produce", "orders", "--file", file, "--key-field", "k"],
    );
    let describe = ok(addr, &["topics", "describe", "orders"]);
    assert_eq!(field(&describe, "partitions"), "3", "{describe}");
    assert_eq!(field(&describe, "cleanup policy"), "compact", "{describe}");
    assert_eq!(field(&describe, "records"), "300", "{describe}");

    ok(addr, &["topics", "alter", "orders", "--partitions", "5"]);
    let altered = ok(
        addr,
        &[
            "topics",
            "alter",
            "orders",
            "--config",
            "max.message.bytes=2097152",
        ],
    );
    assert!(
        altered.contains("set max.message.bytes=2097152"),
        "{altered}"
    );
    let describe = ok(addr, &["topics", "describe", "orders"]);
    assert_eq!(field(&describe, "partitions"), "5", "{describe}");
    assert_eq!(
        field(&describe, "max message size"),
        "2.00 MiB",
        "{describe}"
    );
    fails_with(
        addr,
        &["topics", "alter", "orders", "--partitions", "2"],
        &["5 partitions"],
    );

    // A group that consumed everything: committed offsets at the end, no lag.
    let consumed = ok(
        addr,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "300",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(consumed.lines().count(), 300);
    let groups = ok(addr, &["groups", "list"]);
    assert!(groups.contains("billing"), "{groups}");
    let group = ok(addr, &["groups", "describe", "billing"]);
    let rows: Vec<&str> = group.lines().filter(|l| l.contains("orders")).collect();
    assert!(!rows.is_empty(), "{group}");
    let committed: u64 = rows
        .iter()
        .map(|r| {
            let cells: Vec<&str> = r
                .split_whitespace()
                .filter(|c| c.parse::<u64>().is_ok())
                .collect();
            assert_eq!(cells.len(), 4, "partition, committed, end, lag in {r:?}");
            assert_eq!(cells[1], cells[2], "committed at the end: {r:?}");
            assert_eq!(cells[3], "0", "no lag: {r:?}");
            cells[1].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(committed, 300, "{group}");
    fails_with(addr, &["groups", "describe", "nobody"], &["nobody"]);

    let deleted = ok(addr, &["topics", "delete", "clicks"]);
    assert!(deleted.contains("deleted topic clicks"), "{deleted}");
    let hint = format!("runnel --bootstrap {addr} topics create clicks");
    fails_with(
        addr,
        &["topics", "describe", "clicks"],
        &["does not exist", &hint],
    );
    fails_with(
        addr,
        &["consume", "clicks", "--timeout", "1s"],
        &["does not exist", &hint],
    );
    let list = ok(addr, &["topics", "list"]);
    assert!(!list.contains("clicks"), "{list}");
}

#[test]
fn confluent_kafka_admin_client_against_the_broker() {
    let Some(py) = python("confluent-kafka AdminClient") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProc::start(&data);
    scenario(&py, "confluent", "admin", &broker.addr, "administered", &[]);
    scenario(
        &py,
        "confluent",
        "delete-records",
        &broker.addr,
        "trimmed",
        &[],
    );
    broker.terminate();
    // The moved log start survives the restart: the deleted records stay deleted.
    let log = runnel::log::Log::open(&data).unwrap();
    let p = log
        .partition(&runnel::log::TopicPartition::new("trimmed", 0))
        .unwrap();
    assert_eq!((p.log_start_offset(), p.high_watermark()), (40, 100));
}

#[test]
fn kafka_python_deletes_group_offsets() {
    let Some(py) = python("kafka-python OffsetDelete") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProc::start(&dir.path().join("data"));
    scenario(
        &py,
        "kafka-python",
        "offset-delete",
        &broker.addr,
        "forgotten",
        &[],
    );
}
