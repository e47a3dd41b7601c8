//! Scale-out: instances of one job share its tasks over `runnel broker` (issue 20), checked
//! the way a user would: `runnel --bootstrap ... run job.toml` started several times, one
//! SIGKILLed, another started later; the DSL's reference app the same way (its example's
//! processes) and as in-process `App`s handing tasks over; the output compared with a brute-force computation of the same windows.

use crate::broker::BrokerProc;
use crate::support::wait_for_up_to;
use runnel::broker::client::RemoteLog;
use runnel::rides::{self, Ride};
use runnel_log::SharedLogClient;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events of the windowed job tests (the figure).
const EVENTS: u64 = 1_000_000;
/// How long a test waits for its instances to finish.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// `(region, window start)` → (rides, sum of speeds, max speed) of `speed > 5` rides in 10 s
/// tumbling windows: what the reference window job must find, computed directly.
fn brute_force(rides: &[Ride]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut out: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for r in rides.iter().filter(|r| r.speed > 5.0) {
        let start = r.ts - r.ts.rem_euclid(10_000);
        let e = out
            .entry((r.region.clone(), start))
            .or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += r.speed;
        e.2 = e.2.max(r.speed);
    }
    out
}

/// Compares windows found (`(region, start)` → rides, average, max; repeats listed apart)
/// with `want`; returns the first difference.
fn compare(
    found: &[((String, i64), (u64, f64, f64))],
    want: &BTreeMap<(String, i64), (u64, f64, f64)>,
    exactly_once: bool,
) -> Result<(), String> {
    let mut seen: BTreeMap<&(String, i64), &(u64, f64, f64)> = BTreeMap::new();
    for (key, got) in found {
        if let Some(before) = seen.insert(key, got) {
            if exactly_once {
                return Err(format!(
                    "window {key:?} appears twice: {before:?} and {got:?}"
                ));
            }
            if before != got {
                return Err(format!(
                    "window {key:?} repeated with other figures: {before:?} and {got:?}"
                ));
            }
        }
        let Some(&(count, sum, max)) = want.get(key) else {
            return Err(format!("window {key:?} should not exist: {got:?}"));
        };
        let avg = sum / count as f64;
        if got.0 != count || (got.1 - avg).abs() > 1e-9 * avg.max(1.0) || got.2 != max {
            return Err(format!(
                "window {key:?}: found {got:?}, brute force ({count}, {avg}, {max})"
            ));
        }
    }
    match want.keys().find(|k| !seen.contains_key(k)) {
        Some(k) => Err(format!(
            "window {k:?} is missing ({} of {} found)",
            seen.len(),
            want.len()
        )),
        None => Ok(()),
    }
}

