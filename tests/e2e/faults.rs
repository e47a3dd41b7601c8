//! Storage faults: what the log stores and acknowledges when writes fail, syncs fail or the disk
//! fills, and how it resumes.
//!
//! - `appends_under_injected_faults_keep_a_gapless_acknowledged_log` (property): random appends
//!   to two partitions under random injected faults (ENOSPC, EIO, short writes, failed `fsync`,
//!   a full disk that empties again) and reopens: each partition always holds exactly the
//!   records whose appends were acknowledged, in order — nothing acknowledged lost, no gap,
//!   nothing unacknowledged served.
//! - On a real small filesystem (a tmpfs the test mounts; skipped with a message when it cannot,
//!   unless `RUNNEL_REQUIRE_SERVICES=1`): `runnel produce --file` into a disk that fills stops,
//!   leaves each partition a gapless prefix of its records, says which line to resume from, and
//!   re-running from there after space is freed stores exactly the file. The same over
//!   `--bootstrap` against a `runnel broker` whose disk fills, where the report comes from the
//!   network producer's per-partition counts.

use crate::cli::{LONG, Runnel};
use crate::support::{batch_of, read_all};
use proptest::prelude::*;
use runnel_log::fault::{self, FaultInjector};
use runnel_log::{Durability, Log, LogOptions, TopicConfig, TopicPartition};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
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
            ..LogOptions::default()
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

/// A tmpfs of a given size, mounted on a fresh directory and unmounted when dropped.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one of `size` (e.g. "4m"), or says the test is skipped and returns `None` when
    /// this process may not mount (not root); with `RUNNEL_REQUIRE_SERVICES=1` that fails.
    pub(crate) fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self { dir });
        }
        assert!(
            std::env::var("RUNNEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "cannot mount a tmpfs (the test needs root) and RUNNEL_REQUIRE_SERVICES=1"
        );
        eprintln!("skipped: cannot mount a tmpfs here (the test needs root)");
        None
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Bytes in use.
    pub(crate) fn used(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(self.dir.path())
            .output()
            .expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot read df's output: {text}"))
    }

    /// Frees space (or takes it away, down to what is used): the filesystem's size becomes `size`.
    pub(crate) fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot grow the tmpfs at {}", self.dir.path().display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `n` JSON lines of about 100 bytes, keyed by `driver`, numbered by `seq`.
fn event_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"seq":{i},"driver":"d{}","lat":52.{:06},"lon":13.{:06},"status":"on_trip"}}"#,
                i % 97,
                (i * 7919) % 1_000_000,
                (i * 104_729) % 1_000_000
            )
        })
        .collect()
}

/// 120,000 event lines, and the file in `dir` that holds them.
fn events_file(dir: &Path) -> (Vec<String>, PathBuf) {
    let lines = event_lines(120_000);
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    (lines, file)
}

/// A 6 MiB tmpfs (`None`: the test is skipped) and the events file, in a directory that lives
/// as long as the returned handle.
fn small_disk_and_events() -> Option<(SmallDisk, tempfile::TempDir, Vec<String>, PathBuf)> {
    let disk = SmallDisk::mount("6m")?;
    let input_dir = tempfile::tempdir().unwrap();
    let (lines, file) = events_file(input_dir.path());
    Some((disk, input_dir, lines, file))
}

/// Partition 0 of topic `t` in `data_dir` holds exactly `lines`, in order.
fn assert_exactly_the_file(data_dir: &Path, lines: &[String]) {
    let stored = &partitions_of(data_dir, "t")[0];
    assert_eq!(stored.len(), lines.len());
    assert!(
        stored[..] == lines[..],
        "exactly the file, no gap and no duplicate"
    );
}

/// Every partition's values, in offset order.
fn partitions_of(data_dir: &Path, topic: &str) -> Vec<Vec<String>> {
    let log = Log::open(data_dir).unwrap();
    let t = log.topic(topic).unwrap();
    (0..t.partition_count())
        .map(|i| {
            let p = t.partition(i).unwrap();
            read_all(&p, 0)
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
                .collect()
        })
        .collect()
}

