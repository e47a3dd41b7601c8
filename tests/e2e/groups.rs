//! Consumer groups: three members share a 6-partition topic; one leaves; the other two take over
//! its partitions from the committed offsets, and nothing is skipped.

use runnel_log::{
    AssignmentStrategy, Consumer, ConsumerConfig, GroupState, Log, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PER_PARTITION: u64 = 400;

fn member_config(strategy: AssignmentStrategy) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some("g".into()),
        auto_offset_reset: OffsetReset::Earliest,
        max_partition_fetch_bytes: 2048,
        heartbeat_interval: Duration::from_millis(50),
        session_timeout: Duration::from_secs(3),
        rebalance_timeout: Duration::from_secs(3),
        auto_commit_interval: Duration::from_millis(100),
        assignment_strategies: vec![strategy],
        ..Default::default()
    }
}

/// (member, partition, offset, consumed after the leaver left)
type Seen = Arc<Mutex<Vec<(usize, u32, u64, bool)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_member_leaves_and_others_take_over() {
    member_leaves_and_others_take_over_from_committed_offsets(AssignmentStrategy::Range).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_member_leaves_and_others_take_over() {
    member_leaves_and_others_take_over_from_committed_offsets(AssignmentStrategy::RoundRobin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_member_leaves_and_others_take_over() {
    member_leaves_and_others_take_over_from_committed_offsets(AssignmentStrategy::Sticky).await;
}

async fn member_leaves_and_others_take_over_from_committed_offsets(strategy: AssignmentStrategy) {
    crate::support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "events",
        TopicConfig {
            partitions: 6,
            ..Default::default()
        },
    )
    .unwrap();
    let seen: Seen = Arc::default();
    let left = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Records are produced only once the three members are stable, so each starts with its share.
    let stable = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for member in 0..3usize {
        let (log, seen, left, stable) = (log.clone(), seen.clone(), left.clone(), stable.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Consumer::new(log.clone(), member_config(strategy));
            c.subscribe(&["events"]).unwrap();
            // Wait until the group is stable with three members, each owning two partitions.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                // A zero-timeout poll joins/rejoins without reading much.
                let recs = c.poll(Duration::from_millis(0)).await.unwrap();
                record(&seen, &left, member, &recs);
                let d = log.groups().describe_group("g");
                tracing::debug!(member, state = %d.state, members = d.members.len(), mine = c.assignment().len(), "waiting for a stable group");
                if d.state == GroupState::Stable
                    && d.members.len() == 3
                    && c.assignment().len() == 2
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "group never became stable with 3 members"
                );
            }
            stable.wait().await;
            let mine_before_leave = c.assignment();
            if member == 2 {
                // Consume part of our partitions, commit, leave.
                let mut n = 0;
                while n < 150 {
                    let recs = c.poll(Duration::from_millis(100)).await.unwrap();
                    n += recs.len();
                    record(&seen, &left, member, &recs);
                }
                // Flag first: the others may take over as soon as the leave lands.
                left.store(true, std::sync::atomic::Ordering::SeqCst);
                c.close().await.unwrap();
                return mine_before_leave;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen_count(&seen) < (6 * PER_PARTITION) as usize {
                let recs = c.poll(Duration::from_millis(100)).await.unwrap();
                record(&seen, &left, member, &recs);
                assert!(Instant::now() < deadline, "records never all consumed");
                tokio::task::yield_now().await;
            }
            c.close().await.unwrap();
            mine_before_leave
        }));
    }
    stable.wait().await;
    let small_batches = ProducerConfig {
        batch_size: 1024,
        ..Default::default()
    };
    let producer = Producer::new(log.clone(), small_batches);
    for p in 0..6u32 {
        for i in 0..PER_PARTITION {
            let v = format!("p{p}-{i:05}-{}", "x".repeat(40));
            let _ = producer
                .send(ProducerRecord::new("events", v.as_bytes()).partition(p))
                .await
                .unwrap();
        }
    }
    producer.close().await.unwrap();

    let mut owned = Vec::new();
    for t in tasks {
        owned.push(t.await.unwrap());
    }
    let leaver: BTreeSet<TopicPartition> = owned[2].iter().cloned().collect();
    assert_eq!(leaver.len(), 2);

    let seen = seen.lock().unwrap().clone();
    let mut by_partition: BTreeMap<u32, Vec<(usize, u64, bool)>> = BTreeMap::new();
    for (member, p, o, after_leave) in &seen {
        by_partition
            .entry(*p)
            .or_default()
            .push((*member, *o, *after_leave));
    }
    for (p, consumed) in &by_partition {
        let offsets: BTreeSet<u64> = consumed.iter().map(|(_, o, _)| *o).collect();
        assert_eq!(
            offsets.len() as u64,
            PER_PARTITION,
            "partition {p}: every offset consumed"
        );
        assert_eq!(*offsets.last().unwrap(), PER_PARTITION - 1);
        if leaver.contains(&TopicPartition::new("events", *p)) {
            let by_leaver: Vec<u64> = consumed
                .iter()
                .filter(|(m, _, _)| *m == 2)
                .map(|(_, o, _)| *o)
                .collect();
            let after: Vec<u64> = consumed
                .iter()
                .filter(|(_, _, late)| *late)
                .map(|(_, o, _)| *o)
                .collect();
            let handed_over_at = by_leaver.iter().max().map_or(0, |m| m + 1);
            let resumed_at = *after.iter().min().expect("someone took over");
            assert_eq!(
                resumed_at, handed_over_at,
                "partition {p}: taken over exactly at the committed offset"
            );
        }
    }
    assert_eq!(by_partition.len(), 6);
    let committed: u64 = (0..6)
        .map(|p| {
            log.groups()
                .committed("g", &TopicPartition::new("events", p))
                .unwrap()
                .offset
        })
        .sum();
    assert_eq!(
        committed,
        6 * PER_PARTITION,
        "final commits cover everything"
    );
}

fn record(
    seen: &Seen,
    left: &std::sync::atomic::AtomicBool,
    member: usize,
    recs: &[runnel_log::ConsumerRecord],
) {
    let late = left.load(std::sync::atomic::Ordering::SeqCst);
    let mut s = seen.lock().unwrap();
    s.extend(
        recs.iter()
            .map(|r| (member, r.partition, r.record.offset, late)),
    );
}

fn seen_count(seen: &Seen) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, p, o, _)| (*p, *o))
        .collect::<BTreeSet<_>>()
        .len()
}