/// A broker with `n` ride events in the topic `rides` of `partitions`, and the events as
/// stored.
fn broker_with_rides(
    dir: &std::path::Path,
    n: u64,
    partitions: u32,
) -> (BrokerProc, SharedLogClient, Vec<Ride>) {
    let broker = BrokerProc::start(&dir.join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt.block_on(RemoteLog::connect(&broker.addr)).unwrap();
    let rides = rt.block_on(async {
        rides::produce_rides(&client, "rides", partitions, n, |_| {})
            .await
            .unwrap();
        rides::read_json::<Ride>(&client, "rides").await.unwrap()
    });
    (broker, client, rides.into_iter().map(|(_, r)| r).collect())
}

/// A `runnel --bootstrap B run job` instance; its stderr lines are kept.
struct Instance {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// One "holding N task(s): ... (generation G, I instance(s))" line.
#[derive(Debug, Clone, PartialEq)]
struct Holding {
    tasks: usize,
    generation: i32,
    instances: u32,
}

impl Instance {
    fn start(bootstrap: &str, job: &std::path::Path) -> Self {
        Self::spawn(bootstrap, job, true)
    }

    /// `runnel --bootstrap B run job [--until-end]`.
    fn spawn(bootstrap: &str, job: &std::path::Path, until_end: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runnel"));
        command.args(["--bootstrap", bootstrap, "run"]).arg(job);
        if until_end {
            command.arg("--until-end");
        }
        Self::watch(command)
    }

    /// The DSL's reference app as a user runs it: `examples/ride_hailing --bootstrap B
    /// --exactly-once` (built beside `runnel` by `cargo test`, or `cargo build --examples`).
    fn example(bootstrap: &str) -> Self {
        let runnel = std::path::Path::new(env!("CARGO_BIN_EXE_runnel"));
        let example = runnel.with_file_name("examples").join("ride_hailing");
        assert!(
            example.exists(),
            "{} is missing: build it with `cargo build --examples` (--release for a release test run)",
            example.display()
        );
        let mut command = Command::new(example);
        command.args(["--bootstrap", bootstrap, "--exactly-once"]);
        Self::watch(command)
    }

    /// Starts `command`, keeping its stderr lines.
    fn watch(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (err, kept) = (child.stderr.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn holdings(&self) -> Vec<Holding> {
        let parse = |l: &str| -> Option<Holding> {
            let rest = l.strip_prefix("holding ")?;
            let (tasks, rest) = rest.split_once(" task(s)")?;
            let (_, gen_part) = rest.rsplit_once("(generation ")?;
            let (generation, rest) = gen_part.split_once(", ")?;
            let (instances, _) = rest.split_once(" instance")?;
            Some(Holding {
                tasks: tasks.parse().ok()?,
                generation: generation.parse().ok()?,
                instances: instances.parse().ok()?,
            })
        };
        let lines = self.lines.lock().unwrap();
        lines.iter().filter_map(|l| parse(l)).collect()
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Waits for every instance to exit, and asserts each succeeded; on a failure or timeout,
/// shows what each printed.
fn finish_all(mut instances: Vec<Instance>) {
    let shown: Vec<_> = instances.iter().map(|i| i.lines.clone()).collect();
    let _on_failure = LogsOnFailure(shown);
    wait_for_up_to("every instance to end", RUN_LIMIT, || {
        instances
            .iter_mut()
            .all(|i| match i.child.try_wait().unwrap() {
                None => false,
                Some(s) => {
                    assert!(s.success(), "an instance failed ({s})");
                    true
                }
            })
    });
}

/// Prints what each instance wrote when the test fails while this lives (a timeout included).
struct LogsOnFailure(Vec<Arc<Mutex<Vec<String>>>>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (n, lines) in self.0.iter().enumerate() {
                eprintln!("--- instance {n}:\n{}", lines.lock().unwrap().join("\n"));
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference window job (examples/jobs/ride_hailing.toml) under `guarantee`.
fn window_job(dir: &std::path::Path, guarantee: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs/ride_hailing.toml"),
    )
    .unwrap();
    let job = example.replace(
        "name = \"ride-hailing-sql\"",
        &format!("name = \"ride-hailing-sql\"\nguarantee = \"{guarantee}\""),
    );
    assert_ne!(job, example, "the example names its job as expected");
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

/// `(region, window start)` → (rides, average, max) of each row of the job's output.
fn sql_windows(client: &SharedLogClient) -> Vec<((String, i64), (u64, f64, f64))> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows: Vec<(String, serde_json::Value)> = rt
        .block_on(rides::read_json(client, "region-speeds"))
        .unwrap();
    rows.into_iter()
        .map(|(_, v)| {
            let start = v["window_start"]
                .as_i64()
                .unwrap_or_else(|| panic!("window_start of {v}"));
            (
                (v["region"].as_str().unwrap().to_string(), start),
                (
                    v["rides"].as_u64().unwrap(),
                    v["avg_speed"].as_f64().unwrap(),
                    v["max_speed"].as_f64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The scenario: `runnel broker`, three instances of the ride-hailing window job
/// (exactly-once) over an 8-partition topic with 1,000,000 events; the tasks are spread, one
/// instance is SIGKILLed once all three hold tasks, a fourth starts after: every window
/// equals brute force and appears exactly once.
#[test]
fn instances_share_the_window_job_and_survive_a_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, rides) = broker_with_rides(dir.path(), EVENTS, 8);
    let job = window_job(dir.path(), "exactly-once");
    share_kill_one_and_finish(|| Instance::start(&broker.addr, &job));
    let found = sql_windows(&client);
    if let Err(e) = compare(&found, &brute_force(&rides), true) {
        panic!("{e}");
    }
    drop(broker);
}

/// Starts three instances with `start`; once each holds tasks in a generation of three (none
/// runs them all), SIGKILLs one and starts a fourth; waits until every one left has ended.
fn share_kill_one_and_finish(start: impl Fn() -> Instance) {
    let mut instances: Vec<Instance> = (0..3).map(|_| start()).collect();
    wait_for_up_to("three instances holding tasks", RUN_LIMIT, || {
        instances.iter().all(|i| {
            i.holdings()
                .last()
                .is_some_and(|h| h.instances == 3 && h.tasks > 0)
        })
    });
    for (n, i) in instances.iter().enumerate() {
        let h = i.holdings().last().cloned().unwrap();
        assert!(h.tasks < 16, "instance {n} holds all 16 tasks: {h:?}");
    }
    let killed = instances.remove(1);
    drop(killed);
    instances.push(start());
    finish_all(instances);
}

/// The same with the DSL example as separate processes (`examples/ride_hailing.rs
/// --bootstrap B --exactly-once`), one SIGKILLed: every window equals brute force and
/// appears exactly once.
#[test]
fn dsl_example_instances_survive_a_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, rides) = broker_with_rides(dir.path(), EVENTS, 8);
    share_kill_one_and_finish(|| Instance::example(&broker.addr));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let windows: Vec<(String, rides::RegionWindow)> = rt
        .block_on(rides::read_json(&client, "region-speeds"))
        .unwrap();
    if let Err(e) = compare(&dsl_windows(windows), &brute_force(&rides), true) {
        panic!("{e}");
    }
    drop(broker);
}

/// The reference app's output windows as [`compare`] takes them.
fn dsl_windows(
    windows: Vec<(String, rides::RegionWindow)>,
) -> Vec<((String, i64), (u64, f64, f64))> {
    windows
        .into_iter()
        .map(|(_, w)| {
            (
                (w.region, w.window_start),
                (w.count, w.avg_speed, w.max_speed),
            )
        })
        .collect()
}

/// The same with the DSL's reference app (`runnel::rides::speed_per_region`, at-least-once):
/// three `App`s over their own connections to the broker share the tasks; one is stopped
/// once all three hold tasks (it commits and leaves), a fourth starts: every window equals
/// brute force, and a window written twice is written the same both times.
#[test]
fn dsl_app_instances_share_the_work_and_hand_tasks_over() {
    use runnel_engine::{App, StreamsConfig};
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, rides) = broker_with_rides(dir.path(), EVENTS, 8);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = || {
        let remote: SharedLogClient = rt.block_on(RemoteLog::connect(&broker.addr)).unwrap();
        let mut config = StreamsConfig::new("ride-hailing");
        config.until_end = true;
        config.num_threads = 1;
        let app = App::new(
            rides::speed_per_region("rides", "region-speeds"),
            remote,
            config,
        );
        let (stats, stop, handle) = (app.stats(), app.stop_flag(), rt.handle().clone());
        let thread = std::thread::spawn(move || app.run(&handle));
        (stats, stop, thread)
    };
    let mut apps: Vec<_> = (0..3).map(|_| start()).collect();
    wait_for_up_to("three apps holding tasks", RUN_LIMIT, || {
        apps.iter().all(|(stats, _, _)| {
            stats
                .assignment()
                .is_some_and(|a| a.instances == 3 && !a.tasks.is_empty())
        })
    });
    for (stats, _, _) in &apps {
        let a = stats.assignment().unwrap();
        assert!(a.tasks.len() < 16, "one app holds every task: {a:?}");
    }
    let (_, stop, stopped) = apps.remove(1);
    stop.store(true, std::sync::atomic::Ordering::Release);
    stopped.join().unwrap().unwrap();
    apps.push(start());
    let mut ran = 0;
    for (_, _, thread) in apps {
        ran += thread.join().unwrap().unwrap().tasks;
    }
    assert!(ran >= 16, "the apps ran {ran} tasks of 16");
    let windows: Vec<(String, rides::RegionWindow)> = rt
        .block_on(rides::read_json(&client, "region-speeds"))
        .unwrap();
    if let Err(e) = compare(&dsl_windows(windows), &brute_force(&rides), false) {
        panic!("{e}");
    }
}

/// A stateless job under exactly-once, two instances started together: every row once,
/// never the whole input twice (the first finding).
#[test]
fn two_instances_of_a_stateless_job_write_every_row_once() {
    use crate::transactions::{expected_rows, output_rows, stateless_job};
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, rides) = broker_with_rides(dir.path(), 400_000, 4);
    let job = stateless_job(dir.path(), "exactly-once");
    let instances: Vec<Instance> = (0..2)
        .map(|_| Instance::start(&broker.addr, &job))
        .collect();
    // Whichever joins first may be done before the other arrives (the second then finds
    // everything committed); every row must be there once either way.
    finish_all(instances);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out: Vec<(String, serde_json::Value)> =
        rt.block_on(rides::read_json(&client, "out")).unwrap();
    let got = output_rows(&out.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    let want = expected_rows(&rides);
    assert_eq!(got.len(), want.len(), "every row once, none twice");
    assert!(got == want, "the rows the job must write");
}

/// Rebalance while state is large: one instance of a 200,000-key aggregation holds every task
/// and has consumed its input; a second joins, takes over half the tasks, restores their state
/// and says how long after its assignment it was processing; more input then lands on both,
/// and every key's last count equals brute force over all the input.
#[test]
fn a_joining_instance_restores_the_state_of_its_tasks_and_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, _) = broker_with_rides(dir.path(), 200_000, 4);
    let job = per_ms_job(dir.path(), 0);
    let start = || Instance::spawn(&broker.addr, &job, false);
    let counts = PerMs::new(&client);
    let first = start();
    counts.wait_right("the first instance's counts");
    let second = start();
    wait_for_up_to(
        "the second instance processing its tasks",
        RUN_LIMIT,
        || {
            let log = second.log();
            second
                .holdings()
                .iter()
                .any(|h| h.instances == 2 && h.tasks > 0)
                && log.lines().any(|l| l.starts_with("processing (generation"))
        },
    );
    let took = second
        .log()
        .lines()
        .find(|l| l.starts_with("processing (generation"))
        .map(str::to_string)
        .unwrap();
    println!("second instance: {took}");
    counts.more_rides(50_000);
    counts.wait_right("counts over both instances");
    for i in [first, second] {
        assert!(
            i.holdings()
                .last()
                .is_some_and(|h| h.instances == 2 && h.tasks > 0),
            "each instance holds tasks at the end:\n{}",
            i.log()
        );
    }
}

/// Standby replicas: two instances of the per-ms aggregation with `standby_replicas = 1`;
/// once the second's standby copies are checkpointed, the first is SIGKILLed: the second
/// takes its tasks over replaying almost none of their changelog (without a standby it
/// replays all of it), and the counts stay right.
#[test]
fn a_standby_replica_takes_over_without_replaying_the_changelog() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, client, _) = broker_with_rides(dir.path(), 200_000, 4);
    let job = per_ms_job(dir.path(), 1);
    let counts = PerMs::new(&client);
    let first = Instance::spawn(&broker.addr, &job, false);
    let second = Instance::spawn(&broker.addr, &job, false);
    let keys = counts.wait_right("the counts of two instances");
    let standby_ready = |i: &Instance| {
        let generation = i.holdings().last().map(|h| h.generation);
        i.log().lines().any(|l| {
            l.starts_with("standby copies of")
                && generation.is_some_and(|g| l.ends_with(&format!("(generation {g})")))
        })
    };
    wait_for_up_to("the second instance's standby copies", RUN_LIMIT, || {
        second.holdings().last().is_some_and(|h| h.instances == 2) && standby_ready(&second)
    });
    drop(first);
    let took_over = |i: &Instance| -> Option<u64> {
        let h = i.holdings().last().cloned().filter(|h| h.instances == 1)?;
        let prefix = format!("processing (generation {})", h.generation);
        let log = i.log();
        let line = log.lines().find(|l| l.starts_with(&prefix))?;
        let (_, rest) = line.rsplit_once(", ")?;
        rest.split_once(' ')?.0.parse().ok()
    };
    wait_for_up_to("the second instance alone, processing", RUN_LIMIT, || {
        took_over(&second).is_some()
    });
    let replayed = took_over(&second).unwrap();
    println!("replayed {replayed} changelog record(s) for {keys} keys");
    assert!(
        replayed * 10 < keys as u64,
        "the survivor replayed {replayed} changelog records of {keys} keys: its standby was not used\n{}",
        second.log()
    );
    counts.more_rides(20_000);
    counts.wait_right("the counts after the failover");
}

/// The per-ms aggregation of `examples/scale-out/per_ms.toml` with `standbys` standby
/// replicas, written into `dir`.
fn per_ms_job(dir: &std::path::Path, standbys: usize) -> std::path::PathBuf {
    let text = include_str!("../../examples/scale-out/per_ms.toml").replace(
        "standby_replicas = 0",
        &format!("standby_replicas = {standbys}"),
    );
    let job = dir.join("per_ms.toml");
    std::fs::write(&job, text).unwrap();
    job
}

/// The per-ms job's output against brute force over the broker's `rides`.
struct PerMs<'a> {
    client: &'a SharedLogClient,
    rt: tokio::runtime::Runtime,
}

impl<'a> PerMs<'a> {
    fn new(client: &'a SharedLogClient) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        Self { client, rt }
    }

    /// The last count written per key.
    fn last_counts(&self) -> BTreeMap<i64, u64> {
        let rows: Vec<(String, serde_json::Value)> = (self.rt)
            .block_on(rides::read_json(self.client, "per-ms"))
            .unwrap();
        rows.into_iter()
            .map(|(_, v)| (v["ts"].as_i64().unwrap(), v["n"].as_u64().unwrap()))
            .collect()
    }

    fn brute_force(&self) -> BTreeMap<i64, u64> {
        let all: Vec<(String, Ride)> = (self.rt)
            .block_on(rides::read_json(self.client, "rides"))
            .unwrap();
        let mut counts = BTreeMap::new();
        for (_, r) in all {
            *counts.entry(r.ts).or_default() += 1;
        }
        counts
    }

    /// Waits until every key's last count is right; returns how many keys there are.
    fn wait_right(&self, what: &str) -> usize {
        let want = self.brute_force();
        wait_for_up_to(what, RUN_LIMIT, || self.last_counts() == want);
        want.len()
    }

    fn more_rides(&self, n: u64) {
        (self.rt)
            .block_on(rides::produce_rides(self.client, "rides", 4, n, |_| {}))
            .unwrap();
    }
}
