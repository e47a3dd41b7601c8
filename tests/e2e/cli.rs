//! The `runnel` command as a user runs it: the real binary (`CARGO_BIN_EXE_runnel`) started with
//! `std::process::Command` on a `--data-dir` inside a temporary directory.
//!
//! - `million_json_lines_round_trip`: a 4-partition topic, 1,000,000 JSON lines produced from a
//!   file keyed by `driver_id`, consumed from the beginning as JSON: the same multiset of lines,
//!   dense offsets, each key in exactly one partition (Kafka's murmur2 choice) and in input order;
//!   `topics describe` counts them all.
//! - `group_consumption_resumes_from_committed_offsets`: two `consume --group` runs (the first
//!   stopped by `--max-messages`) read every record exactly once; `groups describe` shows no lag
//!   and `groups list` shows the group.
//! - `user_errors_are_one_clear_line`: mistakes a user makes end with a non-zero exit code and one
//!   `error:` line naming the problem, never a panic; an invalid topic name creates nothing
//!   outside the data directory.
//! - `quickstart_runs_on_a_fresh_data_dir`: `runnel quickstart` on a new data directory produces
//!   the requested events and reads them all back.
//!
//! The expected results come from the inputs the tests generate, never from a previous run.

use runnel_log::partitioner::partition_for_key;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A command that should finish quickly gets this long before it counts as hung.
pub(crate) const SHORT: Duration = Duration::from_secs(120);
/// Producing or consuming a million records in a debug build.
pub(crate) const LONG: Duration = Duration::from_secs(900);

/// The `runnel` binary bound to one data directory.
pub(crate) struct Runnel {
    data_dir: PathBuf,
}

impl Runnel {
    pub(crate) fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
        }
    }

    /// `runnel --data-dir DIR args...` as text, for assertion messages.
    pub(crate) fn describe(&self, args: &[&str]) -> String {
        format!(
            "runnel --data-dir {} {}",
            self.data_dir.display(),
            args.join(" ")
        )
    }

    /// Runs the command with `stdin` as its input (none: an empty stdin) and returns its output;
    /// kills it and fails the test if it has not exited after `limit`.
    pub(crate) fn run_with(&self, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args.iter().map(OsStr::new))
            // The default log filter (warn) keeps stderr to what a user sees.
            .env_remove("RUST_LOG")
            .env_remove("RUNNEL_DATA_DIR")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.describe(args)));
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            // The command may stop reading early (that is what some tests check): ignore EPIPE.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                pipe.read_to_end(&mut buf).map(|_| buf)
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(w) = writer {
            w.join().unwrap();
        }
        let stdout = stdout.join().unwrap().expect("reading stdout");
        let stderr = stderr.join().unwrap().expect("reading stderr");
        let Some(status) = status else {
            panic!(
                "`{}` did not exit within {limit:?}; killed it. stderr:\n{}",
                self.describe(args),
                String::from_utf8_lossy(&stderr)
            );
        };
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Runs a quick command that must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(args, None, SHORT);
        let out = self.expect_success(args, out);
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Fails the test, with the command's stderr, unless it exited 0.
    pub(crate) fn expect_success(&self, args: &[&str], out: Output) -> Output {
        assert!(
            out.status.success(),
            "`{}` failed with {}; stderr:\n{}",
            self.describe(args),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command that must fail as a user error: a non-zero exit code (not a signal), no
    /// panic, and exactly one `error:` line on stderr, which is returned.
    pub(crate) fn user_error(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run_with(args, stdin, SHORT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let what = self.describe(args);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "`{what}` should fail with an exit code, got {}; stdout:\n{}\nstderr:\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        for word in ["panicked", "RUST_BACKTRACE"] {
            assert!(
                !stderr.contains(word),
                "`{what}` printed a panic ({word:?}) instead of an error message; stderr:\n{stderr}"
            );
        }
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(
            errors.len(),
            1,
            "`{what}` should print exactly one `error:` line; stderr:\n{stderr}"
        );
        errors[0].to_string()
    }
}

/// Asserts that the error line of `what` contains every one of `needles`.
fn assert_mentions(what: &str, error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            error.contains(needle),
            "the error of `{what}` should mention {needle:?}; it was:\n{error}"
        );
    }
}

