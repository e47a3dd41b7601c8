//! Corruption: bytes flipped in the tail are truncated on open; bytes flipped in a middle
//! segment make reads stop there with an error naming topic, partition, segment and offset —
//! never a wrong record.

use crate::support::{batch_of, read_all, segment_files};
use runnel_log::{Log, LogError, TopicConfig, TopicPartition};
use std::os::unix::fs::FileExt;

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:06}-{}", "z".repeat((i % 50) as usize)).into_bytes()
}

/// 200 single-record batches in 1 KiB segments; returns the directory.
fn filled_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "c",
        TopicConfig {
            segment_bytes: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
    for i in 0..200 {
        p.append(batch_of(&[(None, Some(value(i)), 1)])).unwrap();
    }
    dir
}

fn flip(path: &std::path::Path, at_from_end: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8];
    f.read_exact_at(&mut b, len - at_from_end).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, len - at_from_end).unwrap();
}

#[test]
fn flipped_tail_is_truncated_and_appends_continue() {
    for clean_shutdown in [true, false] {
        let dir = filled_log();
        let tail = {
            let log = Log::open(dir.path()).unwrap();
            let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
            segment_files(&p).pop().unwrap()
        };
        if !clean_shutdown {
            let marker = tail.parent().unwrap().join(".clean-shutdown");
            std::fs::remove_file(marker).unwrap();
        }
        flip(&tail, 3); // inside the last record's value
        let log = Log::open(dir.path()).unwrap();
        let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
        assert_eq!(p.high_watermark(), 199, "the corrupt last batch was cut");
        let recs = read_all(&p, 0).unwrap();
        assert_eq!(recs.len(), 199);
        assert!(
            recs.iter()
                .all(|r| r.value.as_deref() == Some(&value(r.offset)[..]))
        );
        assert_eq!(
            p.append(batch_of(&[(None, Some(b"after".to_vec()), 1)]))
                .unwrap(),
            199
        );
    }
}

/// Flips a byte inside the last record of a middle segment; returns that segment's path.
fn corrupt_middle_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let middle = {
        let log = Log::open(dir).unwrap();
        let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
        let files = segment_files(&p);
        assert!(files.len() >= 4, "test needs several segments");
        files[files.len() / 2].clone()
    };
    flip(&middle, 2);
    middle
}

#[test]
fn flipped_middle_segment_stops_reads_with_a_precise_error() {
    let dir = filled_log();
    let middle = corrupt_middle_segment(dir.path());
    let log = Log::open(dir.path()).unwrap();
    let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
    assert_eq!(
        p.high_watermark(),
        200,
        "a middle segment is never truncated"
    );
    let mut offset = 0;
    let err = loop {
        match p.read(offset, 512) {
            Ok(f) => {
                for b in runnel_log::batch::split_batches(&f.batches) {
                    for r in runnel_log::batch::records(&b).unwrap() {
                        assert_eq!(
                            r.value.as_deref(),
                            Some(&value(r.offset)[..]),
                            "wrong record served"
                        );
                    }
                }
                assert!(f.next_offset > offset, "reads must make progress or fail");
                offset = f.next_offset;
            }
            Err(e) => break e,
        }
    };
    let LogError::Corrupt {
        topic,
        partition,
        segment,
        offset: bad,
        ..
    } = &err
    else {
        panic!("expected a corruption error, got {err}");
    };
    assert_eq!((topic.as_str(), *partition), ("c", 0));
    assert_eq!(segment, &middle);
    assert_eq!(
        *bad, offset,
        "the error names the offset where reading stopped"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("c-0") && msg.contains(&middle.display().to_string()),
        "{msg}"
    );
    // Reading past the damage still works.
    let later = read_all(&p, offset + 1).unwrap();
    assert_eq!(later.len() as u64, 199 - offset);
}

/// The broker sends batches from its files without checking their CRCs, as Kafka's does; the
/// Rust client's consumer checks them (Kafka's `check.crcs`): the records before the damage
/// arrive, then `poll` fails naming the partition and the offset — never a wrong record.
#[test]
fn a_consumer_through_the_broker_stops_at_a_corrupt_batch_naming_its_offset() {
    use runnel::broker::{Broker, BrokerConfig, RemoteLog};
    use runnel_log::{ConsumerConfig, LogClient};
    let dir = filled_log();
    corrupt_middle_segment(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = Log::open(dir.path()).unwrap();
        let config = BrokerConfig {
            listeners: vec![runnel::broker::Listener::plaintext("127.0.0.1:0")],
            ..Default::default()
        };
        let broker = Broker::bind(log, config).await.unwrap();
        let addr = broker.local_addr().to_string();
        let server = tokio::spawn(broker.serve());
        let client = RemoteLog::connect(&addr).await.unwrap();
        let mut consumer = client.consumer(ConsumerConfig {
            enable_auto_commit: false,
            ..Default::default()
        });
        consumer.assign(vec![TopicPartition::new("c", 0)]).unwrap();
        consumer.seek_to_beginning();
        let mut next = 0;
        let err = loop {
            match consumer.poll(std::time::Duration::from_secs(5)).await {
                Ok(records) => {
                    assert!(!records.is_empty(), "nothing after offset {next}");
                    for r in records {
                        assert_eq!(r.record.offset, next);
                        assert_eq!(r.record.value.as_deref(), Some(&value(next)[..]));
                        next += 1;
                    }
                }
                Err(e) => break e,
            }
        };
        assert!(next > 0 && next < 199, "stopped at {next}");
        let msg = err.to_string();
        assert!(
            msg.contains("c-0") && msg.contains(&format!("offset {next}")),
            "{msg}"
        );
        server.abort();
    });
}

#[test]
fn data_left_by_an_interrupted_delete_is_not_adopted() {
    let dir = filled_log();
    // A crash after the config went but before the data did (the old order) leaves this.
    std::fs::remove_file(dir.path().join(".runnel/topics/c.json")).unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert!(log.topic("c").is_err());
    log.create_topic("c", TopicConfig::default()).unwrap();
    let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
    assert_eq!(
        (p.log_start_offset(), p.high_watermark()),
        (0, 0),
        "the new topic starts empty"
    );
    assert_eq!(
        p.append(batch_of(&[(None, Some(b"new".to_vec()), 1)]))
            .unwrap(),
        0
    );
}
