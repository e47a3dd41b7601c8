//! Compaction keeps exactly the latest value per key in closed segments, keeps offsets, and
//! drops tombstones once `delete.retention.ms` has passed, also when its key map holds only a
//! few keys and one run takes several passes.

use crate::support::{batch_of, read_all, segment_files};
use proptest::prelude::*;
use runnel_log::{CleanupPolicy, Log, LogOptions, TopicConfig, TopicPartition};
use std::collections::HashMap;
use std::time::Duration;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_latest_per_key(
        writes in prop::collection::vec((0u8..12, prop::option::weighted(0.85, prop::collection::vec(any::<u8>(), 1..120))), 20..300),
        tombstone_delay_passed in any::<bool>(),
        map_slots in prop::option::of(2usize..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), LogOptions {
            cleaner_interval: Duration::from_secs(3600),
            cleaner_dedupe_buffer_bytes: map_slots.map_or(128 << 20, |n| n * 24),
            ..LogOptions::default()
        }).unwrap();
        log.create_topic("kv", TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: 1024,
            delete_retention_ms: if tombstone_delay_passed { 0 } else { 3_600_000 },
            ..Default::default()
        }).unwrap();
        let p = log.partition(&TopicPartition::new("kv", 0)).unwrap();
        let ts = runnel_log::types::now_ms() - 1000;
        for (k, v) in &writes {
            p.append(batch_of(&[(Some(vec![*k]), v.clone(), ts)])).unwrap();
        }
        let active_base: u64 = segment_files(&p).last().unwrap()
            .file_stem().unwrap().to_str().unwrap().parse().unwrap();
        log.run_cleaner().unwrap();

        let mut latest: HashMap<u8, usize> = HashMap::new();
        let mut latest_closed: HashMap<u8, usize> = HashMap::new();
        for (i, (k, _)) in writes.iter().enumerate() {
            latest.insert(*k, i);
            if (i as u64) < active_base {
                latest_closed.insert(*k, i);
            }
        }
        let got = read_all(&p, 0).unwrap();
        let mut seen_offsets = Vec::new();
        for r in &got {
            let (k, v) = &writes[r.offset as usize];
            prop_assert_eq!(r.key.as_deref(), Some(&[*k][..]), "offset kept its record");
            prop_assert_eq!(r.value.as_deref(), v.as_deref());
            if r.offset < active_base {
                prop_assert_eq!(latest_closed[k], r.offset as usize, "closed segments hold each key once");
                if map_slots.is_none() {
                    // A map that holds every key also drops what the active segment supersedes.
                    prop_assert_eq!(latest[k], r.offset as usize, "closed segments hold only latest values");
                }
                if tombstone_delay_passed {
                    prop_assert!(v.is_some(), "expired tombstone survived");
                }
            }
            seen_offsets.push(r.offset);
        }
        // Nothing that should stay was dropped: every latest record and the whole active segment.
        for (k, &i) in &latest {
            let expired = tombstone_delay_passed && writes[i].1.is_none() && (i as u64) < active_base;
            prop_assert_eq!(seen_offsets.contains(&(i as u64)), !expired, "key {}", k);
        }
        for o in active_base..writes.len() as u64 {
            prop_assert!(seen_offsets.contains(&o), "active segment untouched");
        }
        prop_assert_eq!(p.high_watermark(), writes.len() as u64, "offsets never renumbered");
    }
}

#[test]
fn compacted_log_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic(
            "kv",
            TopicConfig {
                cleanup_policy: CleanupPolicy::Compact,
                segment_bytes: 1024,
                ..Default::default()
            },
        )
        .unwrap();
        let p = log.partition(&TopicPartition::new("kv", 0)).unwrap();
        for i in 0..300u32 {
            p.append(batch_of(&[(
                Some(vec![(i % 5) as u8]),
                Some(i.to_be_bytes().to_vec()),
                1,
            )]))
            .unwrap();
        }
        let (_, removed) = log.run_cleaner().unwrap();
        assert!(removed > 200, "removed {removed}");
    }
    let log = Log::open(dir.path()).unwrap();
    let p = log.partition(&TopicPartition::new("kv", 0)).unwrap();
    let recs = read_all(&p, 0).unwrap();
    let mut last = HashMap::new();
    for r in &recs {
        last.insert(r.key.clone().unwrap(), r.value.clone().unwrap());
    }
    for k in 0..5u32 {
        let want = (295 + k).to_be_bytes();
        assert_eq!(&last[&vec![k as u8][..]][..], &want[..]);
    }
    assert_eq!(
        p.append(batch_of(&[(Some(vec![9]), Some(vec![1]), 1)]))
            .unwrap(),
        300
    );
}