/// The unsigned integers in `text`, in order (any non-digit separates them).
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The first number after `word` in some line of `text`, for every line containing `word`.
fn numbers_after(text: &str, word: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.find(word).map(|at| &l[at + word.len()..]))
        .filter_map(|rest| numbers(rest).first().copied())
        .collect()
}

/// The total record count in `topics describe` output: the `records` line (not the table).
fn described_records(describe: &str) -> Option<u64> {
    describe
        .lines()
        .find(|l| l.trim_start().to_ascii_lowercase().starts_with("records"))
        .and_then(|l| numbers(l).first().copied())
}

/// One line of `runnel consume --format json`.
#[derive(serde::Deserialize)]
struct Consumed {
    partition: u32,
    offset: u64,
    #[allow(dead_code)]
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
}

/// Parses `consume --format json` output, one object per line.
fn parse_consumed(stdout: &[u8]) -> Vec<Consumed> {
    let body = stdout.strip_suffix(b"\n").unwrap_or(stdout);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "consume output line {} is not a record object ({e}): {}",
                    i + 1,
                    String::from_utf8_lossy(line)
                )
            })
        })
        .collect()
}

/// splitmix64: deterministic, so a failure can be reproduced.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ride events as JSON lines, all in one string: line `i` is `text[starts[i]..starts[i + 1] - 1]`.
struct Events {
    text: String,
    starts: Vec<usize>,
    drivers: Vec<u16>,
}

impl Events {
    /// `n` location updates of 10,000 drivers in 16 regions (the shape of
    /// `shared/bench/gen_events.py`), each with its sequence number `seq` first. Two region
    /// names need escaping or are not ASCII, so the values are not all plain ASCII JSON.
    fn generate(n: usize, seed: u64) -> Self {
        const REGIONS: [&str; 16] = [
            "north",
            "south",
            "east",
            "west",
            "central",
            "harbor",
            "airport",
            "downtown",
            "uptown",
            "midtown",
            "riverside",
            "hills",
            "lakeside",
            r#"old \"port\""#,
            "südstadt",
            "campus",
        ];
        let mut rng = SplitMix64(seed);
        let mut text = String::with_capacity(n * 140);
        let mut starts = Vec::with_capacity(n + 1);
        let mut drivers = Vec::with_capacity(n);
        let mut ts = 1_700_000_000_000i64;
        for seq in 0..n {
            starts.push(text.len());
            let jitter = rng.below(401) as i64 - 200;
            ts += 1;
            let driver = rng.below(10_000) as u16;
            let region = if rng.unit() < 0.7 {
                usize::from(driver) % 16
            } else {
                rng.below(16) as usize
            };
            let lat = 52.52 + 0.02 * ((region % 4) as f64 - 1.5) + (rng.unit() - 0.5) * 0.02;
            let lon = 13.40 + 0.03 * ((region / 4) as f64 - 1.5) + (rng.unit() - 0.5) * 0.03;
            let speed = rng.unit() * 30.0;
            writeln!(
                text,
                r#"{{"seq":{seq},"ts":{},"driver_id":{driver},"region":"{}","lat":{lat:.6},"lon":{lon:.6},"speed":{speed:.3}}}"#,
                ts + jitter,
                REGIONS[region],
            )
            .unwrap();
            drivers.push(driver);
        }
        starts.push(text.len());
        Self {
            text,
            starts,
            drivers,
        }
    }

    fn line(&self, i: usize) -> &str {
        &self.text[self.starts[i]..self.starts[i + 1] - 1]
    }
}