/// The number after `--from-line` in `error`.
fn resume_line(error: &str) -> usize {
    let at = error
        .find("--from-line ")
        .unwrap_or_else(|| panic!("the error should say where to resume: {error}"));
    error[at + "--from-line ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line number after --from-line: {error}"))
}

#[test]
fn produce_into_a_full_disk_stops_without_a_gap_and_resumes_exactly() {
    let Some((disk, _input_dir, lines, file)) = small_disk_and_events() else {
        return;
    };
    let file = file.to_str().unwrap();

    let runnel = Runnel::new(disk.path());
    runnel.ok(&["topics", "create", "t", "--durability", "always"]);
    let produce = ["produce", "t", "--file", file];
    let out = runnel.run_with(&produce, None, LONG);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the disk should fill; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("t-0") && stderr.contains("No space left on device"),
        "the error names the partition and the cause:\n{stderr}"
    );
    let resume = resume_line(&stderr);
    let stored = &partitions_of(&disk.path(), "t")[0];
    assert!(
        stored.len() < lines.len(),
        "the disk was to fill up before the end"
    );
    assert_eq!(
        stored.len(),
        resume - 1,
        "stored: every line before the resume line"
    );
    assert!(
        stored[..] == lines[..resume - 1],
        "a gapless prefix of the file"
    );

    disk.grow("64m");
    let from = resume.to_string();
    let rest = ["produce", "t", "--file", file, "--from-line", &from];
    let out = runnel.run_with(&rest, None, LONG);
    runnel.expect_success(&rest, out);
    assert_exactly_the_file(&disk.path(), &lines);
}

#[test]
fn keyed_produce_into_a_full_disk_leaves_each_partition_a_gapless_prefix() {
    let Some((disk, input_dir, lines, file)) = small_disk_and_events() else {
        return;
    };
    let file = file.to_str().unwrap();
    let produce = ["produce", "t", "--file", file, "--key-field", "driver"];
    let create = [
        "topics",
        "create",
        "t",
        "--partitions",
        "4",
        "--durability",
        "always",
    ];

    // Where each record goes: the same command into a roomy data directory.
    let roomy = Runnel::new(input_dir.path().join("roomy"));
    roomy.ok(&create);
    let out = roomy.run_with(&produce, None, LONG);
    roomy.expect_success(&produce, out);
    let expected = partitions_of(&input_dir.path().join("roomy"), "t");

    let runnel = Runnel::new(disk.path());
    runnel.ok(&create);
    let out = runnel.run_with(&produce, None, LONG);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the disk should fill; stderr:\n{stderr}"
    );
    let stored = partitions_of(&disk.path(), "t");
    let total: usize = stored.iter().map(Vec::len).sum();
    assert!(
        total < lines.len(),
        "the disk was to fill up before the end"
    );
    for (p, (stored, expected)) in stored.iter().zip(&expected).enumerate() {
        assert!(
            stored[..] == expected[..stored.len()],
            "partition {p} holds a gapless prefix of its records ({} of {})",
            stored.len(),
            expected.len()
        );
    }
    // A partition whose batch failed is named with its resume line (the others stopped short
    // only because the command stopped at the first failure).
    assert!(
        (0..4).any(|p| stderr.contains(&format!("t-{p}: "))),
        "the report names the failed partitions:\n{stderr}"
    );
}

#[test]
fn an_idempotent_kafka_producer_against_a_full_broker_sees_errors_and_no_gap() {
    let Some(py) = crate::broker::python("idempotent producer against a full disk") else {
        return;
    };
    let Some(disk) = SmallDisk::mount("6m") else {
        return;
    };
    let broker = crate::broker::BrokerProc::start(&disk.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/faults.py");
    let run = |args: &[&str]| {
        let out = Command::new(&py)
            .arg(&script)
            .args([broker.addr.as_str(), "full"])
            .args(args)
            .output()
            .expect("run faults.py");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("ok "),
            "faults.py {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{}", stdout.trim());
        stdout
    };
    let filled = run(&["fill", "1000000"]);
    let delivered: String = filled
        .split_whitespace()
        .nth(2)
        .expect("ok fill K ...")
        .to_string();
    disk.grow("64m");
    run(&["resume", &delivered, "1000"]);
}

