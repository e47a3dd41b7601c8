//! The engine end to end: reference jobs on multi-partition inputs checked against brute
//! force, the repartition test (4 partitions give the results of 1), restart and SIGKILL
//! recovery, error handling, co-partitioning, punctuation and joins through the test driver.

use rand::{Rng, SeedableRng};
use runnel::engine::prelude::*;
use runnel::log::{Log, SharedLogClient};
use runnel::rides::{self, REGIONS, RegionWindow, RideEvents};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Windows by (region, start) computed directly from the generated events: count, sum, max.
fn brute_force(events: u64) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut rides_gen = RideEvents::default();
    let (mut line, mut key) = (Vec::new(), Vec::new());
    let mut out: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for _ in 0..events {
        line.clear();
        key.clear();
        rides_gen.write_next(&mut line, &mut key).unwrap();
        let r: rides::Ride = serde_json::from_slice(&line).unwrap();
        if r.speed > 5.0 {
            let e = out
                .entry((r.region, r.ts.div_euclid(10_000) * 10_000))
                .or_default();
            e.0 += 1;
            e.1 += r.speed;
            e.2 = e.2.max(r.speed);
        }
    }
    out
}

/// The final result per window; panics if a window was emitted twice with different results.
fn final_windows(emitted: Vec<(String, RegionWindow)>) -> BTreeMap<(String, i64), RegionWindow> {
    let mut out: BTreeMap<(String, i64), RegionWindow> = BTreeMap::new();
    for (_, w) in emitted {
        let k = (w.region.clone(), w.window_start);
        if let Some(prev) = out.get(&k) {
            assert!(
                same(prev, &w),
                "window {k:?} emitted twice with different results: {prev:?} vs {w:?}"
            );
        }
        out.insert(k, w);
    }
    out
}

/// Equal up to float summation order (records of a region arrive through a repartition topic,
/// whose interleaving of writers differs between runs).
fn same(a: &RegionWindow, b: &RegionWindow) -> bool {
    a.count == b.count
        && a.max_speed == b.max_speed
        && (a.avg_speed - b.avg_speed).abs() < 1e-9 * a.avg_speed.abs().max(1.0)
}

fn run_rides(partitions: u32, events: u64) -> BTreeMap<(String, i64), RegionWindow> {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
    rt.block_on(rides::produce_rides(
        &client,
        "rides",
        partitions,
        events,
        |_| {},
    ))
    .unwrap();
    let mut cfg = StreamsConfig::new("rides-app");
    cfg.until_end = true;
    let summary = App::new(rides::speed_per_region("rides", "out"), client.clone(), cfg)
        .run(rt.handle())
        .unwrap();
    assert_eq!(
        summary.metrics.late_records, 0,
        "the generator's jitter is within the 5 s bound"
    );
    final_windows(rt.block_on(rides::read_json(&client, "out")).unwrap())
}

#[test]
fn repartition_four_partitions_give_the_results_of_one_and_of_brute_force() {
    let events = 60_000;
    let one = run_rides(1, events);
    let four = run_rides(4, events);
    assert_eq!(one.len(), four.len());
    for (k, w) in &one {
        assert!(same(w, &four[k]), "{k:?}: {w:?} vs {:?}", four[k]);
    }
    let expected = brute_force(events);
    assert_eq!(expected.len(), one.len());
    for ((region, start), (count, sum, max)) in expected {
        let w = &one[&(region.clone(), start)];
        assert_eq!(
            (w.count, w.max_speed, w.window_end),
            (count, max, start + 10_000),
            "{region} {start}"
        );
        assert!((w.avg_speed - sum / count as f64).abs() < 1e-9);
    }
    assert!(one.keys().all(|(r, _)| REGIONS.contains(&r.as_str())));
}

const CHILD_ENV: &str = "RUNNEL_ENGINE_CHILD_DIR";
/// The child's processing guarantee (`exactly-once`, or at-least-once when unset).
const CHILD_GUARANTEE_ENV: &str = "RUNNEL_ENGINE_CHILD_GUARANTEE";
/// A broker the child runs against instead of the data directory.
const CHILD_BOOTSTRAP_ENV: &str = "RUNNEL_ENGINE_CHILD_BOOTSTRAP";
const RECOVERY_EVENTS: u64 = 1_000_000;