/// The `seq` of a value that starts like the generated lines, `{"seq":N,`.
fn seq_of(value: &str) -> Option<usize> {
    let rest = value.strip_prefix(r#"{"seq":"#)?;
    rest[..rest.find(',')?].parse().ok()
}

#[test]
fn million_json_lines_round_trip() {
    const N: usize = 1_000_000;
    const PARTITIONS: u32 = 4;
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let runnel = Runnel::new(tmp.path().join("data"));
    let events = Events::generate(N, 0x5eed_0001);
    let input = tmp.path().join("rides.jsonl");
    std::fs::write(&input, &events.text).unwrap();
    let generated = started.elapsed();

    runnel.ok(&["topics", "create", "rides", "--partitions", "4"]);
    let input_arg = input.to_str().unwrap();
    let produce = [
        "produce",
        "rides",
        "--file",
        input_arg,
        "--key-field",
        "driver_id",
    ];
    let out = runnel.run_with(&produce, None, LONG);
    let out = runnel.expect_success(&produce, out);
    let produce_stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        numbers_after(&produce_stderr, "produced").contains(&(N as u64)),
        "`{}` should report {N} records produced; stderr:\n{produce_stderr}",
        runnel.describe(&produce)
    );
    let produced = started.elapsed();

    let consume = [
        "consume",
        "rides",
        "--from-beginning",
        "--format",
        "json",
        "--timeout",
        "3s",
    ];
    let out = runnel.run_with(&consume, None, LONG);
    let out = runnel.expect_success(&consume, out);
    let consumed_at = started.elapsed();
    let records = parse_consumed(&out.stdout);
    drop(out);
    assert_eq!(
        records.len(),
        N,
        "`{}` should print every produced record once",
        runnel.describe(&consume)
    );

    // The same multiset of lines: every line has a distinct seq, so each value must be the
    // input line with its seq, and no seq may come twice.
    let mut seen = vec![false; N];
    // (partition, offset, seq), to be ordered by partition and offset.
    let mut placed = Vec::with_capacity(N);
    let mut partition_of_key: Vec<Option<u32>> = vec![None; 10_000];
    for r in &records {
        let value = r
            .value
            .as_deref()
            .unwrap_or_else(|| panic!("record {}@{} has no value", r.partition, r.offset));
        let seq = seq_of(value).filter(|&s| s < N).unwrap_or_else(|| {
            panic!(
                "record {}@{} is not an input line: {value}",
                r.partition, r.offset
            )
        });
        assert_eq!(
            value,
            events.line(seq),
            "record {}@{} differs from input line {}",
            r.partition,
            r.offset,
            seq + 1
        );
        assert!(
            !seen[seq],
            "input line {} was consumed twice (again at {}@{})",
            seq + 1,
            r.partition,
            r.offset
        );
        seen[seq] = true;

        let driver = events.drivers[seq];
        let key = r.key.as_deref();
        assert_eq!(
            key,
            Some(driver.to_string().as_str()),
            "record {}@{} (input line {}) should be keyed by its driver_id",
            r.partition,
            r.offset,
            seq + 1
        );
        let key = key.unwrap();
        let expected = partition_for_key(key.as_bytes(), PARTITIONS);
        assert_eq!(
            r.partition, expected,
            "key {key:?} is in partition {} but Kafka's murmur2 partitioner picks {expected}",
            r.partition
        );
        match partition_of_key[usize::from(driver)] {
            None => partition_of_key[usize::from(driver)] = Some(r.partition),
            Some(p) => assert_eq!(
                p, r.partition,
                "key {key:?} is in partitions {p} and {}",
                r.partition
            ),
        }
        placed.push((r.partition, r.offset, seq));
    }
    drop(records);
    assert!(seen.iter().all(|&s| s), "an input line is missing");

    // Offsets are dense from 0 in each partition, and each key's records are in input order.
    placed.sort_unstable();
    let mut per_partition = [0u64; PARTITIONS as usize];
    let mut last_seq_of_key: Vec<Option<usize>> = vec![None; 10_000];
    for &(partition, offset, seq) in &placed {
        let next = &mut per_partition[partition as usize];
        assert_eq!(
            offset, *next,
            "partition {partition}: offset {offset} where {next} was expected (a gap or a duplicate)"
        );
        *next += 1;
        let driver = usize::from(events.drivers[seq]);
        if let Some(prev) = last_seq_of_key[driver] {
            assert!(
                prev < seq,
                "key {driver}: input line {} comes after input line {} in partition {partition}",
                prev + 1,
                seq + 1
            );
        }
        last_seq_of_key[driver] = Some(seq);
    }
    assert!(
        per_partition.iter().all(|&n| n > 0),
        "10,000 keys should reach all {PARTITIONS} partitions: {per_partition:?}"
    );

    let describe = runnel.ok(&["topics", "describe", "rides"]);
    assert_eq!(
        described_records(&describe),
        Some(N as u64),
        "`topics describe rides` should count {N} records:\n{describe}"
    );
    eprintln!(
        "million_json_lines_round_trip: generated in {:.1?}, produced in {:.1?}, consumed in {:.1?}, checked in {:.1?} (total {:.1?})",
        generated,
        produced - generated,
        consumed_at - produced,
        started.elapsed() - consumed_at,
        started.elapsed()
    );
}

