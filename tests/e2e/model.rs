//! Property test: random sequences of appends, reads, reopens and retention agree with a
//! simple in-memory model of the log (a vector of records per partition).

use crate::support::{batch_of, read_all, set_segment_mtimes};
use proptest::prelude::*;
use runnel_log::{Clock, Durability, Log, LogOptions, TopicConfig, TopicPartition};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        values: Vec<Vec<u8>>,
        keyed: bool,
    },
    Read {
        partition: u32,
        at: f64,
    },
    Reopen,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..2, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20), any::<bool>())
            .prop_map(|(partition, values, keyed)| Op::Append { partition, values, keyed }),
        3 => (0u32..2, 0.0f64..1.0).prop_map(|(partition, at)| Op::Read { partition, at }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retention),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Always),
        Just(Durability::Interval),
        Just(Durability::Os)
    ]
}

const SEGMENT_BYTES: u64 = 4096;
const RETENTION_BYTES: u64 = 12 * 1024;

fn open(dir: &std::path::Path) -> Log {
    open_on(dir, Clock::system())
}

/// A log whose time-based behaviour (segment ageing, retention) reads `clock`.
fn open_on(dir: &std::path::Path, clock: Clock) -> Log {
    Log::open_with(
        dir,
        LogOptions {
            cleaner_interval: Duration::from_secs(3600),
            clock,
            ..LogOptions::default()
        },
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..60), durability in durability()) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.create_topic("t", TopicConfig {
            partitions: 2,
            segment_bytes: SEGMENT_BYTES,
            retention_ms: None,
            retention_bytes: Some(RETENTION_BYTES),
            durability,
            ..Default::default()
        }).unwrap();
        // model[p] = every value ever appended; start[p] = first offset still in the log.
        let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        let mut start = [0u64; 2];
        for op in ops {
            match op {
                Op::Append { partition, values, keyed } => {
                    let p = log.partition(&TopicPartition::new("t", partition)).unwrap();
                    let recs: Vec<_> = values.iter().enumerate()
                        .map(|(i, v)| (keyed.then(|| format!("k{i}").into_bytes()), Some(v.clone()), 1_000 + i as i64))
                        .collect();
                    let base = p.append(batch_of(&recs)).unwrap();
                    prop_assert_eq!(base, model[partition as usize].len() as u64, "offsets are dense");
                    model[partition as usize].extend(values);
                }
                Op::Read { partition, at } => {
                    let m = &model[partition as usize];
                    let s = start[partition as usize];
                    let from = s + ((m.len() as u64 - s) as f64 * at) as u64;
                    let p = log.partition(&TopicPartition::new("t", partition)).unwrap();
                    let got = read_all(&p, from).unwrap();
                    prop_assert_eq!(got.len() as u64, m.len() as u64 - from);
                    for r in got {
                        prop_assert_eq!(r.value.as_deref(), Some(&m[r.offset as usize][..]));
                    }
                    // The file range the broker sends holds exactly what a read returns.
                    let max_bytes = 1 + (at * 6000.0) as usize;
                    let read = p.read(from, max_bytes).unwrap();
                    let located = p
                        .locate(from, max_bytes, runnel_log::IsolationLevel::ReadUncommitted)
                        .unwrap();
                    prop_assert_eq!(located.next_offset, read.next_offset);
                    let sent = located.batches.map(|r| r.read().unwrap()).unwrap_or_default();
                    prop_assert_eq!(sent, read.batches);
                }
                Op::Reopen => {
                    drop(log);
                    log = open(dir.path());
                }
                Op::Retention => {
                    log.run_cleaner().unwrap();
                    for (i, m) in model.iter().enumerate() {
                        let p = log.partition(&TopicPartition::new("t", i as u32)).unwrap();
                        let st = p.stats();
                        prop_assert!(st.start_offset >= start[i], "log start never moves back");
                        start[i] = st.start_offset;
                        prop_assert_eq!(st.end_offset, m.len() as u64);
                        // Deleted enough: what remains fits the limit plus one segment (the active one).
                        prop_assert!(st.size_bytes <= RETENTION_BYTES + SEGMENT_BYTES + 8 * 1024,
                            "size {} after retention", st.size_bytes);
                    }
                }
            }
        }
        // Finally everything still in the log is an exact suffix of the model.
        for (i, m) in model.iter().enumerate() {
            let p = log.partition(&TopicPartition::new("t", i as u32)).unwrap();
            let s = p.log_start_offset();
            prop_assert!(s >= start[i]);
            let got = read_all(&p, s).unwrap();
            prop_assert_eq!(got.len() as u64, m.len() as u64 - s);
            for r in got {
                prop_assert_eq!(r.value.as_deref(), Some(&m[r.offset as usize][..]));
            }
        }
    }
}

