//! The consumer API as an application uses it: long poll woken by a new record, seeks (offset,
//! beginning, end, timestamp), independent readers of one topic, `auto.offset.reset = none`,
//! and indexes rebuilt when they are missing or garbage.

use crate::support::{batch_of, read_all, segment_files};
use runnel_log::{
    Consumer, ConsumerConfig, Log, LogError, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicConfig, TopicPartition,
};
use std::time::Duration;

fn reader(log: &Log) -> Consumer {
    Consumer::new(log.clone(), ConsumerConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_waits_for_a_record_and_returns_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let mut c = reader(&log);
    c.assign(vec![TopicPartition::new("t", 0)]).unwrap();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let send_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        producer
            .send(ProducerRecord::new("t", b"late"))
            .await
            .unwrap()
            .await
            .unwrap()
    });
    // Generous timeout: the test checks that the waiting poll returns the record, not speed.
    let records = c.poll(Duration::from_secs(30)).await.unwrap();
    assert_eq!(records.len(), 1, "the waiting poll returned the new record");
    assert_eq!(records[0].record.value.as_deref(), Some(&b"late"[..]));
    assert_eq!(send_later.await.unwrap().offset, 0);
    assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_and_independent_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            segment_bytes: 2048,
            ..Default::default()
        },
    )
    .unwrap();
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    for i in 0..100i64 {
        p.append(batch_of(&[(
            None,
            Some(format!("v{i}").into_bytes()),
            1_000 + 10 * i,
        )]))
        .unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    let mut a = reader(&log);
    let mut b = reader(&log);
    a.assign(vec![tp.clone()]).unwrap();
    b.assign(vec![tp.clone()]).unwrap();

    a.seek_to_timestamp(1_455).await.unwrap(); // first record at or after 1455 is 1460 = offset 46
    assert_eq!(a.position(&tp), Some(46));
    b.seek(&tp, 90).unwrap();
    let from_b = drain(&mut b).await;
    let from_a = drain(&mut a).await;
    assert_eq!(
        from_b,
        (90..100).collect::<Vec<_>>(),
        "b reads from its own position"
    );
    assert_eq!(from_a, (46..100).collect::<Vec<_>>(), "a is not moved by b");

    a.seek_to_beginning();
    assert_eq!(drain(&mut a).await.len(), 100);
    a.seek_to_timestamp(5_000).await.unwrap();
    assert_eq!(a.position(&tp), Some(100), "no record that late: the end");
    b.seek_to_end();
    assert!(drain(&mut b).await.is_empty());
}

