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

#[test]
fn flipped_middle_segment_stops_reads_with_a_precise_error() {
    let dir = filled_log();
    let middle = {
        let log = Log::open(dir.path()).unwrap();
        let p = log.partition(&TopicPartition::new("c", 0)).unwrap();
        let files = segment_files(&p);
        assert!(files.len() >= 4, "test needs several segments");
        files[files.len() / 2].clone()
    };
    flip(&middle, 2);
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