#[test]
fn time_retention_deletes_only_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig {
        segment_bytes: 2048,
        retention_ms: Some(3_600_000),
        ..Default::default()
    };
    let now = runnel_log::types::now_ms();
    let old = now - 2 * 3_600_000;
    {
        let log = open(dir.path());
        log.create_topic("t", config.clone()).unwrap();
        let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
        for _ in 0..20 {
            p.append(batch_of(&[(None, Some(vec![b'x'; 200]), old)]))
                .unwrap();
        }
    }
    // Written two hours ago, too: the files say so after a restart.
    set_segment_mtimes(dir.path(), old);
    let log = open(dir.path());
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    for _ in 0..20 {
        p.append(batch_of(&[(None, Some(vec![b'x'; 200]), now)]))
            .unwrap();
    }
    let (deleted, _) = log.run_cleaner().unwrap();
    assert!(deleted > 0, "expired segments were deleted");
    let start = p.log_start_offset();
    assert!(
        start > 0 && start <= 20,
        "log start {start}: only expired data goes"
    );
    let rest = read_all(&p, start).unwrap();
    assert_eq!(rest.len() as u64, 40 - start);
    assert!(
        rest.iter()
            .filter(|r| r.offset >= 20)
            .all(|r| r.timestamp == now)
    );
}

/// Records with event times older than `retention.ms` (a replay of last year's events) stay
/// `retention.ms` after they were written: retention counts from the later of the two.
#[test]
fn time_retention_keeps_old_records_written_recently() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(runnel_log::types::now_ms());
    let log = open_on(dir.path(), clock.clone());
    log.create_topic(
        "t",
        TopicConfig {
            segment_bytes: 2048,
            retention_ms: Some(3_600_000),
            ..Default::default()
        },
    )
    .unwrap();
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    let last_year = clock.now_ms() - 365 * 24 * 3_600_000;
    for i in 0..40 {
        p.append(batch_of(&[(None, Some(vec![b'x'; 200]), last_year + i)]))
            .unwrap();
    }
    let segments = p.stats().segments;
    assert!(segments > 2);
    clock.advance(Duration::from_millis(3_599_999));
    let (deleted, _) = log.run_cleaner().unwrap();
    assert_eq!(deleted, 0, "written less than retention.ms ago");
    assert_eq!(p.log_start_offset(), 0);
    assert_eq!(read_all(&p, 0).unwrap().len(), 40);
    // An hour after they were written every segment has expired; the active one is rolled
    // so that it goes too.
    clock.advance(Duration::from_millis(2));
    let (deleted, _) = log.run_cleaner().unwrap();
    assert_eq!(deleted, segments, "every segment has expired");
    assert_eq!(p.log_start_offset(), 40);
    assert!(read_all(&p, 40).unwrap().is_empty());
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(runnel_log::types::now_ms());
    let log = open_on(dir.path(), clock.clone());
    log.create_topic(
        "t",
        TopicConfig {
            segment_ms: 50,
            ..Default::default()
        },
    )
    .unwrap();
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    p.append(batch_of(&[(None, Some(b"first".to_vec()), 1)]))
        .unwrap();
    clock.advance(Duration::from_millis(49));
    p.append(batch_of(&[(None, Some(b"second".to_vec()), 1)]))
        .unwrap();
    assert_eq!(p.stats().segments, 1, "a young segment is not rolled");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        p.append(batch_of(&[(None, Some(b"third".to_vec()), 1)]))
            .unwrap(),
        2
    );
    assert_eq!(
        p.stats().segments,
        2,
        "the old segment was rolled before the append"
    );
    let values: Vec<_> = read_all(&p, 0)
        .unwrap()
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, [&b"first"[..], b"second", b"third"]);
}

#[test]
fn the_longest_topic_name_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let name = "n".repeat(249);
    {
        let log = open(dir.path());
        log.create_topic(
            &name,
            TopicConfig {
                partitions: 3,
                ..Default::default()
            },
        )
        .unwrap();
        log.add_partitions(&name, 12).unwrap();
        let p = log
            .partition(&TopicPartition::new(name.clone(), 11))
            .unwrap();
        p.append(batch_of(&[(None, Some(b"v".to_vec()), 1)]))
            .unwrap();
    }
    let log = open(dir.path());
    let p = log
        .partition(&TopicPartition::new(name.clone(), 11))
        .unwrap();
    assert_eq!(read_all(&p, 0).unwrap().len(), 1);
    log.delete_topic(&name).unwrap();
}

#[test]
fn segment_bytes_beyond_index_positions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let err = log
        .create_topic(
            "big",
            TopicConfig {
                segment_bytes: 4 << 30,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("segment.bytes"), "{err}");
}

/// DeleteRecords: the log start moves into a segment, segments wholly below it go, reads below
/// it are out of range, and after a restart the start is where it was moved (not back at the
/// first remaining segment's base).
#[test]
fn delete_records_moves_the_log_start_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig {
        segment_bytes: 2048,
        ..Default::default()
    };
    let now = runnel_log::types::now_ms();
    {
        let log = open(dir.path());
        log.create_topic("t", config).unwrap();
        let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
        for _ in 0..40 {
            p.append(batch_of(&[(None, Some(vec![b'x'; 200]), now)]))
                .unwrap();
        }
        let segments = p.stats().segments;
        assert_eq!(p.delete_records_before(25).unwrap(), 25);
        assert!(p.stats().segments < segments, "segments below 25 deleted");
        assert_eq!(p.delete_records_before(10).unwrap(), 25, "never moves back");
        assert!(p.delete_records_before(41).is_err(), "past the end");
        assert!(
            p.read(24, 1 << 20).is_err(),
            "below the start: out of range"
        );
        assert_eq!(read_all(&p, 25).unwrap().len(), 15);
    }
    let log = open(dir.path());
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    assert_eq!((p.log_start_offset(), p.high_watermark()), (25, 40));
    assert_eq!(
        read_all(&p, 25).unwrap().first().map(|r| r.offset),
        Some(25)
    );
}