async fn drain(c: &mut Consumer) -> Vec<u64> {
    let mut offsets = Vec::new();
    loop {
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        if recs.is_empty() {
            return offsets;
        }
        offsets.extend(recs.iter().map(|r| r.record.offset));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_reset_none_refuses_to_guess() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let mut c = strict_reader(&log);
    let err = c.poll(Duration::from_millis(10)).await.unwrap_err();
    assert!(matches!(err, LogError::NoOffset { .. }), "{err}");
    c.commit_offsets(vec![(TopicPartition::new("t", 0), 0)])
        .await
        .unwrap();
    let mut c = strict_reader(&log);
    assert!(
        c.poll(Duration::from_millis(10)).await.unwrap().is_empty(),
        "committed offset used"
    );
}

/// A member of group "strict" reading t-0 that never guesses where to start.
fn strict_reader(log: &Log) -> Consumer {
    let mut c = Consumer::new(
        log.clone(),
        ConsumerConfig {
            group_id: Some("strict".into()),
            auto_offset_reset: OffsetReset::None,
            ..Default::default()
        },
    );
    c.assign(vec![TopicPartition::new("t", 0)]).unwrap();
    c
}

#[test]
fn missing_or_garbage_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<Vec<u8>> = (0..400)
        .map(|i| format!("record-{i:04}-{}", "p".repeat(60)).into_bytes())
        .collect();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic(
            "t",
            TopicConfig {
                segment_bytes: 16 * 1024,
                ..Default::default()
            },
        )
        .unwrap();
        let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
        for v in &values {
            p.append(batch_of(&[(None, Some(v.clone()), 1)])).unwrap();
        }
        assert!(segment_files(&p).len() >= 3);
    }
    let part_dir = dir.path().join("t-0");
    let mut indexes: Vec<_> = std::fs::read_dir(&part_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    std::fs::remove_file(&indexes[0]).unwrap();
    // Garbage that looks like entries: increasing offsets pointing into the middle of batches.
    let garbage: Vec<u8> = [(1u32, 7u32), (2, 50), (3, 99)]
        .iter()
        .flat_map(|(o, p)| [o.to_be_bytes(), p.to_be_bytes()].concat())
        .collect();
    std::fs::write(&indexes[1], garbage).unwrap();

    let log = Log::open(dir.path()).unwrap();
    let p = log.partition(&TopicPartition::new("t", 0)).unwrap();
    let got = read_all(&p, 0).unwrap();
    assert_eq!(got.len(), values.len());
    for r in &got {
        assert_eq!(r.value.as_deref(), Some(&values[r.offset as usize][..]));
    }
    for start in [5u64, 77, 150, 260, 399] {
        let first = read_all(&p, start).unwrap()[0].offset;
        assert_eq!(first, start, "reading from {start}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_picks_up_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "grows",
        TopicConfig {
            partitions: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = Consumer::new(
        log.clone(),
        ConsumerConfig {
            group_id: Some("g".into()),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    c.subscribe(&["grows"]).unwrap();
    assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    assert_eq!(c.assignment().len(), 2);
    log.add_partitions("grows", 4).unwrap();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let sent = producer
        .send(ProducerRecord::new("grows", b"new").partition(3))
        .await
        .unwrap();
    sent.await.unwrap();
    let got = c.poll(Duration::from_secs(30)).await.unwrap();
    assert_eq!(c.assignment().len(), 4, "rejoined with the new partitions");
    assert_eq!(
        (got[0].partition, got[0].record.value.as_deref()),
        (3, Some(&b"new"[..]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_a_deleted_topic_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("doomed", TopicConfig::default()).unwrap();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("doomed", b"a"))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut c = reader(&log);
    c.assign(vec![TopicPartition::new("doomed", 0)]).unwrap();
    log.delete_topic("doomed").unwrap();
    let late = producer
        .send(ProducerRecord::new("doomed", b"b"))
        .await
        .unwrap();
    let err = late.await.unwrap_err();
    assert!(err.to_string().contains("doomed"), "{err}");
    c.seek(&TopicPartition::new("doomed", 0), 0).unwrap();
    assert!(matches!(
        c.poll(Duration::from_millis(10)).await,
        Err(LogError::UnknownTopic(_))
    ));
}

/// Records with these values, keyless, timestamped 1000 + their index, as one built batch.
fn built(values: &[&str]) -> runnel_log::batch::BatchBuilder {
    let mut b = runnel_log::batch::BatchBuilder::new(1024);
    for (i, v) in values.iter().enumerate() {
        b.push(1000 + i as i64, None, Some(v.as_bytes()), &[]);
    }
    b
}

fn values_of(records: &[runnel_log::Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect()
}

/// A producer that implements only `send` and `flush`, so that `send_batch` is the trait's
/// default (the network producer's path).
struct RecordByRecord(Producer);

#[async_trait::async_trait]
impl runnel_log::LogProducer for RecordByRecord {
    async fn send(&self, record: ProducerRecord<'_>) -> runnel_log::Result<()> {
        drop(self.0.send(record).await?);
        Ok(())
    }
    async fn flush(&self) -> runnel_log::Result<()> {
        self.0.flush().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_batch_is_appended_after_the_records_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let one = |v: &'static [u8]| ProducerRecord::new("t", v).partition(0).timestamp(5);
    drop(producer.send(one(b"a")).await.unwrap());
    let last_of_batch = producer
        .send_batch("t", Some(0), built(&["b", "c"]))
        .await
        .unwrap()
        .expect("a batch with records has a delivery");
    drop(producer.send(one(b"d")).await.unwrap());
    let by_default = RecordByRecord(producer.clone());
    runnel_log::LogProducer::send_batch(&by_default, "t", Some(0), built(&["e", "f"]))
        .await
        .unwrap();
    producer.flush().await.unwrap();
    let records = read_all(&log.topic("t").unwrap().partition(0).unwrap(), 0).unwrap();
    assert_eq!(values_of(&records), ["a", "b", "c", "d", "e", "f"]);
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
    let times: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
    assert_eq!(times, [5, 1000, 1001, 5, 1000, 1001]);
    let delivered = last_of_batch.wait().await.unwrap();
    assert_eq!((delivered.partition, delivered.offset), (0, 2));
    let empty = producer.send_batch("t", Some(0), built(&[])).await.unwrap();
    assert!(empty.is_none(), "an empty batch sends nothing");

    let err = producer
        .send_batch("t", Some(3), built(&["x"]))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::UnknownPartition { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_batch_without_partition_lands_whole_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = TopicConfig {
        partitions: 3,
        ..Default::default()
    };
    log.create_topic("t", config).unwrap();
    let producer = Producer::new(log.clone(), ProducerConfig::default());
    let values: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    producer.send_batch("t", None, built(&refs)).await.unwrap();
    producer.flush().await.unwrap();
    let topic = log.topic("t").unwrap();
    let per_partition: Vec<Vec<String>> = (0..3)
        .map(|p| values_of(&read_all(&topic.partition(p).unwrap(), 0).unwrap()))
        .collect();
    let landed: Vec<&Vec<String>> = per_partition.iter().filter(|v| !v.is_empty()).collect();
    assert_eq!(landed, [&values]);
}