/// The child process of the SIGKILL tests (`ride_windows_survive_sigkill` and the like), which
/// run it (ignored, so that it is not counted as a test of its own): the ride-hailing job over
/// the data directory or a broker, until the input is consumed.
#[test]
#[ignore = "the child process of the engine's SIGKILL tests, run by them"]
fn engine_child() {
    let dir = std::env::var(CHILD_ENV)
        .expect("run by the engine's SIGKILL tests, which set RUNNEL_ENGINE_CHILD_DIR");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _runtime = rt.enter();
    let bootstrap = std::env::var(CHILD_BOOTSTRAP_ENV)
        .ok()
        .filter(|a| !a.is_empty());
    let client: SharedLogClient = match bootstrap {
        Some(addr) => rt
            .block_on(runnel::broker::RemoteLog::connect(&addr))
            .unwrap(),
        None => {
            // The parent's producer thread lets go of the data directory shortly after its
            // last use.
            let mut log = Log::open(&dir);
            for _ in 0..100 {
                if !matches!(log, Err(runnel::log::LogError::DataDirLocked { .. })) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                log = Log::open(&dir);
            }
            Arc::new(log.unwrap())
        }
    };
    let guarantee = match std::env::var(CHILD_GUARANTEE_ENV) {
        Ok(g) => g.parse().unwrap(),
        Err(_) => ProcessingGuarantee::AtLeastOnce,
    };
    let mut cfg = StreamsConfig::new("recovery").guarantee(guarantee);
    cfg.until_end = true;
    if guarantee == ProcessingGuarantee::AtLeastOnce {
        cfg.commit_interval = Duration::from_millis(200);
    }
    println!("\nstarted");
    std::io::stdout().flush().unwrap();
    App::new(rides::speed_per_region("rides", "out"), client, cfg)
        .run(rt.handle())
        .unwrap();
    println!("finished");
}

#[test]
fn ride_windows_survive_sigkill() {
    let (emitted, kills) = ride_windows_after_kills("at-least-once", false);
    let recovered = final_windows(emitted);
    let expected = brute_force(RECOVERY_EVENTS);
    assert_eq!(
        recovered.len(),
        expected.len(),
        "every window, once the input is consumed"
    );
    for ((region, start), (count, sum, max)) in expected {
        let w = &recovered[&(region.clone(), start)];
        assert_eq!(
            (w.count, w.max_speed),
            (count, max),
            "window {region} {start} after {kills} kills"
        );
        assert!((w.avg_speed - sum / count as f64).abs() < 1e-9);
    }
}

/// Under exactly-once every window is emitted exactly once (emit on close), whatever the kills:
/// a `read_committed` reader of the output sees no repeat.
#[test]
fn ride_windows_are_emitted_exactly_once_through_sigkills() {
    check_each_window_once(ride_windows_after_kills("exactly-once", false));
}

/// The same over `runnel broker` (the job's transactions through Kafka's protocol).
#[test]
fn ride_windows_over_the_broker_are_emitted_exactly_once_through_sigkills() {
    check_each_window_once(ride_windows_after_kills("exactly-once", true));
}

fn check_each_window_once((emitted, kills): (Vec<(String, RegionWindow)>, u32)) {
    let expected = brute_force(RECOVERY_EVENTS);
    assert_eq!(
        emitted.len(),
        expected.len(),
        "each window once after {kills} kills"
    );
    let recovered = final_windows(emitted);
    for ((region, start), (count, sum, max)) in expected {
        let w = &recovered[&(region.clone(), start)];
        assert_eq!(
            (w.count, w.max_speed),
            (count, max),
            "window {region} {start}"
        );
        assert!((w.avg_speed - sum / count as f64).abs() < 1e-9);
    }
}