/// `runnel --bootstrap ADDR args...`: its stderr, and whether it succeeded.
fn over_the_wire(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["--bootstrap", addr])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run runnel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `runnel broker` on `disk` with topic `t` of `partitions` partitions, durability `always`.
fn broker_with_topic_t(disk: &SmallDisk, partitions: u32) -> crate::broker::BrokerProc {
    let broker = crate::broker::BrokerProc::start(&disk.path());
    let partitions = partitions.to_string();
    let create = [
        "topics",
        "create",
        "t",
        "--partitions",
        &partitions,
        "--durability",
        "always",
    ];
    assert!(over_the_wire(&broker.addr, &create).0);
    broker
}

/// The line numbers of `t-P: stored its records up to line X` in a report, by partition.
fn stored_up_to(report: &str) -> Vec<(usize, usize)> {
    report
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("t-")?;
            let (p, rest) = rest.split_once(": stored its records up to line ")?;
            let line = rest.split(|c: char| !c.is_ascii_digit()).next()?;
            Some((p.parse().ok()?, line.parse().ok()?))
        })
        .collect()
}

#[test]
fn produce_over_the_wire_into_a_full_broker_stops_without_a_gap_and_resumes_exactly() {
    let Some((disk, _input_dir, lines, file)) = small_disk_and_events() else {
        return;
    };
    let file = file.to_str().unwrap();
    let broker = broker_with_topic_t(&disk, 1);
    let (ok, stderr) = over_the_wire(&broker.addr, &["produce", "t", "--file", file]);
    assert!(!ok, "the disk should fill; stderr:\n{stderr}");
    assert!(
        stderr.contains("t-0") && stderr.contains("KAFKA_STORAGE_ERROR"),
        "the error names the partition and the cause:\n{stderr}"
    );
    let resume = resume_line(&stderr);
    disk.grow("64m");
    let from = resume.to_string();
    let rest = ["produce", "t", "--file", file, "--from-line", &from];
    let (ok, stderr) = over_the_wire(&broker.addr, &rest);
    assert!(ok, "{stderr}");
    broker.terminate();
    assert_exactly_the_file(&disk.path(), &lines);
}

#[test]
fn keyed_produce_over_the_wire_reports_each_partitions_last_stored_line() {
    let Some((disk, _input_dir, lines, file)) = small_disk_and_events() else {
        return;
    };
    let file = file.to_str().unwrap();
    let broker = broker_with_topic_t(&disk, 4);
    let produce = ["produce", "t", "--file", file, "--key-field", "driver"];
    let (ok, stderr) = over_the_wire(&broker.addr, &produce);
    assert!(!ok, "the disk should fill; stderr:\n{stderr}");
    broker.terminate();
    let stored = partitions_of(&disk.path(), "t");
    assert!(stored.iter().map(Vec::len).sum::<usize>() < lines.len());
    let reported = stored_up_to(&stderr);
    assert!(
        !reported.is_empty(),
        "the report names partitions:\n{stderr}"
    );
    for (p, line) in reported {
        // Line N of the file is the event with seq N - 1.
        let last = stored[p].last().expect("a partition that stored records");
        assert!(
            last.contains(&format!(r#""seq":{},"#, line - 1)),
            "t-{p} was reported stored up to line {line}, but ends with {last}"
        );
    }
    for (p, records) in stored.iter().enumerate() {
        let seqs: Vec<usize> = records
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                v["seq"].as_u64().unwrap() as usize
            })
            .collect();
        let expected: Vec<usize> = (0..lines.len())
            .filter(|&i| partition_of(&lines[i]) == p)
            .take(seqs.len())
            .collect();
        assert!(
            seqs == expected,
            "partition {p} holds a gapless prefix of its records"
        );
    }
}

/// The partition of an event line keyed by its driver, as the producers' partitioner puts it
/// among four.
fn partition_of(line: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let key = v["driver"].as_str().unwrap();
    runnel_log::partitioner::partition_for_key(key.as_bytes(), 4) as usize
}
