//! Storage faults: what the log stores and acknowledges when writes fail, syncs fail or the disk
//! fills, and how it resumes.
//!
//! - `appends_under_injected_faults_keep_a_gapless_acknowledged_log` (property): random appends
//!   to two partitions under random injected faults (ENOSPC, EIO, short writes, failed `fsync`,
//!   a full disk that empties again) and reopens: each partition always holds exactly the
//!   records whose appends were acknowledged, in order — nothing acknowledged lost, no gap,
//!   nothing unacknowledged served.

use crate::support::{batch_of, read_all};
use proptest::prelude::*;
use runnel_log::fault::{self, FaultInjector};
use runnel_log::{Durability, Log, LogOptions, TopicConfig, TopicPartition};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the next write or sync does.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The next write fails with ENOSPC, nothing written.
    DiskFullOnce,
    /// The next write fails with EIO.
    IoError,
    /// The next write stores this fraction of its bytes, then fails with ENOSPC.
    ShortWrite(f64),
    /// The next sync fails with EIO.
    SyncFails,
    /// Every write fails with ENOSPC until [`Op::FreeSpace`].
    DiskFull,
}

#[derive(Debug, Default)]
struct Injector {
    state: Mutex<InjectorState>,
}

#[derive(Debug, Default)]
struct InjectorState {
    next_write: Option<Fault>,
    next_sync_fails: bool,
    full: bool,
}

impl FaultInjector for Injector {
    fn before_write(&self, _path: &Path, len: usize) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap();
        if st.full {
            return Err(fault::disk_full());
        }
        match st.next_write.take() {
            Some(Fault::DiskFullOnce) => Err(fault::disk_full()),
            Some(Fault::IoError) => Err(io::Error::from_raw_os_error(5)),
            Some(Fault::ShortWrite(part)) => Ok(((len as f64 * part) as usize).min(len - 1)),
            _ => Ok(len),
        }
    }

    fn before_sync(&self, _path: &Path) -> io::Result<()> {
        if std::mem::take(&mut self.state.lock().unwrap().next_sync_fails) {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        values: Vec<Vec<u8>>,
    },
    Inject(Fault),
    FreeSpace,
    Reopen,
}

fn op(durability: Durability) -> impl Strategy<Value = Op> {
    // Under `interval` and `os` a failed sync may lose acknowledged records by design (they
    // are acknowledged before any sync); the property covers what those modes promise.
    let sync_weight = if durability == Durability::Always {
        2
    } else {
        0
    };
    prop_oneof![
        10 => (0u32..2, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..12))
            .prop_map(|(partition, values)| Op::Append { partition, values }),
        1 => Just(Op::Inject(Fault::DiskFullOnce)),
        1 => Just(Op::Inject(Fault::IoError)),
        2 => (0.0f64..1.0).prop_map(|p| Op::Inject(Fault::ShortWrite(p))),
        sync_weight => Just(Op::Inject(Fault::SyncFails)),
        1 => Just(Op::Inject(Fault::DiskFull)),
        2 => Just(Op::FreeSpace),
        1 => Just(Op::Reopen),
    ]
}

fn open(dir: &Path) -> Log {
    Log::open_with(
        dir,
        LogOptions {
            cleaner_interval: Duration::from_secs(3600),
        },
    )
    .unwrap()
}

fn scenario() -> impl Strategy<Value = (Durability, Vec<Op>)> {
    prop_oneof![
        Just(Durability::Always),
        Just(Durability::Interval),
        Just(Durability::Os)
    ]
    .prop_flat_map(|d| (Just(d), prop::collection::vec(op(d), 1..80)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_under_injected_faults_keep_a_gapless_acknowledged_log((durability, ops) in scenario()) {
        let dir = tempfile::tempdir().unwrap();
        let injector = Arc::new(Injector::default());
        let _installed = fault::install(dir.path(), injector.clone());
        let mut log = open(dir.path());
        log.create_topic("t", TopicConfig {
            partitions: 2,
            // Small segments: rolls (and their syncs) happen under faults too.
            segment_bytes: 4096,
            retention_ms: None,
            durability,
            ..Default::default()
        }).unwrap();
        let mut acked: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        for op in ops {
            match op {
                Op::Append { partition, values } => {
                    let p = log.partition(&TopicPartition::new("t", partition)).unwrap();
                    let recs: Vec<_> = values.iter().map(|v| (None, Some(v.clone()), 1_000)).collect();
                    let model = &mut acked[partition as usize];
                    match p.append(batch_of(&recs)) {
                        Ok(base) => {
                            prop_assert_eq!(base, model.len() as u64, "offsets stay dense");
                            model.extend(values);
                        }
                        Err(e) => {
                            let text = e.to_string();
                            prop_assert!(text.contains("t-") && text.contains(".log"),
                                "the error names the partition and the file: {}", text);
                        }
                    }
                }
                Op::Inject(Fault::DiskFull) => injector.state.lock().unwrap().full = true,
                Op::Inject(Fault::SyncFails) => injector.state.lock().unwrap().next_sync_fails = true,
                Op::Inject(f) => injector.state.lock().unwrap().next_write = Some(f),
                Op::FreeSpace => injector.state.lock().unwrap().full = false,
                Op::Reopen => {
                    drop(log);
                    *injector.state.lock().unwrap() = InjectorState::default();
                    log = open(dir.path());
                }
            }
            for (i, model) in acked.iter().enumerate() {
                let p = log.partition(&TopicPartition::new("t", i as u32)).unwrap();
                prop_assert_eq!(p.high_watermark(), model.len() as u64);
                let got = read_all(&p, 0).unwrap();
                let values: Vec<Vec<u8>> = got.into_iter().map(|r| r.value.unwrap().to_vec()).collect();
                prop_assert_eq!(&values, model);
            }
        }
        // And after a restart with the disk healthy again, exactly the acknowledged records.
        drop(log);
        *injector.state.lock().unwrap() = InjectorState::default();
        let log = open(dir.path());
        for (i, model) in acked.iter().enumerate() {
            let p = log.partition(&TopicPartition::new("t", i as u32)).unwrap();
            let values: Vec<Vec<u8>> = read_all(&p, 0).unwrap().into_iter()
                .map(|r| r.value.unwrap().to_vec()).collect();
            prop_assert_eq!(&values, model);
        }
    }
}