/// Runs the ride-hailing job in a child process under `guarantee`, SIGKILLed at random moments
/// at least five times, then to the end, on the embedded log or `over_broker`; returns the
/// windows it emitted and the kill count.
fn ride_windows_after_kills(
    guarantee: &str,
    over_broker: bool,
) -> (Vec<(String, RegionWindow)>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let broker = over_broker.then(|| crate::broker::BrokerProc::start(&dir.path().join("data")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _runtime = rt.enter();
    let connect = || -> SharedLogClient {
        match &broker {
            Some(b) => rt
                .block_on(runnel::broker::RemoteLog::connect(&b.addr))
                .unwrap(),
            None => Arc::new(Log::open(dir.path()).unwrap()),
        }
    };
    {
        let client = connect();
        rt.block_on(rides::produce_rides(
            &client,
            "rides",
            4,
            RECOVERY_EVENTS,
            |_| {},
        ))
        .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let spawn = || {
        Command::new(&exe)
            .args([
                "engine::engine_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_GUARANTEE_ENV, guarantee)
            .env(
                CHILD_BOOTSTRAP_ENV,
                broker.as_ref().map_or(String::new(), |b| b.addr.clone()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("child.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    for _ in 0..12 {
        let mut child = spawn();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 && !line.contains("started") {
            line.clear();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("child.log")).unwrap_or_default();
            assert!(status.success(), "the job failed: {log}");
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if kills >= 6 {
            break;
        }
    }
    assert!(
        kills >= 5,
        "the job finished before it was killed 5 times ({kills})"
    );
    let status = spawn().wait_with_output().unwrap();
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("finished")
    );

    let client = connect();
    let emitted: Vec<(String, RegionWindow)> =
        rt.block_on(rides::read_json(&client, "out")).unwrap();
    (emitted, kills)
}

#[test]
fn state_is_restored_from_the_changelog_after_a_restart() {
    restores_from_checkpoint_and_changelog(runnel::engine::state::Storage::Memory);
}

/// A disk store is its own local checkpoint: reopened after a clean stop it replays none of
/// the changelog (and no `.checkpoint` file is written for it).
#[test]
fn disk_state_is_restored_from_its_file_after_a_restart() {
    let files = restores_from_checkpoint_and_changelog(runnel::engine::state::Storage::Disk {
        cache_bytes: 1 << 20,
    });
    assert!(
        files.iter().any(|f| f.ends_with("word-counts.lsm")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with("word-counts.checkpoint")),
        "{files:?}"
    );
}

/// Counts words over three runs (two with local checkpoints, one without) keeping the store
/// in `storage`; returns the names of the files in the state directory.
fn restores_from_checkpoint_and_changelog(storage: runnel::engine::state::Storage) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream("words", Consumed::with(StringSerde, StringSerde))
            .group_by(|_, w| w.clone(), Grouped::with(StringSerde, StringSerde))
            .count("word-counts")
            .to("counts");
        b.build()
    };
    let produce = |words: &[&str]| {
        rt.block_on(async {
            client
                .ensure_topic(
                    "words",
                    &runnel::log::TopicConfig {
                        partitions: 3,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let p = client.producer(Default::default());
            for (i, w) in words.iter().enumerate() {
                let k = i.to_string();
                p.send(runnel::log::ProducerRecord::new("words", w.as_bytes()).key(k.as_bytes()))
                    .await
                    .unwrap();
            }
            p.flush().await.unwrap();
        })
    };
    let state = tempfile::tempdir().unwrap();
    let run = |checkpoints: bool| {
        let mut cfg = StreamsConfig::new("wc");
        cfg.until_end = true;
        cfg.state_dir = checkpoints.then(|| state.path().to_path_buf());
        cfg.storage = storage;
        App::new(topology(), client.clone(), cfg)
            .run(rt.handle())
            .unwrap()
    };
    produce(&["a", "b", "a"]);
    run(true);
    produce(&["a", "c"]);
    let second = run(true);
    assert_eq!(
        second.restored_records, 0,
        "the local checkpoint covers the whole changelog"
    );
    produce(&["b"]);
    let third = run(false);
    assert!(
        third.restored_records >= 3,
        "without checkpoints the whole changelog is replayed"
    );
    assert_eq!(
        second.metrics.records_in,
        2 + 2,
        "only the new words (plus their repartitioned copies) are read"
    );
    assert_eq!(
        latest_counts(&rt, &client, "counts").0,
        HashMap::from([("a".into(), 3), ("b".into(), 2), ("c".into(), 1)])
    );
    file_names(state.path())
}

/// The latest value per key of `topic` (string keys, big-endian i64 values), read to its end,
/// and how many records it holds.
fn latest_counts(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    topic: &str,
) -> (HashMap<String, i64>, u64) {
    let partitions = rt.block_on(client.partition_count(topic)).unwrap().unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| runnel::log::TopicPartition::new(topic, p))
        .collect();
    let n: u64 = rt.block_on(client.end_offsets(&tps)).unwrap().iter().sum();
    let mut c = client.consumer(runnel::log::ConsumerConfig {
        auto_offset_reset: runnel::log::OffsetReset::Earliest,
        ..Default::default()
    });
    c.assign(tps).unwrap();
    let (mut latest, mut got) = (HashMap::new(), 0);
    while got < n {
        for r in rt.block_on(c.poll(Duration::from_millis(100))).unwrap() {
            got += 1;
            let k = String::from_utf8(r.record.key.unwrap().to_vec()).unwrap();
            latest.insert(
                k,
                i64::from_be_bytes(r.record.value.unwrap()[..].try_into().unwrap()),
            );
        }
    }
    (latest, n)
}

/// The names of the files and directories under `dir`, at any depth.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
            files.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    files
}

/// A hopping-window count (10 s windows every 5 s) kept on disk behind a cache of a few entries
/// (so panes are evicted and read back, and windows close from the file) gives the brute-force
/// counts, as in memory; restarted twice on its state directory, its window store reopens its
/// file at the checkpoint (no changelog replayed, no `.checkpoint` file), with the windows it
/// closed (none is emitted twice: the counts are exact).
#[test]
fn windowed_disk_state_resumes_from_its_file_to_exact_results() {
    let memory = windowed_counts_over_restarts(runnel::engine::state::Storage::Memory);
    let files = windowed_counts_over_restarts(runnel::engine::state::Storage::Disk {
        cache_bytes: 1 << 10,
    });
    assert!(
        files.iter().any(|f| f.ends_with("hop-counts.lsm")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with(".checkpoint")),
        "{files:?}"
    );
    assert!(memory.iter().any(|f| f.ends_with("hop-counts.checkpoint")));
}

/// Counts clicks per user in hopping windows over three runs with local checkpoints, the
/// store in `storage`, and checks the windows against brute force; returns the state
/// directory's file names.
fn windowed_counts_over_restarts(storage: runnel::engine::state::Storage) -> Vec<String> {
    const USERS: u64 = 7;
    const RUNS: u64 = 3;
    const PER_RUN: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream(
            "clicks",
            Consumed::with(StringSerde, StringSerde).with_out_of_orderness(Duration::from_secs(2)),
        )
        .group_by_key(None)
        .windowed_by(TimeWindows::of(Duration::from_secs(10)).advance_by(Duration::from_secs(5)))
        .count("hop-counts")
        .to_stream()
        .map(|w, n| (format!("{}@{}", w.key, w.window.start), n.unwrap_or(0)))
        .to("out", Produced::with(StringSerde, I64Serde));
        b.build()
    };
    // Click i: user i mod 7, 0.1 s after the one before, a little out of order (within the 2 s
    // bound). A bounded run closes every window when its input ends: each run's clicks start
    // later than the last run's windows.
    let click = |i: u64| {
        let ts = i / PER_RUN * 1_000_000 + i % PER_RUN * 100 + i % 5 * 300;
        (format!("u{}", i % USERS), ts as i64)
    };
    let produce = |clicks: &mut dyn Iterator<Item = (String, i64)>| {
        rt.block_on(async {
            let cfg = runnel::log::TopicConfig {
                partitions: 2,
                ..Default::default()
            };
            client.ensure_topic("clicks", &cfg).await.unwrap();
            let p = client.producer(Default::default());
            for (user, ts) in clicks {
                let rec = runnel::log::ProducerRecord::new("clicks", &b"x"[..])
                    .key(user.as_bytes())
                    .timestamp(ts);
                p.send(rec).await.unwrap();
            }
            p.flush().await.unwrap();
        })
    };
    let state = tempfile::tempdir().unwrap();
    for run in 0..RUNS {
        produce(&mut (run * PER_RUN..(run + 1) * PER_RUN).map(click));
        let mut cfg = StreamsConfig::new("hops");
        cfg.until_end = true;
        cfg.state_dir = Some(state.path().to_path_buf());
        cfg.storage = storage;
        let summary = App::new(topology(), client.clone(), cfg)
            .run(rt.handle())
            .unwrap();
        assert_eq!(
            summary.restored_records, 0,
            "run {run}: the local checkpoint covers the whole changelog"
        );
        assert_eq!(summary.metrics.late_records, 0, "run {run}: {storage:?}");
    }
    let mut want: HashMap<String, i64> = HashMap::new();
    for (user, ts) in (0..RUNS * PER_RUN).map(click) {
        let last = ts.div_euclid(5_000) * 5_000;
        for start in [last - 5_000, last] {
            *want.entry(format!("{user}@{start}")).or_default() += 1;
        }
    }
    let (got, records) = latest_counts(&rt, &client, "out");
    assert_eq!(got, want, "{storage:?}");
    assert_eq!(
        records,
        want.len() as u64,
        "{storage:?}: each window emitted once"
    );
    file_names(state.path())
}

fn windowed_counts(windows: TimeWindows, late_topic: bool) -> TestDriver {
    let b = StreamsBuilder::new();
    b.stream(
        "in",
        Consumed::with(StringSerde, I64Serde).with_out_of_orderness(Duration::from_secs(2)),
    )
    .group_by_key(None)
    .windowed_by(windows)
    .count("counts")
    .to_stream()
    .map(|w, n| (format!("{}@{}", w.key, w.window.start), n.unwrap_or(0)))
    .to("out", Produced::with(StringSerde, I64Serde));
    let t = b.build();
    let described = t.describe();
    assert!(described.contains("KSTREAM-WINDOWED-AGGREGATE"));
    let mut d = TestDriver::with_partitions(t, 3);
    if late_topic {
        d.config_mut().late_records_topic = Some("late".into());
    }
    d
}

#[test]
fn late_records_are_counted_and_sent_to_the_side_topic_and_grace_keeps_windows_open() {
    // Watermark = max event time − 2 s. Window [0, 10 s) closes at watermark ≥ 10 s + grace.
    for (grace, expect_late) in [(0, 1u64), (5, 0)] {
        let mut d = windowed_counts(
            TimeWindows::of(Duration::from_secs(10)).grace(Duration::from_secs(grace)),
            true,
        );
        // Only one of the 3 partitions gets records: the others must not hold the watermark.
        d.config_mut().idle_timeout = Duration::ZERO;
        d.pipe("in", "k".to_string(), 1i64, 1_000);
        d.pipe("in", "k".to_string(), 1i64, 13_000); // watermark 11 s: [0,10) closes without grace
        d.run(); // the watermark advances after each batch
        d.pipe("in", "k".to_string(), 1i64, 9_000); // late without grace, on time with 5 s grace
        d.pipe("in", "k".to_string(), 1i64, 12_500); // out of order but on time
        d.finish();
        let out: BTreeMap<String, i64> = d.read::<String, i64>("out").into_iter().collect();
        assert_eq!(d.metrics().late_records, expect_late, "grace {grace}");
        assert_eq!(out["k@0"], 2 - expect_late as i64);
        assert_eq!(out["k@10000"], 2);
        assert_eq!(d.read::<String, i64>("late").len() as u64, expect_late);
    }
}

#[test]
fn hopping_windows_from_panes_match_brute_force_on_shuffled_partitions() {
    let b = StreamsBuilder::new();
    b.stream(
        "in",
        Consumed::with(StringSerde, I64Serde).with_out_of_orderness(Duration::from_secs(3)),
    )
    .group_by_key(None)
    .windowed_by(TimeWindows::of(Duration::from_secs(10)).advance_by(Duration::from_secs(4)))
    .aggregate(|| 0i64, |_, v, s| s + v, |_, a, b| a + b, I64Serde, "sums")
    .to_stream()
    .map(|w, s| (format!("{}@{}", w.key, w.window.start), s.unwrap()))
    .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..3_000i64 {
        let key = format!("k{}", rng.random_range(0..7));
        let ts = i * 50 + rng.random_range(-2_000..2_000); // within the 3 s bound
        let v = rng.random_range(1..100);
        d.pipe("in", key.clone(), v, ts);
        let mut start = (ts - 10_000).div_euclid(4_000) * 4_000 + 4_000;
        while start <= ts {
            *expected.entry(format!("{key}@{start}")).or_default() += v;
            start += 4_000;
        }
    }
    d.finish();
    assert_eq!(d.metrics().late_records, 0);
    let got: BTreeMap<String, i64> = d.read::<String, i64>("out").into_iter().collect();
    assert_eq!(got, expected);
}

#[test]
fn session_windows_merge_when_an_out_of_order_record_bridges_them() {
    let b = StreamsBuilder::new();
    b.stream(
        "in",
        Consumed::with(StringSerde, I64Serde).with_out_of_orderness(Duration::from_secs(10)),
    )
    .group_by_key(None)
    .windowed_by_session(
        SessionWindows::with_inactivity_gap(Duration::from_secs(5)).grace(Duration::from_secs(1)),
    )
    .aggregate(
        || 0i64,
        |_, v, s| s + v,
        |_, a, b| a + b,
        I64Serde,
        "sessions",
    )
    .to_stream()
    .map(|w, s| {
        (
            format!("{}:{}-{}", w.key, w.window.start, w.window.end),
            s.unwrap(),
        )
    })
    .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 2);
    for (k, ts, v) in [
        ("a", 0, 1i64),
        ("a", 8_000, 2),
        ("b", 1_000, 10),
        ("a", 4_000, 4),
        ("a", 30_000, 8),
    ] {
        d.pipe("in", k.to_string(), v, ts);
    }
    d.finish();
    let got: BTreeMap<String, i64> = d.read::<String, i64>("out").into_iter().collect();
    let expected = BTreeMap::from([
        ("a:0-8000".to_string(), 7),
        ("a:30000-30000".to_string(), 8),
        ("b:1000-1000".to_string(), 10),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn emit_on_update_sends_every_intermediate_result() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(StringSerde, I64Serde))
        .group_by_key(None)
        .windowed_by(TimeWindows::of(Duration::from_secs(10)))
        .emit(EmitStrategy::OnWindowUpdate)
        .count("c")
        .to_stream()
        .map(|w, n| (w.key, n.unwrap()))
        .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::new(b.build());
    for ts in [1, 2, 3] {
        d.pipe("in", "k".to_string(), 0i64, ts);
    }
    d.run();
    let got: Vec<i64> = d
        .read::<String, i64>("out")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn undeserializable_records_go_to_the_dead_letter_topic_or_fail_the_task() {
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream("in", Consumed::with(StringSerde, I64Serde))
            .to("out", Produced::with(StringSerde, I64Serde));
        b.build()
    };
    let mut d = TestDriver::new(topology());
    d.pipe("in", "k".to_string(), 1i64, 0);
    d.pipe_bytes("in", Some(b"k"), Some(b"not eight bytes"), 1);
    d.pipe("in", "k".to_string(), 2i64, 2);
    d.run();
    assert_eq!(d.read::<String, i64>("out").len(), 2, "good records go on");
    let dead = d.read_records("test-app-dlq");
    assert_eq!(dead.len(), 1);
    let header = |k: &str| {
        dead[0]
            .1
            .headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert!(header("runnel.error").unwrap().contains("expected 8 bytes"));
    assert_eq!(header("runnel.topic").as_deref(), Some("in"));
    assert_eq!(header("runnel.offset").as_deref(), Some("1"));
    assert_eq!(dead[0].1.value.as_deref(), Some(&b"not eight bytes"[..]));

    let mut d = TestDriver::new(topology());
    d.config_mut().on_deserialize_error = OnDeserializeError::Fail;
    d.pipe_bytes("in", Some(b"k"), Some(b"bad"), 1);
    let err = d.try_run().unwrap_err().to_string();
    assert!(
        err.contains("cannot deserialize the value of in-") && err.contains("offset 0"),
        "{err}"
    );
}

#[test]
fn a_panic_in_user_code_fails_the_task_naming_the_operator_and_the_record() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(StringSerde, I64Serde))
        .map_values(|v| 100 / v)
        .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 1);
    d.pipe("in", "k".to_string(), 5i64, 0);
    d.pipe("in", "k".to_string(), 0i64, 1);
    let err = d.try_run().unwrap_err().to_string();
    assert!(
        err.contains("KSTREAM-MAPVALUES-0000000001")
            && err.contains("in-0 at offset 1")
            && err.contains("divide by zero"),
        "{err}"
    );
}

#[test]
fn joining_topics_with_different_partition_counts_is_explained() {
    let b = StreamsBuilder::new();
    let t = b.table("names", Consumed::with(StringSerde, StringSerde));
    b.stream("orders", Consumed::with(StringSerde, I64Serde))
        .join(&t, |a, n| format!("{n}{a}"))
        .to("out", Produced::with(StringSerde, StringSerde));
    let mut d = TestDriver::new(b.build());
    d.create_topic("names", 2);
    d.create_topic("orders", 3);
    let err = d.try_run().unwrap_err().to_string();
    assert!(
        err.contains("different partition counts")
            && err.contains("names: 2")
            && err.contains("orders: 3"),
        "{err}"
    );
}

struct Totals;

impl Processor<String, i64, String, i64> for Totals {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) {
        ctx.schedule(Duration::from_secs(10), PunctuationType::StreamTime);
        ctx.schedule(Duration::from_millis(20), PunctuationType::WallClockTime);
    }
    fn process(&mut self, ctx: &mut ProcessorContext<'_, String, i64>, r: Rec<String, i64>) {
        let store = ctx.store::<KeyValueStore<String, i64>>("totals");
        let total = store.borrow_mut().get(&r.key).copied().unwrap_or(0) + r.value;
        store.borrow_mut().put(r.key, total);
    }
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        time: i64,
        kind: PunctuationType,
    ) {
        let store = ctx.store::<KeyValueStore<String, i64>>("totals");
        let mut sum = 0i64;
        store
            .borrow()
            .for_each(&mut |_, v| {
                sum += v;
                Ok(())
            })
            .expect("an in-memory store");
        let key = match kind {
            PunctuationType::StreamTime => format!("stream@{time}"),
            PunctuationType::WallClockTime => "wall".to_string(),
        };
        ctx.forward(Rec::new(key, sum, time));
    }
}