#[test]
fn group_consumption_resumes_from_committed_offsets() {
    const N: usize = 1000;
    const FIRST: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let runnel = Runnel::new(tmp.path().join("data"));
    runnel.ok(&["topics", "create", "events", "--partitions", "3"]);
    let lines: Vec<String> = (0..N).map(|i| format!("event number {i}")).collect();
    // Keyless lines from stdin, spread over the partitions with --partition (the sticky
    // partitioner would put a burst this small into one partition), so that the first run
    // stops inside one partition and leaves the others unread.
    for (partition, range) in [(0, 0..400), (1, 400..700), (2, 700..N)] {
        let input = lines[range].join("\n") + "\n";
        let partition = partition.to_string();
        let produce = ["produce", "events", "--partition", &partition];
        let out = runnel.run_with(&produce, Some(input.as_bytes()), SHORT);
        runnel.expect_success(&produce, out);
    }

    let first_args = [
        "consume",
        "events",
        "--group",
        "g",
        "--from-beginning",
        "--max-messages",
        "300",
        "--format",
        "json",
    ];
    let first = runnel.run_with(&first_args, None, SHORT);
    let first = parse_consumed(&runnel.expect_success(&first_args, first).stdout);
    assert_eq!(
        first.len(),
        FIRST,
        "`{}` should stop after {FIRST} records",
        runnel.describe(&first_args)
    );
    let second_args = [
        "consume",
        "events",
        "--group",
        "g",
        "--timeout",
        "2s",
        "--format",
        "json",
    ];
    let second = runnel.run_with(&second_args, None, SHORT);
    let second = parse_consumed(&runnel.expect_success(&second_args, second).stdout);

    // Every record exactly once over the two runs: by position and by content.
    let mut positions = BTreeMap::new();
    for (run, r) in first
        .iter()
        .map(|r| (1, r))
        .chain(second.iter().map(|r| (2, r)))
    {
        if let Some(earlier) = positions.insert((r.partition, r.offset), run) {
            panic!(
                "record {}@{} was read by run {earlier} and again by run {run}",
                r.partition, r.offset
            );
        }
    }
    let mut next = BTreeMap::new();
    for &(partition, offset) in positions.keys() {
        let expected = next.entry(partition).or_insert(0u64);
        assert_eq!(
            offset, *expected,
            "partition {partition}: offset {offset} read where {expected} was expected (a gap)"
        );
        *expected += 1;
    }
    let mut values: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|r| r.value.as_deref().expect("a value"))
        .collect();
    values.sort_unstable();
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        values.len(),
        N,
        "the two runs read {} + {} records; {N} were produced",
        first.len(),
        second.len()
    );
    assert!(
        values == expected,
        "the two runs together did not read exactly the produced lines"
    );

    // The group has committed everything: lag 0 on each of the 3 partitions.
    let describe = runnel.ok(&["groups", "describe", "g"]);
    let rows: Vec<Vec<u64>> = describe
        .lines()
        .filter(|l| l.contains("events"))
        .map(numbers)
        .collect();
    assert!(
        rows.len() == 3 && rows.iter().all(|r| r.len() == 4),
        "`groups describe g` should list (partition, committed offset, end offset, lag) for each of the 3 partitions of events:\n{describe}"
    );
    for row in &rows {
        assert_eq!(
            (row[1], row[3]),
            (row[2], 0),
            "`groups describe g` should show partition {} fully committed with lag 0:\n{describe}",
            row[0]
        );
    }
    let committed: u64 = rows.iter().map(|r| r[1]).sum();
    assert_eq!(
        committed, N as u64,
        "`groups describe g` committed offsets should add up to {N}:\n{describe}"
    );

    let list = runnel.ok(&["groups", "list"]);
    assert!(
        list.lines().any(|l| l
            .split(|c: char| c == '│' || c == '|' || c.is_whitespace())
            .any(|cell| cell == "g")),
        "`groups list` should list the group g:\n{list}"
    );
}