#[test]
fn processor_punctuates_on_stream_time_and_wall_clock() {
    let b = StreamsBuilder::new();
    b.add_kv_store("totals", StringSerde, I64Serde);
    b.stream("in", Consumed::with(StringSerde, I64Serde))
        .process(|| Totals, &["totals"])
        .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 1);
    for (ts, v) in [(1_000, 1i64), (5_000, 2), (12_000, 4), (25_000, 8)] {
        d.pipe("in", "k".to_string(), v, ts);
        d.run(); // the watermark advances after each batch
    }
    d.advance_wall_clock(Duration::from_millis(50)).unwrap();
    let out = d.read::<String, i64>("out");
    let stream: Vec<_> = out
        .iter()
        .filter(|(k, _)| k.starts_with("stream@"))
        .cloned()
        .collect();
    // The watermark (no out-of-orderness) passes 10 s with the record at 12 s, 20 s with the one
    // at 25 s; punctuation runs after the record that moved it was processed.
    assert_eq!(
        stream,
        vec![
            ("stream@10000".to_string(), 7),
            ("stream@20000".to_string(), 15)
        ]
    );
    assert!(out.iter().any(|(k, v)| k == "wall" && *v == 15), "{out:?}");
}

#[test]
fn stream_stream_joins_emit_unmatched_records_only_after_the_window_closes() {
    let b = StreamsBuilder::new();
    let l = b.stream("l", Consumed::with(StringSerde, I64Serde));
    let r = b.stream("r", Consumed::with(StringSerde, I64Serde));
    let w = JoinWindows::of(Duration::from_secs(5));
    let show = |a: Option<&i64>, b: Option<&i64>| format!("{a:?}/{b:?}");
    l.join_stream(&r, move |a, b| show(Some(a), Some(b)), w)
        .to("inner", Produced::with(StringSerde, StringSerde));
    l.left_join_stream(&r, move |a, b| show(Some(a), b), w)
        .to("left", Produced::with(StringSerde, StringSerde));
    l.outer_join_stream(&r, show, w)
        .to("outer", Produced::with(StringSerde, StringSerde));
    let mut d = TestDriver::with_partitions(b.build(), 3);
    d.pipe("l", "a".to_string(), 1i64, 1_000);
    d.pipe("r", "a".to_string(), 2i64, 4_000); // joins l@1s
    d.pipe("l", "b".to_string(), 3i64, 2_000); // never matched
    d.pipe("r", "c".to_string(), 4i64, 3_000); // never matched
    d.run();
    let vals = |d: &TestDriver, t: &str| -> Vec<String> {
        d.read::<String, String>(t)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    assert_eq!(vals(&d, "inner"), vec!["a=Some(1)/Some(2)"]);
    assert_eq!(
        vals(&d, "left"),
        vec!["a=Some(1)/Some(2)"],
        "b's window is still open"
    );
    d.pipe("l", "z".to_string(), 0i64, 60_000); // moves the watermark past every window
    d.run();
    d.finish();
    let mut left = vals(&d, "left");
    left.sort();
    assert_eq!(
        left,
        vec!["a=Some(1)/Some(2)", "b=Some(3)/None", "z=Some(0)/None"]
    );
    let mut outer = vals(&d, "outer");
    outer.sort();
    assert_eq!(
        outer,
        vec![
            "a=Some(1)/Some(2)",
            "b=Some(3)/None",
            "c=None/Some(4)",
            "z=Some(0)/None"
        ]
    );
}

#[test]
fn table_table_joins_follow_updates_and_deletions() {
    let b = StreamsBuilder::new();
    let l = b.table("l", Consumed::with(StringSerde, I64Serde));
    let r = b.table("r", Consumed::with(StringSerde, I64Serde));
    l.join(&r, |a, b| a + b)
        .with_serdes(StringSerde, I64Serde)
        .to("inner");
    l.left_join(&r, |a, b| a + b.copied().unwrap_or(0))
        .with_serdes(StringSerde, I64Serde)
        .to("left");
    l.outer_join(&r, |a, b| a.copied().unwrap_or(0) + b.copied().unwrap_or(0))
        .with_serdes(StringSerde, I64Serde)
        .to("outer");
    let mut d = TestDriver::with_partitions(b.build(), 2);
    d.pipe("l", "k".to_string(), 1i64, 0);
    d.pipe("r", "k".to_string(), 10i64, 1);
    d.pipe("r", "only-r".to_string(), 5i64, 2);
    d.run();
    d.pipe_tombstone::<String>("l", "k".to_string(), 3);
    d.run();
    assert_eq!(d.table::<String, i64>("inner"), HashMap::new());
    assert_eq!(d.table::<String, i64>("left"), HashMap::new());
    assert_eq!(
        d.table::<String, i64>("outer"),
        HashMap::from([("k".to_string(), 10), ("only-r".to_string(), 5)])
    );
}

#[test]
fn stream_table_join_sees_the_table_loaded_first() {
    let b = StreamsBuilder::new();
    let names = b.table("names", Consumed::with(StringSerde, StringSerde));
    b.stream("orders", Consumed::with(StringSerde, I64Serde))
        .left_join(&names, |a, n| {
            format!("{}:{a}", n.map_or("?", |n| n.as_str()))
        })
        .to("out", Produced::with(StringSerde, StringSerde));
    let mut d = TestDriver::with_partitions(b.build(), 4);
    // The order arrives in the log before the table row is processed: tables are read first.
    d.pipe("orders", "r1".to_string(), 7i64, 10);
    d.pipe("names", "r1".to_string(), "Luigi".to_string(), 0);
    d.pipe("orders", "r9".to_string(), 1i64, 11);
    d.run();
    let mut got: Vec<String> = d
        .read::<String, String>("out")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    got.sort();
    assert_eq!(got, vec!["?:1", "Luigi:7"]);
}

#[test]
fn idle_partitions_stop_holding_the_watermark_after_the_idle_timeout() {
    // Regrouped through a repartition topic: the downstream task's watermark is the minimum over
    // the three upstream tasks, two of which read empty partitions.
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(StringSerde, I64Serde))
        .group_by(|k, _| k.clone(), Grouped::with(StringSerde, I64Serde))
        .windowed_by(TimeWindows::of(Duration::from_secs(10)))
        .count("c")
        .to_stream()
        .map(|w, n| (format!("{}@{}", w.key, w.window.start), n.unwrap()))
        .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 3);
    d.pipe("in", "k".to_string(), 1i64, 1_000);
    d.pipe("in", "k".to_string(), 1i64, 30_000);
    d.run();
    let early = d.read::<String, i64>("out");
    assert!(
        early.is_empty(),
        "empty partitions hold the watermark: {early:?}"
    );
    d.advance_wall_clock(Duration::from_secs(6)).unwrap(); // past the 5 s idle timeout
    assert_eq!(d.read::<String, i64>("out"), vec![("k@0".to_string(), 1)]);
}