#[test]
fn user_errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let runnel = Runnel::new(&data);

    // An invalid topic name: named in the error with the rule, and nothing created outside.
    let args = ["topics", "create", "../escape"];
    let error = runnel.user_error(&args, None);
    assert_mentions(&runnel.describe(&args), &error, &["../escape"]);
    assert!(
        error.contains("letters") && error.contains("digits"),
        "the error of `{}` should say which characters a topic name may use; it was:\n{error}",
        runnel.describe(&args)
    );
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "data")
        .collect();
    assert!(
        outside.is_empty(),
        "`{}` created {outside:?} outside the data directory",
        runnel.describe(&args)
    );

    runnel.ok(&["topics", "create", "t"]);

    let args = ["topics", "describe", "nope"];
    let error = runnel.user_error(&args, None);
    assert_mentions(&runnel.describe(&args), &error, &["nope", "topics create"]);

    // A bad line stops producing there; the lines before it are kept, the ones after not sent.
    let args = ["produce", "t", "--key-field", "id"];
    let error = runnel.user_error(
        &args,
        Some(b"{\"id\":1,\"v\":\"a\"}\nnot json\n{\"id\":3}\n"),
    );
    assert_mentions(&runnel.describe(&args), &error, &["line 2"]);
    let consume = ["consume", "t", "--from-beginning", "--timeout", "1s"];
    let kept = runnel.ok(&consume);
    assert_eq!(
        kept,
        "{\"id\":1,\"v\":\"a\"}\n",
        "after the failed produce, `{}` should print only the line before the bad one",
        runnel.describe(&consume)
    );

    let args = ["consume", "t", "--offset", "5"];
    let error = runnel.user_error(&args, None);
    assert_mentions(
        &runnel.describe(&args),
        &error,
        &["--offset", "--partition"],
    );

    let args = ["topics", "create", "t2", "--retention", "5x"];
    let error = runnel.user_error(&args, None);
    assert_mentions(&runnel.describe(&args), &error, &["--retention", "5x"]);
    let args = ["topics", "describe", "t2"];
    let error = runnel.user_error(&args, None);
    assert_mentions(
        "topics describe t2 (after a rejected create)",
        &error,
        &["t2"],
    );
}

#[test]
fn quickstart_runs_on_a_fresh_data_dir() {
    const EVENTS: u64 = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let data: &Path = &tmp.path().join("fresh");
    let runnel = Runnel::new(data);
    let events = EVENTS.to_string();
    let args = ["quickstart", "--events", &events];
    let out = runnel.run_with(&args, None, SHORT);
    let out = runnel.expect_success(&args, out);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        numbers_after(&text, "produced").contains(&EVENTS),
        "`{}` should say it produced {EVENTS} events:\n{text}",
        runnel.describe(&args)
    );
    assert!(
        numbers_after(&text, "read").contains(&EVENTS),
        "`{}` should say it read {EVENTS} events back:\n{text}",
        runnel.describe(&args)
    );

    // What it says matches the data directory it leaves behind.
    let describe = runnel.ok(&["topics", "describe", "rides"]);
    assert_eq!(
        described_records(&describe),
        Some(EVENTS),
        "after quickstart, `topics describe rides` should count {EVENTS} records:\n{describe}"
    );
    let group = runnel.ok(&["groups", "describe", "quickstart"]);
    let lags: Vec<u64> = group
        .lines()
        .filter(|l| l.contains("rides"))
        .filter_map(|l| numbers(l).last().copied())
        .collect();
    assert!(
        !lags.is_empty() && lags.iter().all(|&lag| lag == 0),
        "after quickstart, group quickstart should have read everything (lag 0):\n{group}"
    );
}