#[test]
fn session_records_after_the_gap_and_grace_are_late() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(StringSerde, I64Serde))
        .group_by_key(None)
        .windowed_by_session(
            SessionWindows::with_inactivity_gap(Duration::from_secs(5))
                .grace(Duration::from_secs(2)),
        )
        .count("s")
        .to_stream()
        .map(|w, n| (format!("{}-{}", w.window.start, w.window.end), n.unwrap()))
        .to("out", Produced::with(StringSerde, I64Serde));
    let mut d = TestDriver::with_partitions(b.build(), 1);
    d.config_mut().late_records_topic = Some("late".into());
    d.pipe("in", "k".to_string(), 0i64, 1_000);
    d.pipe("in", "k".to_string(), 0i64, 20_000); // watermark 20 s: [1 s, 1 s] closed at 8 s
    d.run();
    d.pipe("in", "k".to_string(), 0i64, 12_500); // 12.5 + 5 + 2 <= 20: late
    d.pipe("in", "k".to_string(), 0i64, 14_000); // 14 + 5 + 2 > 20: joins no session, opens one
    d.finish();
    assert_eq!(d.metrics().late_records, 1);
    assert_eq!(d.read::<String, i64>("late").len(), 1);
    let got: BTreeMap<String, i64> = d.read::<String, i64>("out").into_iter().collect();
    assert_eq!(
        got,
        BTreeMap::from([
            ("1000-1000".into(), 1),
            ("14000-14000".into(), 1),
            ("20000-20000".into(), 1)
        ])
    );
}

#[test]
fn the_ride_job_over_a_broker_gives_the_embedded_results() {
    let events = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    rt.block_on(rides::produce_rides(&client, "rides", 4, events, |_| {}))
        .unwrap();
    let mut cfg = StreamsConfig::new("rides-over-broker");
    cfg.until_end = true;
    let topology = rides::speed_per_region("rides", "out");
    App::new(topology, client.clone(), cfg)
        .run(rt.handle())
        .unwrap();
    let remote = final_windows(rt.block_on(rides::read_json(&client, "out")).unwrap());
    let embedded = run_rides(4, events);
    assert!(embedded.len() >= 16 * 3, "three 10 s windows per region");
    assert_eq!(remote.len(), embedded.len());
    for (k, w) in &embedded {
        assert!(
            same(w, &remote[k]),
            "{k:?}: {w:?} embedded vs {:?} over the broker",
            remote[k]
        );
    }
}

/// Interactive queries of a running application's stores, as its aggregations emit them: a
/// count per key, and hopping windows of a re-keyed stream (two-phase: partials per writer
/// merged, panes merged into windows).
#[test]
fn running_aggregations_answer_interactive_queries() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path()).unwrap());
    let b = StreamsBuilder::new();
    let clicks = b.stream("clicks", Consumed::with(StringSerde, StringSerde));
    clicks.group_by_key(None).count("per-user").to("per-user");
    clicks
        .group_by(
            |_, page| page.clone(),
            Grouped::with(StringSerde, StringSerde),
        )
        .windowed_by(TimeWindows::of(Duration::from_secs(10)).advance_by(Duration::from_secs(5)))
        .count("per-page")
        .to_stream()
        .map(|w, c| (w.key, c.unwrap_or(0)))
        .to("per-page", Produced::with(StringSerde, I64Serde));
    let (users, pages) = (["ann", "bob", "cy"], ["home", "cart", "pay", "help"]);
    let clicks_of = |i: i64| {
        (
            users[(i % 3) as usize],
            pages[(i / 2 % 4) as usize],
            i * 100,
        )
    };
    rt.block_on(async {
        let config = runnel::log::TopicConfig {
            partitions: 4,
            ..Default::default()
        };
        client.ensure_topic("clicks", &config).await.unwrap();
        let p = client.producer(Default::default());
        for i in 0..1_000 {
            let (user, page, ts) = clicks_of(i);
            let r = runnel::log::ProducerRecord::new("clicks", page.as_bytes())
                .key(user.as_bytes())
                .timestamp(ts);
            p.send(r).await.unwrap();
        }
        p.flush().await.unwrap();
    });
    let app = Arc::new(App::new(
        b.build(),
        client.clone(),
        StreamsConfig::new("clicks-app"),
    ));
    let running = app.clone();
    let handle = rt.handle().clone();
    let thread = std::thread::spawn(move || running.run(&handle));

    let timeout = Duration::from_secs(5);
    // Before its workers run, the application has nobody to ask.
    let per_user = |key: Option<String>| -> Option<BTreeMap<String, i64>> {
        let answers = app
            .query_table::<String, i64, _>("per-user", key, timeout, Ok)
            .ok()?;
        assert_eq!(answers.len(), 4, "every task answers with its positions");
        Some(
            answers
                .into_iter()
                .flat_map(|a| a.value.unwrap())
                .map(|(k, w, c)| {
                    assert!(w.is_none());
                    (k, c)
                })
                .collect(),
        )
    };
    let mut expected = BTreeMap::new();
    for i in 0..1_000 {
        *expected.entry(clicks_of(i).0.to_string()).or_insert(0) += 1;
    }
    crate::support::wait_for("every click counted", || {
        per_user(None).is_some_and(|counts| counts == expected)
    });
    assert_eq!(
        per_user(Some("bob".into())),
        Some(BTreeMap::from([("bob".to_string(), expected["bob"])]))
    );
    assert_eq!(per_user(Some("nobody".into())), Some(BTreeMap::new()));

    // Every window the aggregation still holds has the count of its clicks.
    let mut windows = BTreeMap::<(String, i64), i64>::new();
    for i in 0..1_000 {
        let (_, page, ts) = clicks_of(i);
        let last = ts.div_euclid(5_000) * 5_000;
        for start in [last - 5_000, last] {
            *windows.entry((page.to_string(), start)).or_default() += 1;
        }
    }
    let answers = app
        .query_table::<String, i64, _>("per-page", Some("cart".into()), timeout, Ok)
        .unwrap();
    assert_eq!(answers.len(), 4, "the windowed aggregation's tasks answer");
    let held: Vec<_> = answers.into_iter().flat_map(|a| a.value.unwrap()).collect();
    assert!(!held.is_empty(), "the open windows of the last clicks");
    for (page, w, count) in &held {
        let w = w.unwrap();
        assert_eq!((page.as_str(), w.end - w.start), ("cart", 10_000));
        assert_eq!(
            Some(count),
            windows.get(&(page.clone(), w.start)),
            "window {w:?}"
        );
    }
    assert!(
        app.query_table::<String, i64, _>("nope", None, timeout, Ok)
            .is_err(),
        "an unknown store is refused"
    );
    app.stop_flag()
        .store(true, std::sync::atomic::Ordering::SeqCst);
    thread.join().unwrap().unwrap();
}
